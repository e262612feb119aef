#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "crypto/tls.h"

namespace fabrica::client {

struct ClientResponse {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // Lower-case names.
  std::string header(std::string_view name) const;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

// A blocking HTTP/1.1 client for one server, keeping its connection alive between requests.
// Not thread-safe: one client per thread.
class HttpClient {
 public:
  // `base_url` is "https://HOST:PORT" (verified as `tls` says) or "http://HOST:PORT".
  // kInvalidArgument otherwise, or when `tls` names CA files that do not load.
  static Result<std::unique_ptr<HttpClient>> create(std::string_view base_url,
                                                    const crypto::TlsClientOptions& tls = {});
  ~HttpClient();

  // kUnavailable when the server cannot be reached. A stale kept-alive connection is
  // re-opened once, before anything of the request was answered.
  Result<ClientResponse> request(std::string_view method, std::string_view target,
                                 std::string_view body = {}, const Headers& headers = {});
  // The same exchange, with the response body handed to `sink` piece by piece as it arrives
  // (never held whole) when the status is 2xx, together with the response's status and
  // headers (`head`, body empty); other answers keep their body (at most 1 MiB) in the
  // response. `sink` returning false stops the transfer: kAborted, connection closed. A cut
  // connection is kUnavailable (the caller resumes with Range). No retry, no redirect.
  using Sink = std::function<bool(const ClientResponse& head, std::string_view piece)>;
  Result<ClientResponse> fetch(std::string_view method, std::string_view target,
                               const Headers& headers, const Sink& sink);
  const std::string& base_url() const { return base_url_; }
  // A read or write that waits longer than `limit` fails the request (kUnavailable) and
  // closes the connection; zero (the default) waits forever.
  void set_timeout(std::chrono::milliseconds limit) { timeout_ = limit; }
  // With a pin: the CA certificate (PEM) the pin matched, once a connection was made.
  const std::string& pinned_ca() const { return pinned_ca_; }

 private:
  class Connection;
  HttpClient(std::string base_url, std::string host, std::string port);
  void arm(Connection& c) const;
  Result<void> connect(Connection& c);
  // Connects unless the kept-alive connection is open.
  Result<void> ensure_open(Connection& c);
  Result<ClientResponse> attempt(std::string_view method, std::string_view target,
                                 std::string_view body, const Headers& headers);

  std::string base_url_;
  std::string host_;
  std::string port_;
  std::unique_ptr<Connection> connection_;
  std::chrono::milliseconds timeout_{0};
  crypto::TlsClientOptions tls_;
  std::string pinned_ca_;
};

// The Fabrica REST API over HttpClient: JSON in and out, error bodies turned back into
// Errors with the server's code, message and field.
class ApiClient {
 public:
  ApiClient(std::unique_ptr<HttpClient> http, std::string token)
      : http_(std::move(http)), token_(std::move(token)) {}

  Result<Json> get(std::string_view target) { return call("GET", target, nullptr); }
  Result<Json> post(std::string_view target, const Json& body) {
    return call("POST", target, body);
  }
  Result<Json> del(std::string_view target) { return call("DELETE", target, nullptr); }
  Result<Json> call(std::string_view method, std::string_view target, const Json& body,
                    const Headers& extra = {});
  // A request whose body is raw bytes (an image upload piece), answered with JSON.
  Result<Json> send_bytes(std::string_view method, std::string_view target, std::string_view bytes,
                          const Headers& extra = {});
  // POST /api/v1/auth/tokens with HTTP Basic.
  Result<Json> login(std::string_view user, std::string_view password, const Json& body);

  void set_token(std::string token) { token_ = std::move(token); }
  HttpClient& http() { return *http_; }

 private:
  Result<Json> decode(const ClientResponse& response);
  std::unique_ptr<HttpClient> http_;
  std::string token_;
};

// Percent-encodes a query parameter value.
std::string url_encode(std::string_view value);

}  // namespace fabrica::client
