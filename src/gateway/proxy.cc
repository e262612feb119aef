#include "gateway/proxy.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast.hpp>
#include <boost/beast/ssl.hpp>
#include <thread>
#include <unordered_map>

#include "crypto/tls.h"
#include "gateway/balancer.h"
#include "gateway/directory.h"
#include "gateway/limits.h"
#include "gateway/metering.h"
#include "gateway/metrics.h"
#include "gateway/openai.h"

namespace fabrica::gateway {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Steady = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

// A kept-alive connection to one backend, with the bytes read past its last answer: plain
// (`stream`) or, for an https backend, TLS over a connection of its own (`tls`).
struct Upstream {
  explicit Upstream(asio::any_io_executor ex) : stream(ex) {}
  beast::tcp_stream stream;
  std::unique_ptr<TlsStream> tls;
  beast::flat_buffer buffer;
  bool reused = false;
  beast::tcp_stream& tcp() { return tls ? tls->next_layer() : stream; }
};

template <typename Stream>
beast::tcp_stream& lowest(Stream& s) {
  return beast::get_lowest_layer(s);
}

// Watches a client connection while its request is upstream: a client that hangs up cancels
// the upstream request at once.
struct Watch {
  bool active = true;
  bool gone = false;
  Upstream* upstream = nullptr;
};

double seconds_since(Steady::time_point t) {
  return std::chrono::duration<double>(Steady::now() - t).count();
}

// One request on its way through: what the usage record and the metrics will say.
struct Exchange {
  Steady::time_point start = Steady::now();
  std::shared_ptr<const Snapshot> snapshot;  // Keeps `key` and `target` alive.
  std::optional<double> ttft;
  int status = 0;
  std::string tenant;    // Group id, as a label.
  std::string endpoint;  // Name, as a label.
  const KeyEntry* key = nullptr;
  const EndpointEntry* target = nullptr;
  std::string backend;
  std::string kind = "chat";
  bool stream = false;
  TokenCount tokens;
  int64_t time_ms = 0;
  int64_t estimate = 0;
  bool admitted = false;
  std::string request_id;
  bool finished = false;  // Metered: the record is in the spool.
};

// One byte of what the client sent, left unread: 0 at end of stream, < 0 with errno.
ssize_t peek(int fd) {
  char byte;
  return ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
}

bool is_retryable_status(unsigned status) {
  return status == 502 || status == 503 || status == 504;
}

// A request the HTTP parser refused (as opposed to a connection that ended or timed out).
bool is_malformed(const beast::error_code& ec) {
  return ec.category() == http::make_error_code(http::error::bad_target).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

using ResponseParser = http::response_parser<http::buffer_body>;

// The head of a backend's answer, read on a connection that is now the request's own.
struct Head {
  std::unique_ptr<Upstream> upstream;
  std::unique_ptr<ResponseParser> parser;
  beast::error_code error;
  bool timed_out = false;
};

// How relaying an answer ended.
struct Relayed {
  bool client_ok = false;  // The client connection can take another request.
  bool reusable = false;   // The upstream connection can go back to the pool.
};

}  // namespace

class Proxy::Impl {
 public:
  Impl(ProxyOptions options, ProxyParts parts)
      : options_(std::move(options)),
        parts_(parts),
        workers_(std::max<size_t>(1, options_.threads)),
        acceptor_(workers_[0].ioc),
        admin_acceptor_(workers_[0].ioc),
        signals_(workers_[0].ioc, SIGTERM, SIGINT) {
    for (auto& w : workers_) w.guard.emplace(w.ioc.get_executor());
  }

  Result<void> listen() {
    FAB_ASSIGN_OR_RETURN(backend_tls_,
                         crypto::make_client_context({.ca_file = options_.backend_ca_file}));
    FAB_ASSIGN_OR_RETURN(port_, bind(acceptor_, options_.host, options_.port));
    FAB_ASSIGN_OR_RETURN(admin_port_,
                         bind(admin_acceptor_, options_.admin_host, options_.admin_port));
    return {};
  }
  uint16_t port() const { return port_; }
  uint16_t admin_port() const { return admin_port_; }

  void run() {
    signals_.async_wait([this](beast::error_code ec, int) {
      if (!ec) shutdown();
    });
    asio::co_spawn(workers_[0].ioc, accept_loop(acceptor_, false), asio::detached);
    asio::co_spawn(workers_[0].ioc, accept_loop(admin_acceptor_, true), asio::detached);
    asio::co_spawn(workers_[0].ioc, health_loop(), asio::detached);
    std::vector<std::thread> threads;
    for (size_t i = 1; i < workers_.size(); ++i) {
      threads.emplace_back([this, i] { workers_[i].ioc.run(); });
    }
    workers_[0].ioc.run();
    for (auto& t : threads) t.join();
  }

  void shutdown() {
    asio::post(workers_[0].ioc, [this] {
      if (stopping_) return;
      stopping_ = true;
      beast::error_code ec;
      acceptor_.close(ec);
      spdlog::info("shutting down: {} requests in flight", in_flight_.load());
      asio::co_spawn(workers_[0].ioc, drain(), asio::detached);
    });
  }

