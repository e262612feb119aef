#include "api/api.h"

namespace fabrica::api {

void add_audit_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/audit", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "uid", "outcome", "action", "since"}));
               auth::AuditQuery q;
               FAB_ASSIGN_OR_RETURN(auto limit, ctx.query_int("limit", 1, 1000));
               q.limit = static_cast<size_t>(limit.value_or(100));
               FAB_ASSIGN_OR_RETURN(q.before_id, ctx.query_int("cursor", 0, int64_t{1} << 53));
               FAB_ASSIGN_OR_RETURN(q.uid, ctx.query_int("uid", -1, int64_t{1} << 53));
               q.action = ctx.query("action");
               if (auto outcome = ctx.query("outcome")) {
                 bool known = false;
                 for (auto o : {auth::AuditOutcome::kSuccess, auth::AuditOutcome::kDenied,
                                auth::AuditOutcome::kFailed}) {
                   if (auth::audit_outcome_name(o) == *outcome) {
                     q.outcome = o;
                     known = true;
                   }
                 }
                 if (!known) {
                   return fail(ErrorCode::kInvalidArgument, "must be success, denied or failed",
                               "outcome");
                 }
               }
               if (auto since = ctx.query("since")) {
                 q.since = parse_time(*since);
                 if (!q.since) {
                   return fail(ErrorCode::kInvalidArgument,
                               "must be an RFC 3339 time (2026-11-24T10:00:00Z)", "since");
                 }
               }
               FAB_ASSIGN_OR_RETURN(auto entries, s.audit.query(ctx.who(), q));
               Json items = Json::array();
               for (const auto& e : entries) items.push_back(e.to_api_json());
               Json cursor = entries.size() == q.limit && !entries.empty()
                                 ? Json(std::to_string(entries.back().id))
                                 : Json(nullptr);
               return json_response(200, Json{{"items", items}, {"next_cursor", cursor}});
             });
}

}  // namespace fabrica::api
