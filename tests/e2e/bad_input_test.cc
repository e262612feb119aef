#include <gtest/gtest.h>

#include <thread>

#include "crypto/crypto.h"
#include "testing/daemon_process.h"

namespace fabrica {
namespace {

using testing::DaemonProcess;

class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = new DaemonProcess();
    ASSERT_TRUE(daemon_->start()) << daemon_->log();
    auto api = daemon_->login();
    token_ = new std::string();
    auto t = client::ApiClient(daemon_->http(), "")
                 .login("admin", DaemonProcess::kAdminPassword, Json::object());
    *token_ = (*t)["token"];
  }
  static void TearDownTestSuite() {
    delete daemon_;
    delete token_;
  }

  // Raw request with the admin token; returns status and parsed body.
  std::pair<int, Json> raw(const std::string& method, const std::string& target,
                           const std::string& body, client::Headers headers = {}) {
    headers.emplace_back("Authorization", "Bearer " + *token_);
    auto r = daemon_->http()->request(method, target, body, headers);
    EXPECT_TRUE(r) << r.error().message();
    auto json = parse_json(r->body);
    return {r->status, json ? *json : Json()};
  }

  // Counts users and groups as the admin sees them: bad input must not change these.
  std::pair<size_t, size_t> counts() {
    auto api = client::ApiClient(daemon_->http(), *token_);
    return {(*api.get("/api/v1/users?limit=1000"))["items"].size(),
            (*api.get("/api/v1/groups?limit=1000"))["items"].size()};
  }

  static DaemonProcess* daemon_;
  static std::string* token_;
};
DaemonProcess* BadInputTest::daemon_ = nullptr;
std::string* BadInputTest::token_ = nullptr;

