#include "core/object.h"

#include <gtest/gtest.h>

namespace fabrica {
namespace {

using Class = Permissions::Class;

TEST(PermissionsTest, OctalDigitsAreUseManageAdminAsInOpenNebula) {
  auto p = Permissions::parse_octal("640");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->bits(), 0640);
  EXPECT_EQ(p->octal(), "640");
  EXPECT_EQ(p->letters(Class::kOwner), "um-");
  EXPECT_EQ(p->letters(Class::kGroup), "u--");
  EXPECT_EQ(p->letters(Class::kOther), "---");
  EXPECT_TRUE(p->allows(Class::kOwner, Right::kManage));
  EXPECT_FALSE(p->allows(Class::kOwner, Right::kAdmin));
  EXPECT_TRUE(p->allows(Class::kGroup, Right::kUse));
  EXPECT_FALSE(p->allows(Class::kGroup, Right::kManage));
  EXPECT_FALSE(p->allows(Class::kOther, Right::kUse));
  EXPECT_FALSE(p->allows(Class::kOwner, Right::kCreate));
  auto all = Permissions::parse_octal("777");
  EXPECT_EQ(all->letters(Class::kOther), "uma");
}

TEST(PermissionsTest, RejectsAnythingButThreeOctalDigits) {
  for (const char* bad : {"", "64", "6400", "648", "abc", "-10"}) {
    auto p = Permissions::parse_octal(bad);
    ASSERT_FALSE(p) << bad;
    EXPECT_EQ(p.error().field(), "permissions");
  }
}

TEST(ObjectHeaderTest, JsonRoundTrip) {
  ObjectHeader h{.id = 7,
                 .name = "alice",
                 .uid = 7,
                 .gid = 1,
                 .permissions = Permissions(0600),
                 .state = 1,
                 .created_at = 1795550297,
                 .updated_at = 1795550298};
  Json j = Json::object();
  h.to_json(j);
  EXPECT_EQ(j["created_at"], "2026-11-24T19:58:17Z");
  auto back = ObjectHeader::from_json(j);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name, "alice");
  EXPECT_EQ(back->permissions, Permissions(0600));
  EXPECT_EQ(back->created_at, h.created_at);
  EXPECT_EQ(back->updated_at, h.updated_at);
}

TEST(TimeTest, FormatsAndParsesRfc3339Utc) {
  EXPECT_EQ(format_time(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(format_time(951782400), "2000-02-29T00:00:00Z");
  EXPECT_EQ(parse_time("2000-02-29T00:00:00Z"), 951782400);
  EXPECT_EQ(parse_time(format_time(1795550297)), 1795550297);
  for (const char* bad : {"", "2026-02-30T00:00:00Z", "2026-11-24 19:58:17Z",
                          "2026-11-24T25:00:00Z", "2026-11-24T19:58:17", "2026-1x-24T19:58:17Z"}) {
    EXPECT_EQ(parse_time(bad), std::nullopt) << bad;
  }
}

TEST(ObjectTypeTest, AclNamesMatchOpenNebulaBits) {
  EXPECT_EQ(static_cast<uint64_t>(ObjectType::kVm), 0x1000000000ULL);
  EXPECT_EQ(static_cast<uint64_t>(ObjectType::kUser), 0x10000000000ULL);
  EXPECT_EQ(object_type_from_acl_name("DATASTORE"), ObjectType::kDatastore);
  EXPECT_EQ(acl_name(ObjectType::kVdc), "VDC");
  EXPECT_EQ(object_type_from_acl_name("vm"), std::nullopt);
}

TEST(NameTest, ValidatesLengthAndCharacters) {
  EXPECT_TRUE(validate_name("gpu-node-01"));
  EXPECT_TRUE(validate_name("alice@example.com"));
  EXPECT_FALSE(validate_name(""));
  EXPECT_FALSE(validate_name(std::string(129, 'a')));
  EXPECT_FALSE(validate_name("a/b"));
  EXPECT_FALSE(validate_name(" lead"));
  EXPECT_FALSE(validate_name("tab\there"));
  EXPECT_FALSE(validate_name("caf\xc3\xa9"));
}

}  // namespace
}  // namespace fabrica
