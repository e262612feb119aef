#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/clock.h"

namespace fabrica::gateway {

// A bucket of `per_minute` tokens refilled continuously (per_minute / 60 each second),
// starting full. Not thread-safe; Limiter guards it.
class TokenBucket {
 public:
  // Takes `n` when there are that many; else takes nothing and returns false.
  bool try_take(double n, int64_t per_minute, Clock::TimePoint now);
  // Gives back (n > 0) or takes more (n < 0) after the fact; may go below zero.
  void adjust(double n, int64_t per_minute, Clock::TimePoint now);
  double available(int64_t per_minute, Clock::TimePoint now);
  // Seconds until `n` tokens are there (0 when they are).
  double seconds_until(double n, int64_t per_minute, Clock::TimePoint now);

 private:
  void refill(int64_t per_minute, Clock::TimePoint now);
  double tokens_ = -1;  // < 0 before first use: full then.
  Clock::TimePoint last_{};
};

struct LimiterOptions {
  int64_t tenant_concurrency = 0;  // In-flight requests per tenant; 0 = unlimited.
};

enum class Refusal { kNone, kRequests, kTokens, kConcurrency };

// The outcome of admission, with OpenAI's x-ratelimit-* headers.
struct Admission {
  Refusal refusal = Refusal::kNone;
  double retry_after = 0;  // Seconds, when refused.
  std::vector<std::pair<std::string, std::string>> headers;
  bool admitted() const { return refusal == Refusal::kNone; }
};

// Per-key RPM and TPM limits and a per-tenant cap on requests in flight, for one gateway
// replica (replicas do not share counts yet). Admission takes one request and the token
// estimate (prompt guess + max_tokens); settle() corrects the estimate with the upstream's
// usage. Thread-safe.
class Limiter {
 public:
  Limiter(const Clock& clock, LimiterOptions options) : clock_(clock), options_(options) {}

  // REQUIRES: finish(gid) once for every admitted request.
  Admission admit(int64_t key_id, int64_t gid, int64_t rpm, int64_t tpm, int64_t estimate);
  // Replaces the estimate taken at admission by the tokens actually used.
  void settle(int64_t key_id, int64_t tpm, int64_t estimate, int64_t actual);
  void finish(int64_t gid);
  int64_t in_flight(int64_t gid);

 private:
  struct KeyState {
    TokenBucket requests;
    TokenBucket tokens;
  };
  const Clock& clock_;
  LimiterOptions options_;
  std::mutex mutex_;
  std::unordered_map<int64_t, KeyState> keys_;
  std::unordered_map<int64_t, int64_t> tenants_;
};

// "1s", "6m0s", "1h2m3s": OpenAI's reset durations.
std::string reset_duration(double seconds);

}  // namespace fabrica::gateway
