#include "api/api.h"

namespace fabrica::api {

void add_token_routes(Router& router, Services& s) {
  // Password login: HTTP Basic in, bearer token out (the secret is shown only here).
  router.add("POST", "/api/v1/auth/tokens", AuthMode::kBasic,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(BasicCredentials credentials, basic_credentials(ctx.request));
               auth::TokenRequest request;
               if (!ctx.request.body.empty()) {
                 FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
                 FAB_ASSIGN_OR_RETURN(auto name, body.optional_string("name"));
                 FAB_ASSIGN_OR_RETURN(auto expires_in, body.optional_int("expires_in"));
                 FAB_TRY(body.finish());
                 if (name) request.name = *name;
                 if (expires_in) request.lifetime = std::chrono::seconds(*expires_in);
               }
               FAB_ASSIGN_OR_RETURN(auto issued,
                                    s.sessions.login(credentials.user, credentials.password,
                                                     ctx.request.remote_address, request));
               Json out = issued.token.to_api_json();
               out["token"] = issued.secret;
               return json_response(201, out);
             });
  router.add("GET", "/api/v1/auth/tokens", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"uid"}));
               FAB_ASSIGN_OR_RETURN(auto uid, ctx.query_int("uid", 0, int64_t{1} << 53));
               FAB_ASSIGN_OR_RETURN(auto tokens, s.sessions.list(ctx.who(), uid));
               Json items = Json::array();
               for (const auto& t : tokens) {
                 Json j = t.to_api_json();
                 j["current"] = t.id == ctx.who().token_id;
                 items.push_back(std::move(j));
               }
               return json_response(200, Json{{"items", items}, {"next_cursor", nullptr}});
             });
  router.add("DELETE", "/api/v1/auth/tokens/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto token, s.sessions.revoke(ctx.who(), id));
               return json_response(200, token.to_api_json());
             });
}

}  // namespace fabrica::api
