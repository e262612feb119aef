#include "agent/guest_relay.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <cstring>
#include <functional>

#include "client/http_client.h"
#include "core/process.h"

namespace fabrica::agent {

namespace http = boost::beast::http;

std::string relay_netns(const std::string& bridge) { return "fgr-" + bridge; }

std::string relay_veth(const std::string& bridge) {
  char hex[16];
  std::snprintf(hex, sizeof hex, "%06zx", std::hash<std::string>{}(bridge)&0xffffff);
  return std::string("fgr") + hex;
}

namespace {

Result<void> ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_process(argv);
  if (!r) return fail(r.error().code(), "ip " + args[0] + ": " + r.error().message());
  return {};
}

// A listening socket on 169.254.169.254:80 inside `netns`, made on a thread of its own so
// that the agent's threads stay in the host's namespace.
Result<int> listen_in(const std::string& netns) {
  Result<int> out = fail(ErrorCode::kInternal, "not run");
  std::thread([&] {
    int ns = ::open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
      out = fail(ErrorCode::kUnavailable, "cannot enter " + netns + ": " + std::strerror(errno));
      if (ns >= 0) ::close(ns);
      return;
    }
    ::close(ns);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(80);
    ::inet_pton(AF_INET, GuestRelay::kAddress, &a.sin_addr);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(fd, 64) != 0) {
      out = fail(ErrorCode::kUnavailable,
                 "cannot listen in " + netns + ": " + std::string(std::strerror(errno)));
      if (fd >= 0) ::close(fd);
      return;
    }
    out = fd;
  }).join();
  return out;
}

}  // namespace

GuestRelay::GuestRelay(std::string server, crypto::TlsClientOptions tls)
    : server_(std::move(server)), tls_(std::move(tls)) {}

GuestRelay::~GuestRelay() {
  std::lock_guard lock(mutex_);
  for (auto& [bridge, relay] : relays_) {
    relay->stop = true;
    if (relay->thread.joinable()) relay->thread.join();
    ::close(relay->listen_fd);
    // The namespaces stay while VMs run: a restarted agent makes its relays again.
  }
}

void GuestRelay::remove(Relay& relay) {
  (void)ip({"link", "del", relay.veth});
  (void)ip({"netns", "del", relay.netns});
}

Result<void> GuestRelay::serve(const std::string& bridge) {
  std::lock_guard lock(mutex_);
  if (relays_.contains(bridge)) return {};
  auto relay = std::make_unique<Relay>();
  relay->netns = relay_netns(bridge);
  relay->veth = relay_veth(bridge);
  remove(*relay);  // Whatever an earlier run left.
  std::string peer = relay->veth + "n";
  auto made = [&]() -> Result<void> {
    FAB_TRY(ip({"netns", "add", relay->netns}));
    FAB_TRY(ip({"link", "add", relay->veth, "type", "veth", "peer", "name", peer}));
    FAB_TRY(ip({"link", "set", peer, "netns", relay->netns}));
    FAB_TRY(ip({"link", "set", relay->veth, "master", bridge}));
    FAB_TRY(ip({"link", "set", relay->veth, "up"}));
    FAB_TRY(ip({"-n", relay->netns, "addr", "add", std::string(kAddress) + "/32", "dev", peer}));
    FAB_TRY(ip({"-n", relay->netns, "link", "set", "lo", "up"}));
    FAB_TRY(ip({"-n", relay->netns, "link", "set", peer, "up"}));
    FAB_TRY(ip({"-n", relay->netns, "route", "add", "default", "dev", peer}));
    FAB_ASSIGN_OR_RETURN(relay->listen_fd, listen_in(relay->netns));
    return {};
  }();
  if (!made) {
    remove(*relay);
    return fail(made.error().with_context("guest API relay on " + bridge));
  }
  Relay* raw = relay.get();
  relay->thread = std::thread([this, raw] { accept_loop(*raw); });
  relays_.emplace(bridge, std::move(relay));
  std::fprintf(stderr, "guest API relay on bridge %s (%s:80 in namespace %s)\n", bridge.c_str(),
               kAddress, raw->netns.c_str());
  return {};
}

void GuestRelay::drop(const std::string& bridge) {
  std::unique_ptr<Relay> relay;
  {
    std::lock_guard lock(mutex_);
    auto it = relays_.find(bridge);
    if (it == relays_.end()) {
      Relay stale{.netns = relay_netns(bridge), .veth = relay_veth(bridge)};
      remove(stale);
      return;
    }
    relay = std::move(it->second);
    relays_.erase(it);
  }
  relay->stop = true;
  if (relay->thread.joinable()) relay->thread.join();
  ::close(relay->listen_fd);
  remove(*relay);
}

void GuestRelay::accept_loop(Relay& relay) {
  while (!relay.stop) {
    pollfd p{.fd = relay.listen_fd, .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    int fd = ::accept4(relay.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    // One exchange per connection, each on its own thread: a slow guest holds only itself.
    std::thread([this, fd] { answer(fd); }).detach();
  }
}

void GuestRelay::answer(int fd) {
  timeval limit{.tv_sec = 30, .tv_usec = 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  boost::system::error_code ec;
  socket.assign(boost::asio::ip::tcp::v4(), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  boost::beast::flat_buffer buffer;
  http::request_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  http::read(socket, buffer, parser, ec);
  if (ec) return;
  const auto& req = parser.get();
  http::response<http::string_body> res{http::status::ok, 11};
  res.set(http::field::content_type, "application/json");
  res.keep_alive(false);
  std::string target(req.target());
  if (!target.starts_with("/api/v1/guest/")) {
    res.result(http::status::not_found);
    res.body() =
        R"({"error":{"code":"NOT_FOUND","message":"only the guest API (/api/v1/guest/...) is here","field":""}})";
  } else {
    client::Headers headers;
    if (auto auth = req[http::field::authorization]; !auth.empty()) {
      headers.emplace_back("Authorization", std::string(auth));
    }
    headers.emplace_back("Content-Type", "application/json");
    auto http = client::HttpClient::create(server_, tls_);
    auto got = http
                   ? (*http)->request(std::string(req.method_string()), target, req.body(), headers)
                   : Result<client::ClientResponse>(fail(http.error()));
    if (!got) {
      res.result(http::status::bad_gateway);
      res.body() =
          R"({"error":{"code":"UNAVAILABLE","message":"the control plane cannot be reached","field":""}})";
    } else {
      res.result(static_cast<unsigned>(got->status));
      res.body() = got->body;
    }
  }
  res.prepare_payload();
  http::write(socket, res, ec);
  socket.shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
}

}  // namespace fabrica::agent
