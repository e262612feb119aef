#include "core/object.h"

#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>

namespace fabrica {
namespace {

constexpr std::array<ObjectTypeName, 22> kTypes = {{
    {ObjectType::kVm, "VM"},
    {ObjectType::kHost, "HOST"},
    {ObjectType::kNet, "NET"},
    {ObjectType::kImage, "IMAGE"},
    {ObjectType::kUser, "USER"},
    {ObjectType::kTemplate, "TEMPLATE"},
    {ObjectType::kGroup, "GROUP"},
    {ObjectType::kDatastore, "DATASTORE"},
    {ObjectType::kCluster, "CLUSTER"},
    {ObjectType::kDocument, "DOCUMENT"},
    {ObjectType::kZone, "ZONE"},
    {ObjectType::kSecGroup, "SECGROUP"},
    {ObjectType::kVdc, "VDC"},
    {ObjectType::kVrouter, "VROUTER"},
    {ObjectType::kMarketplace, "MARKETPLACE"},
    {ObjectType::kMarketplaceApp, "MARKETPLACEAPP"},
    {ObjectType::kVmGroup, "VMGROUP"},
    {ObjectType::kVnTemplate, "VNTEMPLATE"},
    {ObjectType::kHook, "HOOK"},
    {ObjectType::kBackupJob, "BACKUPJOB"},
    {ObjectType::kEndpoint, "ENDPOINT"},
    {ObjectType::kApiKey, "APIKEY"},
}};

int shift_of(Permissions::Class who) { return 6 - 3 * static_cast<int>(who); }

}  // namespace

std::span<const ObjectTypeName> all_object_types() { return kTypes; }

std::string_view acl_name(ObjectType type) {
  for (const auto& t : kTypes) {
    if (t.type == type) return t.acl_name;
  }
  return "?";
}

std::optional<ObjectType> object_type_from_acl_name(std::string_view name) {
  for (const auto& t : kTypes) {
    if (t.acl_name == name) return t.type;
  }
  return std::nullopt;
}

std::string_view right_name(Right right) {
  switch (right) {
    case Right::kUse:
      return "USE";
    case Right::kManage:
      return "MANAGE";
    case Right::kAdmin:
      return "ADMIN";
    case Right::kCreate:
      return "CREATE";
  }
  return "?";
}

Result<Permissions> Permissions::parse_octal(std::string_view octal) {
  if (octal.size() != 3) {
    return fail(ErrorCode::kInvalidArgument, "permissions are three octal digits, e.g. \"640\"",
                "permissions");
  }
  uint16_t bits = 0;
  for (char c : octal) {
    if (c < '0' || c > '7') {
      return fail(ErrorCode::kInvalidArgument, "permissions are three octal digits, e.g. \"640\"",
                  "permissions");
    }
    bits = static_cast<uint16_t>(bits * 8 + (c - '0'));
  }
  return Permissions(bits);
}

bool Permissions::allows(Class who, Right right) const {
  uint16_t digit = (bits_ >> shift_of(who)) & 07;
  switch (right) {
    case Right::kUse:
      return digit & 04;
    case Right::kManage:
      return digit & 02;
    case Right::kAdmin:
      return digit & 01;
    case Right::kCreate:
      return false;
  }
  return false;
}

std::string Permissions::octal() const {
  std::string out(3, '0');
  out[0] = static_cast<char>('0' + ((bits_ >> 6) & 07));
  out[1] = static_cast<char>('0' + ((bits_ >> 3) & 07));
  out[2] = static_cast<char>('0' + (bits_ & 07));
  return out;
}

std::string Permissions::letters(Class who) const {
  std::string out = "---";
  if (allows(who, Right::kUse)) out[0] = 'u';
  if (allows(who, Right::kManage)) out[1] = 'm';
  if (allows(who, Right::kAdmin)) out[2] = 'a';
  return out;
}

// Civil-date arithmetic from <chrono>: no locale, time zone or global lock on the hot path of
// every object serialised.
std::string format_time(int64_t unix_seconds) {
  using namespace std::chrono;
  sys_seconds tp{seconds{unix_seconds}};
  auto day = floor<days>(tp);
  year_month_day ymd{day};
  hh_mm_ss hms{tp - day};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

std::optional<int64_t> parse_time(std::string_view text) {
  // Exactly "YYYY-MM-DDTHH:MM:SSZ".
  if (text.size() != 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
      text[16] != ':' || text[19] != 'Z') {
    return std::nullopt;
  }
  auto number = [&](size_t pos, size_t len) -> std::optional<int> {
    int value = 0;
    auto [ptr, ec] = std::from_chars(text.data() + pos, text.data() + pos + len, value);
    if (ec != std::errc() || ptr != text.data() + pos + len) return std::nullopt;
    return value;
  };
  auto y = number(0, 4), mo = number(5, 2), d = number(8, 2);
  auto h = number(11, 2), mi = number(14, 2), sec = number(17, 2);
  if (!y || !mo || !d || !h || !mi || !sec || *h > 23 || *mi > 59 || *sec > 60) return std::nullopt;
  using namespace std::chrono;
  year_month_day ymd{year{*y}, month{static_cast<unsigned>(*mo)}, day{static_cast<unsigned>(*d)}};
  if (!ymd.ok()) return std::nullopt;
  sys_seconds tp = sys_days{ymd} + hours{*h} + minutes{*mi} + seconds{*sec};
  return tp.time_since_epoch().count();
}

ObjectHeader ObjectHeader::create(int64_t id, std::string name, int64_t uid, int64_t gid,
                                  Permissions permissions, int state, int64_t now) {
  ObjectHeader h;
  h.id = id;
  h.name = std::move(name);
  h.uid = uid;
  h.gid = gid;
  h.permissions = permissions;
  h.state = state;
  h.created_at = now;
  h.updated_at = now;
  return h;
}

void ObjectHeader::to_json(Json& out) const {
  out["id"] = id;
  out["name"] = name;
  out["uid"] = uid;
  out["gid"] = gid;
  out["permissions"] = permissions.octal();
  out["state"] = state;
  out["created_at"] = format_time(created_at);
  out["updated_at"] = format_time(updated_at);
}

Result<ObjectHeader> ObjectHeader::from_json(const Json& in) {
  try {
    ObjectHeader h;
    h.id = in.at("id").get<int64_t>();
    h.name = in.at("name").get<std::string>();
    h.uid = in.at("uid").get<int64_t>();
    h.gid = in.at("gid").get<int64_t>();
    FAB_ASSIGN_OR_RETURN(h.permissions,
                         Permissions::parse_octal(in.at("permissions").get<std::string>()));
    h.state = in.at("state").get<int>();
    auto created = parse_time(in.at("created_at").get<std::string>());
    auto updated = parse_time(in.at("updated_at").get<std::string>());
    if (!created || !updated) return fail(ErrorCode::kInternal, "stored timestamp is malformed");
    h.created_at = *created;
    h.updated_at = *updated;
    return h;
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                std::string("stored object header is malformed: ") + e.what());
  }
}

Result<void> validate_text(std::string_view text, size_t max, const std::string& field,
                           bool lines) {
  if (text.size() > max) {
    return fail(ErrorCode::kInvalidArgument,
                "must be at most " + std::to_string(max) + " characters", field);
  }
  for (unsigned char c : text) {
    if (c == 0x7f || (c < 0x20 && !(lines && (c == '\n' || c == '\t')))) {
      return fail(ErrorCode::kInvalidArgument,
                  lines ? "must hold no control characters but newlines and tabs"
                        : "must hold no control characters",
                  field);
    }
  }
  return {};
}

Result<void> validate_name(std::string_view name) {
  if (name.empty()) return fail(ErrorCode::kInvalidArgument, "must not be empty", "name");
  if (name.size() > 128) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 128 characters", "name");
  }
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e || c == '/' || c == '"' || c == '\\') {
      return fail(ErrorCode::kInvalidArgument, "may hold printable ASCII only, without / \" or \\",
                  "name");
    }
  }
  if (name.front() == ' ' || name.back() == ' ') {
    return fail(ErrorCode::kInvalidArgument, "must not start or end with a space", "name");
  }
  return {};
}

}  // namespace fabrica
