#pragma once

#include <optional>
#include <string>
#include <vector>

#include "auth/authorizer.h"
#include "crypto/crypto.h"
#include "core/attributes.h"
#include "core/clock.h"
#include "core/object.h"
#include "store/store.h"

namespace fabrica::auth {

inline constexpr int64_t kSuperuserId = 0;
inline constexpr int64_t kAdminGroupId = 0;
inline constexpr int64_t kUsersGroupId = 1;
inline constexpr int kUserEnabled = 0;
inline constexpr int kUserDisabled = 1;

struct User {
  ObjectHeader header;          // uid is the user's own id; gid its primary group.
  std::vector<int64_t> groups;  // Secondary groups.
  std::string password_hash;
  AttributeTree attributes;
  int64_t version = 0;  // Store version, for optimistic updates.

  bool enabled() const { return header.state == kUserEnabled; }
  // Never includes the password hash.
  Json to_api_json() const;
};

struct Group {
  ObjectHeader header;          // gid is the group's own id, so its members get the group bits.
  std::vector<int64_t> admins;  // Tenant administrators: members who run the group's users.
  std::vector<int64_t> rules;   // ACL rules the group generated (see group_rule_texts).
  AttributeTree attributes;
  int64_t version = 0;
  Json to_api_json() const;
};

// One page of a list call. `next_cursor` is set when more items may follow.
template <typename T>
struct Page {
  std::vector<T> items;
  std::optional<std::string> next_cursor;
};

// One page of the records of `type` that decode and that `visible` lets through: at most
// `limit` items, then a cursor; stops reading as soon as the page is full.
template <typename T, typename Decode, typename Visible>
Result<Page<T>> visible_page(store::Transaction& tx, std::string_view type,
                             const store::ListQuery& query, size_t limit, Decode decode,
                             Visible visible) {
  Page<T> page;
  auto visit = [&](const store::Record& r) -> Result<bool> {
    FAB_ASSIGN_OR_RETURN(T item, decode(r));
    if (!visible(item)) return true;
    if (page.items.size() == limit) {
      page.next_cursor = std::to_string(page.items.back().header.id);
      return false;
    }
    page.items.push_back(std::move(item));
    return true;
  };
  FAB_TRY(store::for_each(tx, type, visit, query));
  return page;
}

struct ListOptions {
  size_t limit = 100;
  int64_t after_id = -1;
  std::optional<std::string> name;
  std::optional<int64_t> gid;
};

struct NewUser {
  std::string name;
  std::string password;
  std::optional<int64_t> gid;  // Defaults to the users group (1).
  std::vector<int64_t> groups;
  bool enabled = true;
  AttributeTree attributes;
};

struct NewGroup {
  std::string name;
  AttributeTree attributes;
};

// Users and groups: the domain service behind /users and /groups. Every method validates
// its input, authorizes `caller`, and mutates in one store transaction. Thread-safe.
class Identity {
 public:
  Identity(store::Store& store, Authorizer& authorizer, const Clock& clock,
           crypto::HashCost cost = crypto::HashCost::kInteractive)
      : store_(store), authorizer_(authorizer), clock_(clock), cost_(cost) {}

  // Creates groups admins (0) and users (1), the superuser admin (0) with `admin_password`,
  // and the default ACL rule letting the users group create its own resources. Does
  // nothing when group 0 already exists. Returns true when it created them.
  Result<bool> bootstrap(std::string_view admin_password);
  Result<bool> bootstrapped();

  Result<User> create_user(const Caller& caller, const NewUser& request);
  Result<User> get_user(const Caller& caller, int64_t id);
  Result<Page<User>> list_users(const Caller& caller, const ListOptions& options);
  Result<void> delete_user(const Caller& caller, int64_t id);
  Result<void> set_password(const Caller& caller, int64_t id, std::string_view password);
  Result<User> set_enabled(const Caller& caller, int64_t id, bool enabled);
  Result<User> chgrp_user(const Caller& caller, int64_t id, int64_t gid);
  Result<User> add_secondary_group(const Caller& caller, int64_t id, int64_t gid);
  Result<User> remove_secondary_group(const Caller& caller, int64_t id, int64_t gid);
  Result<User> chmod_user(const Caller& caller, int64_t id, Permissions permissions);

  Result<Group> create_group(const Caller& caller, const NewGroup& request);
  Result<Group> get_group(const Caller& caller, int64_t id);
  Result<Page<Group>> list_groups(const Caller& caller, const ListOptions& options);
  Result<void> delete_group(const Caller& caller, int64_t id);
  Result<Group> chmod_group(const Caller& caller, int64_t id, Permissions permissions);
  Result<Group> chown_group(const Caller& caller, int64_t id, int64_t uid);
  // Makes member `uid` an administrator of group `gid` (superuser only): it may then create,
  // disable and delete the group's users, reset their passwords, set their quotas within the
  // group's, and manage the group's VMs, images, templates, endpoints and API keys.
  Result<Group> add_admin(const Caller& caller, int64_t gid, int64_t uid);
  Result<Group> remove_admin(const Caller& caller, int64_t gid, int64_t uid);
  // Ids of users whose primary or secondary group is `gid` (caller must see the group).
  Result<std::vector<int64_t>> group_members(const Caller& caller, int64_t gid);

  // Loads a user by name without authorization, for login. kNotFound when absent.
  Result<User> find_user_by_name(std::string_view name);
  // The Caller for user `uid`, kUnauthenticated when absent or disabled.
  Result<Caller> caller_for(int64_t uid, std::string address);
  // The same inside a caller's transaction.
  Result<Caller> caller_in(store::Transaction& tx, int64_t uid, std::string address);

 private:
  // Loads object `id` and requires `right` on it: kNotFound when absent or invisible.
  template <typename T, typename Decode>
  Result<T> load_authorized(store::Transaction& tx, const Caller& caller, std::string_view type,
                            ObjectType object_type, int64_t id, Right right, Decode&& decode);
  Result<User> load_user(store::Transaction& tx, const Caller& caller, int64_t id, Right right);
  Result<Group> load_group(store::Transaction& tx, const Caller& caller, int64_t id, Right right);
  template <typename Fn>
  Result<User> mutate_user(const Caller& caller, int64_t id, Right right, Fn&& change);
  Result<void> require_group_usable(const Caller& caller, store::Transaction& tx, int64_t gid);
  // Non-superusers may only move users into groups they administer.
  Result<void> require_group_admin(const Caller& caller, store::Transaction& tx, int64_t gid);
  // Takes administration of any group `user` no longer belongs to (all of them when `gone`).
  Result<void> drop_stale_admin(store::Transaction& tx, const User& user, bool gone);

  store::Store& store_;
  Authorizer& authorizer_;
  const Clock& clock_;
  crypto::HashCost cost_;
};

inline constexpr std::string_view kUserType = "user";
inline constexpr std::string_view kGroupType = "group";

store::Record user_record(const User& user);
Result<User> user_from_record(const store::Record& record);
store::Record group_record(const Group& group);
Result<Group> group_from_record(const store::Record& record);
ObjectRef object_ref(ObjectType type, const ObjectHeader& header);
// The ACL rules a group generates: its members may create their own resources in it, and
// each administrator manages the group's users and resources.
std::vector<std::string> group_rule_texts(const Group& group);
Result<void> save_group_rules(store::Transaction& tx, Group& group);

}  // namespace fabrica::auth
