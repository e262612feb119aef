#include "api/http_server.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <charconv>
#include <mutex>
#include <set>
#include <thread>

#include "crypto/crypto.h"
#include "crypto/tls.h"

namespace fabrica::api {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

namespace {

// One client connection; `stream` (in the subclasses) is what requests are read from and
// answers written to, tcp() the socket under it (timeouts, shutdown).
struct Connection {
  virtual ~Connection() = default;
  virtual beast::tcp_stream& tcp() = 0;
  bool busy = false;  // Touched only on the connection's own io_context thread.
};

struct PlainConnection : Connection {
  explicit PlainConnection(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream& tcp() override { return stream; }
  beast::tcp_stream stream;
};

struct TlsConnection : Connection {
  TlsConnection(tcp::socket socket, std::shared_ptr<asio::ssl::context> ctx)
      : context(std::move(ctx)), stream(std::move(socket), *context) {}
  beast::tcp_stream& tcp() override { return stream.next_layer(); }
  std::shared_ptr<asio::ssl::context> context;  // Outlives the stream; a reload swaps it for
                                                // new connections only.
  beast::ssl_stream<beast::tcp_stream> stream;
};

bool valid_request_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

}  // namespace

class HttpServer::Impl {
 public:
  Impl(ServerOptions options, RequestHandler handler)
      : options_(std::move(options)),
        handler_(std::move(handler)),
        contexts_(make_contexts(std::max<size_t>(1, options_.threads))),
        acceptor_(main()),
        signals_(main(), SIGTERM, SIGINT),
        grace_timer_(main()),
        id_prefix_(crypto::random_hex(4)) {
    for (auto& ctx : contexts_) guards_.emplace_back(ctx->get_executor());
  }

  Result<uint16_t> listen() {
    beast::error_code ec;
    auto address = asio::ip::make_address(options_.host, ec);
    if (ec)
      return fail(ErrorCode::kInvalidArgument, "bad listen address " + options_.host, "listen");
    tcp::endpoint endpoint(address, options_.port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return fail(ErrorCode::kUnavailable, "cannot listen on " + options_.host + ":" +
                                               std::to_string(options_.port) + ": " + ec.message());
    }
    return acceptor_.local_endpoint().port();
  }

  void run(std::function<void()> on_shutdown) {
    on_shutdown_ = std::move(on_shutdown);
    signals_.async_wait([this](beast::error_code ec, int) {
      if (!ec) shutdown();
    });
    asio::co_spawn(main(), accept_loop(), asio::detached);
    std::vector<std::thread> threads;
    for (size_t i = 1; i < contexts_.size(); ++i) {
      threads.emplace_back([this, i] { contexts_[i]->run(); });
    }
    main().run();
    for (auto& t : threads) t.join();
  }

  void shutdown() {
    asio::post(main(), [this] {
      if (stopping_.exchange(true)) return;
      guards_.clear();  // Each context returns once its connections are done.
      if (on_shutdown_) on_shutdown_();
      beast::error_code ignored;
      acceptor_.close(ignored);
      signals_.cancel(ignored);
      std::lock_guard lock(mutex_);
      for (const auto& conn : connections_) {
        asio::post(conn->tcp().get_executor(), [conn] {
          if (!conn->busy) conn->tcp().socket().cancel();
        });
      }
      grace_timer_.expires_after(options_.shutdown_grace);
      grace_timer_.async_wait([this](beast::error_code ec) {
        if (ec) return;
        std::lock_guard lock(mutex_);
        for (const auto& conn : connections_) {
          asio::post(conn->tcp().get_executor(), [conn] { conn->tcp().socket().close(); });
        }
      });
      if (connections_.empty()) cancel_grace_timer();
    });
  }

 private:
  static std::vector<std::unique_ptr<asio::io_context>> make_contexts(size_t n) {
    std::vector<std::unique_ptr<asio::io_context>> out;
    for (size_t i = 0; i < n; ++i) out.push_back(std::make_unique<asio::io_context>(1));
    return out;
  }
  asio::io_context& main() { return *contexts_[0]; }

  void cancel_grace_timer() {
    asio::post(main(), [this] { grace_timer_.cancel(); });
  }

