#include "auth/restricted.h"

#include <gtest/gtest.h>

namespace fabrica::auth {
namespace {

const Caller kAdmin{.uid = 0, .gid = 0, .groups = {0}, .name = "admin"};
const Caller kTenant{.uid = 7, .gid = 100, .groups = {100}, .name = "alice"};

Json vm_body(const std::string& kernel, const std::string& initrd = "") {
  return Json{{"os", {{"kernel", kernel}, {"initrd", initrd}, {"cmdline", "console=ttyS0"}}}};
}

TEST(RestrictedTest, TenantIsRefusedAHostPathNamingTheField) {
  auto r =
      check_restricted(kTenant, "vm", vm_body("/boot/vmlinuz", "/var/lib/fabrica/sealing.key"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(r.error().field(), "os.kernel");
  EXPECT_NE(r.error().message().find("KERNEL image"), std::string::npos) << r.error().message();

  auto initrd_only = check_restricted(kTenant, "vm", vm_body("", "/etc/shadow"));
  ASSERT_FALSE(initrd_only);
  EXPECT_EQ(initrd_only.error().field(), "os.initrd");
}

TEST(RestrictedTest, AdministratorMaySetEveryRestrictedField) {
  EXPECT_TRUE(check_restricted(kAdmin, "vm", vm_body("/boot/vmlinuz", "/boot/initrd.img")));
  EXPECT_TRUE(check_restricted(kAdmin, "image", Json{{"path", "/srv/images/a.qcow2"}}));
  Caller admin_group_member{.uid = 12, .gid = 0, .groups = {0}, .name = "ops"};
  EXPECT_TRUE(check_restricted(admin_group_member, "vnet", Json{{"bridge", "br0"}}));
}

TEST(RestrictedTest, UnsetFieldsAndOtherFieldsPass) {
  EXPECT_TRUE(check_restricted(kTenant, "vm", vm_body("")));
  EXPECT_TRUE(check_restricted(kTenant, "vm", Json{{"os", nullptr}}));
  EXPECT_TRUE(check_restricted(kTenant, "vm", Json::object()));
  EXPECT_TRUE(check_restricted(kTenant, "vm",
                               Json{{"os", {{"kernel_image_id", 4}, {"cmdline", "quiet"}}}}));
  // Another object's restricted names do not apply to this one.
  EXPECT_TRUE(check_restricted(kTenant, "vm", Json{{"path", "/etc/passwd"}}));
}

TEST(RestrictedTest, TenantMayKeepButNotChangeWhatAnAdministratorSet) {
  Json base = vm_body("/boot/vmlinuz", "/boot/initrd.img");
  EXPECT_TRUE(check_restricted(kTenant, "vm", base, base));
  auto changed = check_restricted(kTenant, "vm", vm_body("/boot/vmlinuz", "/etc/shadow"), base);
  ASSERT_FALSE(changed);
  EXPECT_EQ(changed.error().field(), "os.initrd");
  // Dropping a restricted value is not setting one.
  EXPECT_TRUE(check_restricted(kTenant, "vm", vm_body(""), base));
}

TEST(RestrictedTest, ArrayElementsAreCheckedOneByOneAndNamedByIndex) {
  Json proposed = {{"request", {{"vfs", {{{"count", 1}}, {{"count", 1}, {"pf", "ib0"}}}}}}};
  auto r = check_restricted(kTenant, "vm", proposed);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().field(), "request.vfs[1].pf");
  // The same PF as the base's element at the same index is kept, not set.
  EXPECT_TRUE(check_restricted(kTenant, "vm", proposed, proposed));
  Json moved = {{"request", {{"vfs", {{{"count", 1}, {"pf", "ib0"}}, {{"count", 1}}}}}}};
  auto shifted = check_restricted(kTenant, "vm", moved, proposed);
  ASSERT_FALSE(shifted);
  EXPECT_EQ(shifted.error().field(), "request.vfs[0].pf");
}

TEST(RestrictedTest, EveryDeclaredFieldIsRefusedToTenantsWithItsName) {
  for (const RestrictedField& f : restricted_fields()) {
    // Build a body that sets exactly this field to a host path.
    Json body = Json::object();
    Json* at = &body;
    std::string path(f.field), shown;
    size_t start = 0;
    while (start <= path.size()) {
      size_t dot = path.find('.', start);
      std::string key =
          path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      bool array = key.ends_with("[]");
      if (array) key.resize(key.size() - 2);
      shown += (shown.empty() ? "" : ".") + key + (array ? "[0]" : "");
      if (dot == std::string::npos) {
        (*at)[key] = "/var/lib/fabrica/sealing.key";
        break;
      }
      at = array ? &((*at)[key][0]) : &((*at)[key]);
      start = dot + 1;
    }
    auto r = check_restricted(kTenant, f.object, body);
    ASSERT_FALSE(r) << f.object << " " << f.field;
    EXPECT_EQ(r.error().code(), ErrorCode::kPermissionDenied);
    EXPECT_EQ(r.error().field(), shown);
    EXPECT_TRUE(check_restricted(kAdmin, f.object, body)) << f.field;
  }
}

}  // namespace
}  // namespace fabrica::auth
