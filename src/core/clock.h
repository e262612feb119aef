#pragma once

#include <chrono>

namespace fabrica {

// Source of wall-clock time. Injected everywhere time matters so tests can control it.
// Implementations are thread-safe.
class Clock {
 public:
  using TimePoint = std::chrono::system_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;
};

// The real system clock.
class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::system_clock::now(); }
};

// Seconds since the Unix epoch, the unit timestamps are stored in.
inline int64_t unix_seconds(Clock::TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

}  // namespace fabrica
