#include "network/network.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <set>
#include <type_traits>

#include "auth/restricted.h"
#include "auth/vdc.h"

namespace fabrica::network {
namespace {

constexpr int64_t kMaxRange = int64_t{1} << 20;
constexpr size_t kMaxRanges = 64;

std::string vnet_noun(int64_t id) { return "vnet " + std::to_string(id); }

auth::ObjectRef vnet_ref(const Vnet& v) {
  auto ref = auth::object_ref(ObjectType::kNet, v.header);
  ref.clusters = v.clusters;
  return ref;
}

using Bytes16 = std::array<uint8_t, 16>;

std::optional<Bytes16> parse_ipv6(const std::string& text) {
  Bytes16 out{};
  if (inet_pton(AF_INET6, text.c_str(), out.data()) != 1) return std::nullopt;
  return out;
}

std::string format_ipv6(const Bytes16& b) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, b.data(), buf, sizeof buf);
  return buf;
}

Bytes16 add_ipv6(Bytes16 b, int64_t n) {
  uint64_t carry = static_cast<uint64_t>(n);
  for (int i = 15; i >= 0 && carry > 0; --i) {
    uint64_t sum = b[i] + (carry & 0xff);
    b[i] = static_cast<uint8_t>(sum);
    carry = (carry >> 8) + (sum >> 8);
  }
  return b;
}

std::optional<uint64_t> parse_mac(const std::string& text) {
  unsigned v[6];
  char tail;
  if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4],
                  &v[5], &tail) != 6) {
    return std::nullopt;
  }
  uint64_t mac = 0;
  for (unsigned x : v) mac = (mac << 8) | x;
  if (mac & (uint64_t{1} << 40)) return std::nullopt;  // Multicast bit.
  return mac;
}

std::string format_mac(uint64_t mac) {
  char buf[18];
  std::snprintf(
      buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", static_cast<unsigned>((mac >> 40) & 0xff),
      static_cast<unsigned>((mac >> 32) & 0xff), static_cast<unsigned>((mac >> 24) & 0xff),
      static_cast<unsigned>((mac >> 16) & 0xff), static_cast<unsigned>((mac >> 8) & 0xff),
      static_cast<unsigned>(mac & 0xff));
  return buf;
}

bool has_ip4(const AddressRange& r) { return r.type == "IP4" || r.type == "IP4_6"; }
bool has_ip6(const AddressRange& r) { return r.type == "IP6" || r.type == "IP4_6"; }

// The first MAC of a range: given, else 02:00 + the first IPv4 address, else 02:01 + the vnet
// and range ids.
uint64_t first_mac(const AddressRange& r, int64_t vnet_id) {
  if (!r.mac.empty()) return *parse_mac(r.mac);
  if (has_ip4(r)) return (uint64_t{0x0200} << 32) | *parse_ipv4(r.ip);
  return (uint64_t{0x0201} << 32) | (static_cast<uint64_t>(vnet_id & 0xffff) << 16) |
         (static_cast<uint64_t>(r.ar_id & 0xff) << 8);
}

Result<void> validate_range(AddressRange& r) {
  if (r.type != "IP4" && r.type != "IP6" && r.type != "IP4_6" && r.type != "ETHER") {
    return fail(ErrorCode::kInvalidArgument, "must be IP4, IP6, IP4_6 or ETHER", "type");
  }
  if (r.size < 1 || r.size > kMaxRange) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 to 1048576 addresses", "size");
  }
  if (has_ip4(r)) {
    auto ip = parse_ipv4(r.ip);
    if (!ip) return fail(ErrorCode::kInvalidArgument, "must be an IPv4 address", "ip");
    if (static_cast<uint64_t>(*ip) + static_cast<uint64_t>(r.size) > (uint64_t{1} << 32)) {
      return fail(ErrorCode::kInvalidArgument, "runs past 255.255.255.255", "size");
    }
  } else if (!r.ip.empty()) {
    return fail(ErrorCode::kInvalidArgument, "needs type IP4 or IP4_6", "ip");
  }
  if (has_ip6(r)) {
    if (!parse_ipv6(r.ip6))
      return fail(ErrorCode::kInvalidArgument, "must be an IPv6 address", "ip6");
    r.ip6 = format_ipv6(*parse_ipv6(r.ip6));
  } else if (!r.ip6.empty()) {
    return fail(ErrorCode::kInvalidArgument, "needs type IP6 or IP4_6", "ip6");
  }
  if (!r.mac.empty()) {
    auto mac = parse_mac(r.mac);
    if (!mac) return fail(ErrorCode::kInvalidArgument, "must be a unicast MAC address", "mac");
    if (*mac + static_cast<uint64_t>(r.size) > (uint64_t{1} << 48)) {
      return fail(ErrorCode::kInvalidArgument, "runs past ff:ff:ff:ff:ff:ff", "size");
    }
    r.mac = format_mac(*mac);
  }
  return {};
}

