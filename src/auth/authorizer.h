#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "auth/acl.h"
#include "core/error.h"
#include "store/store.h"

namespace fabrica::auth {

// The authenticated principal of one request.
struct Caller {
  int64_t uid = -1;
  int64_t gid = -1;
  std::vector<int64_t> groups;  // Primary group first, then secondary groups.
  std::string name;
  std::string address;  // Peer address, for rate limits and audit.
  int64_t token_id = -1;

  // The superuser (uid 0) and members of the admin group (gid 0) bypass every check.
  bool is_superuser() const;
  Subject subject() const { return Subject{.uid = uid, .groups = groups}; }
};

// Decides every request with OpenNebula's semantics: superuser and admin group bypass;
// then the object's owner/group/other permission bits; then the ACL rules, any of which
// may grant. Thread-safe. ACL rules are cached and reloaded whenever the store has
// committed a write since they were read, so a rule change applies to the next request.
class Authorizer {
 public:
  explicit Authorizer(store::Store& store) : store_(store) {}

  bool allows(const Caller& caller, const ObjectRef& object, Right right);

  // Success when `caller` holds `right` on `object`. A caller who may not even USE the
  // object gets kNotFound ("<noun> not found"), exactly as if it did not exist; one who may
  // see it but not act gets kPermissionDenied.
  Result<void> require(const Caller& caller, const ObjectRef& object, Right right,
                       std::string_view noun);
  // kPermissionDenied unless `caller` may create a `type` object in group `gid`.
  Result<void> require_create(const Caller& caller, ObjectType type, int64_t gid);
  // kPermissionDenied unless `caller` is the superuser or in the admin group.
  Result<void> require_superuser(const Caller& caller, std::string_view action);

  // ACL rule management, for the administrators only (kPermissionDenied otherwise).
  // create_rule: kAlreadyExists when an identical rule exists.
  Result<std::vector<AclRule>> list_rules(const Caller& caller);
  Result<AclRule> get_rule(const Caller& caller, int64_t id);
  Result<AclRule> create_rule(const Caller& caller, AclRule rule);
  Result<void> delete_rule(const Caller& caller, int64_t id);

  // The current rule set (a snapshot).
  Result<std::shared_ptr<const std::vector<AclRule>>> rules();

 private:
  store::Store& store_;
  std::mutex mutex_;
  uint64_t cached_generation_ = ~uint64_t{0};
  std::shared_ptr<const std::vector<AclRule>> cached_;
};

// Store layout of ACL rules (type "acl", key = canonical text, so duplicates are refused).
inline constexpr std::string_view kAclRecordType = "acl";
store::Record acl_record(const AclRule& rule);
Result<AclRule> acl_from_record(const store::Record& record);

}  // namespace fabrica::auth
