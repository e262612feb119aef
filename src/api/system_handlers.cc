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
}

}  // namespace fabrica::api
