#include "api/api.h"

#include <cstdio>
#include <exception>

#include "crypto/crypto.h"

namespace fabrica::api {

Api::Api(Services services) : services_(std::move(services)) {
  add_system_routes(router_, *this);
  add_token_routes(router_, services_);
  add_user_routes(router_, services_);
  add_group_routes(router_, services_);
  add_acl_routes(router_, services_);
  add_fleet_routes(router_, services_);
  add_agent_routes(router_, services_);
  add_vdc_routes(router_, services_);
  add_quota_routes(router_, services_);
  add_apikey_routes(router_, services_);
  add_endpoint_routes(router_, services_);
  add_gateway_routes(router_, services_);
  add_usage_routes(router_, services_);
  add_audit_routes(router_, services_);
  add_compute_routes(router_, services_);
  add_storage_routes(router_, services_);
  add_network_routes(router_, services_);
  add_market_routes(router_, services_);
  add_guest_routes(router_, services_);
  add_app_routes(router_, services_);
}

Result<std::string_view> bearer_secret(const Context& ctx, std::string_view missing) {
  constexpr std::string_view kScheme = "Bearer ";
  std::string_view header = ctx.request.authorization;
  if (!header.starts_with(kScheme)) return fail(ErrorCode::kUnauthenticated, std::string(missing));
  return header.substr(kScheme.size());
}

HttpResponse Api::handle(const HttpRequest& request) {
  Outcome outcome;
  Result<HttpResponse> result = [&]() -> Result<HttpResponse> {
    try {
      return dispatch(request, outcome);
    } catch (const std::exception& e) {
      return fail(ErrorCode::kInternal, std::string("internal error: ") + e.what());
    }
  }();
  HttpResponse response =
      result ? std::move(*result) : error_response(result.error(), request.request_id);
  if (outcome.route != nullptr && outcome.route->audited) audit(request, outcome, response);
  return response;
}

namespace {

// Audits a streamed request when its answer is known.
class AuditedSink : public BodySink {
 public:
  AuditedSink(std::unique_ptr<BodySink> inner, std::function<void(const HttpResponse&)> audit)
      : inner_(std::move(inner)), audit_(std::move(audit)) {}
  Result<void> write(std::string_view piece) override { return inner_->write(piece); }
  HttpResponse finish(bool complete) override {
    HttpResponse response = inner_->finish(complete);
    audit_(response);
    return response;
  }

 private:
  std::unique_ptr<BodySink> inner_;
  std::function<void(const HttpResponse&)> audit_;
};

}  // namespace

std::optional<std::variant<HttpResponse, std::unique_ptr<BodySink>>> Api::open_stream(
    const HttpRequest& head) {
  auto match = router_.match(head.method, head.path);
  if (!match || match->stream == nullptr) return std::nullopt;
  Outcome outcome{.route = match->route};
  Result<std::unique_ptr<BodySink>> sink = [&]() -> Result<std::unique_ptr<BodySink>> {
    try {
      Context ctx{.request = head, .params = std::move(match->params)};
      FAB_ASSIGN_OR_RETURN(auth::Caller caller, authenticate(head));
      ctx.caller = &caller;
      outcome.uid = caller.uid;
      outcome.user = caller.name;
      return (*match->stream)(ctx);
    } catch (const std::exception& e) {
      return fail(ErrorCode::kInternal, std::string("internal error: ") + e.what());
    }
  }();
  if (!sink) {
    HttpResponse response = error_response(sink.error(), head.request_id);
    audit(head, outcome, response);
    return response;
  }
  HttpRequest audited = head;
  audited.body.clear();
  return std::unique_ptr<BodySink>(std::make_unique<AuditedSink>(
      std::move(*sink), [this, audited = std::move(audited), outcome](const HttpResponse& r) {
        audit(audited, outcome, r);
      }));
}

Result<HttpResponse> Api::dispatch(const HttpRequest& request, Outcome& outcome) {
  FAB_ASSIGN_OR_RETURN(Router::Match match, router_.match(request.method, request.path));
  outcome.route = match.route;
  Context ctx{.request = request, .params = std::move(match.params)};
  std::optional<auth::Caller> caller;
  if (match.route->auth == AuthMode::kBearer) {
    FAB_ASSIGN_OR_RETURN(caller, authenticate(request));
    ctx.caller = &*caller;
    outcome.uid = caller->uid;
    outcome.user = caller->name;
  } else if (match.route->auth == AuthMode::kBasic) {
    if (auto basic = basic_credentials(request)) outcome.user = basic->user.substr(0, 128);
  }
  return (*match.handler)(ctx);
}

void Api::audit(const HttpRequest& request, const Outcome& outcome, const HttpResponse& response) {
  auth::AuditEntry entry;
  entry.uid = outcome.uid;
  entry.user = outcome.user;
  entry.address = request.remote_address;
  entry.action = outcome.route->method + " " + outcome.route->pattern;
  entry.target = request.path.substr(0, 512);
  entry.status = response.status;
  entry.request_id = request.request_id;
  if (response.status < 400) {
    entry.outcome = auth::AuditOutcome::kSuccess;
    if (entry.uid < 0 && outcome.route->auth == AuthMode::kBasic) {
      // A login: the token answered names the user.
      if (auto body = parse_json(response.body); body && body->contains("uid")) {
        entry.uid = (*body)["uid"].get<int64_t>();
      }
    }
  } else {
    entry.outcome = response.status == 401 || response.status == 403 ? auth::AuditOutcome::kDenied
                                                                     : auth::AuditOutcome::kFailed;
    if (auto body = parse_json(response.body); body && body->contains("error")) {
      entry.error_code = (*body)["error"].value("code", "");
    }
  }
  if (auto written = services_.audit.append(std::move(entry)); !written) {
    std::fprintf(stderr, "audit: could not record %s %s: %s\n", request.method.c_str(),
                 request.path.c_str(), written.error().message().c_str());
  }
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
  auto decoded = crypto::base64_decode(header.substr(kScheme.size()));
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

Result<int64_t> read_int_body(const Context& ctx, std::string_view field) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  FAB_ASSIGN_OR_RETURN(int64_t value, body.required_int(field));
  FAB_TRY(body.finish());
  if (value < 0) return fail(ErrorCode::kInvalidArgument, "must be >= 0", std::string(field));
  return value;
}

Result<Permissions> read_chmod_body(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  FAB_ASSIGN_OR_RETURN(std::string octal, body.required_string("permissions"));
  FAB_TRY(body.finish());
  return Permissions::parse_octal(octal);
}

}  // namespace fabrica::api
