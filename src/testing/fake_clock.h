#pragma once

#include <atomic>

#include "core/clock.h"

namespace fabrica::testing {

// A Clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start = TimePoint(std::chrono::seconds(1795550297)))
      : now_(start.time_since_epoch().count()) {}
  TimePoint now() const override { return TimePoint(TimePoint::duration(now_.load())); }
  void advance(Clock::TimePoint::duration d) { now_ += d.count(); }

 private:
  std::atomic<TimePoint::rep> now_;
};

}  // namespace fabrica::testing
