#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/http.h"
#include "auth/authorizer.h"

namespace fabrica::api {

// How a route authenticates its caller.
enum class AuthMode {
  kNone,    // Probes: /healthz, /readyz.
  kBearer,  // Everything else: Authorization: Bearer <token>.
  kBasic,   // Only POST /api/v1/auth/tokens: the handler verifies Authorization: Basic.
};

// What a handler sees: the request, the authenticated caller (kBearer routes), and the
// values of the pattern's {placeholders} in order.
struct Context {
  const HttpRequest& request;
  const auth::Caller* caller = nullptr;
  std::vector<std::string> params;

  const auth::Caller& who() const { return *caller; }
  // Placeholder `index` as an id: kInvalidArgument (field = its name) unless 0..2^53.
  Result<int64_t> id_param(size_t index, std::string_view name = "id") const;
  // For actions that take no input: the body is empty or {}; any field is kInvalidArgument
  // naming it, anything else a malformed-JSON error.
  Result<void> no_body_fields() const;
  // The only query parameters allowed; others are kInvalidArgument naming them.
  Result<void> allow_query(std::initializer_list<std::string_view> names) const;
  std::optional<std::string> query(std::string_view name) const;
  Result<std::optional<int64_t>> query_int(std::string_view name, int64_t min, int64_t max) const;
};

using Handler = std::function<Result<HttpResponse>(const Context&)>;
// A route whose body streams into a sink (see BodySink); the context's body is empty then.
using StreamHandler = std::function<Result<std::unique_ptr<BodySink>>(const Context&)>;

// "none", "bearer", "basic".
std::string_view auth_mode_name(AuthMode mode);

// Which requests to a route the audit log records.
enum class Audit {
  kWrites,  // Every request except GET (the default).
  kNever,   // Telemetry: agent heartbeats and inventory reports.
};

struct RouteInfo {
  std::string method;
  std::string pattern;  // "/api/v1/users/{id}"
  AuthMode auth;
  bool audited = false;
  bool streams = false;  // The body goes to a BodySink as it arrives.
};

// Matches method + path against patterns whose segments are literals or {name}.
// Unknown paths are 404, known paths with another method 405 (with Allow).
class Router {
 public:
  void add(std::string method, std::string pattern, AuthMode auth, Handler handler,
           Audit audit = Audit::kWrites);
  // A streaming route. Called through match() as a plain handler, it feeds the request's
  // in-memory body to the sink; servers that stream use Match::stream instead.
  void add_stream(std::string method, std::string pattern, AuthMode auth, StreamHandler handler);

  struct Match {
    const RouteInfo* route = nullptr;
    const Handler* handler = nullptr;
    const StreamHandler* stream = nullptr;  // Set for streaming routes.
    std::vector<std::string> params;
  };
  // kNotFound or kMethodNotAllowed (message lists the allowed methods).
  Result<Match> match(std::string_view method, std::string_view path) const;
  std::vector<RouteInfo> routes() const;

 private:
  struct Entry {
    RouteInfo info;
    std::vector<std::string> segments;
    Handler handler;
    StreamHandler stream;
  };
  std::vector<Entry> entries_;
};

std::vector<std::string> split_path(std::string_view path);

}  // namespace fabrica::api
