#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "core/object.h"

namespace fabrica::auth {

// ID-definition flags, OpenNebula's AclRule encoding: the flag ORed with a 32-bit id.
inline constexpr uint64_t kAclIndividual = 0x0000000100000000ULL;  // #id
inline constexpr uint64_t kAclGroup = 0x0000000200000000ULL;       // @gid
inline constexpr uint64_t kAclAll = 0x0000000400000000ULL;         // *
inline constexpr uint64_t kAclCluster = 0x0000000800000000ULL;     // %cluster
inline constexpr uint64_t kAclIdMask = 0x00000000FFFFFFFFULL;
inline constexpr uint64_t kAclFlagMask = 0x0000000F00000000ULL;
inline constexpr uint64_t kAclTypeMask = 0xFFFFFFF000000000ULL;
// This installation's zone (OpenNebula's default zone 0).
inline constexpr int64_t kLocalZone = 0;

// Who asks: the caller's user id and every group it belongs to (primary first).
struct Subject {
  int64_t uid = -1;
  std::span<const int64_t> groups;
};

// What is asked about. For a CREATE request id is -1 and gid is the group the new object
// will belong to. `clusters` lists the clusters the object belongs to (hosts, datastores...).
struct ObjectRef {
  ObjectType type = ObjectType::kUser;
  int64_t id = -1;
  int64_t uid = -1;
  int64_t gid = -1;
  Permissions permissions;
  std::span<const int64_t> clusters;
};

// One ACL rule, "USER RESOURCES/ID RIGHTS [ZONE]", e.g. "@100 VM+IMAGE/* USE+MANAGE #0".
// A rule only ever grants; it never restricts what other rules or permission bits allow.
struct AclRule {
  int64_t id = -1;
  uint64_t user = 0;
  uint64_t resource = 0;
  uint64_t rights = 0;
  uint64_t zone = kAclIndividual | kLocalZone;
  // Objects that generated this rule ("vdc:3", "group:100"); it lives while any owner needs
  // it or it was also made by hand (`manual`). Not part of the rule's meaning.
  std::vector<std::string> owners;
  bool manual = true;

  // Parses OpenNebula's rule syntax; the zone defaults to #0. kInvalidArgument (field
  // "rule") naming the part at fault.
  static Result<AclRule> parse(std::string_view text);
  // Builds a rule from the four numeric components and validates it.
  static Result<AclRule> from_numbers(uint64_t user, uint64_t resource, uint64_t rights,
                                      uint64_t zone);
  // Canonical text: types in OpenNebula order, rights USE+MANAGE+ADMIN+CREATE, zone last.
  std::string to_string() const;
  // {"id", "rule", "user", "resource", "rights", "zone", "owners"} with hex strings for the
  // numbers.
  Json to_json() const;

  // True when this rule grants `right` on `object` to `subject`.
  bool grants(const Subject& subject, const ObjectRef& object, Right right) const;

  friend bool operator==(const AclRule&, const AclRule&) = default;
};

// Formats a number as OpenNebula prints ACL components: upper-case hex without prefix.
std::string acl_hex(uint64_t value);

}  // namespace fabrica::auth
