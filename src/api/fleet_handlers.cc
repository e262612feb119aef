#include "api/api.h"

namespace fabrica::api {
namespace {

Json token_json(const fleet::JoinToken& t, const std::string& ca_pin) {
  std::string token = ca_pin.empty() ? t.secret : t.secret + "@sha256:" + ca_pin;
  return Json{{"id", t.id},
              {"join_token", token},
              {"expires_at", format_time(t.expires_at)},
              {"uses", t.uses}};
}

Result<std::optional<fleet::HostState>> state_filter(const Context& ctx) {
  auto text = ctx.query("state");
  if (!text) return std::nullopt;
  for (auto s : {fleet::HostState::kInit, fleet::HostState::kMonitored, fleet::HostState::kError,
                 fleet::HostState::kDisabled, fleet::HostState::kOffline}) {
    if (fleet::host_state_name(s) == *text) return s;
  }
  return fail(ErrorCode::kInvalidArgument, "must be INIT, MONITORED, ERROR, DISABLED or OFFLINE",
              "state");
}

void add_cluster_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/clusters", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({}));
               FAB_ASSIGN_OR_RETURN(auto clusters, s.fleet.list_clusters(ctx.who()));
               Json items = Json::array();
               for (const auto& c : clusters) items.push_back(c.to_api_json());
               return json_response(200, Json{{"items", items}, {"next_cursor", nullptr}});
             });
  router.add("POST", "/api/v1/clusters", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(std::string name, body.required_string("name"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(auto cluster, s.fleet.create_cluster(ctx.who(), name));
               return json_response(201, cluster.to_api_json());
             });
  router.add("GET", "/api/v1/clusters/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto cluster, s.fleet.get_cluster(ctx.who(), id));
               FAB_ASSIGN_OR_RETURN(auto hosts, s.fleet.list_hosts(ctx.who(), {.cluster_id = id}));
               Json out = cluster.to_api_json();
               out["hosts"] = Json::array();
               for (const auto& h : hosts) out["hosts"].push_back(h.header.id);
               return json_response(200, out);
             });
  router.add("DELETE", "/api/v1/clusters/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.fleet.delete_cluster(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add("POST", "/api/v1/clusters/{id}/hosts", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(int64_t host, body.required_int("host_id"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(auto moved, s.fleet.move_host(ctx.who(), host, id));
               return json_response(200, moved.to_summary_json());
             });
  router.add("DELETE", "/api/v1/clusters/{id}/hosts/{host_id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t host, ctx.id_param(1, "host_id"));
               FAB_ASSIGN_OR_RETURN(auto current, s.fleet.get_host(ctx.who(), host));
               if (current.cluster_id != id) {
                 return fail(ErrorCode::kNotFound, "host " + std::to_string(host) +
                                                       " is not in cluster " + std::to_string(id));
               }
               FAB_ASSIGN_OR_RETURN(auto moved,
                                    s.fleet.move_host(ctx.who(), host, fleet::kDefaultClusterId));
               return json_response(200, moved.to_summary_json());
             });
}

}  // namespace

