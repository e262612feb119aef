#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "core/clock.h"
#include "core/error.h"
#include "crypto/tls.h"

namespace fabrica::gateway {

class Balancer;
class Directory;
class Limiter;
class Metrics;
class RecordIds;
class Shipper;
class Spool;

struct ProxyOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 8480;  // 0 picks a free port.
  std::string admin_host = "127.0.0.1";
  uint16_t admin_port = 8481;  // /metrics and /healthz; 0 picks a free port.
  size_t threads = 2;
  size_t body_limit = 4 << 20;       // Larger request bodies get 413.
  size_t response_limit = 64 << 20;  // Larger non-streamed answers are cut with 502.
  int max_tries = 3;                 // Backends tried before the first byte reaches the client.
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds first_byte_timeout{300000};   // Until the upstream's answer starts.
  std::chrono::milliseconds idle_stream_timeout{60000};   // Between two pieces of a stream.
  std::chrono::milliseconds request_timeout{600000};      // A whole non-streamed answer.
  std::chrono::milliseconds client_idle{60000};           // Keep-alive between requests.
  std::chrono::milliseconds client_write_timeout{30000};  // A slow reader is cut after this.
  std::chrono::milliseconds health_interval{5000};        // Active checks of every backend.
  std::chrono::milliseconds shutdown_grace{30000};
  // End users reach the gateway over HTTPS with this certificate (reloaded when its files
  // change); null: plain HTTP. The admin listener (/metrics, /healthz) stays plain.
  std::shared_ptr<crypto::TlsServerContext> tls;
  // CA certificates https backends are verified with (empty: the system's trust store).
  std::string backend_ca_file;
};

// What the proxy works with; owned by main (or a test).
struct ProxyParts {
  Directory& directory;
  Limiter& limiter;
  Balancer& balancer;
  Metrics& metrics;
  Spool& spool;
  Shipper* shipper;  // Woken when records pile up; may be null.
  RecordIds& ids;
  const Clock& clock;
};

// The OpenAI-compatible front of fabrica-gateway on Boost.Beast: one Asio coroutine per
// client connection on `threads` io_contexts, each with its own pool of kept-alive upstream
// connections. Per request: API key, model → the tenant's endpoint, limits, a backend by least
// outstanding requests, the answer passed through as it arrives (SSE chunk by chunk), and one
// usage record into the spool. Errors follow OpenAI's shape. SIGTERM/SIGINT or shutdown()
// stop accepting, let requests in flight finish (up to shutdown_grace), and run() returns.
class Proxy {
 public:
  Proxy(ProxyOptions options, ProxyParts parts);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  // Binds both listeners. kUnavailable when an address is taken.
  Result<void> listen();
  uint16_t port() const;
  uint16_t admin_port() const;
  void run();
  void shutdown();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fabrica::gateway
