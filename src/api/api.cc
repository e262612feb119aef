#include "api/api.h"

#include <exception>

#include "auth/crypto.h"

namespace fabrica::api {

Api::Api(Services services) : services_(std::move(services)) {
  add_system_routes(router_, *this);
  add_token_routes(router_, services_);
  add_user_routes(router_, services_);
  add_group_routes(router_, services_);
  add_acl_routes(router_, services_);
  add_fleet_routes(router_, services_);
  add_agent_routes(router_, services_);
}

HttpResponse Api::handle(const HttpRequest& request) {
  Result<HttpResponse> response = [&]() -> Result<HttpResponse> {
    try {
      return dispatch(request);
    } catch (const std::exception& e) {
      return fail(ErrorCode::kInternal, std::string("internal error: ") + e.what());
    }
  }();
  if (!response) return error_response(response.error(), request.request_id);
  return std::move(*response);
}

Result<HttpResponse> Api::dispatch(const HttpRequest& request) {
  FAB_ASSIGN_OR_RETURN(Router::Match match, router_.match(request.method, request.path));
  Context ctx{.request = request, .params = std::move(match.params)};
  std::optional<auth::Caller> caller;
  if (match.route->auth == AuthMode::kBearer) {
    FAB_ASSIGN_OR_RETURN(caller, authenticate(request));
    ctx.caller = &*caller;
  }
  return (*match.handler)(ctx);
}

Result<auth::Caller> Api::authenticate(const HttpRequest& request) {
  constexpr std::string_view kScheme = "Bearer ";
  std::string_view header = request.authorization;
  if (header.empty()) {
    return fail(ErrorCode::kUnauthenticated, "bearer token required (fabrica login)");
  }
  if (header.size() <= kScheme.size() || header.substr(0, kScheme.size()) != kScheme) {
    return fail(ErrorCode::kUnauthenticated, "expected Authorization: Bearer <token>");
  }
  return services_.sessions.authenticate(header.substr(kScheme.size()), request.remote_address);
}

Result<BasicCredentials> basic_credentials(const HttpRequest& request) {
  constexpr std::string_view kScheme = "Basic ";
  std::string_view header = request.authorization;
  if (header.size() <= kScheme.size() || header.substr(0, kScheme.size()) != kScheme) {
    return fail(ErrorCode::kUnauthenticated, "HTTP Basic credentials required");
  }
  auto decoded = auth::base64_decode(header.substr(kScheme.size()));
  if (!decoded || decoded->find(':') == std::string::npos) {
    return fail(ErrorCode::kUnauthenticated, "malformed Basic credentials");
  }
  size_t colon = decoded->find(':');
  return BasicCredentials{.user = decoded->substr(0, colon),
                          .password = decoded->substr(colon + 1)};
}

Result<auth::ListOptions> list_options(const Context& ctx) {
  auth::ListOptions options;
  FAB_ASSIGN_OR_RETURN(auto limit, ctx.query_int("limit", 1, 1000));
  options.limit = static_cast<size_t>(limit.value_or(100));
  FAB_ASSIGN_OR_RETURN(auto cursor, ctx.query_int("cursor", 0, int64_t{1} << 53));
  options.after_id = cursor.value_or(-1);
  options.name = ctx.query("name");
  if (options.name) FAB_TRY(validate_name(*options.name));
  FAB_ASSIGN_OR_RETURN(options.gid, ctx.query_int("gid", 0, int64_t{1} << 53));
  return options;
}

Result<Permissions> read_chmod_body(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  FAB_ASSIGN_OR_RETURN(std::string octal, body.required_string("permissions"));
  FAB_TRY(body.finish());
  return Permissions::parse_octal(octal);
}

}  // namespace fabrica::api
