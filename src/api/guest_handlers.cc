// The guest API: what a VM may ask with its own token (FABRICA_GUEST_TOKEN on its context
// CD-ROM). It authenticates with nothing else, reads and changes only its own VM, and dies
// with it (DONE).
#include "api/api.h"

namespace fabrica::api {
namespace {

// The token in `Authorization: Bearer fgt_...`.
Result<std::string_view> guest_token(const Context& ctx) {
  return bearer_secret(ctx, "guest token required (FABRICA_GUEST_TOKEN)");
}

// What a guest sees of its VM: nothing of the host it runs on.
Json guest_view(const compute::Vm& vm) {
  Json j = vm.to_api_json();
  Json out = Json::object();
  for (const char* key : {"id", "name", "state_name", "lcm_state", "request", "context", "nics",
                          "guest", "app", "template_id"}) {
    if (j.contains(key)) out[key] = j[key];
  }
  for (Json& nic : out["nics"]) {
    for (const char* host_side : {"bridge", "phydev", "vlan_id", "mode", "nic_id"}) {
      nic.erase(host_side);
    }
  }
  if (out["app"].is_object()) out["app"].erase("endpoint_id");
  return out;
}

Result<HttpResponse> report(Services& s, const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto token, guest_token(ctx));
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  compute::GuestReport r;
  FAB_ASSIGN_OR_RETURN(r.ready, body.optional_bool("ready"));
  FAB_ASSIGN_OR_RETURN(r.attributes, body.optional_object("attributes"));
  FAB_ASSIGN_OR_RETURN(r.error, body.optional_string("error"));
  FAB_ASSIGN_OR_RETURN(r.log_tail, body.optional_string("log_tail"));
  FAB_TRY(body.finish());
  FAB_ASSIGN_OR_RETURN(auto vm, s.compute.guest_report(token, r));
  return json_response(200, guest_view(vm));
}

}  // namespace

void add_guest_routes(Router& router, Services& s) {
  router.add(
      "GET", "/api/v1/guest/self", AuthMode::kNone,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_ASSIGN_OR_RETURN(auto token, guest_token(ctx));
        FAB_TRY(ctx.allow_query({}));
        FAB_ASSIGN_OR_RETURN(auto vm, s.compute.guest_self(token));
        return json_response(200, guest_view(vm));
      },
      Audit::kNever);
  // PUT for clients that have it; POST for the smallest ones (busybox wget).
  for (const char* method : {"PUT", "POST"}) {
    router.add(
        method, "/api/v1/guest/self", AuthMode::kNone,
        [&s](const Context& ctx) { return report(s, ctx); }, Audit::kNever);
  }
  router.add(
      "POST", "/api/v1/guest/self/metrics", AuthMode::kNone,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_ASSIGN_OR_RETURN(auto token, guest_token(ctx));
        FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
        FAB_ASSIGN_OR_RETURN(auto metrics, body.optional_object("metrics"));
        FAB_TRY(body.finish());
        if (!metrics) return fail(ErrorCode::kInvalidArgument, "is required", "metrics");
        FAB_ASSIGN_OR_RETURN(auto vm, s.compute.guest_metrics(token, *metrics));
        return json_response(200, guest_view(vm));
      },
      Audit::kNever);
}

}  // namespace fabrica::api
