// Endpoints against a real SQLite store: who may define them, what a tenant sees of another,
// backend URL checks, and the backend credential sealed at rest.
#include "endpoints/endpoints.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "auth/identity.h"
#include "crypto/crypto.h"
#include "store/sqlite_store.h"
#include "testing/fake_clock.h"
#include "testing/tenants.h"

namespace fabrica::endpoints {
namespace {

namespace fs = std::filesystem;

class EndpointsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fabrica-endpoints-" + crypto::random_hex(8));
    fs::create_directories(dir_);
    store_ = std::move(*store::SqliteStore::open((dir_ / "db").string()));
    authorizer_ = std::make_unique<auth::Authorizer>(*store_);
    identity_ =
        std::make_unique<auth::Identity>(*store_, *authorizer_, clock_, crypto::HashCost::kMinimum);
    ASSERT_TRUE(*identity_->bootstrap("admin-password"));
    endpoints_ = std::make_unique<Endpoints>(*store_, *authorizer_, clock_, sealer_);
    admin_ = *identity_->caller_for(0, "test");
    testing::add_tenants(*identity_, admin_, {"acme", "umbrella"}, gids_, bosses_, members_);
    ASSERT_FALSE(HasFatalFailure());
  }
  void TearDown() override { fs::remove_all(dir_); }

  NewEndpoint llama() {
    return NewEndpoint{.name = "llama-8b",
                       .model = "meta-llama/Llama-3.1-8B-Instruct",
                       .backends = {"http://vllm-0.acme.internal:8000", "http://10.0.0.7:8000/"},
                       .backend_key = "sk-upstream-secret-1"};
  }

  fs::path dir_;
  testing::FakeClock clock_;
  Sealer sealer_ = Sealer::random();
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::unique_ptr<auth::Identity> identity_;
  std::unique_ptr<Endpoints> endpoints_;
  auth::Caller admin_;
  std::vector<int64_t> gids_;
  std::vector<auth::Caller> bosses_, members_;
};

TEST_F(EndpointsTest, ATenantAdministratorDefinesEndpointsItsMembersUseAndOthersNeverSee) {
  auto made = endpoints_->create(bosses_[0], llama());
  ASSERT_TRUE(made) << made.error().message();
  EXPECT_EQ(made->header.gid, gids_[0]);
  Json shown = made->to_api_json();
  EXPECT_EQ(shown["backend_key_set"], true);
  EXPECT_EQ(shown.dump().find("sk-upstream"), std::string::npos) << "never shown again";

  // A member sees it and cannot change it; a plain member cannot create one.
  EXPECT_TRUE(endpoints_->get(members_[0], made->header.id));
  auto changed = endpoints_->update(members_[0], made->header.id, {.description = "mine now"});
  ASSERT_FALSE(changed);
  EXPECT_EQ(changed.error().code(), ErrorCode::kPermissionDenied);
  auto own = endpoints_->create(members_[0], {.name = "x", .model = "m", .backends = {"http://a"}});
  ASSERT_FALSE(own);
  EXPECT_EQ(own.error().code(), ErrorCode::kPermissionDenied);

  // The other tenant: not found, whatever it tries; its lists hold nothing of acme's.
  for (const auto& stranger : {bosses_[1], members_[1]}) {
    auto seen = endpoints_->get(stranger, made->header.id);
    ASSERT_FALSE(seen);
    EXPECT_EQ(seen.error().code(), ErrorCode::kNotFound);
    auto gone = endpoints_->remove(stranger, made->header.id);
    ASSERT_FALSE(gone);
    EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
    EXPECT_TRUE(endpoints_->list(stranger, {})->items.empty());
    auto planted = endpoints_->create(
        stranger, {.name = "spy", .gid = gids_[0], .model = "spy", .backends = {"http://evil:1"}});
    ASSERT_FALSE(planted);
    EXPECT_EQ(planted.error().code(), ErrorCode::kPermissionDenied);
  }
  // Names and models are the tenant's own: umbrella may use the same ones.
  auto theirs = endpoints_->create(bosses_[1], llama());
  ASSERT_TRUE(theirs) << theirs.error().message();
  auto twice = endpoints_->create(bosses_[0], llama());
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(twice.error().field(), "name");
  NewEndpoint same_model = llama();
  same_model.name = "llama-8b-copy";
  auto model_twice = endpoints_->create(bosses_[0], same_model);
  ASSERT_FALSE(model_twice);
  EXPECT_EQ(model_twice.error().field(), "model");
  EXPECT_EQ(endpoints_->list(bosses_[0], {})->items.size(), 1u);
  ASSERT_TRUE(endpoints_->remove(bosses_[0], made->header.id));
  EXPECT_TRUE(endpoints_->get(bosses_[1], theirs->header.id));
}

