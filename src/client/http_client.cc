#include "client/http_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include "crypto/crypto.h"

namespace fabrica::client {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

class HttpClient::Connection {
 public:
  asio::io_context ioc;
  beast::tcp_stream stream{ioc};  // Plain HTTP.
  // HTTPS: a new TLS stream per TCP connection (a TLS session cannot be reopened).
  std::shared_ptr<asio::ssl::context> tls_context;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  bool open = false;
  beast::tcp_stream& tcp() { return tls ? tls->next_layer() : stream; }
};

std::string ClientResponse::header(std::string_view name) const {
  auto it = headers.find(std::string(name));
  return it == headers.end() ? std::string() : it->second;
}

std::string url_encode(std::string_view value) {
  return boost::urls::encode(value, boost::urls::unreserved_chars);
}

Result<std::unique_ptr<HttpClient>> HttpClient::create(std::string_view base_url,
                                                       const crypto::TlsClientOptions& tls) {
  std::string url(base_url);
  while (!url.empty() && url.back() == '/') url.pop_back();
  bool https = url.starts_with("https://");
  if (!https && !url.starts_with("http://")) {
    return fail(ErrorCode::kInvalidArgument,
                "endpoint must look like https://HOST:PORT (or http:// on loopback)", "endpoint");
  }
  std::string hostport = url.substr(https ? 8 : 7);
  auto colon = hostport.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hostport.size() ||
      hostport.find('/') != std::string::npos) {
    return fail(ErrorCode::kInvalidArgument, "endpoint must look like https://HOST:PORT",
                "endpoint");
  }
  std::string host = hostport.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  std::unique_ptr<HttpClient> client(new HttpClient(url, host, hostport.substr(colon + 1)));
  if (https) {
    FAB_ASSIGN_OR_RETURN(client->connection_->tls_context, crypto::make_client_context(tls));
    client->tls_ = tls;
  }
  return client;
}

HttpClient::HttpClient(std::string base_url, std::string host, std::string port)
    : base_url_(std::move(base_url)),
      host_(std::move(host)),
      port_(std::move(port)),
      connection_(std::make_unique<Connection>()) {}

HttpClient::~HttpClient() = default;

Result<ClientResponse> HttpClient::request(std::string_view method, std::string_view target,
                                           std::string_view body, const Headers& headers) {
  bool reused = connection_->open;
  auto response = attempt(method, target, body, headers);
  if (!response && reused && response.error().code() == ErrorCode::kUnavailable) {
    return attempt(method, target, body, headers);  // The kept-alive connection had closed.
  }
  return response;
}

void HttpClient::arm(Connection& c) const {
  if (timeout_.count() > 0) {
    c.tcp().expires_after(timeout_);
  } else {
    c.tcp().expires_never();
  }
}

Result<void> HttpClient::connect(Connection& c) {
  beast::error_code ec;
  tcp::resolver resolver(c.ioc);
  auto endpoints = resolver.resolve(host_, port_, ec);
  if (c.tls_context) {
    c.tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(c.ioc, *c.tls_context);
  }
  if (!ec) {
    arm(c);
    c.tcp().async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
    c.ioc.restart();
    c.ioc.run();
  }
  if (ec) return fail(ErrorCode::kUnavailable, "cannot reach " + base_url_ + ": " + ec.message());
  if (c.tls) {
    FAB_TRY(crypto::prepare_client(c.tls->native_handle(), host_, tls_));
    arm(c);
    c.tls->async_handshake(asio::ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
    c.ioc.restart();
    c.ioc.run();
    if (ec) {
      std::string why = ec.message();
      c.tcp().socket().close(ec);
      return fail(ErrorCode::kUnavailable, "TLS with " + base_url_ + " failed: " + why);
    }
    if (!tls_.pin_sha256.empty()) {
      auto pinned = crypto::check_pinned_chain(c.tls->native_handle(), host_, tls_.pin_sha256);
      if (!pinned) {
        c.tcp().socket().close(ec);
        return fail(pinned.error().code(), base_url_ + ": " + pinned.error().message());
      }
      pinned_ca_ = std::move(*pinned);
    }
  }
  return {};
}

Result<void> HttpClient::ensure_open(Connection& c) {
  if (c.open) return {};
  FAB_TRY(connect(c));
  c.open = true;
  c.buffer.clear();
  return {};
}

namespace {
template <typename Fields>
void copy_headers(const Fields& fields, ClientResponse& out) {
  for (const auto& field : fields) {
    std::string name(field.name_string());
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    out.headers[name] = std::string(field.value());
  }
}
}  // namespace

Result<ClientResponse> HttpClient::attempt(std::string_view method, std::string_view target,
                                           std::string_view body, const Headers& headers) {
  Connection& c = *connection_;
  beast::error_code ec;
  FAB_TRY(ensure_open(c));
  http::request<http::string_body> req{http::string_to_verb(method), std::string(target), 11};
  req.set(http::field::host, host_ + ":" + port_);
  req.set(http::field::user_agent, "fabrica-cli");
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : headers) req.set(name, value);
  req.body() = std::string(body);
  req.prepare_payload();
  http::response_parser<http::string_body> parser;
  parser.body_limit(256 * 1024 * 1024);
  // Asynchronous under the hood, so a request that outlives the timeout is cut.
  arm(c);
  auto exchange = [&](auto& stream) {
    http::async_write(stream, req, [&](beast::error_code e, size_t) {
      ec = e;
      if (!ec) {
        http::async_read(stream, c.buffer, parser, [&](beast::error_code e2, size_t) { ec = e2; });
      }
    });
  };
  if (c.tls) {
    exchange(*c.tls);
  } else {
    exchange(c.stream);
  }
  c.ioc.restart();
  c.ioc.run();
  if (ec) {
    c.tcp().socket().close(ec);
    c.open = false;
    return fail(ErrorCode::kUnavailable, "connection to " + base_url_ + " failed: " + ec.message());
  }
  auto res = parser.release();
  ClientResponse out{.status = static_cast<int>(res.result_int()), .body = std::move(res.body())};
  copy_headers(res, out);
  if (!res.keep_alive()) {
    c.tcp().socket().close(ec);
    c.open = false;
  }
  return out;
}

