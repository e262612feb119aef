#include "api/api.h"

namespace fabrica::api {

void add_group_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/groups", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.identity.list_groups(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/groups", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               auth::NewGroup request;
               FAB_ASSIGN_OR_RETURN(request.name, body.required_string("name"));
               FAB_ASSIGN_OR_RETURN(auto attributes, body.optional_object("template"));
               if (attributes) {
                 FAB_ASSIGN_OR_RETURN(request.attributes, AttributeTree::from_json(*attributes));
               }
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(auto group, s.identity.create_group(ctx.who(), request));
               return json_response(201, group.to_api_json());
             });
  router.add("GET", "/api/v1/groups/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto group, s.identity.get_group(ctx.who(), id));
               FAB_ASSIGN_OR_RETURN(auto members, s.identity.group_members(ctx.who(), id));
               Json out = group.to_api_json();
               out["users"] = members;
               return json_response(200, out);
             });
  router.add("DELETE", "/api/v1/groups/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.identity.delete_group(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add("POST", "/api/v1/groups/{id}/chmod", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(Permissions p, read_chmod_body(ctx));
               FAB_ASSIGN_OR_RETURN(auto group, s.identity.chmod_group(ctx.who(), id, p));
               return json_response(200, group.to_api_json());
             });
  router.add("POST", "/api/v1/groups/{id}/chown", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(int64_t uid, body.required_int("uid"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(auto group, s.identity.chown_group(ctx.who(), id, uid));
               return json_response(200, group.to_api_json());
             });
  router.add("POST", "/api/v1/groups/{id}/admins", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t uid, read_int_body(ctx, "uid"));
               FAB_ASSIGN_OR_RETURN(auto group, s.identity.add_admin(ctx.who(), id, uid));
               return json_response(200, group.to_api_json());
             });
  router.add("DELETE", "/api/v1/groups/{id}/admins/{uid}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t uid, ctx.id_param(1, "uid"));
               FAB_ASSIGN_OR_RETURN(auto group, s.identity.remove_admin(ctx.who(), id, uid));
               return json_response(200, group.to_api_json());
             });
}

}  // namespace fabrica::api
