#include "auth/identity.h"

#include <algorithm>

#include "auth/quota.h"
#include "auth/vdc.h"

namespace fabrica::auth {
namespace {

constexpr Permissions kUserPermissions{0600};   // A user sees and manages itself.
constexpr Permissions kGroupPermissions{0640};  // Members see their group.

std::string user_noun(int64_t id) { return "user " + std::to_string(id); }
std::string group_noun(int64_t id) { return "group " + std::to_string(id); }

Group new_group(int64_t id, std::string name, int64_t owner, const AttributeTree& attributes,
                int64_t now) {
  Group g;
  g.header = ObjectHeader::create(id, std::move(name), owner, id, kGroupPermissions, 0, now);
  g.attributes = attributes;
  g.version = 1;
  return g;
}

bool contains(const std::vector<int64_t>& v, int64_t x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

Json header_json(const ObjectHeader& header) {
  Json j = Json::object();
  header.to_json(j);
  return j;
}

// Collects up to `limit` records of `type` that `visible` accepts, after the cursor.
template <typename T, typename Decode, typename Visible>
Result<Page<T>> list_visible(store::Transaction& tx, std::string_view type,
                             const ListOptions& options, Decode&& decode, Visible&& visible) {
  Page<T> page;
  store::ListQuery query{.after_id = options.after_id,
                         .limit = std::max<size_t>(options.limit + 1, 64),
                         .gid = options.gid,
                         .name = options.name};
  while (true) {
    FAB_ASSIGN_OR_RETURN(auto batch, tx.list(type, query));
    for (const auto& record : batch) {
      FAB_ASSIGN_OR_RETURN(T item, decode(record));
      if (!visible(item)) continue;
      if (page.items.size() == options.limit) {
        page.next_cursor = std::to_string(page.items.back().header.id);
        return page;
      }
      page.items.push_back(std::move(item));
    }
    if (batch.size() < query.limit) return page;
    query.after_id = batch.back().id;
  }
}

}  // namespace

ObjectRef object_ref(ObjectType type, const ObjectHeader& header) {
  return ObjectRef{.type = type,
                   .id = header.id,
                   .uid = header.uid,
                   .gid = header.gid,
                   .permissions = header.permissions};
}

Json User::to_api_json() const {
  Json j = header_json(header);
  j["enabled"] = enabled();
  j["groups"] = groups;
  j["template"] = attributes.to_json();
  return j;
}

Json Group::to_api_json() const {
  Json j = header_json(header);
  j["admins"] = admins;
  j["rules"] = rules;
  j["template"] = attributes.to_json();
  return j;
}

store::Record user_record(const User& user) {
  Json body = user.to_api_json();
  body["password_hash"] = user.password_hash;
  return store::Record{.type = std::string(kUserType),
                       .id = user.header.id,
                       .name = user.header.name,
                       .uid = user.header.uid,
                       .gid = user.header.gid,
                       .state = user.header.state,
                       .key = user.header.name,
                       .body = dump_json(body),
                       .version = user.version};
}

Result<User> user_from_record(const store::Record& record) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(record.body));
  User user;
  FAB_ASSIGN_OR_RETURN(user.header, ObjectHeader::from_json(body));
  FAB_ASSIGN_OR_RETURN(user.attributes,
                       AttributeTree::from_json(body.value("template", Json::object())));
  try {
    user.groups = body.at("groups").get<std::vector<int64_t>>();
    user.password_hash = body.at("password_hash").get<std::string>();
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                "stored user " + std::to_string(record.id) + " is malformed: " + e.what());
  }
  user.version = record.version;
  return user;
}

store::Record group_record(const Group& group) {
  return store::Record{.type = std::string(kGroupType),
                       .id = group.header.id,
                       .name = group.header.name,
                       .uid = group.header.uid,
                       .gid = group.header.gid,
                       .state = group.header.state,
                       .key = group.header.name,
                       .body = dump_json(group.to_api_json()),
                       .version = group.version};
}

Result<Group> group_from_record(const store::Record& record) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(record.body));
  Group group;
  FAB_ASSIGN_OR_RETURN(group.header, ObjectHeader::from_json(body));
  FAB_ASSIGN_OR_RETURN(group.attributes,
                       AttributeTree::from_json(body.value("template", Json::object())));
  try {
    group.admins = body.value("admins", std::vector<int64_t>{});
    group.rules = body.value("rules", std::vector<int64_t>{});
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                "stored group " + std::to_string(record.id) + " is malformed: " + e.what());
  }
  group.version = record.version;
  return group;
}

