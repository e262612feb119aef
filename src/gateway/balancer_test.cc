// Least outstanding requests, ejection after consecutive failures, panic mode.
#include "gateway/balancer.h"

#include <gtest/gtest.h>

#include <set>

#include "testing/fake_clock.h"

namespace fabrica::gateway {
namespace {

using std::chrono::milliseconds;

const std::vector<std::string> kUrls = {"http://10.0.0.1:8000", "http://10.0.0.2:8000/",
                                        "http://10.0.0.3:8000/base"};

TEST(BalancerTest, ParsesBackendAddresses) {
  auto a = BackendAddress::parse("http://vllm-0.acme.internal:8000/openai/");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "vllm-0.acme.internal");
  EXPECT_EQ(a->port, "8000");
  EXPECT_EQ(a->base_path, "/openai");
  EXPECT_FALSE(a->tls);
  auto b = BackendAddress::parse("https://nim.example");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->port, "443");
  EXPECT_EQ(b->base_path, "");
  EXPECT_TRUE(b->tls);
  EXPECT_FALSE(BackendAddress::parse("ftp://x"));
  EXPECT_FALSE(BackendAddress::parse("not a url"));
}

TEST(BalancerTest, PicksTheBackendWithFewestRequestsInFlight) {
  testing::FakeClock clock;
  Balancer balancer(clock, {});
  auto first = balancer.pick(kUrls, {});
  ASSERT_TRUE(first);
  first->begin();
  auto second = balancer.pick(kUrls, {});
  EXPECT_NE(second, first);
  second->begin();
  auto third = balancer.pick(kUrls, {});
  EXPECT_NE(third, first);
  EXPECT_NE(third, second);
  third->begin();
  first->end();
  EXPECT_EQ(balancer.pick(kUrls, {}), first);
  // A retry never goes back to a backend already tried.
  EXPECT_EQ(balancer.pick(kUrls, {first.get(), second.get(), third.get()}), nullptr);
  EXPECT_EQ(balancer.pick(kUrls, {first.get()})->outstanding(), 1);
}

TEST(BalancerTest, IdleBackendsTakeRequestsInTurn) {
  testing::FakeClock clock;
  Balancer balancer(clock, {});
  std::set<const Backend*> seen;
  for (int i = 0; i < 3; ++i) seen.insert(balancer.pick(kUrls, {}).get());
  EXPECT_EQ(seen.size(), 3u);
}

TEST(BalancerTest, ConsecutiveFailuresEjectForACooldown) {
  testing::FakeClock clock;
  Balancer balancer(clock, {.failures_to_eject = 2, .cooldown = milliseconds(10000)});
  auto bad = balancer.pick({kUrls[0]}, {});
  balancer.pick({kUrls[1]}, {});
  balancer.failed(*bad);
  EXPECT_TRUE(balancer.healthy(*bad));
  balancer.failed(*bad);
  EXPECT_FALSE(balancer.healthy(*bad));
  for (int i = 0; i < 5; ++i) EXPECT_NE(balancer.pick({kUrls[0], kUrls[1]}, {}), bad);
  clock.advance(milliseconds(10001));
  EXPECT_TRUE(balancer.healthy(*bad));
  // One success forgives earlier failures.
  balancer.failed(*bad);
  balancer.succeeded(*bad);
  balancer.failed(*bad);
  EXPECT_TRUE(balancer.healthy(*bad));
}

TEST(BalancerTest, WhenAllAreEjectedAllAreTried) {
  testing::FakeClock clock;
  Balancer balancer(clock, {.failures_to_eject = 1});
  auto a = balancer.pick({kUrls[0]}, {});
  auto b = balancer.pick({kUrls[1]}, {});
  balancer.failed(*a);
  balancer.failed(*b);
  auto chosen = balancer.pick({kUrls[0], kUrls[1]}, {});
  ASSERT_TRUE(chosen);
  auto other = balancer.pick({kUrls[0], kUrls[1]}, {chosen.get()});
  ASSERT_TRUE(other);
  EXPECT_NE(other, chosen);
  EXPECT_EQ(balancer.all().size(), 2u);
}

}  // namespace
}  // namespace fabrica::gateway