  asio::awaitable<void> accept_loop() {
    while (!stopping_) {
      // Connections are spread over the contexts, one thread each: no locks between them.
      auto& ctx = *contexts_[next_context_++ % contexts_.size()];
      auto [ec, socket] = co_await acceptor_.async_accept(ctx, kTuple);
      if (ec) {
        if (stopping_ || ec == asio::error::operation_aborted) co_return;
        continue;
      }
      // An answer leaves in one write over plain HTTP but in several TLS records: without
      // TCP_NODELAY the later records wait for the client's delayed ACK (40 ms).
      socket.set_option(tcp::no_delay(true), ec);
      if (options_.tls) {
        auto conn = std::make_shared<TlsConnection>(std::move(socket), options_.tls->current());
        track(conn);
        asio::co_spawn(conn->tcp().get_executor(), session(conn), asio::detached);
      } else {
        auto conn = std::make_shared<PlainConnection>(std::move(socket));
        track(conn);
        asio::co_spawn(conn->tcp().get_executor(), session(conn), asio::detached);
      }
    }
  }

  void track(const std::shared_ptr<Connection>& conn) {
    std::lock_guard lock(mutex_);
    connections_.insert(conn);
  }

  void forget(const std::shared_ptr<Connection>& conn) {
    beast::error_code ec;
    conn->tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    conn->tcp().socket().close(ec);
    std::lock_guard lock(mutex_);
    connections_.erase(conn);
    if (stopping_ && connections_.empty()) cancel_grace_timer();
  }

  template <typename C>
  asio::awaitable<void> session(std::shared_ptr<C> conn) {
    beast::error_code ec;
    auto peer = conn->tcp().socket().remote_endpoint(ec);
    std::string remote = ec ? "unknown" : peer.address().to_string();
    if constexpr (std::is_same_v<C, TlsConnection>) {
      // Plain HTTP sent to this port fails here: the connection is closed unanswered.
      conn->busy = true;
      conn->tcp().expires_after(std::chrono::seconds(10));
      auto [hs_ec] = co_await conn->stream.async_handshake(asio::ssl::stream_base::server, kTuple);
      if (hs_ec) {
        forget(conn);
        co_return;
      }
    }
    beast::flat_buffer buffer;
    while (!stopping_) {
      http::request_parser<http::empty_body> head;
      head.header_limit(16 * 1024);
      head.body_limit(boost::none);  // Set once the route is known.
      conn->busy = false;
      conn->tcp().expires_after(options_.idle_timeout);
      auto [head_ec, head_bytes] =
          co_await http::async_read_header(conn->stream, buffer, head, kTuple);
      (void)head_bytes;
      conn->busy = true;
      if (head_ec) {
        if (head.got_some() && head_ec != http::error::end_of_stream &&
            head_ec != beast::error::timeout && head_ec != asio::error::operation_aborted) {
          co_await reject(conn, Error(ErrorCode::kInvalidArgument,
                                      "malformed HTTP request: " + head_ec.message()));
        }
        break;
      }
      auto start = std::chrono::steady_clock::now();
      const auto& header = head.get();
      HttpRequest request = request_head(header, remote);
      bool keep_alive = header.keep_alive() && !stopping_;
      unsigned version = header.version();
      if (beast::iequals(header[http::field::expect], "100-continue")) {
        http::response<http::empty_body> proceed{http::status::continue_, version};
        co_await http::async_write(conn->stream, proceed, kTuple);
      }
      std::optional<std::variant<HttpResponse, std::unique_ptr<BodySink>>> opened;
      if (options_.stream_opener && !request.path.empty()) opened = options_.stream_opener(request);
      if (opened && std::holds_alternative<HttpResponse>(*opened)) {
        // Refused before its body: answer, then drain what the client still sends.
        co_await respond(conn, request, std::get<HttpResponse>(std::move(*opened)), version, false,
                         start);
        co_await drain(conn);
        break;
      }
      if (opened) {
        auto sink = std::get<std::unique_ptr<BodySink>>(std::move(*opened));
        if (!co_await stream_body(conn, buffer, head, *sink, request, version, keep_alive, start)) {
          break;
        }
        continue;
      }
      if (request.content_length && *request.content_length > options_.body_limit) {
        co_await reject(conn, Error(ErrorCode::kPayloadTooLarge,
                                    "request body larger than " +
                                        std::to_string(options_.body_limit) + " bytes"));
        break;
      }
      http::request_parser<http::string_body> parser{std::move(head)};
      parser.body_limit(options_.body_limit);  // Chunked bodies count as they arrive.
      conn->tcp().expires_after(options_.idle_timeout);
      auto [read_ec, bytes] = co_await http::async_read(conn->stream, buffer, parser, kTuple);
      (void)bytes;
      if (read_ec == http::error::body_limit) {
        co_await reject(conn, Error(ErrorCode::kPayloadTooLarge,
                                    "request body larger than " +
                                        std::to_string(options_.body_limit) + " bytes"));
        break;
      }
      if (read_ec) {
        if (read_ec != http::error::end_of_stream && read_ec != beast::error::timeout &&
            read_ec != asio::error::operation_aborted) {
          co_await reject(conn, Error(ErrorCode::kInvalidArgument,
                                      "malformed HTTP request: " + read_ec.message()));
        }
        break;
      }
      request.body = std::move(parser.get().body());
      HttpResponse response;
      if (request.path.empty()) {
        response = error_response(Error(ErrorCode::kInvalidArgument, "malformed request target"),
                                  request.request_id);
      } else if (options_.offload && options_.offload(request)) {
        response = co_await offloaded(request);
      } else {
        response = handler_(request);
      }
      if (!co_await respond(conn, request, std::move(response), version, keep_alive, start)) {
        break;
      }
    }
    forget(conn);
  }

