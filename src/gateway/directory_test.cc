// The routing snapshot: keys by hash, models within a tenant only, expiry.
#include "gateway/directory.h"

#include <gtest/gtest.h>

#include "crypto/crypto.h"

namespace fabrica::gateway {
namespace {

Json snapshot_json() {
  auto key = [](int64_t id, int64_t gid, const std::string& secret, Json endpoints,
                int64_t expires) {
    return Json{{"id", id},
                {"gid", gid},
                {"uid", 10 + id},
                {"hash", crypto::sha256_hex(secret)},
                {"endpoints", endpoints},
                {"rpm", 60},
                {"tpm", 1000},
                {"expires_at", expires}};
  };
  auto endpoint = [](int64_t id, int64_t gid, const std::string& name, const std::string& model) {
    return Json{{"endpoint_id", id},
                {"name", name},
                {"gid", gid},
                {"model", model},
                {"backends", {"http://127.0.0.1:1"}},
                {"backend_key", ""}};
  };
  return Json{{"endpoints",
               {endpoint(2, 100, "llama", "meta/llama"), endpoint(1, 100, "qwen", "qwen/qwen"),
                endpoint(3, 200, "secret", "umbrella/private")}},
              {"keys",
               {key(1, 100, "fak_acme_all", {"*"}, 0), key(2, 100, "fak_acme_llama", {"llama"}, 0),
                key(3, 200, "fak_umbrella", {"*"}, 0), key(4, 100, "fak_old", {"*"}, 1000)}}};
}

TEST(DirectoryTest, KeysAuthenticateByHashAndExpire) {
  auto s = Snapshot::from_json(snapshot_json(), "\"e1\"");
  ASSERT_TRUE(s);
  EXPECT_EQ((*s)->etag(), "\"e1\"");
  const KeyEntry* k = (*s)->authenticate("fak_acme_all", 2000);
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->gid, 100);
  EXPECT_EQ((*s)->authenticate("fak_nope", 2000), nullptr);
  EXPECT_EQ((*s)->authenticate("acme_all", 2000), nullptr);
  EXPECT_NE((*s)->authenticate("fak_old", 999), nullptr);
  EXPECT_EQ((*s)->authenticate("fak_old", 1000), nullptr);
}

TEST(DirectoryTest, ATenantsKeyNeverResolvesAnotherTenantsModel) {
  auto s = *Snapshot::from_json(snapshot_json(), "");
  const KeyEntry& acme = *s->authenticate("fak_acme_all", 0);
  Resolved r = s->resolve(acme, "meta/llama");
  ASSERT_EQ(r.resolution, Resolution::kRouted);
  EXPECT_EQ(r.endpoint->name, "llama");
  // Umbrella's model reads exactly like one that does not exist.
  EXPECT_EQ(s->resolve(acme, "umbrella/private").resolution, Resolution::kUnknownModel);
  EXPECT_EQ(s->resolve(acme, "no/such").resolution, Resolution::kUnknownModel);
  const KeyEntry& narrow = *s->authenticate("fak_acme_llama", 0);
  EXPECT_EQ(s->resolve(narrow, "qwen/qwen").resolution, Resolution::kNotAllowed);
  EXPECT_EQ(s->resolve(narrow, "meta/llama").resolution, Resolution::kRouted);
}

TEST(DirectoryTest, ModelsListsTheKeysOwnInIdOrder) {
  auto s = *Snapshot::from_json(snapshot_json(), "");
  auto all = s->models(*s->authenticate("fak_acme_all", 0));
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0]->name, "qwen");
  EXPECT_EQ(all[1]->name, "llama");
  EXPECT_EQ(s->models(*s->authenticate("fak_acme_llama", 0)).size(), 1u);
  auto umbrella = s->models(*s->authenticate("fak_umbrella", 0));
  ASSERT_EQ(umbrella.size(), 1u);
  EXPECT_EQ(umbrella[0]->model, "umbrella/private");
  EXPECT_EQ(s->endpoint(3)->name, "secret");
  EXPECT_EQ(s->endpoint(9), nullptr);
}

TEST(DirectoryTest, RefusesWhatIsNotASnapshot) {
  EXPECT_FALSE(Snapshot::from_json(Json{{"endpoints", Json::array()}}, ""));
  Json bad = snapshot_json();
  bad["keys"][0].erase("hash");
  EXPECT_FALSE(Snapshot::from_json(bad, ""));
}

TEST(DirectoryTest, ADirectorySwapsWholeSnapshots) {
  Directory d;
  EXPECT_FALSE(d.loaded());
  auto before = d.current();
  d.replace(*Snapshot::from_json(snapshot_json(), "x"));
  EXPECT_TRUE(d.loaded());
  EXPECT_EQ(before->endpoints().size(), 0u);  // Requests holding the old one keep it intact.
  EXPECT_EQ(d.current()->endpoints().size(), 3u);
}

}  // namespace
}  // namespace fabrica::gateway