bool meets(uint64_t a, int64_t as, uint64_t b, int64_t bs) {
  return a < b + static_cast<uint64_t>(bs) && b < a + static_cast<uint64_t>(as);
}

// [first, first + size) of each kind never meet between two ranges.
Result<void> check_overlap(const Vnet& v, const AddressRange& r) {
  for (const auto& other : v.ranges) {
    if (has_ip4(r) && has_ip4(other) &&
        meets(*parse_ipv4(r.ip), r.size, *parse_ipv4(other.ip), other.size)) {
      return fail(ErrorCode::kInvalidArgument,
                  "overlaps address range " + std::to_string(other.ar_id), "ip");
    }
    if (meets(first_mac(r, v.header.id), r.size, first_mac(other, v.header.id), other.size)) {
      return fail(ErrorCode::kInvalidArgument,
                  "its MAC addresses overlap address range " + std::to_string(other.ar_id), "mac");
    }
  }
  return {};
}

Result<Vnet> vnet_from_record(const store::Record& r);

// Two vnets on one L2 segment: the same bridge, or the same parent interface and VLAN.
bool same_segment(const Vnet& a, const Vnet& b) {
  if (!a.bridge.empty() && a.bridge == b.bridge) return true;
  bool a_tagged = a.mode != VnetMode::kBridge, b_tagged = b.mode != VnetMode::kBridge;
  return a_tagged && b_tagged && !a.phydev.empty() && a.phydev == b.phydev &&
         a.vlan_id == b.vlan_id;
}

std::string segment_text(const Vnet& v) {
  if (v.mode == VnetMode::kBridge) return "bridge " + v.bridge;
  return v.phydev + (v.vlan_id >= 0 ? " VLAN " + std::to_string(v.vlan_id) : "");
}

// Range `r` of vnet `v` against every other vnet: its IPv4 addresses never overlap a range of
// a vnet on the same L2 segment (two leases of one address on one wire), and its MACs never
// overlap any vnet's. A range given no MAC whose IP-derived MACs are taken elsewhere (the
// same addresses on another segment) gets a free block of 02:02:xx:xx:xx:xx, kept in r.mac.
Result<void> check_other_vnets(store::Transaction& tx, const Vnet& v, AddressRange& r) {
  struct Block {
    uint64_t first;
    int64_t size;
    std::string owner;
  };
  std::vector<Block> macs;
  for (const auto& own : v.ranges) macs.push_back({first_mac(own, v.header.id), own.size, ""});
  FAB_TRY(store::for_each(tx, kVnetType, [&](const store::Record& rec) -> Result<void> {
    if (rec.id == v.header.id) return {};
    FAB_ASSIGN_OR_RETURN(Vnet o, vnet_from_record(rec));
    std::string owner = "vnet " + o.header.name + " (" + std::to_string(o.header.id) + ")";
    bool same = same_segment(v, o);
    for (const auto& other : o.ranges) {
      if (same && has_ip4(r) && has_ip4(other) &&
          meets(*parse_ipv4(r.ip), r.size, *parse_ipv4(other.ip), other.size)) {
        return fail(ErrorCode::kInvalidArgument,
                    "overlaps address range " + std::to_string(other.ar_id) + " of " + owner +
                        ", on the same L2 segment (" + segment_text(o) + ")",
                    "ip");
      }
      macs.push_back({first_mac(other, o.header.id), other.size, owner});
    }
    return {};
  }));
  auto taken = [&](uint64_t first) -> const Block* {
    for (const auto& b : macs) {
      if (meets(first, r.size, b.first, b.size)) return &b;
    }
    return nullptr;
  };
  const Block* clash = taken(first_mac(r, v.header.id));
  if (!clash) return {};
  if (!r.mac.empty()) {
    return fail(ErrorCode::kInvalidArgument,
                "its MAC addresses overlap those of " +
                    (clash->owner.empty() ? std::string("another range") : clash->owner),
                "mac");
  }
  for (uint64_t block = 0; block < 4096; ++block) {
    uint64_t first = (uint64_t{0x0202} << 32) | (block << 20);
    if (!taken(first)) {
      r.mac = format_mac(first);
      return {};
    }
  }
  return fail(ErrorCode::kResourceExhausted, "no free block of MAC addresses is left", "mac");
}

