#include "api/api.h"

namespace fabrica::api {
namespace {

Result<network::AddressRange> read_range(JsonObjectReader& r) {
  network::AddressRange range;
  FAB_ASSIGN_OR_RETURN(auto type, r.optional_string("type"));
  FAB_ASSIGN_OR_RETURN(auto ip, r.optional_string("ip"));
  FAB_ASSIGN_OR_RETURN(auto ip6, r.optional_string("ip6"));
  FAB_ASSIGN_OR_RETURN(auto mac, r.optional_string("mac"));
  FAB_ASSIGN_OR_RETURN(range.size, r.required_int("size"));
  FAB_TRY(r.finish());
  range.type = type.value_or(ip6 && !ip ? "IP6" : (!ip && !ip6 ? "ETHER" : "IP4"));
  if (ip && ip6 && !type) range.type = "IP4_6";
  range.ip = ip.value_or("");
  range.ip6 = ip6.value_or("");
  range.mac = mac.value_or("");
  return range;
}

Result<std::vector<std::string>> read_strings(const std::optional<Json>& array,
                                              const std::string& field) {
  std::vector<std::string> out;
  if (!array) return out;
  for (const Json& v : *array) {
    if (!v.is_string()) return fail(ErrorCode::kInvalidArgument, "must be strings", field);
    out.push_back(v.get<std::string>());
  }
  return out;
}

Result<network::NewVnet> read_vnet(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  network::NewVnet v;
  FAB_ASSIGN_OR_RETURN(v.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(auto mode, body.optional_string("mode"));
  FAB_ASSIGN_OR_RETURN(auto bridge, body.optional_string("bridge"));
  FAB_ASSIGN_OR_RETURN(auto phydev, body.optional_string("phydev"));
  FAB_ASSIGN_OR_RETURN(auto vlan, body.optional_int("vlan_id"));
  FAB_ASSIGN_OR_RETURN(auto mtu, body.optional_int("mtu"));
  FAB_ASSIGN_OR_RETURN(auto clusters, body.optional_array("clusters"));
  FAB_ASSIGN_OR_RETURN(auto prefix, body.optional_int("prefix_length"));
  FAB_ASSIGN_OR_RETURN(auto prefix6, body.optional_int("prefix6_length"));
  FAB_ASSIGN_OR_RETURN(auto gateway, body.optional_string("gateway"));
  FAB_ASSIGN_OR_RETURN(auto gateway6, body.optional_string("gateway6"));
  FAB_ASSIGN_OR_RETURN(auto dns, body.optional_array("dns"));
  FAB_ASSIGN_OR_RETURN(auto ranges, body.optional_array("ranges"));
  FAB_TRY(body.finish());
  if (mode) {
    if (*mode == "bridge") {
      v.mode = network::VnetMode::kBridge;
    } else if (*mode == "vlan") {
      v.mode = network::VnetMode::kVlan;
    } else if (*mode == "sriov") {
      v.mode = network::VnetMode::kSriov;
    } else {
      return fail(ErrorCode::kInvalidArgument, "must be bridge, vlan or sriov", "mode");
    }
  }
  v.bridge = bridge.value_or("");
  v.phydev = phydev.value_or("");
  auto small = [](std::optional<int64_t> n, int fallback, const char* field) -> Result<int> {
    if (!n) return fallback;
    if (*n < -1 || *n > 65535) return fail(ErrorCode::kInvalidArgument, "out of range", field);
    return static_cast<int>(*n);
  };
  FAB_ASSIGN_OR_RETURN(v.vlan_id, small(vlan, -1, "vlan_id"));
  FAB_ASSIGN_OR_RETURN(v.mtu, small(mtu, 0, "mtu"));
  FAB_ASSIGN_OR_RETURN(v.prefix_length, small(prefix, 24, "prefix_length"));
  FAB_ASSIGN_OR_RETURN(v.prefix6_length, small(prefix6, 64, "prefix6_length"));
  v.gateway = gateway.value_or("");
  v.gateway6 = gateway6.value_or("");
  FAB_ASSIGN_OR_RETURN(v.dns, read_strings(dns, "dns"));
  if (clusters) {
    v.clusters.clear();
    for (const Json& c : *clusters) {
      if (!c.is_number_integer() || c.get<int64_t>() < 0) {
        return fail(ErrorCode::kInvalidArgument, "must be cluster ids", "clusters");
      }
      v.clusters.push_back(c.get<int64_t>());
    }
  }
  if (ranges) {
    for (size_t i = 0; i < ranges->size(); ++i) {
      FAB_ASSIGN_OR_RETURN(
          auto r, JsonObjectReader::wrap((*ranges)[i], "ranges[" + std::to_string(i) + "]."));
      FAB_ASSIGN_OR_RETURN(auto range, read_range(r));
      v.ranges.push_back(std::move(range));
    }
  }
  return v;
}

Result<std::string> read_ip(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  FAB_ASSIGN_OR_RETURN(std::string ip, body.required_string("ip"));
  FAB_TRY(body.finish());
  return ip;
}

}  // namespace

void add_network_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/vnets", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({}));
               FAB_ASSIGN_OR_RETURN(auto all, s.network.list(ctx.who()));
               Json items = Json::array();
               for (const auto& v : all) items.push_back(v.to_api_json());
               return json_response(200, Json{{"items", items}, {"next_cursor", nullptr}});
             });
  router.add("POST", "/api/v1/vnets", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_vnet(ctx));
               FAB_ASSIGN_OR_RETURN(auto v, s.network.create(ctx.who(), request));
               return json_response(201, v.to_api_json());
             });
  router.add("GET", "/api/v1/vnets/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto v, s.network.get(ctx.who(), id));
               return json_response(200, v.to_api_json());
             });
  router.add("DELETE", "/api/v1/vnets/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.network.remove(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add("POST", "/api/v1/vnets/{id}/ranges", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(auto range, read_range(body));
               FAB_ASSIGN_OR_RETURN(auto v, s.network.add_range(ctx.who(), id, range));
               return json_response(200, v.to_api_json());
             });
  router.add("DELETE", "/api/v1/vnets/{id}/ranges/{ar_id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t ar, ctx.id_param(1, "ar_id"));
               if (ar > 1 << 20) return fail(ErrorCode::kNotFound, "address range not found");
               FAB_ASSIGN_OR_RETURN(auto v,
                                    s.network.remove_range(ctx.who(), id, static_cast<int>(ar)));
               return json_response(200, v.to_api_json());
             });
  for (bool hold : {true, false}) {
    router.add("POST", hold ? "/api/v1/vnets/{id}/hold" : "/api/v1/vnets/{id}/release",
               AuthMode::kBearer, [&s, hold](const Context& ctx) -> Result<HttpResponse> {
                 FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
                 FAB_ASSIGN_OR_RETURN(std::string ip, read_ip(ctx));
                 FAB_ASSIGN_OR_RETURN(auto v, hold ? s.network.hold(ctx.who(), id, ip)
                                                   : s.network.release(ctx.who(), id, ip));
                 return json_response(200, v.to_api_json());
               });
  }
}

}  // namespace fabrica::api