std::vector<std::string> group_rule_texts(const Group& group) {
  std::string gid = std::to_string(group.header.id);
  std::vector<std::string> texts;
  if (group.header.id == kAdminGroupId) return texts;  // Bypasses every check anyway.
  texts.push_back("@" + gid + " VM+NET+IMAGE+TEMPLATE+DOCUMENT/@" + gid + " CREATE");
  for (int64_t uid : group.admins) {
    std::string who = "#" + std::to_string(uid);
    texts.push_back(who + " USER/@" + gid + " USE+MANAGE+ADMIN+CREATE");
    texts.push_back(who + " VM+NET+IMAGE+TEMPLATE+DOCUMENT+ENDPOINT+APIKEY/@" + gid +
                    " USE+MANAGE+CREATE");
  }
  return texts;
}

Result<void> save_group_rules(store::Transaction& tx, Group& group) {
  FAB_ASSIGN_OR_RETURN(group.rules, sync_owned_rules(tx, "group:" + std::to_string(group.header.id),
                                                     group.rules, group_rule_texts(group)));
  return {};
}

template <typename T, typename Decode>
Result<T> Identity::load_authorized(store::Transaction& tx, const Caller& caller,
                                    std::string_view type, ObjectType object_type, int64_t id,
                                    Right right, Decode&& decode) {
  std::string noun = std::string(type) + " " + std::to_string(id);
  auto record = tx.get(type, id);
  if (!record) return fail(record.error().code(), noun + " not found");
  FAB_ASSIGN_OR_RETURN(T object, decode(*record));
  FAB_TRY(authorizer_.require(caller, object_ref(object_type, object.header), right, noun));
  return object;
}

Result<User> Identity::load_user(store::Transaction& tx, const Caller& caller, int64_t id,
                                 Right right) {
  return load_authorized<User>(tx, caller, kUserType, ObjectType::kUser, id, right,
                               user_from_record);
}

Result<Group> Identity::load_group(store::Transaction& tx, const Caller& caller, int64_t id,
                                   Right right) {
  return load_authorized<Group>(tx, caller, kGroupType, ObjectType::kGroup, id, right,
                                group_from_record);
}

Result<bool> Identity::bootstrapped() {
  return store_.read_value<bool>([](store::Transaction& tx) -> Result<bool> {
    auto admins = tx.get(kGroupType, kAdminGroupId);
    if (admins) return true;
    if (admins.error().code() == ErrorCode::kNotFound) return false;
    return fail(admins.error());
  });
}

Result<bool> Identity::bootstrap(std::string_view admin_password) {
  FAB_ASSIGN_OR_RETURN(bool done, bootstrapped());
  if (done) return false;
  FAB_TRY(crypto::validate_password(admin_password));
  FAB_ASSIGN_OR_RETURN(std::string hash, crypto::hash_password(admin_password, cost_));
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<bool>([&](store::Transaction& tx) -> Result<bool> {
    if (tx.get(kGroupType, kAdminGroupId)) return false;  // Raced with another bootstrap.
    for (auto [id, name] :
         {std::pair<int64_t, const char*>{kAdminGroupId, "admins"}, {kUsersGroupId, "users"}}) {
      Group g = new_group(id, name, kSuperuserId, AttributeTree(), now);
      FAB_TRY(save_group_rules(tx, g));
      FAB_TRY(tx.insert(group_record(g)));
    }
    User admin;
    admin.header = ObjectHeader::create(kSuperuserId, "admin", kSuperuserId, kAdminGroupId,
                                        kUserPermissions, kUserEnabled, now);
    admin.password_hash = hash;
    FAB_TRY(tx.insert(user_record(admin)));
    return true;
  });
}

Result<void> Identity::require_group_usable(const Caller& caller, store::Transaction& tx,
                                            int64_t gid) {
  auto record = tx.get(kGroupType, gid);
  if (!record) {
    if (record.error().code() == ErrorCode::kNotFound) {
      return fail(ErrorCode::kInvalidArgument, group_noun(gid) + " does not exist", "gid");
    }
    return fail(record.error());
  }
  FAB_ASSIGN_OR_RETURN(Group group, group_from_record(*record));
  if (gid == kAdminGroupId && !caller.is_superuser()) {
    return fail(ErrorCode::kPermissionDenied, "only the administrators may add users to admins");
  }
  if (!authorizer_.allows(caller, object_ref(ObjectType::kGroup, group.header), Right::kUse)) {
    return fail(ErrorCode::kInvalidArgument, group_noun(gid) + " does not exist", "gid");
  }
  return {};
}

