#include "auth/acl.h"

#include <algorithm>
#include <charconv>
#include <cstdio>

namespace fabrica::auth {
namespace {

constexpr uint64_t kAllRights = 0xF;

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

Error bad(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message), "rule");
}

// Parses "#5", "@100", "*" or "%2" (when `allow_cluster`).
Result<uint64_t> parse_id(std::string_view text, bool allow_cluster, std::string_view part) {
  if (text == "*") return kAclAll;
  if (text.size() < 2) return fail(bad(std::string(part) + " must be #id, @gid or *"));
  uint64_t flag = 0;
  switch (text[0]) {
    case '#':
      flag = kAclIndividual;
      break;
    case '@':
      flag = kAclGroup;
      break;
    case '%':
      if (allow_cluster) {
        flag = kAclCluster;
        break;
      }
      [[fallthrough]];
    default:
      return fail(bad(std::string(part) + " must be #id, @gid" +
                      (allow_cluster ? ", %cluster" : "") + " or *, not \"" + std::string(text) +
                      "\""));
  }
  uint32_t id = 0;
  auto digits = text.substr(1);
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), id);
  if (ec != std::errc() || ptr != digits.data() + digits.size()) {
    return fail(bad(std::string(part) + " id \"" + std::string(digits) + "\" is not a number"));
  }
  return flag | id;
}

std::string print_id(uint64_t value) {
  uint64_t id = value & kAclIdMask;
  switch (value & kAclFlagMask) {
    case kAclIndividual:
      return "#" + std::to_string(id);
    case kAclGroup:
      return "@" + std::to_string(id);
    case kAclCluster:
      return "%" + std::to_string(id);
    default:
      return "*";
  }
}

bool valid_flag(uint64_t value, bool allow_cluster) {
  uint64_t flag = value & kAclFlagMask;
  if (flag == kAclAll) return (value & kAclIdMask) == 0;
  return flag == kAclIndividual || flag == kAclGroup || (allow_cluster && flag == kAclCluster);
}

uint64_t known_types() {
  uint64_t mask = 0;
  for (const auto& t : all_object_types()) mask |= static_cast<uint64_t>(t.type);
  return mask;
}

constexpr std::string_view kRightNames[] = {"USE", "MANAGE", "ADMIN", "CREATE"};

}  // namespace

std::string acl_hex(uint64_t value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llX", static_cast<unsigned long long>(value));
  return buf;
}

Result<AclRule> AclRule::from_numbers(uint64_t user, uint64_t resource, uint64_t rights,
                                      uint64_t zone) {
  AclRule rule{.user = user, .resource = resource, .rights = rights, .zone = zone};
  if ((user & kAclTypeMask) != 0 || !valid_flag(user, false)) {
    return fail(bad("user must be #id, @gid or *"));
  }
  uint64_t types = resource & kAclTypeMask;
  if (types == 0) return fail(bad("resources name no object type"));
  if ((types & ~known_types()) != 0) return fail(bad("resources name an unknown object type"));
  if (!valid_flag(resource & ~kAclTypeMask, true)) {
    return fail(bad("resource id must be #id, @gid, %cluster or *"));
  }
  if (rights == 0 || (rights & ~kAllRights) != 0) {
    return fail(bad("rights must be a non-empty set of USE, MANAGE, ADMIN, CREATE"));
  }
  if ((zone & kAclTypeMask) != 0 || !valid_flag(zone, false) ||
      (zone & kAclFlagMask) == kAclGroup) {
    return fail(bad("zone must be #id or *"));
  }
  return rule;
}

Result<AclRule> AclRule::parse(std::string_view text) {
  std::vector<std::string_view> parts;
  for (auto p : split(text, ' ')) {
    if (!p.empty()) parts.push_back(p);
  }
  if (parts.size() != 3 && parts.size() != 4) {
    return fail(
        bad("a rule is \"USER RESOURCES/ID RIGHTS [ZONE]\", e.g. "
            "\"@100 VM+IMAGE/* USE+MANAGE #0\""));
  }
  FAB_ASSIGN_OR_RETURN(uint64_t user, parse_id(parts[0], false, "user"));
  auto slash = parts[1].find('/');
  if (slash == std::string_view::npos) return fail(bad("resources must be TYPE[+TYPE...]/ID"));
  uint64_t types = 0;
  for (auto name : split(parts[1].substr(0, slash), '+')) {
    auto type = object_type_from_acl_name(name);
    if (!type) return fail(bad("unknown resource type \"" + std::string(name) + "\""));
    types |= static_cast<uint64_t>(*type);
  }
  FAB_ASSIGN_OR_RETURN(uint64_t rid, parse_id(parts[1].substr(slash + 1), true, "resource id"));
  uint64_t rights = 0;
  for (auto name : split(parts[2], '+')) {
    auto it = std::find(std::begin(kRightNames), std::end(kRightNames), name);
    if (it == std::end(kRightNames)) {
      return fail(bad("unknown right \"" + std::string(name) + "\" (USE, MANAGE, ADMIN, CREATE)"));
    }
    rights |= uint64_t{1} << (it - std::begin(kRightNames));
  }
  uint64_t zone = kAclIndividual | kLocalZone;
  if (parts.size() == 4) {
    FAB_ASSIGN_OR_RETURN(zone, parse_id(parts[3], false, "zone"));
  }
  return from_numbers(user, types | rid, rights, zone);
}

std::string AclRule::to_string() const {
  std::string out = print_id(user) + " ";
  bool first = true;
  for (const auto& t : all_object_types()) {
    if (resource & static_cast<uint64_t>(t.type)) {
      if (!first) out += "+";
      out += t.acl_name;
      first = false;
    }
  }
  out += "/" + print_id(resource & ~kAclTypeMask) + " ";
  first = true;
  for (size_t i = 0; i < std::size(kRightNames); ++i) {
    if (rights & (uint64_t{1} << i)) {
      if (!first) out += "+";
      out += kRightNames[i];
      first = false;
    }
  }
  return out + " " + print_id(zone);
}

Json AclRule::to_json() const {
  return Json{{"id", id},
              {"rule", to_string()},
              {"user", acl_hex(user)},
              {"resource", acl_hex(resource)},
              {"rights", acl_hex(rights)},
              {"zone", acl_hex(zone)},
              {"owners", owners}};
}

bool AclRule::grants(const Subject& subject, const ObjectRef& object, Right right) const {
  if ((rights & static_cast<uint64_t>(right)) == 0) return false;
  if ((resource & static_cast<uint64_t>(object.type)) == 0) return false;
  if ((zone & kAclFlagMask) == kAclIndividual &&
      static_cast<int64_t>(zone & kAclIdMask) != kLocalZone) {
    return false;
  }
  auto user_id = static_cast<int64_t>(user & kAclIdMask);
  switch (user & kAclFlagMask) {
    case kAclAll:
      break;
    case kAclIndividual:
      if (user_id != subject.uid) return false;
      break;
    case kAclGroup:
      if (std::find(subject.groups.begin(), subject.groups.end(), user_id) ==
          subject.groups.end()) {
        return false;
      }
      break;
    default:
      return false;
  }
  auto rid = static_cast<int64_t>(resource & kAclIdMask);
  switch (resource & kAclFlagMask) {
    case kAclAll:
      return true;
    case kAclIndividual:
      return object.id >= 0 && rid == object.id;
    case kAclGroup:
      return rid == object.gid;
    case kAclCluster:
      return std::find(object.clusters.begin(), object.clusters.end(), rid) !=
             object.clusters.end();
    default:
      return false;
  }
}

}  // namespace fabrica::auth