  // Runs the handler on the offload pool; the caller resumes on its own connection's thread.
  asio::awaitable<HttpResponse> offloaded(const HttpRequest& request) {
    if (offload_in_flight_.fetch_add(1) >= options_.offload_queue) {
      offload_in_flight_.fetch_sub(1);
      co_return error_response(
          Error(ErrorCode::kResourceExhausted, "too many logins in progress; try again shortly")
              .with_retry_after(1),
          request.request_id);
    }
    auto [ep, response] = co_await asio::co_spawn(
        offload_pool_,
        [this, &request]() -> asio::awaitable<HttpResponse> { co_return handler_(request); },
        kTuple);
    offload_in_flight_.fetch_sub(1);
    if (ep) {
      co_return error_response(
          Error(ErrorCode::kInternal, "internal error in an offloaded request"),
          request.request_id);
    }
    co_return std::move(response);
  }

  // Everything of a request but its body; an unparsable target leaves `path` empty.
  HttpRequest request_head(const http::request_header<>& header, const std::string& remote) {
    HttpRequest request{.method = std::string(header.method_string()),
                        .target = std::string(header.target()),
                        .authorization = std::string(header[http::field::authorization]),
                        .remote_address = remote,
                        .content_range = std::string(header[http::field::content_range]),
                        .if_none_match = std::string(header[http::field::if_none_match])};
    std::string_view incoming_id = header["X-Request-Id"];
    request.request_id =
        valid_request_id(incoming_id) ? std::string(incoming_id) : next_request_id();
    auto length = header[http::field::content_length];
    if (!length.empty()) {
      uint64_t n = 0;
      auto [end, ec] = std::from_chars(length.data(), length.data() + length.size(), n);
      if (ec == std::errc() && end == length.data() + length.size()) request.content_length = n;
    }
    auto url = boost::urls::parse_origin_form(request.target);
    if (url) {
      request.path = url->path();
      if (request.path.empty()) request.path = "/";
      for (auto param : url->params()) request.query.emplace(param.key, param.value);
    }
    return request;
  }

  // Feeds a request's body to `sink` as it arrives, then answers. Returns whether the
  // connection stays open.
  template <typename C>
  asio::awaitable<bool> stream_body(std::shared_ptr<C> conn, beast::flat_buffer& buffer,
                                    http::request_parser<http::empty_body>& head, BodySink& sink,
                                    const HttpRequest& request, unsigned version, bool keep_alive,
                                    std::chrono::steady_clock::time_point start) {
    std::vector<char> chunk(4 << 20);
    Result<void> written;
    bool gone = false;
    bool done = false;
    if (auto length = head.content_length(); length && !head.chunked()) {
      // A sized body is read straight from the socket in large pieces, past the parser:
      // first what arrived with the header, then the rest.
      uint64_t remaining = *length;
      size_t early = static_cast<size_t>(std::min<uint64_t>(buffer.size(), remaining));
      if (early > 0) {
        written =
            sink.write(std::string_view(static_cast<const char*>(buffer.data().data()), early));
        buffer.consume(early);
        remaining -= early;
      }
      while (written && remaining > 0) {
        conn->tcp().expires_after(options_.idle_timeout);
        size_t want = static_cast<size_t>(std::min<uint64_t>(chunk.size(), remaining));
        auto [ec, n] =
            co_await conn->stream.async_read_some(asio::buffer(chunk.data(), want), kTuple);
        if (n > 0) {
          written = sink.write(std::string_view(chunk.data(), n));
          remaining -= n;
        }
        if (ec) {
          gone = remaining > 0;
          break;
        }
      }
      done = remaining == 0;
    } else {
      http::request_parser<http::buffer_body> parser{std::move(head)};
      parser.body_limit(boost::none);  // The sink knows how much it takes.
      while (!parser.is_done()) {
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        conn->tcp().expires_after(options_.idle_timeout);
        auto [ec, n] = co_await http::async_read(conn->stream, buffer, parser, kTuple);
        (void)n;
        size_t got = chunk.size() - parser.get().body().size;
        if (got > 0) {
          written = sink.write(std::string_view(chunk.data(), got));
          if (!written) break;
        }
        if (ec && ec != http::error::need_buffer) {
          gone = true;
          break;
        }
      }
      done = parser.is_done();
    }
    HttpResponse response = sink.finish(written && !gone && done);
    if (gone) co_return false;
    if (!written) {
      co_await respond(conn, request, error_response(written.error(), request.request_id), version,
                       false, start);
      co_await drain(conn);
      co_return false;
    }
    co_return co_await respond(conn, request, std::move(response), version, keep_alive, start);
  }