AddressRange range_from_json(const Json& j) {
  return AddressRange{.ar_id = j.value("ar_id", 0),
                      .type = j.value("type", "IP4"),
                      .ip = j.value("ip", ""),
                      .ip6 = j.value("ip6", ""),
                      .mac = j.value("mac", ""),
                      .size = j.value("size", int64_t{0})};
}

constexpr std::array<std::string_view, 3> kModes = {"bridge", "vlan", "sriov"};

// The stored body: the API's form, except leases as compact [ar_id, index, vm_id, nic_id]
// rows (their addresses follow from the ranges), which keeps a lease's rewrite of the record
// cheap.
store::Record vnet_record(const Vnet& v) {
  Json body = Json::object();
  v.header.to_json(body);
  Json api = v.to_api_json(false);
  api.update(body);
  Json rows = Json::array();
  for (const auto& l : v.leases) rows.push_back(Json::array({l.ar_id, l.index, l.vm_id, l.nic_id}));
  api["leases"] = std::move(rows);
  return store::Record{.type = std::string(kVnetType),
                       .id = v.header.id,
                       .name = v.header.name,
                       .uid = v.header.uid,
                       .gid = v.header.gid,
                       .state = v.header.state,
                       .key = v.header.name,
                       .body = dump_json(api),
                       .version = v.version};
}

Result<Vnet> vnet_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Vnet v;
  FAB_ASSIGN_OR_RETURN(v.header, ObjectHeader::from_json(body));
  std::string mode = body.value("mode", "");
  auto m = std::find(kModes.begin(), kModes.end(), mode);
  if (m == kModes.end()) {
    return fail(ErrorCode::kInternal, "stored " + vnet_noun(r.id) + " is malformed");
  }
  v.mode = static_cast<VnetMode>(m - kModes.begin());
  v.bridge = body.value("bridge", "");
  v.phydev = body.value("phydev", "");
  v.vlan_id = body.value("vlan_id", -1);
  v.mtu = body.value("mtu", 0);
  v.clusters = body.value("clusters", std::vector<int64_t>{});
  v.prefix_length = body.value("prefix_length", 24);
  v.prefix6_length = body.value("prefix6_length", 64);
  v.gateway = body.value("gateway", "");
  v.gateway6 = body.value("gateway6", "");
  v.dns = body.value("dns", std::vector<std::string>{});
  for (const Json& r : body.value("ranges", Json::array())) v.ranges.push_back(range_from_json(r));
  for (const Json& l : body.value("leases", Json::array())) {
    if (!l.is_array() || l.size() != 4) {
      return fail(ErrorCode::kInternal, "stored " + vnet_noun(r.id) + " has a malformed lease");
    }
    v.leases.push_back(Lease{.ar_id = l[0].get<int>(),
                             .index = l[1].get<int64_t>(),
                             .vm_id = l[2].get<int64_t>(),
                             .nic_id = l[3].get<int>()});
  }
  v.next_ar_id = body.value("next_ar_id", 0);
  v.version = r.version;
  return v;
}

