#include "api/api.h"

namespace fabrica::api {

void add_system_routes(Router& router, Api& api) {
  router.add("GET", "/healthz", AuthMode::kNone, [](const Context&) -> Result<HttpResponse> {
    return json_response(200, Json{{"status", "ok"}});
  });
  router.add("GET", "/readyz", AuthMode::kNone, [&api](const Context&) -> Result<HttpResponse> {
    if (api.draining()) return fail(ErrorCode::kUnavailable, "shutting down");
    FAB_ASSIGN_OR_RETURN(bool ready, api.services().identity.bootstrapped());
    if (!ready) return fail(ErrorCode::kUnavailable, "not bootstrapped yet");
    return json_response(200, Json{{"status", "ready"}});
  });
  router.add(
      "GET", "/api/v1/version", AuthMode::kBearer, [&api](const Context&) -> Result<HttpResponse> {
        return json_response(200, Json{{"version", api.services().version},
                                       {"api", "v1"},
                                       {"schema_version", api.services().store.schema_version()}});
      });
  // The sealing key: administrators see its id (never the key) and rotate it.
  router.add("GET", "/api/v1/system/sealing-key", AuthMode::kBearer,
             [&api](const Context& ctx) -> Result<HttpResponse> {
               Services& s = api.services();
               FAB_TRY(ctx.allow_query({}));
               FAB_TRY(s.authorizer.require_superuser(ctx.who(), "see the sealing key"));
               if (!s.sealer) return fail(ErrorCode::kUnavailable, "this server seals nothing");
               return json_response(200, Json{{"key_id", s.sealer->key_id()},
                                              {"keys", s.sealer->keys()},
                                              {"rotation_unfinished", s.sealer->keys() > 1}});
             });
  router.add("POST", "/api/v1/system/sealing-key/rotate", AuthMode::kBearer,
             [&api](const Context& ctx) -> Result<HttpResponse> {
               Services& s = api.services();
               FAB_TRY(ctx.no_body_fields());
               FAB_TRY(s.authorizer.require_superuser(ctx.who(), "rotate the sealing key"));
               if (!s.sealer || !s.reseal_secrets) {
                 return fail(ErrorCode::kUnavailable, "this server seals nothing");
               }
               FAB_ASSIGN_OR_RETURN(auto done, s.sealer->rotate(s.reseal_secrets));
               return json_response(200, Json{{"key_id", done.key_id},
                                              {"previous_key_id", done.previous_key_id},
                                              {"resealed", done.resealed}});
             });
}

}  // namespace fabrica::api
