#include "api/api.h"

namespace fabrica::api {
namespace {

Result<std::vector<int64_t>> read_group_ids(const Json& array) {
  std::vector<int64_t> ids;
  for (const Json& v : array) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0) {
      return fail(ErrorCode::kInvalidArgument, "must be an array of group ids", "groups");
    }
    ids.push_back(v.get<int64_t>());
  }
  return ids;
}

Result<auth::NewUser> read_new_user(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  auth::NewUser user;
  FAB_ASSIGN_OR_RETURN(user.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(user.password, body.required_string("password"));
  FAB_ASSIGN_OR_RETURN(user.gid, body.optional_int("gid"));
  FAB_ASSIGN_OR_RETURN(auto groups, body.optional_array("groups"));
  if (groups) {
    FAB_ASSIGN_OR_RETURN(user.groups, read_group_ids(*groups));
  }
  FAB_ASSIGN_OR_RETURN(auto enabled, body.optional_bool("enabled"));
  user.enabled = enabled.value_or(true);
  FAB_ASSIGN_OR_RETURN(auto attributes, body.optional_object("template"));
  if (attributes) {
    FAB_ASSIGN_OR_RETURN(user.attributes, AttributeTree::from_json(*attributes));
  }
  FAB_TRY(body.finish());
  return user;
}

HttpResponse user_response(int status, const auth::User& user) {
  return json_response(status, user.to_api_json());
}

}  // namespace

void add_user_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/auth/whoami", AuthMode::kBearer,
             [](const Context& ctx) -> Result<HttpResponse> {
               const auth::Caller& c = ctx.who();
               return json_response(200, Json{{"uid", c.uid},
                                              {"name", c.name},
                                              {"gid", c.gid},
                                              {"groups", c.groups},
                                              {"superuser", c.is_superuser()},
                                              {"role", c.role()},
                                              {"admin_groups", c.admin_groups},
                                              {"token_id", c.token_id}});
             });
  router.add("GET", "/api/v1/users", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name", "gid"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.identity.list_users(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/users", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_new_user(ctx));
               FAB_ASSIGN_OR_RETURN(auto user, s.identity.create_user(ctx.who(), request));
               return user_response(201, user);
             });
  router.add("GET", "/api/v1/users/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto user, s.identity.get_user(ctx.who(), id));
               return user_response(200, user);
             });
  router.add("DELETE", "/api/v1/users/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.identity.delete_user(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add("POST", "/api/v1/users/{id}/password", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(std::string password, body.required_string("password"));
               FAB_TRY(body.finish());
               FAB_TRY(s.identity.set_password(ctx.who(), id, password));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add("POST", "/api/v1/users/{id}/chgrp", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t gid, read_int_body(ctx, "gid"));
               FAB_ASSIGN_OR_RETURN(auto user, s.identity.chgrp_user(ctx.who(), id, gid));
               return user_response(200, user);
             });
  router.add("POST", "/api/v1/users/{id}/groups", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t gid, read_int_body(ctx, "gid"));
               FAB_ASSIGN_OR_RETURN(auto user, s.identity.add_secondary_group(ctx.who(), id, gid));
               return user_response(200, user);
             });
  router.add("DELETE", "/api/v1/users/{id}/groups/{gid}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t gid, ctx.id_param(1, "gid"));
               FAB_ASSIGN_OR_RETURN(auto user,
                                    s.identity.remove_secondary_group(ctx.who(), id, gid));
               return user_response(200, user);
             });
  for (bool enable : {true, false}) {
    router.add("POST", enable ? "/api/v1/users/{id}/enable" : "/api/v1/users/{id}/disable",
               AuthMode::kBearer, [&s, enable](const Context& ctx) -> Result<HttpResponse> {
                 FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
                 FAB_TRY(ctx.no_body_fields());
                 FAB_ASSIGN_OR_RETURN(auto user, s.identity.set_enabled(ctx.who(), id, enable));
                 return user_response(200, user);
               });
  }
  router.add("POST", "/api/v1/users/{id}/chmod", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(Permissions p, read_chmod_body(ctx));
               FAB_ASSIGN_OR_RETURN(auto user, s.identity.chmod_user(ctx.who(), id, p));
               return user_response(200, user);
             });
}

}  // namespace fabrica::api