 private:
  struct Worker {
    asio::io_context ioc{1};
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
    // Idle upstream connections by backend URL; touched only on this worker's thread.
    std::unordered_map<std::string, std::vector<std::unique_ptr<Upstream>>> pool;
  };

  static Result<uint16_t> bind(tcp::acceptor& acceptor, const std::string& host, uint16_t port) {
    beast::error_code ec;
    auto address = asio::ip::make_address(host, ec);
    if (ec) return fail(ErrorCode::kInvalidArgument, "bad listen address " + host, "listen");
    tcp::endpoint endpoint(address, port);
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return fail(ErrorCode::kUnavailable,
                  "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
    }
    return acceptor.local_endpoint().port();
  }

  asio::awaitable<void> drain() {
    asio::steady_timer timer(workers_[0].ioc);
    auto deadline = Steady::now() + options_.shutdown_grace;
    while (in_flight_.load() > 0 && Steady::now() < deadline) {
      timer.expires_after(std::chrono::milliseconds(20));
      co_await timer.async_wait(kTuple);
    }
    beast::error_code ec;
    admin_acceptor_.close(ec);
    for (auto& w : workers_) {
      w.guard.reset();
      w.ioc.stop();
    }
  }

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, bool admin) {
    size_t next = 0;
    while (acceptor.is_open()) {
      Worker& w = admin ? workers_[0] : workers_[next++ % workers_.size()];
      auto [ec, socket] = co_await acceptor.async_accept(w.ioc, kTuple);
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
        // Out of descriptors, most likely: back off a moment instead of spinning.
        asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(50));
        co_await pause.async_wait(kTuple);
        continue;
      }
      socket.set_option(tcp::no_delay(true), ec);
      asio::co_spawn(w.ioc, session(w, std::move(socket), admin), asio::detached);
    }
  }

  // ---- client side ----

  asio::awaitable<void> session(Worker& w, tcp::socket socket, bool admin) {
    if (admin || !options_.tls) {
      co_await serve_connection(w, std::make_shared<beast::tcp_stream>(std::move(socket)), admin);
      co_return;
    }
    // The context stays alive for the connection's whole life (a reload swaps it for new
    // connections only); plain HTTP sent to this port fails the handshake and is closed.
    std::shared_ptr<asio::ssl::context> context = options_.tls->current();
    auto client = std::make_shared<TlsStream>(std::move(socket), *context);
    lowest(*client).expires_after(std::chrono::seconds(10));
    auto [hs_ec] = co_await client->async_handshake(asio::ssl::stream_base::server, kTuple);
    if (!hs_ec) co_await serve_connection(w, client, admin);
    beast::error_code ec;
    lowest(*client).socket().close(ec);
  }

  template <typename Stream>
  asio::awaitable<void> serve_connection(Worker& w, std::shared_ptr<Stream> client, bool admin) {
    beast::flat_buffer buffer;
    while (true) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(options_.body_limit);
      parser.header_limit(64 * 1024);
      lowest(*client).expires_after(options_.client_idle);
      auto [ec, n] = co_await http::async_read(*client, buffer, parser, kTuple);
      if (ec == http::error::body_limit) {
        ApiError e = body_too_large(options_.body_limit);
        if (co_await send_error(*client, e, 11, false, {}, "")) co_await linger(*client);
        break;
      }
      if (is_malformed(ec)) {
        co_await send_error(*client, invalid_request("malformed HTTP request"), 11, false, {}, "");
        break;
      }
      if (ec) break;
      auto& req = parser.get();
      bool keep = req.keep_alive() && !stopping_;
      bool ok = admin ? co_await admin_request(*client, req, keep)
                      : co_await request(w, client, req, keep);
      if (!ok || !keep) break;
    }
    beast::error_code ec;
    lowest(*client).socket().shutdown(tcp::socket::shutdown_send, ec);
    lowest(*client).socket().close(ec);
  }

  // After an answer sent before the body was read (413): stop sending and read what the client
  // is still sending, for a moment, so it gets to read the answer instead of a reset.
  template <typename Stream>
  asio::awaitable<void> linger(Stream& client) {
    beast::error_code ec;
    lowest(client).socket().shutdown(tcp::socket::shutdown_send, ec);
    std::array<char, 16384> sink;
    auto deadline = Steady::now() + std::chrono::seconds(2);
    size_t drained = 0;
    while (drained < (size_t{256} << 20)) {
      lowest(client).expires_at(deadline);
      auto [rec, n] = co_await client.async_read_some(asio::buffer(sink), kTuple);
      if (rec) break;
      drained += n;
    }
  }

  template <typename Stream>
  asio::awaitable<bool> write_response(Stream& client, http::response<http::string_body>& res) {
    res.prepare_payload();
    lowest(client).expires_after(options_.client_write_timeout);
    auto [ec, n] = co_await http::async_write(client, res, kTuple);
    co_return !ec;
  }

  template <typename Stream>
  asio::awaitable<bool> send_error(Stream& client, const ApiError& e, unsigned version, bool keep,
                                   const Headers& extra, const std::string& request_id) {
    http::response<http::string_body> res{static_cast<http::status>(e.status), version};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::server, "fabrica-gateway");
    if (!request_id.empty()) res.set("x-request-id", request_id);
    for (const auto& [name, value] : extra) res.set(name, value);
    res.keep_alive(keep);
    res.body() = e.body();
    co_return co_await write_response(client, res);
  }

  template <typename Stream>
  asio::awaitable<bool> admin_request(Stream& client, const http::request<http::string_body>& req,
                                      bool keep) {
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.keep_alive(keep);
    std::string_view target = req.target();
    if (target == "/metrics") {
      res.set(http::field::content_type, "text/plain; version=0.0.4");
      res.body() = parts_.metrics.render(gauges());
    } else if (target == "/healthz") {
      res.set(http::field::content_type, "application/json");
      res.body() = dump_json(Json{{"status", "ok"},
                                  {"snapshot", parts_.directory.loaded()},
                                  {"spool_bytes", parts_.spool.pending_bytes()}});
    } else {
      res.result(http::status::not_found);
      res.set(http::field::content_type, "text/plain");
      res.body() = "not found\n";
    }
    co_return co_await write_response(client, res);
  }

  std::string gauges() {
    std::string out;
    out +=
        "# HELP fabrica_gateway_backend_healthy 1 unless passive or active checks ejected "
        "it.\n# TYPE fabrica_gateway_backend_healthy gauge\n";
    auto backends = parts_.balancer.all();
    for (const auto& b : backends) {
      out += "fabrica_gateway_backend_healthy{backend=\"" + b->address().url + "\"} " +
             (parts_.balancer.healthy(*b) ? "1" : "0") + "\n";
    }
    out +=
        "# HELP fabrica_gateway_backend_outstanding Requests in flight per backend.\n"
        "# TYPE fabrica_gateway_backend_outstanding gauge\n";
    for (const auto& b : backends) {
      out += "fabrica_gateway_backend_outstanding{backend=\"" + b->address().url + "\"} " +
             std::to_string(b->outstanding()) + "\n";
    }
    out +=
        "# HELP fabrica_gateway_usage_spool_bytes Usage records not yet acknowledged by "
        "fabricad.\n# TYPE fabrica_gateway_usage_spool_bytes gauge\n";
    out +=
        "fabrica_gateway_usage_spool_bytes " + std::to_string(parts_.spool.pending_bytes()) + "\n";
    return out;
  }

  // Everything the end user asked, from key to answer. False when the connection is done.
  template <typename Stream>
  asio::awaitable<bool> request(Worker& w, std::shared_ptr<Stream> client,
                                http::request<http::string_body>& req, bool keep) {
    ++in_flight_;
    Exchange x;
    x.time_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(parts_.clock.now().time_since_epoch())
            .count();
    x.request_id = "gw-" + std::to_string(++request_counter_);
    bool ok = co_await serve(w, client, req, keep, x);
    finish(x);
    --in_flight_;
    co_return ok;
  }

  // Meters a request once: metrics, limits settled, and its usage record appended to the
  // spool. Called before the last byte of the answer goes out, so a gateway killed right after
  // a client got its answer still has the record; request() calls it again for answers that
  // never got that far (a no-op when already done).
  void finish(Exchange& x) {
    if (x.finished) return;
    x.finished = true;
    double latency = seconds_since(x.start);
    parts_.metrics.request(x.tenant, x.endpoint, x.status, latency, x.ttft, x.tokens.input,
                           x.tokens.output);
    if (x.admitted) {
      parts_.limiter.settle(x.key->id, x.key->tpm, x.estimate, x.tokens.input + x.tokens.output);
      parts_.limiter.finish(x.key->gid);
    }
    if (x.key == nullptr) return;  // Nobody to bill: no record.
    Json record{{"id", parts_.ids.next()},
                {"time_ms", x.time_ms},
                {"gid", x.key->gid},
                {"uid", x.key->uid},
                {"apikey_id", x.key->id},
                {"endpoint_id", x.target ? x.target->id : -1},
                {"endpoint", x.target ? x.target->name : ""},
                {"model", x.target ? x.target->model : ""},
                {"backend", x.backend},
                {"kind", x.kind},
                {"stream", x.stream},
                {"status", x.status},
                {"input_tokens", x.tokens.input},
                {"output_tokens", x.tokens.output},
                {"latency_ms", latency * 1000},
                {"ttft_ms", x.ttft ? Json(*x.ttft * 1000) : Json(nullptr)},
                {"gateway", parts_.ids.name()}};
    if (x.target && !x.backend.empty()) {
      if (int64_t vm = x.target->vm_for(x.backend); vm >= 0) record["vm_id"] = vm;
    }
    if (auto r = parts_.spool.append(record); !r) {
      spdlog::error("usage record lost: {}", r.error().message());
    }
    if (parts_.shipper && parts_.spool.pending_bytes() > (256u << 10)) parts_.shipper->wake();
  }

  template <typename Stream>
  asio::awaitable<bool> fail_with(Stream& client, Exchange& x, const ApiError& e, unsigned version,
                                  bool keep, const Headers& extra = {}) {
    x.status = e.status;
    finish(x);
    co_return co_await send_error(client, e, version, keep, extra, x.request_id);
  }

  // What to do with a request, decided without waiting on anything. Kept apart from the
  // coroutine that carries it out: a coroutine keeps every local in its heap frame for as long
  // as it runs (a whole stream), a plain function only on the stack.
  struct Plan {
    enum class Next { kHealth, kError, kModels, kForward } next = Next::kError;
    ApiError error;         // kError
    Headers extra;          // kError: added headers; kForward: the limits' headers.
    std::string_view path;  // kModels: into the request's target.
    std::string body;       // kForward: what goes upstream.
    bool drop_usage_event = false;
  };

  static Plan refuse(ApiError error, Headers extra = {}) {
    return Plan{.next = Plan::Next::kError, .error = std::move(error), .extra = std::move(extra)};
  }

  Plan plan(http::request<http::string_body>& req, Exchange& x) {
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    if (path == "/healthz") return Plan{.next = Plan::Next::kHealth};
    x.snapshot = parts_.directory.current();
    const Snapshot* snapshot = x.snapshot.get();
    if (!parts_.directory.loaded()) {
      return refuse(upstream_error(503, "The gateway has no routes from fabricad yet."),
                    {{"retry-after", "1"}});
    }
    std::string_view auth = req[http::field::authorization];
    if (auth.size() > 7 && (auth.starts_with("Bearer ") || auth.starts_with("bearer "))) {
      x.key = snapshot->authenticate(auth.substr(7), unix_seconds(parts_.clock.now()));
    }
    if (x.key == nullptr) return refuse(invalid_api_key());
    x.tenant = std::to_string(x.key->gid);

    Operation op;
    if (path == "/v1/models" || path.starts_with("/v1/models/")) {
      if (req.method() != http::verb::get)
        return refuse(unknown_route(req.method_string(), target));
      x.kind = "models";
      return Plan{.next = Plan::Next::kModels, .path = path};
    } else if (path == "/v1/chat/completions") {
      op = Operation::kChat;
    } else if (path == "/v1/completions") {
      op = Operation::kCompletions;
    } else if (path == "/v1/embeddings") {
      op = Operation::kEmbeddings;
    } else {
      return refuse(unknown_route(req.method_string(), target));
    }
    x.kind = std::string(operation_name(op));
    if (req.method() != http::verb::post) return refuse(unknown_route(req.method_string(), target));
    Json parsed;
    auto info = inspect_request(op, req.body(), parsed);
    if (!info) return refuse(info.error());
    x.stream = info->stream;
    Resolved found = snapshot->resolve(*x.key, info->model);
    if (found.resolution == Resolution::kUnknownModel) return refuse(model_not_found(info->model));
    if (found.resolution == Resolution::kNotAllowed) return refuse(model_not_allowed(info->model));
    x.target = found.endpoint;
    x.endpoint = x.target->name;
    x.estimate =
        info->prompt_estimate + info->max_tokens.value_or(op == Operation::kEmbeddings ? 0 : 256);
    Admission admission =
        parts_.limiter.admit(x.key->id, x.key->gid, x.key->rpm, x.key->tpm, x.estimate);
    if (!admission.admitted()) {
      Headers extra = admission.headers;
      auto wait = std::max(1.0, std::ceil(admission.retry_after));
      extra.emplace_back("retry-after", std::to_string(static_cast<int64_t>(wait)));
      std::string what = admission.refusal == Refusal::kRequests ? "requests per minute"
                         : admission.refusal == Refusal::kTokens ? "tokens per minute"
                                                                 : "concurrent requests";
      std::string code = admission.refusal == Refusal::kConcurrency ? "concurrency_limit_exceeded"
                                                                    : "rate_limit_exceeded";
      return refuse(
          rate_limited("Rate limit reached for " + what + " on this API key. Try again in " +
                           std::to_string(static_cast<int64_t>(wait)) + "s.",
                       code),
          std::move(extra));
    }
    x.admitted = true;
    bool drop = info->stream && !info->include_usage;
    return Plan{.next = Plan::Next::kForward,
                .extra = std::move(admission.headers),
                .body = drop ? with_stream_usage(std::move(parsed)) : std::move(req.body()),
                .drop_usage_event = drop};
  }

  template <typename Stream>
  asio::awaitable<bool> serve(Worker& w, std::shared_ptr<Stream> client,
                              http::request<http::string_body>& req, bool keep, Exchange& x) {
    unsigned v = req.version();
    Plan p = plan(req, x);
    switch (p.next) {
      case Plan::Next::kHealth:
        x.status = 200;
        co_return co_await health(*client, v, keep);
      case Plan::Next::kError:
        co_return co_await fail_with(*client, x, p.error, v, keep, p.extra);
      case Plan::Next::kModels:
        co_return co_await models(*client, *x.snapshot, p.path, v, keep, x);
      case Plan::Next::kForward:
        break;
    }
    co_return co_await forward(w, client, req, std::move(p.body), p.drop_usage_event, p.extra, keep,
                               x);
  }

  template <typename Stream>
  asio::awaitable<bool> health(Stream& client, unsigned v, bool keep) {
    http::response<http::string_body> res{http::status::ok, v};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(keep);
    res.body() = "{\"status\":\"ok\"}";
    co_return co_await write_response(client, res);
  }

  template <typename Stream>
  asio::awaitable<bool> models(Stream& client, const Snapshot& snapshot, std::string_view path,
                               unsigned v, bool keep, Exchange& x) {
    auto visible = snapshot.models(*x.key);
    auto model_json = [](const EndpointEntry& e) {
      return Json{{"id", e.model}, {"object", "model"}, {"created", 0}, {"owned_by", e.name}};
    };
    Json body;
    if (path == "/v1/models") {
      body = Json{{"object", "list"}, {"data", Json::array()}};
      for (const auto* e : visible) body["data"].push_back(model_json(*e));
    } else {
      std::string id(path.substr(std::string_view("/v1/models/").size()));
      auto it = std::find_if(visible.begin(), visible.end(),
                             [&](const EndpointEntry* e) { return e->model == id; });
      if (it == visible.end())
        co_return co_await fail_with(client, x, model_not_found(id), v, keep);
      body = model_json(**it);
    }
    http::response<http::string_body> res{http::status::ok, v};
    res.set(http::field::content_type, "application/json");
    res.set("x-request-id", x.request_id);
    res.keep_alive(keep);
    res.body() = dump_json(body);
    x.status = 200;
    finish(x);
    co_return co_await write_response(client, res);
  }

  // ---- upstream side ----

  asio::awaitable<std::unique_ptr<Upstream>> checkout(Worker& w, const Backend& backend,
                                                      beast::error_code& ec) {
    auto& idle = w.pool[backend.address().url];
    while (!idle.empty()) {
      auto u = std::move(idle.back());
      idle.pop_back();
      if (u->tcp().socket().is_open()) {
        u->reused = true;
        co_return u;
      }
    }
    co_return co_await connect(w, backend.address(), ec);
  }

  asio::awaitable<std::unique_ptr<Upstream>> connect(Worker& w, const BackendAddress& a,
                                                     beast::error_code& ec) {
    auto u = std::make_unique<Upstream>(w.ioc.get_executor());
    tcp::resolver resolver(w.ioc);
    auto [rec, results] = co_await resolver.async_resolve(a.host, a.port, kTuple);
    if (rec) {
      ec = rec;
      co_return nullptr;
    }
    if (a.tls) u->tls = std::make_unique<TlsStream>(w.ioc.get_executor(), *backend_tls_);
    u->tcp().expires_after(options_.connect_timeout);
    auto [cec, endpoint] = co_await u->tcp().async_connect(results, kTuple);
    if (cec) {
      ec = cec;
      co_return nullptr;
    }
    u->tcp().socket().set_option(tcp::no_delay(true), ec);
    if (u->tls) {
      // The backend's certificate must verify (--backend-ca-file, else the system's CAs) and
      // name the backend's host.
      if (!crypto::prepare_client(u->tls->native_handle(), a.host, {})) {
        ec = asio::error::invalid_argument;
        co_return nullptr;
      }
      auto [hec] = co_await u->tls->async_handshake(asio::ssl::stream_base::client, kTuple);
      if (hec) {
        spdlog::warn("backend {}: TLS failed: {}", a.url, hec.message());
        ec = hec;
        co_return nullptr;
      }
    }
    ec = {};
    co_return u;
  }

  void checkin(Worker& w, const Backend& backend, std::unique_ptr<Upstream> u) {
    auto& idle = w.pool[backend.address().url];
    if (idle.size() < 256) idle.push_back(std::move(u));
  }

  http::request<http::string_body> upstream_request(const http::request<http::string_body>& req,
                                                    const Backend& b, const EndpointEntry& e,
                                                    std::string body,
                                                    const std::string& request_id) {
    const BackendAddress& a = b.address();
    http::request<http::string_body> up{req.method(), a.base_path + std::string(req.target()), 11};
    up.set(http::field::host, a.host + ":" + a.port);
    up.set(http::field::content_type, "application/json");
    up.set(http::field::user_agent, "fabrica-gateway");
    if (auto accept = req[http::field::accept]; !accept.empty())
      up.set(http::field::accept, accept);
    const std::string& key = e.key_for(a.url);
    if (!key.empty()) up.set(http::field::authorization, "Bearer " + key);
    up.set("x-request-id", request_id);
    up.keep_alive(true);
    up.body() = std::move(body);
    up.prepare_payload();
    return up;
  }

  // Reads the head of the backend's answer on a pooled or new connection; a pooled
  // connection the backend had closed is replaced once, silently.
  asio::awaitable<Head> exchange_head(Worker& w, Backend& backend,
                                      http::request<http::string_body>& up,
                                      std::shared_ptr<Watch> watch) {
    Head head;
    for (int round = 0; round < 2; ++round) {
      head.upstream = co_await checkout(w, backend, head.error);
      if (!head.upstream) co_return head;
      Upstream& u = *head.upstream;
      head.parser = std::make_unique<ResponseParser>();
      head.parser->body_limit(boost::none);
      watch->upstream = &u;
      u.tcp().expires_after(options_.connect_timeout);
      beast::error_code wec;
      if (u.tls) {
        std::tie(wec, std::ignore) = co_await http::async_write(*u.tls, up, kTuple);
      } else {
        std::tie(wec, std::ignore) = co_await http::async_write(u.stream, up, kTuple);
      }
      if (!wec) {
        u.tcp().expires_after(options_.first_byte_timeout);
        if (u.tls) {
          std::tie(wec, std::ignore) =
              co_await http::async_read_header(*u.tls, u.buffer, *head.parser, kTuple);
        } else {
          std::tie(wec, std::ignore) =
              co_await http::async_read_header(u.stream, u.buffer, *head.parser, kTuple);
        }
      }
      watch->upstream = nullptr;
      if (!wec) co_return head;
      head.error = wec;
      head.timed_out = wec == beast::error::timeout;
      bool reused = u.reused;
      head.upstream.reset();
      if (!reused || watch->gone || head.timed_out) co_return head;
    }
    co_return head;
  }

  template <typename Stream>
  asio::awaitable<bool> forward(Worker& w, std::shared_ptr<Stream> client,
                                http::request<http::string_body>& req, std::string body,
                                bool drop_usage_event, const Headers& limit_headers, bool keep,
                                Exchange& x) {
    unsigned v = req.version();
    auto watch = std::make_shared<Watch>();
    asio::co_spawn(client->get_executor(), watch_client(client, watch), asio::detached);
    struct StopWatch {
      std::shared_ptr<Watch> watch;
      std::shared_ptr<Stream> client;
      ~StopWatch() {
        watch->active = false;
        beast::error_code ec;
        lowest(*client).socket().cancel(ec);
      }
    } stop_watch{watch, client};

    std::vector<const Backend*> tried;
    bool timed_out_last = false;
    for (int attempt = 0; attempt < options_.max_tries && !watch->gone; ++attempt) {
      auto backend = parts_.balancer.pick(x.target->backends, tried);
      if (!backend) break;
      tried.push_back(backend.get());
      auto up = upstream_request(req, *backend, *x.target, body, x.request_id);
      backend->begin();
      Head head = co_await exchange_head(w, *backend, up, watch);
      if (!head.upstream) {
        backend->end();
        if (watch->gone) break;
        timed_out_last = head.timed_out;
        parts_.balancer.failed(*backend);
        parts_.metrics.upstream_error(x.tenant, x.endpoint, head.timed_out ? "timeout" : "connect");
        continue;
      }
      ResponseParser& parser = *head.parser;
      unsigned status = parser.get().result_int();
      bool last = attempt + 1 == options_.max_tries || tried.size() == x.target->backends.size();
      if (is_retryable_status(status) && !last) {
        backend->end();
        parts_.balancer.failed(*backend);
        parts_.metrics.upstream_error(x.tenant, x.endpoint, "status");
        continue;  // The connection is dropped with its unread answer.
      }
      if (is_retryable_status(status)) {
        parts_.balancer.failed(*backend);
      } else {
        parts_.balancer.succeeded(*backend);
      }
      x.backend = backend->address().url;
      std::string_view type = parser.get()[http::field::content_type];
      bool sse = type.starts_with("text/event-stream");
      Relayed relayed = sse ? co_await relay_stream(*client, *head.upstream, parser, watch,
                                                    drop_usage_event, limit_headers, v, keep, x)
                            : co_await relay_whole(*client, *head.upstream, parser, watch,
                                                   limit_headers, v, keep, x);
      backend->end();
      if (relayed.reusable) checkin(w, *backend, std::move(head.upstream));
      co_return relayed.client_ok;
    }
    if (watch->gone) {
      x.status = 499;  // The client went away first.
      co_return false;
    }
    if (tried.empty()) {
      co_return co_await fail_with(*client, x, upstream_error(503, "No backend is configured."), v,
                                   keep);
    }
    // Built before the co_await: GCC 12 destroys a conditional's temporary twice in one.
    ApiError error = timed_out_last
                         ? upstream_error(504, "The model backend did not answer in time.")
                         : upstream_error(502, "The model backend could not be reached.");
    co_return co_await fail_with(*client, x, error, v, keep);
  }

  template <typename Stream>
  asio::awaitable<void> watch_client(std::shared_ptr<Stream> client, std::shared_ptr<Watch> watch) {
    while (watch->active) {
      auto [ec] = co_await lowest(*client).socket().async_wait(tcp::socket::wait_read, kTuple);
      if (ec || !watch->active) co_return;
      ssize_t n = peek(lowest(*client).socket().native_handle());
      if (n > 0) co_return;  // A pipelined request: the client is still there.
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      watch->gone = true;
      if (watch->upstream != nullptr) {
        beast::error_code ignored;
        watch->upstream->tcp().socket().cancel(ignored);
      }
      co_return;
    }
  }

  // Reads one piece of the upstream body into `buf`; returns the bytes read.
  struct Piece {
    size_t size = 0;
    beast::error_code error;
  };
  static asio::awaitable<Piece> read_piece(Upstream& u, ResponseParser& parser, char* buf,
                                           size_t size) {
    parser.get().body().data = buf;
    parser.get().body().size = size;
    beast::error_code ec;
    if (u.tls) {
      std::tie(ec, std::ignore) = co_await http::async_read_some(*u.tls, u.buffer, parser, kTuple);
    } else {
      std::tie(ec, std::ignore) =
          co_await http::async_read_some(u.stream, u.buffer, parser, kTuple);
    }
    co_return Piece{.size = size - parser.get().body().size,
                    .error = ec == http::error::need_buffer ? beast::error_code{} : ec};
  }

  template <typename Stream>
  asio::awaitable<Relayed> relay_whole(Stream& client, Upstream& u, ResponseParser& parser,
                                       std::shared_ptr<Watch> watch, const Headers& limit_headers,
                                       unsigned v, bool keep, Exchange& x) {
    std::string body;
    std::array<char, 8192> buf;
    auto deadline = Steady::now() + options_.request_timeout;
    beast::error_code ec;
    watch->upstream = &u;
    while (!parser.is_done()) {
      u.tcp().expires_at(deadline);
      Piece piece = co_await read_piece(u, parser, buf.data(), buf.size());
      ec = piece.error;
      body.append(buf.data(), piece.size);
      if (ec || body.size() > options_.response_limit) break;
    }
    watch->upstream = nullptr;
    if (watch->gone) {
      x.status = 499;
      co_return Relayed{};
    }
    if (ec || !parser.is_done()) {
      parts_.metrics.upstream_error(x.tenant, x.endpoint,
                                    ec == beast::error::timeout ? "timeout" : "reset");
      ApiError error = upstream_error(ec == beast::error::timeout ? 504 : 502,
                                      ec ? "The model backend broke off its answer."
                                         : "The model backend's answer is too large.");
      bool ok = co_await fail_with(client, x, error, v, keep);
      co_return Relayed{.client_ok = ok};
    }
    auto& head = parser.get();
    bool reusable = head.keep_alive();
    if (auto usage = usage_of(body)) x.tokens = *usage;
    http::response<http::string_body> res{head.result(), v};
    std::string_view type = head[http::field::content_type];
    res.set(http::field::content_type, type.empty() ? "application/json" : type);
    res.set("x-request-id", x.request_id);
    for (const auto& [name, value] : limit_headers) res.set(name, value);
    res.keep_alive(keep);
    res.body() = std::move(body);
    x.status = static_cast<int>(head.result_int());
    x.ttft = seconds_since(x.start);
    finish(x);
    bool ok = co_await write_response(client, res);
    co_return Relayed{.client_ok = ok, .reusable = reusable};
  }

  // The head of a relayed stream, in its own frame: the message and its serializer are not
  // kept for the rest of the stream.
  template <typename Stream>
  asio::awaitable<bool> write_stream_head(Stream& client, http::status status,
                                          const Headers& limit_headers, unsigned v, bool keep,
                                          const Exchange& x) {
    http::response<http::empty_body> res{status, v};
    res.set(http::field::content_type, "text/event-stream");
    res.set(http::field::cache_control, "no-cache");
    res.set("x-request-id", x.request_id);
    for (const auto& [name, value] : limit_headers) res.set(name, value);
    res.keep_alive(keep);
    res.chunked(true);
    lowest(client).expires_after(options_.client_write_timeout);
    http::response_serializer<http::empty_body> head(res);
    auto [ec, n] = co_await http::async_write_header(client, head, kTuple);
    co_return !ec;
  }

  template <typename Stream>
  asio::awaitable<Relayed> relay_stream(Stream& client, Upstream& u, ResponseParser& parser,
                                        std::shared_ptr<Watch> watch, bool drop_usage_event,
                                        const Headers& limit_headers, unsigned v, bool keep,
                                        Exchange& x) {
    x.status = static_cast<int>(parser.get().result_int());
    if (!co_await write_stream_head(client, parser.get().result(), limit_headers, v, keep, x)) {
      x.status = 499;
      co_return Relayed{};
    }
    parts_.metrics.stream_opened();
    struct Closed {
      Metrics& m;
      ~Closed() { m.stream_closed(); }
    } closed{parts_.metrics};
    SseScanner scanner;
    scanner.set_drop_usage_event(drop_usage_event);
    // Held for the stream's whole life: one token's event is far smaller, and a longer one
    // is simply relayed in more pieces.
    std::array<char, 2048> buf;
    beast::error_code ec;
    while (!parser.is_done()) {
      u.tcp().expires_after(options_.idle_stream_timeout);
      watch->upstream = &u;
      Piece piece = co_await read_piece(u, parser, buf.data(), buf.size());
      ec = piece.error;
      watch->upstream = nullptr;
      if (watch->gone) break;
      std::string out = scanner.feed(std::string_view(buf.data(), piece.size));
      if (parser.is_done()) out += scanner.flush();
      if (!out.empty()) {
        if (!x.ttft) x.ttft = seconds_since(x.start);
        lowest(client).expires_after(options_.client_write_timeout);
        auto [wec, wn] =
            co_await asio::async_write(client, http::make_chunk(asio::buffer(out)), kTuple);
        if (wec) {
          watch->gone = true;  // A reader too slow or gone: the upstream is cut too.
          break;
        }
      }
      if (ec) break;
    }
    if (scanner.usage()) x.tokens = *scanner.usage();
    if (watch->gone) {
      x.status = 499;
      co_return Relayed{};
    }
    bool reusable = false;
    if (ec || !parser.is_done()) {
      // Cut mid-stream: say so in the stream, never end it as if it were complete.
      x.status = 502;
      parts_.metrics.upstream_error(x.tenant, x.endpoint,
                                    ec == beast::error::timeout ? "timeout" : "reset");
      std::string event = stream_error_event(
          ec == beast::error::timeout ? "The model backend stopped sending (idle timeout)."
                                      : "The model backend broke off the stream.");
      lowest(client).expires_after(options_.client_write_timeout);
      co_await asio::async_write(client, http::make_chunk(asio::buffer(event)), kTuple);
    } else {
      reusable = parser.get().keep_alive();
    }
    finish(x);  // Before the stream's last chunk, as for every other answer.
    lowest(client).expires_after(options_.client_write_timeout);
    auto [lec, ln] = co_await asio::async_write(client, http::make_chunk_last(), kTuple);
    co_return Relayed{.client_ok = !lec && x.status != 502, .reusable = reusable};
  }

  // ---- active health checks ----

  asio::awaitable<void> health_loop() {
    asio::steady_timer timer(workers_[0].ioc);
    while (!stopping_) {
      timer.expires_after(options_.health_interval);
      co_await timer.async_wait(kTuple);
      if (stopping_) break;
      for (const auto& backend : parts_.balancer.all()) {
        bool ok = co_await probe(*backend);
        if (ok) {
          parts_.balancer.succeeded(*backend);
        } else {
          parts_.balancer.failed(*backend);
        }
      }
    }
  }

  asio::awaitable<bool> probe(const Backend& backend) {
    beast::error_code ec;
    auto u = co_await connect(workers_[0], backend.address(), ec);
    if (!u) co_return false;
    http::request<http::empty_body> req{http::verb::get, backend.address().base_path + "/v1/models",
                                        11};
    req.set(http::field::host, backend.address().host + ":" + backend.address().port);
    req.set(http::field::user_agent, "fabrica-gateway-health");
    req.keep_alive(false);
    u->tcp().expires_after(std::chrono::seconds(2));
    beast::error_code wec, rec;
    http::response<http::string_body> res;
    if (u->tls) {
      std::tie(wec, std::ignore) = co_await http::async_write(*u->tls, req, kTuple);
      if (!wec)
        std::tie(rec, std::ignore) = co_await http::async_read(*u->tls, u->buffer, res, kTuple);
    } else {
      std::tie(wec, std::ignore) = co_await http::async_write(u->stream, req, kTuple);
      if (!wec)
        std::tie(rec, std::ignore) = co_await http::async_read(u->stream, u->buffer, res, kTuple);
    }
    co_return !wec && !rec && res.result_int() < 500;
  }

  ProxyOptions options_;
  ProxyParts parts_;
  std::vector<Worker> workers_;
  tcp::acceptor acceptor_;
  tcp::acceptor admin_acceptor_;
  asio::signal_set signals_;
  uint16_t port_ = 0;
  uint16_t admin_port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int64_t> in_flight_{0};
  std::atomic<uint64_t> request_counter_{0};
  std::shared_ptr<asio::ssl::context> backend_tls_;  // For https backends.
};

Proxy::Proxy(ProxyOptions options, ProxyParts parts)
    : impl_(std::make_unique<Impl>(std::move(options), parts)) {}
Proxy::~Proxy() = default;
Result<void> Proxy::listen() { return impl_->listen(); }
uint16_t Proxy::port() const { return impl_->port(); }
uint16_t Proxy::admin_port() const { return impl_->admin_port(); }
void Proxy::run() { impl_->run(); }
void Proxy::shutdown() { impl_->shutdown(); }

}  // namespace fabrica::gateway
