#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

namespace fabrica::gateway {

// A Prometheus histogram with fixed buckets (seconds). Not thread-safe; Metrics guards it.
struct Histogram {
  static constexpr std::array<double, 16> kBuckets = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                      0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                      1,      2.5,     10,     60};
  std::array<uint64_t, kBuckets.size()> counts{};
  uint64_t count = 0;
  double sum = 0;
  void observe(double seconds);
};

// What the gateway tells Prometheus (/metrics on the admin listener). Labels are bounded:
// tenant (group id), endpoint name (both from the snapshot) and status class; nothing taken
// from a request's own text. Thread-safe.
class Metrics {
 public:
  // One finished request. `tenant` and `endpoint` are "" before they are known (a bad key).
  void request(std::string_view tenant, std::string_view endpoint, int status,
               double latency_seconds, std::optional<double> ttft_seconds, int64_t input_tokens,
               int64_t output_tokens);
  // reason: "connect", "timeout", "status", "reset".
  void upstream_error(std::string_view tenant, std::string_view endpoint, std::string_view reason);
  void stream_opened() { streams_.fetch_add(1, std::memory_order_relaxed); }
  void stream_closed() { streams_.fetch_sub(1, std::memory_order_relaxed); }
  int64_t streams() const { return streams_.load(std::memory_order_relaxed); }
  // The text exposition format; `extra` is appended (gauges the caller owns).
  std::string render(std::string_view extra) const;

 private:
  using Series = std::tuple<std::string, std::string>;  // tenant, endpoint
  struct PerEndpoint {
    std::map<std::string, uint64_t> requests;  // By status class "2xx".
    uint64_t input_tokens = 0;
    uint64_t output_tokens = 0;
    Histogram latency;
    Histogram ttft;
    std::map<std::string, uint64_t> upstream_errors;  // By reason.
  };
  mutable std::mutex mutex_;
  std::map<Series, PerEndpoint> series_;
  std::atomic<int64_t> streams_{0};
};

}  // namespace fabrica::gateway