TEST_F(EndpointsTest, BackendUrlsAreCheckedAndNamedInTheError) {
  for (const char* good : {"http://vllm:8000", "http://nim.example.com/v1", "http://[fd00::7]:80",
                           "http://10.1.2.3", "https://nim.example.com/v1"}) {
    EXPECT_TRUE(validate_backend_url(good, "backends[0]")) << good;
  }
  for (const char* bad : {"ftp://x", "http://", "http://user:pw@host:80", "http://host:0",
                          "http://host:99999", "http://host:", "http://ho st", "http://host/v1?x=1",
                          "http://host/#f", "vllm:8000", "http://[fd00::7", "https://"}) {
    auto r = validate_backend_url(bad, "backends[1]");
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().field(), "backends[1]") << bad;
  }
  NewEndpoint e = llama();
  e.backends = {"http://a:1", "http://a:1"};
  auto dup = endpoints_->create(bosses_[0], e);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().field(), "backends[1]");
  e.backends = {};
  EXPECT_EQ(endpoints_->create(bosses_[0], e).error().field(), "backends");
  e = llama();
  e.model = "two words";
  EXPECT_EQ(endpoints_->create(bosses_[0], e).error().field(), "model");
  e = llama();
  e.backend_key = std::string("line\nbreak");
  EXPECT_EQ(endpoints_->create(bosses_[0], e).error().field(), "backend_key");
  EXPECT_TRUE(endpoints_->list(admin_, {})->items.empty()) << "nothing half-made";
}

TEST_F(EndpointsTest, TheBackendKeyIsSealedAtRestAndOpenedOnlyForGateways) {
  auto made = endpoints_->create(bosses_[0], llama());
  ASSERT_TRUE(made);
  // The database file never holds the key in the clear.
  std::ifstream db(dir_ / "db", std::ios::binary);
  std::stringstream bytes;
  bytes << db.rdbuf();
  EXPECT_EQ(bytes.str().find("sk-upstream-secret-1"), std::string::npos);
  auto routes = endpoints_->routes();
  ASSERT_TRUE(routes);
  ASSERT_EQ(routes->size(), 1u);
  EXPECT_EQ((*routes)[0].backend_key, "sk-upstream-secret-1");
  EXPECT_EQ((*routes)[0].gid, gids_[0]);
  EXPECT_EQ((*routes)[0].model, "meta-llama/Llama-3.1-8B-Instruct");

  // Rotated, then removed.
  ASSERT_TRUE(endpoints_->update(bosses_[0], made->header.id, {.backend_key = "sk-rotated"}));
  EXPECT_EQ((*endpoints_->routes())[0].backend_key, "sk-rotated");
  auto cleared = endpoints_->update(bosses_[0], made->header.id, {.backend_key = ""});
  ASSERT_TRUE(cleared);
  EXPECT_EQ(cleared->to_api_json()["backend_key_set"], false);
  EXPECT_EQ((*endpoints_->routes())[0].backend_key, "");

  // Another server's key cannot open it; a changed byte does not open.
  std::string sealed = sealer_.seal("secret");
  EXPECT_EQ(*sealer_.open(sealed), "secret");
  EXPECT_FALSE(Sealer::random().open(sealed));
  std::string bent = sealed;
  bent[bent.size() / 2] = bent[bent.size() / 2] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(sealer_.open(bent));
}

TEST_F(EndpointsTest, ASealingKeyRotationResealsEveryBackendKeyInOneTransaction) {
  auto first = endpoints_->create(bosses_[0], llama());
  ASSERT_TRUE(first);
  auto other = llama();
  other.backend_key = "sk-umbrella";
  ASSERT_TRUE(endpoints_->create(bosses_[1], other));
  auto plain = llama();
  plain.name = "no-key";
  plain.model = "acme/no-key";
  plain.backend_key.reset();
  ASSERT_TRUE(endpoints_->create(bosses_[0], plain));
  auto done = sealer_.rotate([&] { return endpoints_->reseal_all(); });
  ASSERT_TRUE(done) << done.error().message();
  EXPECT_EQ(done->resealed, 2u) << "an endpoint without a key has nothing to re-seal";
  std::map<std::string, std::string> keys;
  auto routes = endpoints_->routes();
  ASSERT_TRUE(routes);
  for (const auto& r : *routes) keys[r.name + "/" + std::to_string(r.gid)] = r.backend_key;
  EXPECT_EQ(keys["llama-8b/" + std::to_string(gids_[0])], "sk-upstream-secret-1");
  EXPECT_EQ(keys["llama-8b/" + std::to_string(gids_[1])], "sk-umbrella");
  EXPECT_EQ(keys["no-key/" + std::to_string(gids_[0])], "");
  // Stored under the new key: what was stored before no longer opens (the old key is gone).
  EXPECT_EQ(sealer_.keys(), 1u);
  auto now = endpoints_->get(bosses_[0], first->header.id);
  ASSERT_TRUE(now);
  EXPECT_NE(now->sealed_key, first->sealed_key);
  EXPECT_FALSE(sealer_.open(first->sealed_key));
  EXPECT_EQ(*sealer_.open(now->sealed_key), "sk-upstream-secret-1");
}

TEST_F(EndpointsTest, TheSealingKeyFileIsMadeOnceWithModeSixHundred) {
  std::string path = (dir_ / "sealing.key").string();
  auto first = Sealer::from_file(path);
  ASSERT_TRUE(first) << first.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(fs::file_size(path), Sealer::kKeyBytes);
  auto again = Sealer::from_file(path);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again->open(first->seal("kept")), "kept") << "the same key after a restart";
  { std::ofstream(path, std::ios::trunc) << "short"; }
  EXPECT_FALSE(Sealer::from_file(path));
}

}  // namespace
}  // namespace fabrica::endpoints
