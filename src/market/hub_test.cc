#include "market/hub.h"

#include <gtest/gtest.h>

namespace fabrica::market {
namespace {

TEST(HubTest, UrisNameARepositoryAndARevision) {
  auto ref = parse_hub_uri("hf://Qwen/Qwen3-0.6B@main");
  ASSERT_TRUE(ref);
  EXPECT_EQ(ref->repo, "Qwen/Qwen3-0.6B");
  EXPECT_EQ(ref->revision, "main");
  EXPECT_EQ(parse_hub_uri("hf://org/name")->revision, "main");
  EXPECT_EQ(parse_hub_uri("hf://org/name@0123abcd")->revision, "0123abcd");
  for (const char* bad : {"https://huggingface.co/org/name", "hf://name", "hf://org/name/extra",
                          "hf://org/..@main", "hf://org/na me", "hf://org/name@", "hf:///name"}) {
    auto r = parse_hub_uri(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().field(), "source") << bad;
  }
}

TEST(HubTest, TheEndpointIsAnHttpUrlWithoutPath) {
  EXPECT_TRUE(Hub::create({.endpoint = "https://huggingface.co"}));
  EXPECT_TRUE(Hub::create({.endpoint = "http://127.0.0.1:8089/"}));
  EXPECT_FALSE(Hub::create({.endpoint = "ftp://mirror"}));
  EXPECT_FALSE(Hub::create({.endpoint = "https://mirror/hf"}));
}

}  // namespace
}  // namespace fabrica::market