TEST_F(BadInputTest, MalformedBodiesGetAClearErrorAndChangeNothing) {
  auto before = counts();
  struct Case {
    std::string target;
    std::string body;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"/api/v1/users", "{\"name\": \"x\", ", ""},
      {"/api/v1/users", "[]", ""},
      {"/api/v1/users", "", ""},
      {"/api/v1/users", R"({"name": 42, "password": "password1"})", "name"},
      {"/api/v1/users", R"({"name": "bob", "password": "password1", "gid": "1"})", "gid"},
      {"/api/v1/users", R"({"name": "bob", "password": "password1", "admin": true})", "admin"},
      {"/api/v1/users", R"({"name": "bob", "password": "short"})", "password"},
      {"/api/v1/users", R"({"name": "bob", "password": "password1", "groups": ["x"]})", "groups"},
      {"/api/v1/users", R"({"name": "bob", "password": "password1", "gid": 424242})", "gid"},
      {"/api/v1/users", "{\"name\": \"b\xff\xfe\", \"password\": \"password1\"}", ""},
      {"/api/v1/users", R"({"name": "bell\u0007", "password": "password1"})", "name"},
      {"/api/v1/users", R"({"name": ")" + std::string(129, 'n') + R"(", "password": "password1"})",
       "name"},
      {"/api/v1/users", R"({"name": "ok", "password": "password1", "template": {"bad key": "v"}})",
       "template/bad key"},
      {"/api/v1/groups", R"({"name": "a/b"})", "name"},
      {"/api/v1/groups", R"({"name": "g", "extra": 1})", "extra"},
      {"/api/v1/acl", R"({"rule": "@1 VM/* FLY"})", "rule"},
      {"/api/v1/acl", R"({"user": "zz", "resource": "1", "rights": "1"})", "user"},
      {"/api/v1/users/0/chmod", R"({"permissions": "999"})", "permissions"},
      {"/api/v1/users/abc/chgrp", R"({"gid": 1})", "id"},
  };
  for (const Case& c : cases) {
    auto [status, body] = raw("POST", c.target, c.body);
    EXPECT_EQ(status, 400) << c.target << " " << c.body;
    EXPECT_EQ(body["error"]["code"], "INVALID_ARGUMENT") << c.body;
    EXPECT_TRUE(body["error"]["message"].is_string()) << c.body;
    if (!c.field.empty()) {
      EXPECT_EQ(body["error"]["field"], c.field) << c.body;
    }
  }
  EXPECT_EQ(counts(), before);
}

TEST_F(BadInputTest, SqlMetacharactersAreJustCharacters) {
  std::string name = "o'brien\"; --%_*";
  name.erase(std::remove(name.begin(), name.end(), '"'), name.end());
  auto [status, body] = raw("POST", "/api/v1/groups", dump_json(Json{{"name", name}}));
  ASSERT_EQ(status, 201) << body.dump();
  auto [s2, found] = raw("GET", "/api/v1/groups?name=" + client::url_encode(name), "");
  ASSERT_EQ(s2, 200);
  ASSERT_EQ(found["items"].size(), 1u);
  EXPECT_EQ(found["items"][0]["name"], name);
  auto [s3, wildcard] = raw("GET", "/api/v1/groups?name=%25", "");
  EXPECT_TRUE(wildcard["items"].empty());
}

TEST_F(BadInputTest, TenMegabyteBodyIs413AndChangesNothing) {
  auto before = counts();
  std::string huge = R"({"name": "big", "password": "password1", "template": {"X": ")" +
                     std::string(10 * 1024 * 1024, 'x') + "\"}}";
  auto [status, body] = raw("POST", "/api/v1/users", huge);
  EXPECT_EQ(status, 413);
  EXPECT_EQ(body["error"]["code"], "PAYLOAD_TOO_LARGE");
  EXPECT_EQ(counts(), before);
}

TEST_F(BadInputTest, ExpiredRevokedAndForgedTokensAre401) {
  client::ApiClient anon(daemon_->http(), "");
  auto revoked = anon.login("admin", DaemonProcess::kAdminPassword, Json{{"name", "doomed"}});
  ASSERT_TRUE(revoked);
  std::string secret = (*revoked)["token"];
  client::ApiClient doomed(daemon_->http(), secret);
  ASSERT_TRUE(doomed.get("/api/v1/users"));
  ASSERT_TRUE(doomed.del("/api/v1/auth/tokens/" + std::to_string((*revoked)["id"].get<int64_t>())));
  auto after = doomed.get("/api/v1/users");
  EXPECT_EQ(after.error().code(), ErrorCode::kUnauthenticated);

  auto short_lived = anon.login("admin", DaemonProcess::kAdminPassword, Json{{"expires_in", 1}});
  ASSERT_TRUE(short_lived);
  client::ApiClient expiring(daemon_->http(), (*short_lived)["token"]);
  // Poll with a deadline until the one-second token has expired.
  Result<Json> r = expiring.get("/api/v1/users");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (r && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    r = expiring.get("/api/v1/users");
  }
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("expired"), std::string::npos);

  for (const std::string& forged :
       {crypto::new_token_secret(), std::string("fab_short"), std::string(5000, 'a'),
        std::string("fab_") + std::string(43, '*')}) {
    client::ApiClient bad(daemon_->http(), forged);
    EXPECT_EQ(bad.get("/api/v1/users").error().code(), ErrorCode::kUnauthenticated);
  }
  auto bad_lifetime = anon.login("admin", DaemonProcess::kAdminPassword, Json{{"expires_in", -5}});
  EXPECT_EQ(bad_lifetime.error().field(), "expires_in");
}

TEST_F(BadInputTest, MalformedHttpIsRejectedNotCrashed) {
  auto [status, body] = raw("GET", "/api/v1/users?limit=%zz", "");
  EXPECT_EQ(status, 400);
  EXPECT_EQ(body["error"]["code"], "INVALID_ARGUMENT");
  auto http = daemon_->http();
  EXPECT_EQ(http->request("GET", "/healthz")->status, 200);
}

}  // namespace
}  // namespace fabrica