Result<void> Identity::require_group_admin(const Caller& caller, store::Transaction& tx,
                                           int64_t gid) {
  FAB_TRY(require_group_usable(caller, tx, gid));
  if (caller.is_superuser() || caller.administers(gid)) return {};
  return fail(ErrorCode::kPermissionDenied,
              "only an administrator of " + group_noun(gid) + " may change its members", "gid");
}

Result<void> Identity::drop_stale_admin(store::Transaction& tx, const User& user, bool gone) {
  return store::for_each(tx, kGroupType, [&](const store::Record& r) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Group g, group_from_record(r));
    int64_t uid = user.header.id;
    bool member = !gone && (user.header.gid == g.header.id || contains(user.groups, g.header.id));
    if (member || !contains(g.admins, uid)) return {};
    std::erase(g.admins, uid);
    FAB_TRY(save_group_rules(tx, g));
    FAB_ASSIGN_OR_RETURN(g.version, tx.update(group_record(g)));
    return {};
  });
}

Result<User> Identity::create_user(const Caller& caller, const NewUser& request) {
  FAB_TRY(validate_name(request.name));
  FAB_TRY(crypto::validate_password(request.password));
  int64_t gid = request.gid.value_or(kUsersGroupId);
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kUser, gid));
  FAB_ASSIGN_OR_RETURN(std::string hash, crypto::hash_password(request.password, cost_));
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<User>([&](store::Transaction& tx) -> Result<User> {
    FAB_TRY(require_group_usable(caller, tx, gid));
    std::vector<int64_t> groups;
    for (int64_t g : request.groups) {
      FAB_TRY(require_group_usable(caller, tx, g).map_error([](Error e) {
        return Error(e.code(), e.message(), "groups");
      }));
      if (g != gid && !contains(groups, g)) groups.push_back(g);
    }
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kUserType));
    User user;
    user.header = ObjectHeader::create(id, request.name, id, gid, kUserPermissions,
                                       request.enabled ? kUserEnabled : kUserDisabled, now);
    user.groups = std::move(groups);
    user.password_hash = hash;
    user.attributes = request.attributes;
    user.version = 1;
    auto inserted = store::insert_named(tx, user_record(user));
    if (!inserted && inserted.error().code() == ErrorCode::kAlreadyExists &&
        !caller.is_superuser()) {
      // Login names are global; to anyone but the superuser a taken name reads the same
      // whether its user is in the caller's tenant or another (docs/architecture.md).
      return fail(ErrorCode::kAlreadyExists,
                  "the name \"" + request.name + "\" is not available; choose another", "name");
    }
    FAB_TRY(std::move(inserted));
    return user;
  });
}

Result<User> Identity::get_user(const Caller& caller, int64_t id) {
  return store_.read_value<User>([&](store::Transaction& tx) -> Result<User> {
    FAB_ASSIGN_OR_RETURN(User user, load_user(tx, caller, id, Right::kUse));
    return user;
  });
}

Result<Page<User>> Identity::list_users(const Caller& caller, const ListOptions& options) {
  return store_.read_value<Page<User>>([&](store::Transaction& tx) {
    return list_visible<User>(tx, kUserType, options, user_from_record, [&](const User& u) {
      return authorizer_.allows(caller, object_ref(ObjectType::kUser, u.header), Right::kUse);
    });
  });
}

template <typename Fn>
Result<User> Identity::mutate_user(const Caller& caller, int64_t id, Right right, Fn&& change) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<User>([&](store::Transaction& tx) -> Result<User> {
    FAB_ASSIGN_OR_RETURN(User user, load_user(tx, caller, id, right));
    FAB_TRY(change(tx, user));
    user.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(user.version, tx.update(user_record(user)));
    return user;
  });
}