bool valid_ifname(const std::string& name) {
  return !name.empty() && name.size() <= 15 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

// The address at `index` of `r` on vnet `v`, as a lease.
NicLease lease_at(const Vnet& v, const AddressRange& r, int64_t index) {
  NicLease l{.vnet_id = v.header.id,
             .vnet_name = v.header.name,
             .ar_id = r.ar_id,
             .mac = format_mac(first_mac(r, v.header.id) + static_cast<uint64_t>(index)),
             .prefix_length = v.prefix_length,
             .prefix6_length = v.prefix6_length,
             .gateway = v.gateway,
             .gateway6 = v.gateway6,
             .dns = v.dns,
             .mtu = v.mtu,
             .mode = v.mode,
             .bridge = v.bridge,
             .phydev = v.phydev,
             .vlan_id = v.vlan_id,
             .clusters = v.clusters};
  if (has_ip4(r)) l.ip = format_ipv4(*parse_ipv4(r.ip) + static_cast<uint32_t>(index));
  if (has_ip6(r)) l.ip6 = format_ipv6(add_ipv6(*parse_ipv6(r.ip6), index));
  return l;
}

// The range and index of IPv4 address `ip` in `v`.
std::optional<std::pair<const AddressRange*, int64_t>> locate(const Vnet& v,
                                                              const std::string& ip) {
  auto address = parse_ipv4(ip);
  if (!address) return std::nullopt;
  for (const auto& r : v.ranges) {
    if (!has_ip4(r)) continue;
    uint32_t first = *parse_ipv4(r.ip);
    if (*address >= first && *address - first < r.size) {
      return std::pair{&r, static_cast<int64_t>(*address - first)};
    }
  }
  return std::nullopt;
}

bool taken(const Vnet& v, int ar_id, int64_t index) {
  return std::any_of(v.leases.begin(), v.leases.end(),
                     [&](const Lease& l) { return l.ar_id == ar_id && l.index == index; });
}

}  // namespace

std::string_view vnet_mode_name(VnetMode mode) { return kModes[static_cast<size_t>(mode)]; }

