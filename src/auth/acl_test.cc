#include "auth/acl.h"

#include <gtest/gtest.h>

namespace fabrica::auth {
namespace {

TEST(AclRuleTest, ParsesAndPrintsOpenNebulaExamples) {
  struct Case {
    const char* in;
    const char* canonical;
    uint64_t user, resource, rights;
  };
  const Case cases[] = {
      {"@100 VM+IMAGE/* USE+MANAGE #0", "@100 VM+IMAGE/* USE+MANAGE #0", 0x200000064ULL,
       0x9400000000ULL, 0x3},
      {"#5 HOST/%2 MANAGE", "#5 HOST/%2 MANAGE #0", 0x100000005ULL, 0x2800000002ULL, 0x2},
      {"#5 IMAGE+TEMPLATE/@103 USE+MANAGE #0", "#5 IMAGE+TEMPLATE/@103 USE+MANAGE #0",
       0x100000005ULL, 0x28200000067ULL, 0x3},
      {"* NET/#47 USE", "* NET/#47 USE #0", 0x400000000ULL, 0x410000002FULL, 0x1},
      {"@1 VM+NET+IMAGE+TEMPLATE/* CREATE", "@1 VM+NET+IMAGE+TEMPLATE/* CREATE #0", 0x200000001ULL,
       0x2D400000000ULL, 0x8},
      {"@106 HOST/%100 MANAGE *", "@106 HOST/%100 MANAGE *", 0x20000006AULL, 0x2800000064ULL, 0x2},
      // Order in the input does not matter; printing is canonical.
      {"#7 TEMPLATE+VM/@108 CREATE+USE", "#7 VM+TEMPLATE/@108 USE+CREATE #0", 0x100000007ULL,
       0x2120000006CULL, 0x9},
  };
  for (const Case& c : cases) {
    auto rule = AclRule::parse(c.in);
    ASSERT_TRUE(rule) << c.in << ": " << rule.error().message();
    EXPECT_EQ(rule->to_string(), c.canonical);
    EXPECT_EQ(rule->user, c.user) << c.in;
    EXPECT_EQ(rule->resource, c.resource) << c.in << " " << acl_hex(rule->resource);
    EXPECT_EQ(rule->rights, c.rights) << c.in;
    auto again = AclRule::parse(rule->to_string());
    ASSERT_TRUE(again);
    EXPECT_EQ(*again, *rule);
    auto numbers = AclRule::from_numbers(rule->user, rule->resource, rule->rights, rule->zone);
    ASSERT_TRUE(numbers);
    EXPECT_EQ(*numbers, *rule);
  }
}

TEST(AclRuleTest, RejectsMalformedRules) {
  for (const char* bad :
       {"", "@1", "@1 VM/* USE #0 extra", "@x VM/* USE", "%1 VM/* USE", "@1 VMS/* USE", "@1 VM USE",
        "@1 VM/#a USE", "@1 VM/* DELETE", "@1 /* USE", "@1 VM/* USE @0", "#99999999999 VM/* USE"}) {
    auto rule = AclRule::parse(bad);
    ASSERT_FALSE(rule) << '"' << bad << '"';
    EXPECT_EQ(rule.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(rule.error().field(), "rule");
  }
  EXPECT_FALSE(AclRule::from_numbers(0x400000001ULL, 0x1400000000ULL, 1, 0x100000000ULL));
  EXPECT_FALSE(AclRule::from_numbers(0x200000001ULL, 0x1400000000ULL, 0x10, 0x100000000ULL));
}

TEST(AclRuleTest, GrantsFollowOpenNebulaSemantics) {
  const int64_t groups_of_7[] = {108, 1};
  Subject user7{.uid = 7, .groups = groups_of_7};
  const int64_t in_cluster_2[] = {2};
  struct Case {
    const char* rule;
    ObjectRef object;
    Right right;
    bool granted;
  };
  const Case cases[] = {
      {"@108 IMAGE/#45 USE+MANAGE",
       {.type = ObjectType::kImage, .id = 45, .gid = 1},
       Right::kManage,
       true},
      {"@108 IMAGE/#45 USE+MANAGE",
       {.type = ObjectType::kImage, .id = 46, .gid = 1},
       Right::kUse,
       false},
      {"@108 IMAGE/#45 USE", {.type = ObjectType::kImage, .id = 45}, Right::kManage, false},
      {"@109 IMAGE/* USE", {.type = ObjectType::kImage, .id = 45}, Right::kUse, false},
      {"#7 NET/@104 USE", {.type = ObjectType::kNet, .id = 3, .gid = 104}, Right::kUse, true},
      {"#7 NET/@104 USE", {.type = ObjectType::kNet, .id = 3, .gid = 105}, Right::kUse, false},
      {"#8 NET/* USE", {.type = ObjectType::kNet, .id = 3}, Right::kUse, false},
      {"* NET/#47 USE", {.type = ObjectType::kNet, .id = 47}, Right::kUse, true},
      {"* NET/#47 USE", {.type = ObjectType::kVm, .id = 47}, Right::kUse, false},
      {"@1 HOST/%2 MANAGE",
       {.type = ObjectType::kHost, .id = 9, .clusters = in_cluster_2},
       Right::kManage,
       true},
      {"@1 HOST/%3 MANAGE",
       {.type = ObjectType::kHost, .id = 9, .clusters = in_cluster_2},
       Right::kManage,
       false},
      {"@1 VM+IMAGE/* CREATE", {.type = ObjectType::kVm, .id = -1, .gid = 1}, Right::kCreate, true},
      {"@1 VM+IMAGE/@1 CREATE",
       {.type = ObjectType::kVm, .id = -1, .gid = 108},
       Right::kCreate,
       false},
      {"@1 VM/#5 CREATE", {.type = ObjectType::kVm, .id = -1, .gid = 1}, Right::kCreate, false},
      {"@1 VM/* USE #1", {.type = ObjectType::kVm, .id = 1}, Right::kUse, false},
      {"@1 VM/* USE *", {.type = ObjectType::kVm, .id = 1}, Right::kUse, true},
  };
  for (const Case& c : cases) {
    auto rule = AclRule::parse(c.rule);
    ASSERT_TRUE(rule) << c.rule;
    EXPECT_EQ(rule->grants(user7, c.object, c.right), c.granted)
        << c.rule << " on " << acl_name(c.object.type) << " " << c.object.id;
  }
}

}  // namespace
}  // namespace fabrica::auth