Result<void> Identity::delete_user(const Caller& caller, int64_t id) {
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(User user, load_user(tx, caller, id, Right::kAdmin));
    if (id == kSuperuserId) {
      return fail(ErrorCode::kFailedPrecondition, "the superuser cannot be deleted");
    }
    if (id == caller.uid) return fail(ErrorCode::kFailedPrecondition, "you cannot delete yourself");
    FAB_TRY(require_no_quota_use(tx, QuotaOwner::kUser, id));
    FAB_TRY(remove_quota(tx, QuotaOwner::kUser, id));
    FAB_TRY(drop_stale_admin(tx, user, /*gone=*/true));
    FAB_TRY(tx.remove(kUserType, id));
    FAB_TRY(forget_rules_naming(tx, kAclIndividual, id));
    // Their tokens die with them.
    FAB_ASSIGN_OR_RETURN(auto tokens, tx.list("token", {.limit = 100000, .uid = id}));
    for (const auto& t : tokens) FAB_TRY(tx.remove("token", t.id));
    return {};
  });
}

Result<void> Identity::set_password(const Caller& caller, int64_t id, std::string_view password) {
  FAB_TRY(crypto::validate_password(password));
  FAB_ASSIGN_OR_RETURN(std::string hash, crypto::hash_password(password, cost_));
  FAB_TRY(
      mutate_user(caller, id, Right::kManage, [&](store::Transaction&, User& user) -> Result<void> {
        user.password_hash = hash;
        return {};
      }));
  return {};
}

Result<User> Identity::set_enabled(const Caller& caller, int64_t id, bool enabled) {
  return mutate_user(
      caller, id, Right::kAdmin, [&](store::Transaction&, User& user) -> Result<void> {
        if (id == kSuperuserId && !enabled) {
          return fail(ErrorCode::kFailedPrecondition, "the superuser cannot be disabled");
        }
        user.header.state = enabled ? kUserEnabled : kUserDisabled;
        return {};
      });
}

Result<User> Identity::chgrp_user(const Caller& caller, int64_t id, int64_t gid) {
  return mutate_user(
      caller, id, Right::kAdmin, [&](store::Transaction& tx, User& user) -> Result<void> {
        if (id == kSuperuserId && gid != kAdminGroupId) {
          return fail(ErrorCode::kFailedPrecondition, "the superuser stays in the admins group");
        }
        FAB_TRY(require_group_admin(caller, tx, gid));
        std::erase(user.groups, gid);
        user.header.gid = gid;
        return drop_stale_admin(tx, user, false);
      });
}

Result<User> Identity::add_secondary_group(const Caller& caller, int64_t id, int64_t gid) {
  return mutate_user(caller, id, Right::kAdmin,
                     [&](store::Transaction& tx, User& user) -> Result<void> {
                       FAB_TRY(require_group_admin(caller, tx, gid));
                       if (gid != user.header.gid && !contains(user.groups, gid))
                         user.groups.push_back(gid);
                       return {};
                     });
}

Result<User> Identity::remove_secondary_group(const Caller& caller, int64_t id, int64_t gid) {
  return mutate_user(
      caller, id, Right::kAdmin, [&](store::Transaction& tx, User& user) -> Result<void> {
        if (gid == user.header.gid) {
          return fail(ErrorCode::kFailedPrecondition,
                      "group " + std::to_string(gid) + " is the user's primary group; use chgrp",
                      "gid");
        }
        if (!contains(user.groups, gid)) {
          return fail(ErrorCode::kNotFound, "user is not in group " + std::to_string(gid), "gid");
        }
        if (!caller.is_superuser() && !caller.administers(gid)) {
          return fail(ErrorCode::kPermissionDenied,
                      "only an administrator of " + group_noun(gid) + " may change its members",
                      "gid");
        }
        std::erase(user.groups, gid);
        return drop_stale_admin(tx, user, false);
      });
}

// Setting an ADMIN bit needs ADMIN on the object, as in OpenNebula.
static Result<void> check_admin_bits(Authorizer& authorizer, const Caller& caller,
                                     const ObjectRef& ref, Permissions wanted) {
  if ((wanted.bits() & 0111) != (ref.permissions.bits() & 0111) &&
      !authorizer.allows(caller, ref, Right::kAdmin)) {
    return fail(ErrorCode::kPermissionDenied, "changing ADMIN bits requires ADMIN", "permissions");
  }
  return {};
}