std::optional<uint32_t> parse_ipv4(std::string_view text) {
  in_addr a{};
  std::string s(text);
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

std::string format_ipv4(uint32_t address) {
  in_addr a{.s_addr = htonl(address)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

Json AddressRange::to_json() const {
  Json j{{"ar_id", ar_id}, {"type", type}, {"size", size}};
  if (!ip.empty()) j["ip"] = ip;
  if (!ip6.empty()) j["ip6"] = ip6;
  if (!mac.empty()) j["mac"] = mac;
  return j;
}

int64_t Vnet::size() const {
  int64_t n = 0;
  for (const auto& r : ranges) n += r.size;
  return n;
}

Json Vnet::to_api_json(bool with_leases) const {
  Json j = Json::object();
  header.to_json(j);
  j["mode"] = vnet_mode_name(mode);
  j["bridge"] = bridge;
  j["phydev"] = phydev;
  j["vlan_id"] = vlan_id;
  j["mtu"] = mtu;
  j["clusters"] = clusters;
  j["prefix_length"] = prefix_length;
  j["prefix6_length"] = prefix6_length;
  j["gateway"] = gateway;
  j["gateway6"] = gateway6;
  j["dns"] = dns;
  j["ranges"] = Json::array();
  for (const auto& r : ranges) {
    Json range = r.to_json();
    int64_t used = std::count_if(leases.begin(), leases.end(),
                                 [&](const Lease& l) { return l.ar_id == r.ar_id; });
    range["used"] = used;
    j["ranges"].push_back(std::move(range));
  }
  j["leases"] = Json::array();
  for (const auto& l : with_leases ? leases : std::vector<Lease>{}) {
    Json lease{{"ar_id", l.ar_id}, {"index", l.index}, {"vm_id", l.vm_id}, {"nic_id", l.nic_id}};
    for (const auto& r : ranges) {
      if (r.ar_id != l.ar_id) continue;
      NicLease at = lease_at(*this, r, l.index);
      if (!at.ip.empty()) lease["ip"] = at.ip;
      if (!at.ip6.empty()) lease["ip6"] = at.ip6;
      lease["mac"] = at.mac;
    }
    j["leases"].push_back(std::move(lease));
  }
  j["size"] = size();
  j["used"] = leases.size();
  j["next_ar_id"] = next_ar_id;
  return j;
}

Json NicLease::to_json() const {
  return Json{{"vnet_id", vnet_id},
              {"vnet_name", vnet_name},
              {"nic_id", nic_id},
              {"ar_id", ar_id},
              {"ip", ip},
              {"ip6", ip6},
              {"mac", mac},
              {"prefix_length", prefix_length},
              {"prefix6_length", prefix6_length},
              {"gateway", gateway},
              {"gateway6", gateway6},
              {"dns", dns},
              {"mtu", mtu},
              {"mode", vnet_mode_name(mode)},
              {"bridge", bridge},
              {"phydev", phydev},
              {"vlan_id", vlan_id}};
}

Json NicLease::context() const {
  std::string eth = "ETH" + std::to_string(nic_id) + "_";
  Json c{{eth + "MAC", mac}};
  if (!ip.empty()) {
    uint32_t mask = prefix_length == 0 ? 0 : ~uint32_t{0} << (32 - prefix_length);
    c[eth + "IP"] = ip;
    c[eth + "MASK"] = format_ipv4(mask);
    c[eth + "PREFIX"] = std::to_string(prefix_length);
    c[eth + "NETWORK"] = format_ipv4(*parse_ipv4(ip) & mask);
  }
  if (!gateway.empty()) c[eth + "GATEWAY"] = gateway;
  if (!ip6.empty()) {
    c[eth + "IP6"] = ip6;
    c[eth + "IP6_PREFIX_LENGTH"] = std::to_string(prefix6_length);
  }
  if (!gateway6.empty()) c[eth + "GATEWAY6"] = gateway6;
  if (!dns.empty()) {
    std::string all;
    for (const auto& d : dns) all += (all.empty() ? "" : " ") + d;
    c[eth + "DNS"] = all;
  }
  if (mtu > 0) c[eth + "MTU"] = std::to_string(mtu);
  return c;
}

Result<Vnet> Network::load(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                           Right right) {
  auto r = tx.get(kVnetType, id);
  if (!r) return fail(r.error().code(), vnet_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(Vnet v, vnet_from_record(*r));
  FAB_TRY(authorizer_.require(caller, vnet_ref(v), right, vnet_noun(id)));
  return v;
}

template <typename Fn>
Result<Vnet> Network::mutate(const auth::Caller& caller, int64_t id, Right right, Fn&& change) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Vnet>([&](store::Transaction& tx) -> Result<Vnet> {
    FAB_ASSIGN_OR_RETURN(Vnet v, load(tx, caller, id, right));
    if constexpr (std::is_invocable_v<Fn, Vnet&, store::Transaction&>) {
      FAB_TRY(change(v, tx));
    } else {
      FAB_TRY(change(v));
    }
    v.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(v.version, tx.update(vnet_record(v)));
    return v;
  });
}

Result<Vnet> Network::create(const auth::Caller& caller, const NewVnet& request) {
  FAB_TRY(validate_name(request.name));
  FAB_TRY(auth::check_restricted(caller, "vnet",
                                 Json{{"bridge", request.bridge}, {"phydev", request.phydev}}));
  FAB_TRY(authorizer_.require_superuser(caller, "create virtual networks"));
  if (request.mode == VnetMode::kBridge && !valid_ifname(request.bridge)) {
    return fail(ErrorCode::kInvalidArgument, "must name an existing bridge (at most 15 characters)",
                "bridge");
  }
  if (!request.bridge.empty() && !valid_ifname(request.bridge)) {
    return fail(ErrorCode::kInvalidArgument, "must be an interface name of at most 15 characters",
                "bridge");
  }
  if (request.mode != VnetMode::kBridge && !valid_ifname(request.phydev)) {
    return fail(ErrorCode::kInvalidArgument, "must name the parent interface", "phydev");
  }
  if (request.mode == VnetMode::kVlan && (request.vlan_id < 1 || request.vlan_id > 4094)) {
    return fail(ErrorCode::kInvalidArgument, "must be 1-4094", "vlan_id");
  }
  if (request.vlan_id != -1 && (request.vlan_id < 1 || request.vlan_id > 4094)) {
    return fail(ErrorCode::kInvalidArgument, "must be 1-4094", "vlan_id");
  }
  if (request.mtu != 0 && (request.mtu < 68 || request.mtu > 65535)) {
    return fail(ErrorCode::kInvalidArgument, "must be 68-65535", "mtu");
  }
  if (request.prefix_length < 0 || request.prefix_length > 32) {
    return fail(ErrorCode::kInvalidArgument, "must be 0-32", "prefix_length");
  }
  if (request.prefix6_length < 0 || request.prefix6_length > 128) {
    return fail(ErrorCode::kInvalidArgument, "must be 0-128", "prefix6_length");
  }
  if (!request.gateway.empty() && !parse_ipv4(request.gateway)) {
    return fail(ErrorCode::kInvalidArgument, "must be an IPv4 address", "gateway");
  }
  if (!request.gateway6.empty() && !parse_ipv6(request.gateway6)) {
    return fail(ErrorCode::kInvalidArgument, "must be an IPv6 address", "gateway6");
  }
  for (const auto& d : request.dns) {
    if (!parse_ipv4(d) && !parse_ipv6(d)) {
      return fail(ErrorCode::kInvalidArgument, "must be IP addresses", "dns");
    }
  }
  if (request.clusters.empty()) {
    return fail(ErrorCode::kInvalidArgument, "must name at least one cluster", "clusters");
  }
  if (request.ranges.size() > kMaxRanges) {
    return fail(ErrorCode::kInvalidArgument, "at most 64 address ranges", "ranges");
  }
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Vnet>([&](store::Transaction& tx) -> Result<Vnet> {
    for (int64_t cluster : request.clusters) {
      if (!tx.get("cluster", cluster)) {
        return fail(ErrorCode::kNotFound, "cluster " + std::to_string(cluster) + " not found",
                    "clusters");
      }
    }
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kVnetType));
    Vnet v{.header = ObjectHeader::create(id, request.name, 0, 0, Permissions(0640), 0, now),
           .mode = request.mode,
           .bridge = request.bridge,
           .phydev = request.phydev,
           .vlan_id = request.vlan_id,
           .mtu = request.mtu,
           .clusters = request.clusters,
           .prefix_length = request.prefix_length,
           .prefix6_length = request.prefix6_length,
           .gateway = request.gateway,
           .gateway6 = request.gateway6,
           .dns = request.dns,
           .version = 1};
    if (v.mode == VnetMode::kVlan && v.bridge.empty()) v.bridge = "fvb" + std::to_string(id);
    for (AddressRange r : request.ranges) {
      r.ar_id = v.next_ar_id++;
      FAB_TRY(validate_range(r).map_error(
          [&](Error e) { return Error(e.code(), e.message(), "ranges." + e.field()); }));
      FAB_TRY(check_overlap(v, r).map_error(
          [&](Error e) { return Error(e.code(), e.message(), "ranges." + e.field()); }));
      FAB_TRY(check_other_vnets(tx, v, r).map_error(
          [&](Error e) { return Error(e.code(), e.message(), "ranges." + e.field()); }));
      v.ranges.push_back(r);
    }
    FAB_TRY(store::insert_named(tx, vnet_record(v)));
    return v;
  });
}

Result<Vnet> Network::get(const auth::Caller& caller, int64_t id) {
  return store_.read_value<Vnet>(
      [&](store::Transaction& tx) { return load(tx, caller, id, Right::kUse); });
}

Result<std::vector<Vnet>> Network::list(const auth::Caller& caller) {
  using List = std::vector<Vnet>;
  return store_.read_value<List>([&](store::Transaction& tx) -> Result<List> {
    List out;
    FAB_TRY(store::for_each(tx, kVnetType, [&](const store::Record& r) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(Vnet v, vnet_from_record(r));
      if (authorizer_.allows(caller, vnet_ref(v), Right::kUse)) out.push_back(std::move(v));
      return {};
    }));
    return out;
  });
}