  // After an answer that ends the connection: read and drop what the client still sends (up
  // to 64 MiB), so it reads the answer rather than a reset.
  template <typename C>
  asio::awaitable<void> drain(std::shared_ptr<C> conn) {
    beast::error_code ec;
    conn->tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    conn->tcp().expires_after(std::chrono::seconds(5));
    std::array<char, 64 * 1024> sink;
    for (size_t drained = 0; drained < 64 * 1024 * 1024;) {
      auto [read_ec, n] = co_await conn->stream.async_read_some(asio::buffer(sink), kTuple);
      if (read_ec) break;
      drained += n;
    }
  }

  std::string next_request_id() {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%s-%08llx", id_prefix_.c_str(),
                  static_cast<unsigned long long>(++request_counter_));
    return buf;
  }

  // Answers an unreadable request and closes, draining what the client still sends so it
  // can read the answer instead of a reset.
  template <typename C>
  asio::awaitable<void> reject(std::shared_ptr<C> conn, Error error) {
    HttpResponse response = error_response(error, next_request_id());
    http::response<http::string_body> out{static_cast<http::status>(response.status), 11};
    out.set(http::field::content_type, response.content_type);
    out.set("X-Request-Id", next_request_id());
    out.keep_alive(false);
    out.body() = response.body;
    out.prepare_payload();
    conn->tcp().expires_after(std::chrono::seconds(5));
    co_await http::async_write(conn->stream, out, kTuple);
    co_await drain(conn);
  }

  // Writes the answer to `request`; returns whether the connection stays open.
  template <typename C>
  asio::awaitable<bool> respond(std::shared_ptr<C> conn, const HttpRequest& request,
                                HttpResponse response, unsigned version, bool keep_alive,
                                std::chrono::steady_clock::time_point start) {
    http::response<http::string_body> out{static_cast<http::status>(response.status), version};
    out.set(http::field::server, "fabricad");
    if (!response.content_type.empty()) out.set(http::field::content_type, response.content_type);
    out.set(http::field::cache_control, "no-store");
    out.set("X-Request-Id", request.request_id);
    for (const auto& [name, value] : response.headers) out.set(name, value);
    keep_alive = keep_alive && !stopping_;
    out.keep_alive(keep_alive);
    out.body() = std::move(response.body);
    out.prepare_payload();
    size_t bytes = out.body().size();
    conn->tcp().expires_after(options_.idle_timeout);
    auto [write_ec, written] = co_await http::async_write(conn->stream, out, kTuple);
    (void)written;
    if (options_.access_log) {
      auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
      options_.access_log->info("{} {} {} {} {} {}B {}us", request.request_id,
                                request.remote_address, request.method, request.target,
                                response.status, bytes, micros);
    }
    co_return keep_alive && !write_ec;
  }

  ServerOptions options_;
  RequestHandler handler_;
  // One io_context per server thread; the first also runs the acceptor, signals and timer.
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  size_t next_context_ = 0;
  tcp::acceptor acceptor_;
  asio::signal_set signals_;
  asio::steady_timer grace_timer_;
  std::string id_prefix_;
  std::atomic<uint64_t> request_counter_{0};
  std::atomic<bool> stopping_{false};
  std::function<void()> on_shutdown_;
  std::mutex mutex_;
  std::set<std::shared_ptr<Connection>> connections_;
  std::atomic<size_t> offload_in_flight_{0};
  // Last member: destroyed (stopped and joined) first, while everything it may touch lives.
  asio::thread_pool offload_pool_{std::max<size_t>(1, options_.offload_threads)};
};

HttpServer::HttpServer(ServerOptions options, RequestHandler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {}
HttpServer::~HttpServer() = default;
Result<uint16_t> HttpServer::listen() { return impl_->listen(); }
void HttpServer::run(std::function<void()> on_shutdown) { impl_->run(std::move(on_shutdown)); }
void HttpServer::shutdown() { impl_->shutdown(); }

}  // namespace fabrica::api