Result<User> Identity::chmod_user(const Caller& caller, int64_t id, Permissions permissions) {
  return mutate_user(
      caller, id, Right::kManage, [&](store::Transaction&, User& user) -> Result<void> {
        FAB_TRY(check_admin_bits(authorizer_, caller, object_ref(ObjectType::kUser, user.header),
                                 permissions));
        user.header.permissions = permissions;
        return {};
      });
}

Result<Group> Identity::create_group(const Caller& caller, const NewGroup& request) {
  FAB_TRY(validate_name(request.name));
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kGroup, caller.gid));
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Group>([&](store::Transaction& tx) -> Result<Group> {
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kGroupType));
    id = std::max<int64_t>(id, 100);  // OpenNebula numbers user-defined groups from 100.
    Group group = new_group(id, request.name, caller.uid, request.attributes, now);
    FAB_TRY(save_group_rules(tx, group));
    FAB_TRY(store::insert_named(tx, group_record(group)));
    return group;
  });
}

Result<Group> Identity::get_group(const Caller& caller, int64_t id) {
  return store_.read_value<Group>([&](store::Transaction& tx) -> Result<Group> {
    return load_group(tx, caller, id, Right::kUse);
  });
}

Result<Page<Group>> Identity::list_groups(const Caller& caller, const ListOptions& options) {
  return store_.read_value<Page<Group>>([&](store::Transaction& tx) {
    ListOptions o = options;
    o.gid.reset();
    return list_visible<Group>(tx, kGroupType, o, group_from_record, [&](const Group& g) {
      return authorizer_.allows(caller, object_ref(ObjectType::kGroup, g.header), Right::kUse);
    });
  });
}

Result<std::vector<int64_t>> Identity::group_members(const Caller& caller, int64_t gid) {
  FAB_TRY(get_group(caller, gid));
  return store_.read_value<std::vector<int64_t>>(
      [&](store::Transaction& tx) -> Result<std::vector<int64_t>> {
        std::vector<int64_t> members;
        FAB_TRY(store::for_each(tx, kUserType, [&](const store::Record& r) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(User u, user_from_record(r));
          if (u.header.gid == gid || contains(u.groups, gid)) members.push_back(u.header.id);
          return {};
        }));
        return members;
      });
}

Result<void> Identity::delete_group(const Caller& caller, int64_t id) {
  FAB_ASSIGN_OR_RETURN(auto members, group_members(caller, id));
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Group group, load_group(tx, caller, id, Right::kAdmin));
    if (id == kAdminGroupId || id == kUsersGroupId) {
      return fail(ErrorCode::kFailedPrecondition, "the built-in groups cannot be deleted");
    }
    // Re-check membership inside the transaction: a user may have joined meanwhile.
    FAB_ASSIGN_OR_RETURN(int64_t primary, tx.count(kUserType, {.gid = id}));
    if (primary > 0 || !members.empty()) {
      return fail(ErrorCode::kFailedPrecondition,
                  group_noun(id) + " still has users; move or delete them first");
    }
    FAB_ASSIGN_OR_RETURN(auto vdcs, vdcs_with_group(tx, id));
    if (!vdcs.empty()) {
      return fail(ErrorCode::kFailedPrecondition, group_noun(id) + " belongs to VDC " +
                                                      std::to_string(vdcs.front()) +
                                                      "; remove it from the VDC first");
    }
    FAB_ASSIGN_OR_RETURN(int64_t keys, tx.count("apikey", {.gid = id}));
    if (keys > 0) {
      return fail(ErrorCode::kFailedPrecondition,
                  group_noun(id) + " still owns API keys; delete them first");
    }
    FAB_TRY(require_no_quota_use(tx, QuotaOwner::kGroup, id));
    FAB_TRY(remove_quota(tx, QuotaOwner::kGroup, id));
    // Every rule the group generated goes with it (not only its administrators' rules).
    FAB_TRY(sync_owned_rules(tx, "group:" + std::to_string(id), group.rules, {}));
    FAB_TRY(forget_rules_naming(tx, kAclGroup, id));
    return tx.remove(kGroupType, id);
  });
}

Result<Group> Identity::chmod_group(const Caller& caller, int64_t id, Permissions permissions) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Group>([&](store::Transaction& tx) -> Result<Group> {
    FAB_ASSIGN_OR_RETURN(Group group, load_group(tx, caller, id, Right::kManage));
    FAB_TRY(check_admin_bits(authorizer_, caller, object_ref(ObjectType::kGroup, group.header),
                             permissions));
    group.header.permissions = permissions;
    group.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(group.version, tx.update(group_record(group)));
    return group;
  });
}