Result<ClientResponse> HttpClient::fetch(std::string_view method, std::string_view target,
                                         const Headers& headers, const Sink& sink) {
  Connection& c = *connection_;
  beast::error_code ec;
  FAB_TRY(ensure_open(c));
  http::request<http::empty_body> req{http::string_to_verb(method), std::string(target), 11};
  req.set(http::field::host, host_ + ":" + port_);
  req.set(http::field::user_agent, "fabricad");
  for (const auto& [name, value] : headers) req.set(name, value);
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  // Beast reads at most the buffer's free room (and 64 KiB) per system call: room for large
  // reads, or a body arrives in pieces of a few hundred bytes.
  c.buffer.reserve(1 << 20);
  bool aborted = false;
  ClientResponse out;
  // One asynchronous step at a time under the timeout, so a stalled server is cut.
  auto run = [&](auto& stream) {
    arm(c);
    http::async_write(stream, req, [&](beast::error_code e, size_t) { ec = e; });
    c.ioc.restart();
    c.ioc.run();
    if (ec) return;
    arm(c);
    http::async_read_header(stream, c.buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
    c.ioc.restart();
    c.ioc.run();
    if (ec) return;
    out.status = static_cast<int>(parser.get().result_int());
    copy_headers(parser.get(), out);
    bool ok = out.status >= 200 && out.status < 300;
    std::vector<char> chunk(1 << 20);
    // One watchdog per MiB instead of the stream's timer, which beast re-arms (a timerfd
    // call) on every 64 KiB read.
    c.tcp().expires_never();
    asio::steady_timer watchdog(c.ioc);
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      if (timeout_.count() > 0) {
        watchdog.expires_after(timeout_);
        watchdog.async_wait([&](beast::error_code e) {
          if (!e) c.tcp().socket().cancel();
        });
      }
      http::async_read(stream, c.buffer, parser, [&](beast::error_code e, size_t) {
        ec = e;
        watchdog.cancel();
      });
      c.ioc.restart();
      c.ioc.run();
      if (ec == http::error::need_buffer) ec = {};
      // What arrived before an error is handed on too: a resumed download starts after it.
      size_t got = chunk.size() - parser.get().body().size;
      std::string_view piece(chunk.data(), got);
      if (ok) {
        if (got > 0 && !sink(out, piece)) {
          aborted = true;
          return;
        }
      } else if (out.body.size() < (1 << 20)) {
        out.body.append(piece.substr(0, (1 << 20) - out.body.size()));
      }
      if (ec) return;
    }
  };
  if (c.tls) {
    run(*c.tls);
  } else {
    run(c.stream);
  }
  if (ec || aborted) {
    c.tcp().socket().close(ec);
    c.open = false;
    if (aborted) return fail(ErrorCode::kAborted, "transfer from " + base_url_ + " stopped");
    return fail(ErrorCode::kUnavailable, "connection to " + base_url_ + " failed: " + ec.message());
  }
  if (!parser.get().keep_alive()) {
    c.tcp().socket().close(ec);
    c.open = false;
  }
  return out;
}

Result<Json> ApiClient::decode(const ClientResponse& response) {
  if (response.status >= 200 && response.status < 300) {
    if (response.body.empty()) return Json(nullptr);
    return parse_json(response.body);
  }
  auto body = parse_json(response.body);
  if (body && body->contains("error") && (*body)["error"].is_object()) {
    const Json& e = (*body)["error"];
    std::string field =
        e.value("field", Json(nullptr)).is_string() ? e["field"].get<std::string>() : "";
    Error error(error_code_from_name(e.value("code", "INTERNAL")), e.value("message", "error"),
                field);
    if (auto retry = response.header("retry-after"); !retry.empty()) {
      error = std::move(error).with_retry_after(std::atoi(retry.c_str()));
    }
    return fail(std::move(error));
  }
  return fail(ErrorCode::kInternal, "HTTP " + std::to_string(response.status) + " from server");
}

Result<Json> ApiClient::call(std::string_view method, std::string_view target, const Json& body,
                             const Headers& extra) {
  Headers headers = extra;
  if (!token_.empty()) headers.emplace_back("Authorization", "Bearer " + token_);
  std::string text = body.is_null() ? std::string() : dump_json(body);
  FAB_ASSIGN_OR_RETURN(auto response, http_->request(method, target, text, headers));
  return decode(response);
}

Result<Json> ApiClient::send_bytes(std::string_view method, std::string_view target,
                                   std::string_view bytes, const Headers& extra) {
  Headers headers = extra;
  if (!token_.empty()) headers.emplace_back("Authorization", "Bearer " + token_);
  headers.emplace_back("Content-Type", "application/octet-stream");
  FAB_ASSIGN_OR_RETURN(auto response, http_->request(method, target, bytes, headers));
  return decode(response);
}

Result<Json> ApiClient::login(std::string_view user, std::string_view password, const Json& body) {
  std::string credentials = std::string(user) + ":" + std::string(password);
  Headers headers{{"Authorization", "Basic " + crypto::base64_encode(credentials)}};
  FAB_ASSIGN_OR_RETURN(auto response,
                       http_->request("POST", "/api/v1/auth/tokens",
                                      body.is_null() ? "" : dump_json(body), headers));
  return decode(response);
}

}  // namespace fabrica::client
