#include "api/api.h"

namespace fabrica::api {
namespace {

Result<HttpResponse> quota_response(Services& s, const Context& ctx, auth::QuotaOwner owner,
                                    const auth::Quota& quota) {
  Json out = quota.to_api_json();
  FAB_ASSIGN_OR_RETURN(auto holds, s.quotas.holds(ctx.who(), owner, quota.owner_id));
  out["holds"] = Json::array();
  for (const auto& h : holds) {
    Json j = h.to_api_json();
    j.erase("expires_at_unix");
    j.erase("created_at_unix");
    out["holds"].push_back(std::move(j));
  }
  return json_response(200, out);
}

// {"limits": {...}, "cluster": 3, "user_defaults": {...}}
Result<auth::QuotaUpdate> read_update(const Context& ctx, auth::QuotaOwner owner) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  auth::QuotaUpdate update;
  FAB_ASSIGN_OR_RETURN(update.cluster, body.optional_int("cluster"));
  FAB_ASSIGN_OR_RETURN(auto limits, body.optional_object("limits"));
  std::optional<Json> defaults;
  if (owner == auth::QuotaOwner::kGroup) {
    FAB_ASSIGN_OR_RETURN(defaults, body.optional_object("user_defaults"));
  }
  FAB_TRY(body.finish());
  if (update.cluster && *update.cluster < 0) {
    return fail(ErrorCode::kInvalidArgument, "must be a cluster id", "cluster");
  }
  if (!limits && !defaults) {
    return fail(ErrorCode::kInvalidArgument,
                owner == auth::QuotaOwner::kGroup ? "give limits or user_defaults" : "is required",
                "limits");
  }
  if (limits) {
    FAB_ASSIGN_OR_RETURN(update.limits,
                         auth::read_amounts(*limits, "limits", auth::kQuotaUnlimited));
  }
  if (defaults) {
    FAB_ASSIGN_OR_RETURN(update.user_defaults,
                         auth::read_amounts(*defaults, "user_defaults", auth::kQuotaUnlimited));
  }
  return update;
}

void add_owner_routes(Router& router, Services& s, auth::QuotaOwner owner,
                      const std::string& pattern) {
  router.add("GET", pattern, AuthMode::kBearer,
             [&s, owner](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto quota, s.quotas.get(ctx.who(), owner, id));
               return quota_response(s, ctx, owner, quota);
             });
  router.add("PUT", pattern, AuthMode::kBearer,
             [&s, owner](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto update, read_update(ctx, owner));
               FAB_ASSIGN_OR_RETURN(auto quota, s.quotas.set(ctx.who(), owner, id, update));
               return quota_response(s, ctx, owner, quota);
             });
}

}  // namespace

void add_quota_routes(Router& router, Services& s) {
  add_owner_routes(router, s, auth::QuotaOwner::kUser, "/api/v1/users/{id}/quota");
  add_owner_routes(router, s, auth::QuotaOwner::kGroup, "/api/v1/groups/{id}/quota");
  router.add("POST", "/api/v1/quotas/recount", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               bool fix = false;
               if (!ctx.request.body.empty()) {
                 FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
                 FAB_ASSIGN_OR_RETURN(auto f, body.optional_bool("fix"));
                 FAB_TRY(body.finish());
                 fix = f.value_or(false);
               }
               FAB_ASSIGN_OR_RETURN(auto drifts, s.quotas.recount(ctx.who(), fix));
               Json items = Json::array();
               for (const auto& d : drifts) {
                 items.push_back(Json{{"owner", auth::quota_owner_name(d.owner)},
                                      {"id", d.owner_id},
                                      {"cluster", d.cluster ? Json(*d.cluster) : Json(nullptr)},
                                      {"key", d.key},
                                      {"stored", d.stored},
                                      {"counted", d.counted}});
               }
               return json_response(200, Json{{"drift", items}, {"fixed", fix}});
             });
}

}  // namespace fabrica::api