void add_fleet_routes(Router& router, Services& s) {
  add_cluster_routes(router, s);
  router.add(
      "GET", "/api/v1/hosts", AuthMode::kBearer, [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_TRY(
            ctx.allow_query({"gpu_model", "free_gpus", "cluster_id", "state", "limit", "cursor"}));
        fleet::HostFilter filter;
        filter.gpu_model = ctx.query("gpu_model");
        FAB_ASSIGN_OR_RETURN(auto free, ctx.query_int("free_gpus", 0, 4096));
        if (free) filter.free_gpus = static_cast<int>(*free);
        FAB_ASSIGN_OR_RETURN(filter.cluster_id, ctx.query_int("cluster_id", 0, int64_t{1} << 53));
        FAB_ASSIGN_OR_RETURN(filter.state, state_filter(ctx));
        // Without `limit` the whole fleet in one answer (fleet views and the CLI read it whole,
        // from the in-memory index); with it, pages as every other list.
        FAB_ASSIGN_OR_RETURN(auto limit, ctx.query_int("limit", 1, 100000));
        if (limit) filter.limit = static_cast<size_t>(*limit);
        FAB_ASSIGN_OR_RETURN(auto cursor, ctx.query_int("cursor", 0, int64_t{1} << 53));
        filter.after_id = cursor.value_or(-1);
        FAB_ASSIGN_OR_RETURN(auto page, s.fleet.list_hosts_json(ctx.who(), filter));
        // Spliced as rendered: at 10,000 hosts rebuilding the array costs more than the rest.
        std::string next =
            page.next_cursor ? "\"" + std::to_string(*page.next_cursor) + "\"" : "null";
        return HttpResponse{.status = 200,
                            .body = "{\"items\":" + page.items + ",\"next_cursor\":" + next + "}"};
      });
  router.add("POST", "/api/v1/hosts", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(std::string name, body.required_string("name"));
               FAB_ASSIGN_OR_RETURN(auto cluster, body.optional_int("cluster_id"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(
                   auto added,
                   s.fleet.add_host(ctx.who(), name, cluster.value_or(fleet::kDefaultClusterId)));
               Json out = token_json(added.second, s.ca_pin);
               out["host"] = added.first.to_summary_json();
               return json_response(201, out);
             });
  router.add("POST", "/api/v1/hosts/join-tokens", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(auto cluster, body.optional_int("cluster_id"));
               FAB_ASSIGN_OR_RETURN(int64_t count, body.required_int("count"));
               FAB_TRY(body.finish());
               if (count < 1 || count > 100000) {
                 return fail(ErrorCode::kInvalidArgument, "must be 1-100000", "count");
               }
               FAB_ASSIGN_OR_RETURN(auto token,
                                    s.fleet.create_fleet_token(ctx.who(), cluster.value_or(0),
                                                               static_cast<int>(count)));
               return json_response(201, token_json(token, s.ca_pin));
             });
  router.add(
      "GET", "/api/v1/hosts/join-tokens", AuthMode::kBearer,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_TRY(ctx.allow_query({"limit", "cursor"}));
        FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
        FAB_ASSIGN_OR_RETURN(auto page,
                             s.fleet.list_join_tokens(ctx.who(), options.after_id, options.limit));
        return json_response(
            200, Json{{"items", page.items},
                      {"next_cursor", page.next_cursor ? Json(*page.next_cursor) : Json(nullptr)}});
      });
  router.add("DELETE", "/api/v1/hosts/join-tokens/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.fleet.revoke_join_token(ctx.who(), id));
               return json_response(200, Json{{"id", id}, {"revoked", true}});
             });
  router.add("GET", "/api/v1/hosts/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto host, s.fleet.get_host(ctx.who(), id));
               return json_response(200, host.to_api_json());
             });
  router.add("DELETE", "/api/v1/hosts/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"force"}));
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               auto force = ctx.query("force");
               if (force && *force != "true" && *force != "false") {
                 return fail(ErrorCode::kInvalidArgument, "must be true or false", "force");
               }
               FAB_TRY(s.fleet.delete_host(ctx.who(), id, force == "true"));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  for (bool enable : {true, false}) {
    router.add("POST", enable ? "/api/v1/hosts/{id}/enable" : "/api/v1/hosts/{id}/disable",
               AuthMode::kBearer, [&s, enable](const Context& ctx) -> Result<HttpResponse> {
                 FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
                 FAB_ASSIGN_OR_RETURN(auto host, s.fleet.set_enabled(ctx.who(), id, enable));
                 return json_response(200, host.to_summary_json());
               });
  }
  router.add("POST", "/api/v1/hosts/{id}/rotate-credential", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(ctx.no_body_fields());
               FAB_TRY(s.fleet.request_credential_rotation(ctx.who(), id));
               return json_response(202, Json{{"host_id", id}, {"rotation_requested", true}});
             });
  router.add("POST", "/api/v1/hosts/{id}/join-token", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto token, s.fleet.rejoin_token(ctx.who(), id));
               return json_response(201, token_json(token, s.ca_pin));
             });
}

}  // namespace fabrica::api
