#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "api/http.h"
#include "core/error.h"
#include "crypto/tls.h"

namespace spdlog {
class logger;
}

namespace fabrica::api {

struct ServerOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8470;  // 0 picks a free port.
  size_t threads = 2;
  size_t body_limit = 1024 * 1024;             // Larger bodies get 413.
  std::chrono::seconds idle_timeout{60};       // Keep-alive connections idle this long are closed.
  std::chrono::seconds shutdown_grace{30};     // In-flight requests get this long on SIGTERM.
  std::shared_ptr<spdlog::logger> access_log;  // One line per request; null for none.
  // Asked with each request's head before its body is read: a sink takes a body that
  // streams (no body_limit then), a response is sent at once without reading the body,
  // nullopt reads the body into memory for the handler. Null: every body is read.
  std::function<std::optional<std::variant<HttpResponse, std::unique_ptr<BodySink>>>(
      const HttpRequest& head)>
      stream_opener;
  // Requests this picks (password hashing: logins, new passwords) run on a pool of
  // `offload_threads`, never on the threads that serve every other request, so a flood of
  // them cannot starve the API. Past `offload_queue` of them in flight, more get 429 at once.
  std::function<bool(const HttpRequest& head)> offload;
  size_t offload_threads = 1;
  size_t offload_queue = 512;
  // Serve HTTPS with this certificate (reloaded when its files change); null: plain HTTP.
  std::shared_ptr<crypto::TlsServerContext> tls;
};

using RequestHandler = std::function<HttpResponse(const HttpRequest&)>;

// HTTP/1.1 server on Boost.Beast with one Asio coroutine per connection, keep-alive,
// a request body limit, a request id on every response, and graceful shutdown: on
// SIGTERM/SIGINT (or shutdown()) it stops accepting, lets in-flight requests finish
// (up to shutdown_grace), closes idle connections, and run() returns.
class HttpServer {
 public:
  HttpServer(ServerOptions options, RequestHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens. Returns the bound port. kUnavailable when the address is taken.
  Result<uint16_t> listen();
  // Serves on `threads` threads until shutdown completes. `on_shutdown` runs once, when
  // the shutdown begins (before in-flight requests finish).
  void run(std::function<void()> on_shutdown = {});
  // Begins a graceful shutdown. Thread-safe, idempotent.
  void shutdown();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fabrica::api
