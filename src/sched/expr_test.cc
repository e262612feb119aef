#include "sched/expr.h"

#include <gtest/gtest.h>

#include <map>

namespace fabrica::sched {
namespace {

constexpr AttrSpec kAttrs[] = {
    {"NAME", AttrKind::kString, ""},        {"GPU_MODEL", AttrKind::kString, ""},
    {"FREE_MEMORY", AttrKind::kNumber, ""}, {"FREE_CPU", AttrKind::kNumber, ""},
    {"RUNNING_VMS", AttrKind::kNumber, ""},
};

class FakeHost : public AttributeSource {
 public:
  std::vector<std::string> name{"gpu-node-07"};
  std::vector<std::string> models{"L40", "H100 SXM5 80GB"};
  double free_memory = 131072;
  double free_cpu = 96;
  double running = 3;

  double number(int attr) const override {
    return attr == 2 ? free_memory : attr == 3 ? free_cpu : running;
  }
  std::span<const std::string> strings(int attr) const override {
    return attr == 0 ? std::span<const std::string>(name) : std::span<const std::string>(models);
  }
};

bool matches(std::string_view text, const FakeHost& host = FakeHost()) {
  auto r = Requirement::parse(text, kAttrs);
  EXPECT_TRUE(r.has_value()) << text << ": " << (r ? "" : r.error().message());
  return r && r->matches(host);
}

TEST(GlobTest, StarsAndQuestionMarks) {
  EXPECT_TRUE(glob_match("H100*", "H100 SXM5 80GB"));
  EXPECT_TRUE(glob_match("*SXM*", "H100 SXM5 80GB"));
  EXPECT_TRUE(glob_match("gpu-node-0?", "gpu-node-07"));
  EXPECT_FALSE(glob_match("gpu-node-0?", "gpu-node-107"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_FALSE(glob_match("H100", "H100 PCIe"));
}

TEST(RequirementTest, OpenNebulaStyleExpressions) {
  EXPECT_TRUE(matches(""));
  EXPECT_TRUE(matches(R"(GPU_MODEL = "H100*" & FREE_MEMORY > 65536)"));
  EXPECT_FALSE(matches(R"(GPU_MODEL = "H100*" & FREE_MEMORY > 265536)"));
  EXPECT_TRUE(matches(R"(GPU_MODEL = "A100*" | FREE_CPU >= 96)"));
  EXPECT_FALSE(matches(R"(!(NAME = gpu-node-0?))"));
  EXPECT_TRUE(matches(R"(NAME != "cpu-*" & RUNNING_VMS < 4)"));
  EXPECT_TRUE(matches("FREE_CPU = 96 & FREE_CPU <= 96 & FREE_CPU != 95"));
  EXPECT_TRUE(matches("FREE_CPU > -1"));
}

TEST(RequirementTest, MultiValuedAttributesMatchAnyValueAndNeNone) {
  EXPECT_TRUE(matches(R"(GPU_MODEL = "L40")"));
  EXPECT_TRUE(matches(R"(GPU_MODEL = "H100*")"));
  EXPECT_FALSE(matches(R"(GPU_MODEL != "L40")"));
  EXPECT_TRUE(matches(R"(GPU_MODEL != "GH200")"));
}

TEST(RequirementTest, PrecedenceAndBeforeOr) {
  // a | b & c  ==  a | (b & c)
  EXPECT_TRUE(matches(R"(FREE_CPU = 96 | NAME = "x" & FREE_CPU = 0)"));
  EXPECT_FALSE(matches(R"((FREE_CPU = 96 | NAME = "x") & FREE_CPU = 0)"));
}

TEST(RequirementTest, ErrorsNameThePositionAndTheField) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"FREE_GPU > 1", "unknown host attribute \"FREE_GPU\""},
      {"NAME > 3", "only = and != apply"},
      {"FREE_CPU = \"many\"", "is a number"},
      {"FREE_CPU > 1 &", "expected a host attribute"},
      {"(FREE_CPU > 1", "expected \")\""},
      {"NAME = \"open", "unterminated string"},
      {"FREE_CPU > 1 FREE_CPU", "unexpected"},
      {"FREE_CPU # 1", "unexpected character"},
  };
  for (const auto& c : cases) {
    auto r = Requirement::parse(c.text, kAttrs);
    ASSERT_FALSE(r.has_value()) << c.text;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().field(), "requirements");
    EXPECT_NE(r.error().message().find(c.message), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find("position"), std::string::npos);
  }
  EXPECT_FALSE(Requirement::parse(std::string(5000, ' '), kAttrs));
  EXPECT_FALSE(Requirement::parse(std::string(200, '(') + "FREE_CPU > 1", kAttrs));
}

TEST(RankTest, ArithmeticOverNumbers) {
  FakeHost host;
  auto score = [&](std::string_view text) {
    auto r = Rank::parse(text, kAttrs);
    EXPECT_TRUE(r.has_value()) << text;
    return r ? r->score(host) : -1e9;
  };
  EXPECT_EQ(score("FREE_CPU"), 96);
  EXPECT_EQ(score("-RUNNING_VMS"), -3);
  EXPECT_EQ(score("FREE_CPU*2 + RUNNING_VMS"), 195);
  EXPECT_EQ(score("(FREE_CPU - 6) / 9"), 10);
  EXPECT_EQ(score("FREE_CPU / 0"), 0);
  EXPECT_EQ(score(""), 0);
  EXPECT_FALSE(Rank::parse("NAME", kAttrs));
  EXPECT_FALSE(Rank::parse("FREE_CPU +", kAttrs));
  EXPECT_EQ(Rank::parse("FREE_CPU +", kAttrs).error().field(), "rank");
}

}  // namespace
}  // namespace fabrica::sched
