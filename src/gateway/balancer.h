#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/error.h"

namespace fabrica::gateway {

// Where one OpenAI-compatible backend listens: "http://host:port/base".
struct BackendAddress {
  std::string url;
  std::string host;
  std::string port;
  std::string base_path;  // "" or "/openai": requests go to base_path + "/v1/...".
  bool tls = false;
  // kInvalidArgument unless `url` is http(s)://host[:port][/path].
  static Result<BackendAddress> parse(const std::string& url);
};

// One backend's live state, shared by every endpoint that lists its URL. Thread-safe.
class Backend {
 public:
  explicit Backend(BackendAddress address) : address_(std::move(address)) {}
  const BackendAddress& address() const { return address_; }
  int64_t outstanding() const { return outstanding_.load(std::memory_order_relaxed); }
  void begin() { outstanding_.fetch_add(1, std::memory_order_relaxed); }
  void end() { outstanding_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  friend class Balancer;
  BackendAddress address_;
  std::atomic<int64_t> outstanding_{0};
  // Guarded by Balancer::mutex_.
  int consecutive_failures_ = 0;
  Clock::TimePoint ejected_until_{};
};

struct BalancerOptions {
  int failures_to_eject = 3;                  // Consecutive failures that eject a backend.
  std::chrono::milliseconds cooldown{10000};  // How long an ejected backend rests.
};

// Least-outstanding-requests choice (ties taken in turn) among an endpoint's healthy backends, with
// passive health: consecutive failures eject a backend for a cooldown; one success (a request or an
// active check) brings it back. When every backend is ejected, all are tried (panic mode),
// so a recovered fleet is found without waiting. Thread-safe.
class Balancer {
 public:
  Balancer(const Clock& clock, BalancerOptions options) : clock_(clock), options_(options) {}

  // The backend for the next try, skipping those in `tried`; null when all were tried or
  // none parses.
  std::shared_ptr<Backend> pick(const std::vector<std::string>& urls,
                                const std::vector<const Backend*>& tried);
  void succeeded(Backend& backend);
  void failed(Backend& backend);
  bool healthy(const Backend& backend);
  // Every backend seen so far, for active checks and metrics.
  std::vector<std::shared_ptr<Backend>> all();

 private:
  std::shared_ptr<Backend> backend_for(const std::string& url);

  const Clock& clock_;
  BalancerOptions options_;
  std::mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<Backend>> backends_;
  size_t rotation_ = 0;
};

}  // namespace fabrica::gateway
