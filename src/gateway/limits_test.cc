// Token buckets on a fake clock: RPM, TPM settled from usage, per-tenant concurrency.
#include "gateway/limits.h"

#include <gtest/gtest.h>

#include "testing/fake_clock.h"

namespace fabrica::gateway {
namespace {

using std::chrono::seconds;

std::string header(const Admission& a, const std::string& name) {
  for (const auto& [n, v] : a.headers) {
    if (n == name) return v;
  }
  return "";
}

TEST(LimitsTest, RequestsPerMinuteRefillContinuously) {
  testing::FakeClock clock;
  Limiter limiter(clock, {});
  for (int i = 0; i < 3; ++i) {
    Admission a = limiter.admit(1, 100, 3, 0, 10);
    ASSERT_TRUE(a.admitted()) << i;
    limiter.finish(100);
  }
  Admission refused = limiter.admit(1, 100, 3, 0, 10);
  EXPECT_EQ(refused.refusal, Refusal::kRequests);
  EXPECT_NEAR(refused.retry_after, 20.0, 0.01);  // One request every 20 s.
  EXPECT_EQ(header(refused, "x-ratelimit-limit-requests"), "3");
  EXPECT_EQ(header(refused, "x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(header(refused, "x-ratelimit-reset-requests"), "1m0s");
  clock.advance(seconds(20));
  EXPECT_TRUE(limiter.admit(1, 100, 3, 0, 10).admitted());
  // Another key has its own bucket.
  EXPECT_TRUE(limiter.admit(2, 100, 3, 0, 10).admitted());
}

TEST(LimitsTest, TokensAreEstimatedThenSettledFromUsage) {
  testing::FakeClock clock;
  Limiter limiter(clock, {});
  ASSERT_TRUE(limiter.admit(1, 100, 0, 1000, 600).admitted());
  EXPECT_EQ(limiter.admit(1, 100, 0, 1000, 600).refusal, Refusal::kTokens);
  // The first answer used 100 tokens, not 600: 500 come back.
  limiter.settle(1, 1000, 600, 100);
  Admission a = limiter.admit(1, 100, 0, 1000, 600);
  EXPECT_TRUE(a.admitted());
  EXPECT_EQ(header(a, "x-ratelimit-remaining-tokens"), "300");
  // Usage above the estimate drives the bucket below zero; refill brings it back.
  limiter.settle(1, 1000, 600, 1500);
  Admission refused = limiter.admit(1, 100, 0, 1000, 10);
  EXPECT_EQ(refused.refusal, Refusal::kTokens);
  EXPECT_GT(refused.retry_after, 30.0);
  clock.advance(seconds(60));
  EXPECT_TRUE(limiter.admit(1, 100, 0, 1000, 10).admitted());
}

TEST(LimitsTest, AnEstimateAboveTheWholeBudgetWaitsForAFullBucket) {
  testing::FakeClock clock;
  Limiter limiter(clock, {});
  EXPECT_TRUE(limiter.admit(1, 100, 0, 100, 5000).admitted());
  EXPECT_FALSE(limiter.admit(1, 100, 0, 100, 5000).admitted());
  clock.advance(seconds(60));
  EXPECT_TRUE(limiter.admit(1, 100, 0, 100, 5000).admitted());
}

TEST(LimitsTest, TenantConcurrencyCapsRequestsInFlight) {
  testing::FakeClock clock;
  Limiter limiter(clock, {.tenant_concurrency = 2});
  EXPECT_TRUE(limiter.admit(1, 100, 0, 0, 1).admitted());
  EXPECT_TRUE(limiter.admit(2, 100, 0, 0, 1).admitted());
  EXPECT_EQ(limiter.admit(3, 100, 0, 0, 1).refusal, Refusal::kConcurrency);
  EXPECT_TRUE(limiter.admit(4, 200, 0, 0, 1).admitted());  // Another tenant.
  EXPECT_EQ(limiter.in_flight(100), 2);
  limiter.finish(100);
  EXPECT_TRUE(limiter.admit(3, 100, 0, 0, 1).admitted());
}

TEST(LimitsTest, RefusedRequestsTakeNothing) {
  testing::FakeClock clock;
  Limiter limiter(clock, {});
  ASSERT_TRUE(limiter.admit(1, 100, 1, 100, 50).admitted());
  EXPECT_EQ(limiter.admit(1, 100, 1, 100, 50).refusal, Refusal::kRequests);
  clock.advance(seconds(60));
  // The refused request took no tokens: 100 are there again.
  Admission a = limiter.admit(1, 100, 1, 100, 100);
  EXPECT_TRUE(a.admitted());
}

TEST(LimitsTest, ResetDurationsReadLikeOpenAis) {
  EXPECT_EQ(reset_duration(0), "0s");
  EXPECT_EQ(reset_duration(0.2), "1s");
  EXPECT_EQ(reset_duration(360), "6m0s");
  EXPECT_EQ(reset_duration(3723), "1h2m3s");
}

}  // namespace
}  // namespace fabrica::gateway
