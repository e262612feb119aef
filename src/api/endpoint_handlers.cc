#include "api/api.h"

namespace fabrica::api {
namespace {

// A JSON array of strings, or kInvalidArgument naming `field`.
Result<std::vector<std::string>> strings(const Json& array, const std::string& field) {
  std::vector<std::string> out;
  for (const Json& item : array) {
    if (!item.is_string()) {
      return fail(ErrorCode::kInvalidArgument, "must be an array of URLs", field);
    }
    out.push_back(item.get<std::string>());
  }
  return out;
}

}  // namespace

void add_endpoint_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/endpoints", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name", "gid"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.endpoints.list(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/endpoints", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               endpoints::NewEndpoint e;
               FAB_ASSIGN_OR_RETURN(e.name, body.required_string("name"));
               FAB_ASSIGN_OR_RETURN(e.gid, body.optional_int("gid"));
               FAB_ASSIGN_OR_RETURN(e.model, body.required_string("model"));
               FAB_ASSIGN_OR_RETURN(auto backends, body.optional_array("backends"));
               FAB_ASSIGN_OR_RETURN(e.backend_key, body.optional_string("backend_key"));
               FAB_ASSIGN_OR_RETURN(auto description, body.optional_string("description"));
               FAB_TRY(body.finish());
               if (!backends) return fail(ErrorCode::kInvalidArgument, "is required", "backends");
               FAB_ASSIGN_OR_RETURN(e.backends, strings(*backends, "backends"));
               e.description = description.value_or("");
               FAB_ASSIGN_OR_RETURN(auto made, s.endpoints.create(ctx.who(), e));
               return json_response(201, made.to_api_json());
             });
  router.add("GET", "/api/v1/endpoints/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto e, s.endpoints.get(ctx.who(), id));
               return json_response(200, e.to_api_json());
             });
  router.add("PUT", "/api/v1/endpoints/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               endpoints::EndpointChange change;
               FAB_ASSIGN_OR_RETURN(change.model, body.optional_string("model"));
               FAB_ASSIGN_OR_RETURN(auto backends, body.optional_array("backends"));
               FAB_ASSIGN_OR_RETURN(change.backend_key, body.optional_string("backend_key"));
               FAB_ASSIGN_OR_RETURN(change.description, body.optional_string("description"));
               FAB_TRY(body.finish());
               if (backends) {
                 FAB_ASSIGN_OR_RETURN(change.backends, strings(*backends, "backends"));
               }
               FAB_ASSIGN_OR_RETURN(auto e, s.endpoints.update(ctx.who(), id, change));
               return json_response(200, e.to_api_json());
             });
  router.add("DELETE", "/api/v1/endpoints/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.endpoints.remove(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
}

}  // namespace fabrica::api
