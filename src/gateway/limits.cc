#include "gateway/limits.h"

#include <algorithm>
#include <cmath>

namespace fabrica::gateway {

void TokenBucket::refill(int64_t per_minute, Clock::TimePoint now) {
  double capacity = static_cast<double>(per_minute);
  if (tokens_ < 0 && last_ == Clock::TimePoint{}) {
    tokens_ = capacity;
    last_ = now;
    return;
  }
  double elapsed = std::chrono::duration<double>(now - last_).count();
  if (elapsed > 0) {
    tokens_ = std::min(capacity, tokens_ + elapsed * capacity / 60.0);
    last_ = now;
  }
  tokens_ = std::min(tokens_, capacity);  // A lowered limit applies at once.
}

bool TokenBucket::try_take(double n, int64_t per_minute, Clock::TimePoint now) {
  refill(per_minute, now);
  if (tokens_ < n) return false;
  tokens_ -= n;
  return true;
}

void TokenBucket::adjust(double n, int64_t per_minute, Clock::TimePoint now) {
  refill(per_minute, now);
  tokens_ = std::min(static_cast<double>(per_minute), tokens_ + n);
}

double TokenBucket::available(int64_t per_minute, Clock::TimePoint now) {
  refill(per_minute, now);
  return tokens_;
}

double TokenBucket::seconds_until(double n, int64_t per_minute, Clock::TimePoint now) {
  refill(per_minute, now);
  if (tokens_ >= n || per_minute <= 0) return 0;
  return (n - tokens_) * 60.0 / static_cast<double>(per_minute);
}

std::string reset_duration(double seconds) {
  auto total = static_cast<int64_t>(std::ceil(std::max(0.0, seconds)));
  int64_t h = total / 3600, m = (total % 3600) / 60, s = total % 60;
  std::string out;
  if (h) out += std::to_string(h) + "h";
  if (h || m) out += std::to_string(m) + "m";
  out += std::to_string(s) + "s";
  return out;
}

Admission Limiter::admit(int64_t key_id, int64_t gid, int64_t rpm, int64_t tpm, int64_t estimate) {
  auto now = clock_.now();
  std::lock_guard lock(mutex_);
  Admission a;
  KeyState& k = keys_[key_id];
  // A request larger than the whole minute's budget is judged against a full bucket.
  double want = tpm > 0 ? std::min<double>(static_cast<double>(estimate), tpm) : 0;
  if (rpm > 0) {
    a.headers.emplace_back("x-ratelimit-limit-requests", std::to_string(rpm));
  }
  if (tpm > 0) {
    a.headers.emplace_back("x-ratelimit-limit-tokens", std::to_string(tpm));
  }
  if (rpm > 0 && k.requests.available(rpm, now) < 1) {
    a.refusal = Refusal::kRequests;
    a.retry_after = k.requests.seconds_until(1, rpm, now);
  } else if (tpm > 0 && k.tokens.available(tpm, now) < want) {
    a.refusal = Refusal::kTokens;
    a.retry_after = k.tokens.seconds_until(want, tpm, now);
  } else if (options_.tenant_concurrency > 0 && tenants_[gid] >= options_.tenant_concurrency) {
    a.refusal = Refusal::kConcurrency;
    a.retry_after = 1;
  }
  if (a.admitted()) {
    if (rpm > 0) (void)k.requests.try_take(1, rpm, now);
    if (tpm > 0) (void)k.tokens.try_take(want, tpm, now);
    ++tenants_[gid];
  }
  // OpenAI's x-ratelimit-remaining-* and x-ratelimit-reset-* for each limit the key has.
  auto describe = [&](TokenBucket& bucket, int64_t limit, const std::string& what) {
    if (limit <= 0) return;
    double left = std::max(0.0, bucket.available(limit, now));
    a.headers.emplace_back("x-ratelimit-remaining-" + what,
                           std::to_string(static_cast<int64_t>(left)));
    a.headers.emplace_back("x-ratelimit-reset-" + what,
                           reset_duration(bucket.seconds_until(limit, limit, now)));
  };
  describe(k.requests, rpm, "requests");
  describe(k.tokens, tpm, "tokens");
  return a;
}

void Limiter::settle(int64_t key_id, int64_t tpm, int64_t estimate, int64_t actual) {
  if (tpm <= 0) return;
  auto now = clock_.now();
  std::lock_guard lock(mutex_);
  double taken = std::min<double>(static_cast<double>(estimate), tpm);
  keys_[key_id].tokens.adjust(taken - static_cast<double>(actual), tpm, now);
}

void Limiter::finish(int64_t gid) {
  std::lock_guard lock(mutex_);
  auto it = tenants_.find(gid);
  if (it != tenants_.end() && --it->second <= 0) tenants_.erase(it);
}

int64_t Limiter::in_flight(int64_t gid) {
  std::lock_guard lock(mutex_);
  auto it = tenants_.find(gid);
  return it == tenants_.end() ? 0 : it->second;
}

}  // namespace fabrica::gateway
