#include "api/api.h"

namespace fabrica::api {
namespace {

Result<auth::NewApiKey> read_new_key(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  auth::NewApiKey key;
  FAB_ASSIGN_OR_RETURN(key.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(key.gid, body.optional_int("gid"));
  FAB_ASSIGN_OR_RETURN(auto endpoints, body.optional_array("endpoints"));
  FAB_ASSIGN_OR_RETURN(key.expires_in, body.optional_int("expires_in"));
  FAB_ASSIGN_OR_RETURN(auto rpm, body.optional_int("rpm"));
  FAB_ASSIGN_OR_RETURN(auto tpm, body.optional_int("tpm"));
  FAB_TRY(body.finish());
  if (!endpoints) return fail(ErrorCode::kInvalidArgument, "is required", "endpoints");
  for (const Json& e : *endpoints) {
    if (!e.is_string()) {
      return fail(ErrorCode::kInvalidArgument, "must be an array of endpoint names", "endpoints");
    }
    key.endpoints.push_back(e.get<std::string>());
  }
  if (key.gid && *key.gid < 0) return fail(ErrorCode::kInvalidArgument, "must be >= 0", "gid");
  key.rpm = rpm.value_or(0);
  key.tpm = tpm.value_or(0);
  return key;
}

}  // namespace

void add_apikey_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/apikeys", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name", "gid"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.apikeys.list(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/apikeys", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_new_key(ctx));
               FAB_ASSIGN_OR_RETURN(auto issued, s.apikeys.create(ctx.who(), request));
               Json out = issued.key.to_api_json();
               out["key"] = issued.secret;
               return json_response(201, out);
             });
  router.add("GET", "/api/v1/apikeys/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto key, s.apikeys.get(ctx.who(), id));
               return json_response(200, key.to_api_json());
             });
  router.add("POST", "/api/v1/apikeys/{id}/revoke", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(ctx.no_body_fields());
               FAB_ASSIGN_OR_RETURN(auto key, s.apikeys.revoke(ctx.who(), id));
               return json_response(200, key.to_api_json());
             });
  router.add("DELETE", "/api/v1/apikeys/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.apikeys.remove(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
}

}  // namespace fabrica::api