Result<Group> Identity::chown_group(const Caller& caller, int64_t id, int64_t uid) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Group>([&](store::Transaction& tx) -> Result<Group> {
    FAB_ASSIGN_OR_RETURN(Group group, load_group(tx, caller, id, Right::kManage));
    FAB_TRY(authorizer_.require_superuser(caller, "change an owner"));
    if (!tx.get(kUserType, uid)) {
      return fail(ErrorCode::kInvalidArgument, user_noun(uid) + " does not exist", "uid");
    }
    group.header.uid = uid;
    group.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(group.version, tx.update(group_record(group)));
    return group;
  });
}

Result<Group> Identity::add_admin(const Caller& caller, int64_t gid, int64_t uid) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Group>([&](store::Transaction& tx) -> Result<Group> {
    FAB_ASSIGN_OR_RETURN(Group group, load_group(tx, caller, gid, Right::kUse));
    FAB_TRY(authorizer_.require_superuser(caller, "appoint group administrators"));
    if (gid == kAdminGroupId) {
      return fail(ErrorCode::kFailedPrecondition, "the admins group needs no administrators");
    }
    auto record = tx.get(kUserType, uid);
    if (!record)
      return fail(ErrorCode::kInvalidArgument, user_noun(uid) + " does not exist", "uid");
    FAB_ASSIGN_OR_RETURN(User user, user_from_record(*record));
    if (user.header.gid != gid && !contains(user.groups, gid)) {
      return fail(ErrorCode::kFailedPrecondition,
                  user_noun(uid) + " is not a member of " + group_noun(gid), "uid");
    }
    if (contains(group.admins, uid)) return group;
    group.admins.push_back(uid);
    FAB_TRY(save_group_rules(tx, group));
    group.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(group.version, tx.update(group_record(group)));
    return group;
  });
}

Result<Group> Identity::remove_admin(const Caller& caller, int64_t gid, int64_t uid) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Group>([&](store::Transaction& tx) -> Result<Group> {
    FAB_ASSIGN_OR_RETURN(Group group, load_group(tx, caller, gid, Right::kUse));
    FAB_TRY(authorizer_.require_superuser(caller, "appoint group administrators"));
    if (!contains(group.admins, uid)) {
      return fail(ErrorCode::kNotFound,
                  user_noun(uid) + " is not an administrator of " + group_noun(gid), "uid");
    }
    std::erase(group.admins, uid);
    FAB_TRY(save_group_rules(tx, group));
    group.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(group.version, tx.update(group_record(group)));
    return group;
  });
}

Result<User> Identity::find_user_by_name(std::string_view name) {
  return store_.read_value<User>([&](store::Transaction& tx) -> Result<User> {
    FAB_ASSIGN_OR_RETURN(auto record, tx.get_by_key(kUserType, name));
    return user_from_record(record);
  });
}

Result<Caller> Identity::caller_for(int64_t uid, std::string address) {
  return store_.read_value<Caller>(
      [&](store::Transaction& tx) { return caller_in(tx, uid, std::move(address)); });
}

Result<Caller> Identity::caller_in(store::Transaction& tx, int64_t uid, std::string address) {
  auto record = tx.get(kUserType, uid);
  if (!record) {
    if (record.error().code() == ErrorCode::kNotFound) {
      return fail(ErrorCode::kUnauthenticated, "the token's user no longer exists");
    }
    return fail(record.error());
  }
  FAB_ASSIGN_OR_RETURN(User user, user_from_record(*record));
  if (!user.enabled()) return fail(ErrorCode::kUnauthenticated, "user is disabled");
  Caller caller;
  caller.uid = uid;
  caller.gid = user.header.gid;
  caller.groups = {user.header.gid};
  caller.groups.insert(caller.groups.end(), user.groups.begin(), user.groups.end());
  caller.name = user.header.name;
  caller.address = std::move(address);
  for (int64_t gid : caller.groups) {
    auto group = tx.get(kGroupType, gid);
    if (!group) continue;  // A dangling membership grants nothing.
    FAB_ASSIGN_OR_RETURN(Group g, group_from_record(*group));
    if (contains(g.admins, uid)) caller.admin_groups.push_back(gid);
  }
  return caller;
}

}  // namespace fabrica::auth