Result<void> Network::remove(const auth::Caller& caller, int64_t id) {
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Vnet v, load(tx, caller, id, Right::kAdmin));
    FAB_TRY(authorizer_.require_superuser(caller, "delete virtual networks"));
    auto vms = std::count_if(v.leases.begin(), v.leases.end(),
                             [](const Lease& l) { return l.vm_id >= 0; });
    if (vms > 0) {
      return fail(ErrorCode::kFailedPrecondition,
                  vnet_noun(id) + " has " + std::to_string(vms) +
                      " lease(s) in use by VMs; terminate them first",
                  "leases");
    }
    FAB_TRY(auth::vdc_forget_resource(tx, "vnet", id));
    return tx.remove(kVnetType, id);
  });
}

Result<Vnet> Network::add_range(const auth::Caller& caller, int64_t id, AddressRange range) {
  return mutate(caller, id, Right::kAdmin, [&](Vnet& v, store::Transaction& tx) -> Result<void> {
    if (v.ranges.size() >= kMaxRanges) {
      return fail(ErrorCode::kFailedPrecondition, "a vnet holds at most 64 address ranges",
                  "ranges");
    }
    range.ar_id = v.next_ar_id++;
    FAB_TRY(validate_range(range));
    FAB_TRY(check_overlap(v, range));
    FAB_TRY(check_other_vnets(tx, v, range));
    v.ranges.push_back(range);
    return {};
  });
}

