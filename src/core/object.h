#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "core/attributes.h"
#include "core/error.h"
#include "core/json.h"

namespace fabrica {

// Object types, numbered with OpenNebula's PoolObjectSQL::ObjectType bits so ACL rules
// encode exactly as OpenNebula's. kEndpoint and kApiKey are Fabrica's own, on bits
// OpenNebula leaves unused.
enum class ObjectType : uint64_t {
  kVm = 0x0000001000000000ULL,
  kHost = 0x0000002000000000ULL,
  kNet = 0x0000004000000000ULL,
  kImage = 0x0000008000000000ULL,
  kUser = 0x0000010000000000ULL,
  kTemplate = 0x0000020000000000ULL,
  kGroup = 0x0000040000000000ULL,
  kDatastore = 0x0000100000000000ULL,
  kCluster = 0x0000200000000000ULL,
  kDocument = 0x0000400000000000ULL,
  kZone = 0x0000800000000000ULL,
  kSecGroup = 0x0001000000000000ULL,
  kVdc = 0x0002000000000000ULL,
  kVrouter = 0x0004000000000000ULL,
  kMarketplace = 0x0008000000000000ULL,
  kMarketplaceApp = 0x0010000000000000ULL,
  kVmGroup = 0x0020000000000000ULL,
  kVnTemplate = 0x0040000000000000ULL,
  kHook = 0x0080000000000000ULL,
  kBackupJob = 0x0100000000000000ULL,
  kEndpoint = 0x0400000000000000ULL,
  kApiKey = 0x0800000000000000ULL,
};

// Every type in ACL print order, with its ACL keyword ("VM", "HOST", ...).
struct ObjectTypeName {
  ObjectType type;
  std::string_view acl_name;
};
std::span<const ObjectTypeName> all_object_types();
std::string_view acl_name(ObjectType type);
std::optional<ObjectType> object_type_from_acl_name(std::string_view name);

// Rights, with OpenNebula's AuthRequest::Operation values.
enum class Right : uint32_t { kUse = 0x1, kManage = 0x2, kAdmin = 0x4, kCreate = 0x8 };
std::string_view right_name(Right right);

// Owner/group/other x use/manage/admin, OpenNebula's UMA bits. The octal form "640" has one
// digit per class with U=4, M=2, A=1, exactly as `onetemplate chmod 8 640`.
class Permissions {
 public:
  enum class Class { kOwner = 0, kGroup = 1, kOther = 2 };

  constexpr Permissions() = default;
  constexpr explicit Permissions(uint16_t bits) : bits_(bits & 0777) {}
  // kInvalidArgument unless `octal` is three digits 0-7.
  static Result<Permissions> parse_octal(std::string_view octal);

  bool allows(Class who, Right right) const;
  uint16_t bits() const { return bits_; }
  std::string octal() const;
  // "um-" for one class, as OpenNebula's show prints.
  std::string letters(Class who) const;

  friend bool operator==(Permissions, Permissions) = default;

 private:
  uint16_t bits_ = 0;
};

// The header every stored object carries.
struct ObjectHeader {
  int64_t id = -1;
  std::string name;
  int64_t uid = 0;
  int64_t gid = 0;
  Permissions permissions;
  int state = 0;
  int64_t created_at = 0;  // Unix seconds.
  int64_t updated_at = 0;

  // A new object's header, created and updated at `now`. (Filled field by field: GCC 12 at
  // -O3 misreports nested designated initialisers holding strings as maybe-uninitialised.)
  static ObjectHeader create(int64_t id, std::string name, int64_t uid, int64_t gid,
                             Permissions permissions, int state, int64_t now);

  // Writes the header fields into `out` (an object); timestamps as RFC 3339 UTC.
  void to_json(Json& out) const;
  static Result<ObjectHeader> from_json(const Json& in);
};

// RFC 3339 UTC ("2026-11-24T19:58:17Z") and back.
std::string format_time(int64_t unix_seconds);
std::optional<int64_t> parse_time(std::string_view text);

// Object names: 1-128 bytes of printable ASCII except '/', no leading or trailing space.
// Returns kInvalidArgument on field "name".
Result<void> validate_name(std::string_view name);

// Free text a user or guest sets (descriptions, attributes, log tails): at most `max` bytes,
// no control characters (newlines and tabs allowed when `lines`). kInvalidArgument on `field`.
Result<void> validate_text(std::string_view text, size_t max, const std::string& field,
                           bool lines = false);

}  // namespace fabrica
