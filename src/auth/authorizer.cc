#include "auth/authorizer.h"

#include <algorithm>
#include <charconv>

namespace fabrica::auth {

bool Caller::is_superuser() const {
  return uid == 0 || std::find(groups.begin(), groups.end(), 0) != groups.end();
}

bool Caller::administers(int64_t gid) const {
  return std::find(admin_groups.begin(), admin_groups.end(), gid) != admin_groups.end();
}

std::string_view Caller::role() const {
  if (is_superuser()) return "infrastructure-admin";
  if (!admin_groups.empty()) return "tenant-admin";
  return "tenant-user";
}

store::Record acl_record(const AclRule& rule) {
  std::string text = rule.to_string();
  Json body = rule.to_json();
  body["manual"] = rule.manual;
  return store::Record{.type = std::string(kAclRecordType),
                       .id = rule.id,
                       .name = text,
                       .uid = 0,
                       .gid = 0,
                       .state = 0,
                       .key = text,
                       .body = dump_json(body)};
}

Result<AclRule> acl_from_record(const store::Record& record) {
  auto rule = AclRule::parse(record.name);
  auto body = parse_json(record.body);
  if (!rule || !body || !body->is_object()) {
    return fail(ErrorCode::kInternal,
                "stored ACL rule " + std::to_string(record.id) + " is malformed");
  }
  rule->id = record.id;
  try {
    rule->owners = body->value("owners", std::vector<std::string>{});
    rule->manual = body->value("manual", true);
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                "stored ACL rule " + std::to_string(record.id) + " is malformed: " + e.what());
  }
  return rule;
}

Result<int64_t> acquire_rule(store::Transaction& tx, AclRule rule, std::string_view owner) {
  std::string text = rule.to_string();
  auto existing = tx.get_by_key(kAclRecordType, text);
  if (existing) {
    FAB_ASSIGN_OR_RETURN(AclRule held, acl_from_record(*existing));
    if (std::find(held.owners.begin(), held.owners.end(), owner) == held.owners.end()) {
      held.owners.emplace_back(owner);
      store::Record updated = acl_record(held);
      updated.version = existing->version;
      FAB_TRY(tx.update(updated));
    }
    return held.id;
  }
  if (existing.error().code() != ErrorCode::kNotFound) return fail(existing.error());
  FAB_ASSIGN_OR_RETURN(rule.id, tx.allocate_id(kAclRecordType));
  rule.owners = {std::string(owner)};
  rule.manual = false;
  FAB_TRY(tx.insert(acl_record(rule)));
  return rule.id;
}

Result<void> release_rule(store::Transaction& tx, int64_t id, std::string_view owner) {
  auto record = tx.get(kAclRecordType, id);
  if (!record) {
    if (record.error().code() == ErrorCode::kNotFound) return {};  // Already gone.
    return fail(record.error());
  }
  FAB_ASSIGN_OR_RETURN(AclRule rule, acl_from_record(*record));
  std::erase(rule.owners, std::string(owner));
  if (rule.owners.empty() && !rule.manual) return tx.remove(kAclRecordType, id);
  store::Record updated = acl_record(rule);
  updated.version = record->version;
  FAB_TRY(tx.update(updated));
  return {};
}

Result<std::vector<int64_t>> sync_owned_rules(store::Transaction& tx, std::string_view owner,
                                              const std::vector<int64_t>& held,
                                              const std::vector<std::string>& wanted) {
  std::vector<int64_t> now;
  for (const auto& text : wanted) {
    FAB_ASSIGN_OR_RETURN(AclRule rule, AclRule::parse(text));
    FAB_ASSIGN_OR_RETURN(int64_t id, acquire_rule(tx, rule, owner));
    if (std::find(now.begin(), now.end(), id) == now.end()) now.push_back(id);
  }
  for (int64_t id : held) {
    if (std::find(now.begin(), now.end(), id) == now.end()) FAB_TRY(release_rule(tx, id, owner));
  }
  return now;
}

Result<void> forget_rules_naming(store::Transaction& tx, uint64_t flag, int64_t id) {
  uint64_t who = flag | static_cast<uint64_t>(id);
  std::vector<int64_t> doomed;
  FAB_TRY(store::for_each(tx, kAclRecordType, [&](const store::Record& r) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(AclRule rule, acl_from_record(r));
    bool names = rule.user == who || (rule.resource & ~kAclTypeMask) == who;
    if (names && rule.owners.empty()) doomed.push_back(rule.id);
    return {};
  }));
  for (int64_t rule : doomed) FAB_TRY(tx.remove(kAclRecordType, rule));
  return {};
}

Result<std::shared_ptr<const std::vector<AclRule>>> Authorizer::rules() {
  uint64_t generation = store_.write_generation();
  {
    std::lock_guard lock(mutex_);
    if (cached_ && cached_generation_ == generation) return cached_;
  }
  auto loaded = std::make_shared<std::vector<AclRule>>();
  FAB_TRY(store_.read([&](store::Transaction& tx) {
    return store::for_each(tx, kAclRecordType, [&](const store::Record& r) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(AclRule rule, acl_from_record(r));
      loaded->push_back(rule);
      return {};
    });
  }));
  std::lock_guard lock(mutex_);
  cached_ = loaded;
  cached_generation_ = generation;
  return cached_;
}

