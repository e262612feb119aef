#include "api/api.h"

namespace fabrica::api {
namespace {

constexpr int64_t kMaxId = int64_t{1} << 53;
constexpr int64_t kMaxSeconds = int64_t{1} << 40;

// gid, endpoint_id, since and until (Unix seconds) from the query.
Result<usage::UsageQuery> usage_query(const Context& ctx) {
  usage::UsageQuery q;
  FAB_ASSIGN_OR_RETURN(q.gid, ctx.query_int("gid", 0, kMaxId));
  FAB_ASSIGN_OR_RETURN(q.endpoint_id, ctx.query_int("endpoint_id", 0, kMaxId));
  FAB_ASSIGN_OR_RETURN(auto since, ctx.query_int("since", 0, kMaxSeconds));
  FAB_ASSIGN_OR_RETURN(auto until, ctx.query_int("until", 0, kMaxSeconds));
  if (since) q.since_ms = *since * 1000;
  if (until) q.until_ms = *until * 1000;
  return q;
}

}  // namespace

void add_usage_routes(Router& router, Services& s) {
  router.add(
      "GET", "/api/v1/usage", AuthMode::kBearer, [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_TRY(ctx.allow_query({"gid", "endpoint_id", "since", "until", "limit", "cursor"}));
        FAB_ASSIGN_OR_RETURN(auto q, usage_query(ctx));
        FAB_ASSIGN_OR_RETURN(auto limit, ctx.query_int("limit", 1, 1000));
        FAB_ASSIGN_OR_RETURN(auto cursor, ctx.query_int("cursor", 0, kMaxId));
        q.limit = static_cast<size_t>(limit.value_or(100));
        q.after_seq = cursor.value_or(-1);
        FAB_ASSIGN_OR_RETURN(auto page, s.usage.list(ctx.who(), q));
        Json items = Json::array();
        for (const auto& r : page.items) items.push_back(r.to_json());
        return json_response(
            200, Json{{"items", std::move(items)},
                      {"next_cursor", page.next_cursor ? Json(*page.next_cursor) : Json(nullptr)}});
      });
  router.add("GET", "/api/v1/usage/totals", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"gid", "endpoint_id", "since", "until"}));
               FAB_ASSIGN_OR_RETURN(auto q, usage_query(ctx));
               FAB_ASSIGN_OR_RETURN(auto totals, s.usage.totals(ctx.who(), q));
               Json items = Json::array();
               for (const auto& t : totals) items.push_back(t.to_json());
               return json_response(200, Json{{"items", std::move(items)}});
             });
}

}  // namespace fabrica::api