Result<Vnet> Network::remove_range(const auth::Caller& caller, int64_t id, int ar_id) {
  return mutate(caller, id, Right::kAdmin, [&](Vnet& v) -> Result<void> {
    auto r = std::find_if(v.ranges.begin(), v.ranges.end(),
                          [&](const AddressRange& x) { return x.ar_id == ar_id; });
    if (r == v.ranges.end()) {
      return fail(ErrorCode::kNotFound, "address range " + std::to_string(ar_id) + " not found",
                  "ar_id");
    }
    if (std::any_of(v.leases.begin(), v.leases.end(),
                    [&](const Lease& l) { return l.ar_id == ar_id; })) {
      return fail(ErrorCode::kFailedPrecondition,
                  "address range " + std::to_string(ar_id) +
                      " has leases; release them or terminate their VMs first",
                  "ar_id");
    }
    v.ranges.erase(r);
    return {};
  });
}

Result<Vnet> Network::hold(const auth::Caller& caller, int64_t id, const std::string& ip) {
  return mutate(caller, id, Right::kManage, [&](Vnet& v) -> Result<void> {
    auto at = locate(v, ip);
    if (!at) return fail(ErrorCode::kInvalidArgument, "is in no address range of the vnet", "ip");
    if (taken(v, at->first->ar_id, at->second)) {
      return fail(ErrorCode::kFailedPrecondition, ip + " is already leased or held", "ip");
    }
    v.leases.push_back(Lease{.ar_id = at->first->ar_id, .index = at->second, .vm_id = -1});
    return {};
  });
}

Result<Vnet> Network::release(const auth::Caller& caller, int64_t id, const std::string& ip) {
  return mutate(caller, id, Right::kManage, [&](Vnet& v) -> Result<void> {
    auto at = locate(v, ip);
    if (!at) return fail(ErrorCode::kInvalidArgument, "is in no address range of the vnet", "ip");
    auto l = std::find_if(v.leases.begin(), v.leases.end(), [&](const Lease& x) {
      return x.ar_id == at->first->ar_id && x.index == at->second;
    });
    if (l == v.leases.end() || l->vm_id >= 0) {
      return fail(ErrorCode::kFailedPrecondition,
                  ip + (l == v.leases.end() ? " is not held" : " is a VM's lease"), "ip");
    }
    v.leases.erase(l);
    return {};
  });
}

Result<NicLease> Network::lease(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                                int64_t vm_id, int nic_id, const std::optional<std::string>& ip,
                                const std::string& field) {
  auto loaded = load(tx, caller, id, Right::kUse);
  if (!loaded) return fail(loaded.error().code(), loaded.error().message(), field);
  Vnet v = std::move(*loaded);
  const AddressRange* range = nullptr;
  int64_t index = -1;
  if (ip) {
    auto at = locate(v, *ip);
    if (!at) {
      return fail(ErrorCode::kInvalidArgument, *ip + " is in no address range of " + vnet_noun(id),
                  field);
    }
    if (taken(v, at->first->ar_id, at->second)) {
      return fail(ErrorCode::kFailedPrecondition, *ip + " is already leased or held", field);
    }
    range = at->first;
    index = at->second;
  } else {
    std::set<std::pair<int, int64_t>> used;
    for (const auto& l : v.leases) used.insert({l.ar_id, l.index});
    for (const auto& r : v.ranges) {
      for (int64_t i = 0; i < r.size && !range; ++i) {
        if (!used.contains({r.ar_id, i})) {
          range = &r;
          index = i;
        }
      }
      if (range) break;
    }
    if (!range) {
      return fail(
          ErrorCode::kFailedPrecondition,
          vnet_noun(id) + " has no free address (" + std::to_string(v.size()) + " leased or held)",
          field);
    }
  }
  NicLease out = lease_at(v, *range, index);
  out.nic_id = nic_id;
  v.leases.push_back(
      Lease{.ar_id = range->ar_id, .index = index, .vm_id = vm_id, .nic_id = nic_id});
  FAB_ASSIGN_OR_RETURN(v.version, tx.update(vnet_record(v)));
  return out;
}

Result<void> Network::release_vm(store::Transaction& tx, int64_t id, int64_t vm_id) {
  auto r = tx.get(kVnetType, id);
  if (!r) return {};
  FAB_ASSIGN_OR_RETURN(Vnet v, vnet_from_record(*r));
  auto gone = std::erase_if(v.leases, [&](const Lease& l) { return l.vm_id == vm_id; });
  if (gone == 0) return {};
  FAB_ASSIGN_OR_RETURN(v.version, tx.update(vnet_record(v)));
  return {};
}

}  // namespace fabrica::network