bool Authorizer::allows(const Caller& caller, const ObjectRef& object, Right right) {
  if (caller.is_superuser()) return true;
  if (right != Right::kCreate && object.id >= 0) {
    if (object.uid == caller.uid && object.permissions.allows(Permissions::Class::kOwner, right)) {
      return true;
    }
    bool member =
        std::find(caller.groups.begin(), caller.groups.end(), object.gid) != caller.groups.end();
    if (member && object.permissions.allows(Permissions::Class::kGroup, right)) return true;
    if (object.permissions.allows(Permissions::Class::kOther, right)) return true;
  }
  auto rules = this->rules();
  if (!rules) return false;  // Fail closed.
  Subject subject = caller.subject();
  return std::any_of((*rules)->begin(), (*rules)->end(),
                     [&](const AclRule& r) { return r.grants(subject, object, right); });
}

Result<void> Authorizer::require(const Caller& caller, const ObjectRef& object, Right right,
                                 std::string_view noun) {
  if (!allows(caller, object, Right::kUse)) {
    return fail(ErrorCode::kNotFound, std::string(noun) + " not found");
  }
  if (right != Right::kUse && !allows(caller, object, right)) {
    return fail(ErrorCode::kPermissionDenied,
                "not authorized to " + std::string(right_name(right)) + " " + std::string(noun));
  }
  return {};
}

Result<void> Authorizer::require_create(const Caller& caller, ObjectType type, int64_t gid) {
  ObjectRef target{.type = type, .id = -1, .uid = caller.uid, .gid = gid};
  if (allows(caller, target, Right::kCreate)) return {};
  return fail(ErrorCode::kPermissionDenied, "not authorized to CREATE " +
                                                std::string(acl_name(type)) + " in group " +
                                                std::to_string(gid));
}

Result<void> Authorizer::require_superuser(const Caller& caller, std::string_view action) {
  if (caller.is_superuser()) return {};
  return fail(ErrorCode::kPermissionDenied, "only the administrators may " + std::string(action));
}

Result<std::vector<AclRule>> Authorizer::list_rules(const Caller& caller) {
  FAB_TRY(require_superuser(caller, "manage ACL rules"));
  FAB_ASSIGN_OR_RETURN(auto snapshot, rules());
  return *snapshot;
}

Result<AclRule> Authorizer::get_rule(const Caller& caller, int64_t id) {
  FAB_TRY(require_superuser(caller, "manage ACL rules"));
  return store_.read_value<AclRule>([&](store::Transaction& tx) -> Result<AclRule> {
    auto record = tx.get(kAclRecordType, id);
    if (!record)
      return fail(record.error().code(), "ACL rule " + std::to_string(id) + " not found");
    return acl_from_record(*record);
  });
}

Result<AclRule> Authorizer::create_rule(const Caller& caller, AclRule rule) {
  FAB_TRY(require_superuser(caller, "manage ACL rules"));
  return store_.write_value<AclRule>([&](store::Transaction& tx) -> Result<AclRule> {
    FAB_ASSIGN_OR_RETURN(rule.id, tx.allocate_id(kAclRecordType));
    rule.owners.clear();
    rule.manual = true;
    auto inserted = tx.insert(acl_record(rule));
    if (!inserted && inserted.error().code() == ErrorCode::kAlreadyExists) {
      return fail(ErrorCode::kAlreadyExists, "the rule \"" + rule.to_string() + "\" already exists",
                  "rule");
    }
    FAB_TRY(inserted);
    return rule;
  });
}

namespace {

// Whether the object an owner tag names ("group:100", "vdc:3") still exists.
Result<bool> owner_exists(store::Transaction& tx, const std::string& owner) {
  auto colon = owner.find(':');
  if (colon == std::string::npos) return true;
  int64_t id = 0;
  std::string_view digits = std::string_view(owner).substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
  if (ec != std::errc() || end != digits.data() + digits.size()) return true;
  auto found = tx.get(owner.substr(0, colon), id);
  if (found) return true;
  if (found.error().code() == ErrorCode::kNotFound) return false;
  return fail(found.error());
}

}  // namespace

Result<void> Authorizer::delete_rule(const Caller& caller, int64_t id) {
  FAB_TRY(require_superuser(caller, "manage ACL rules"));
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    auto record = tx.get(kAclRecordType, id);
    if (!record)
      return fail(record.error().code(), "ACL rule " + std::to_string(id) + " not found");
    FAB_ASSIGN_OR_RETURN(AclRule rule, acl_from_record(*record));
    // Owners that are gone (a rule an older version left behind) hold nothing.
    std::vector<std::string> live;
    for (const auto& o : rule.owners) {
      FAB_ASSIGN_OR_RETURN(bool exists, owner_exists(tx, o));
      if (exists) live.push_back(o);
    }
    if (!live.empty()) {
      std::string owners;
      for (const auto& o : live) owners += (owners.empty() ? "" : ", ") + o;
      return fail(ErrorCode::kFailedPrecondition, "ACL rule " + std::to_string(id) +
                                                      " is generated by " + owners +
                                                      "; change that object instead");
    }
    return tx.remove(kAclRecordType, id);
  });
}

}  // namespace fabrica::auth
