// TLS on every link fabricad serves: a quickstart-style CA (scripts/make-certs), the CLI, the
// agent and the gateway verifying it, a wrong CA refused, a join token whose pin names another
// CA refused before the token is sent, plain HTTP to the TLS port refused, and a renewed
// certificate served without a restart.
#include "crypto/tls.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "testing/daemon_process.h"

namespace fabrica {
namespace {

namespace fs = std::filesystem;
using testing::ChildProcess;
using testing::DaemonProcess;
using testing::eventually;

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

fs::path make_certs(const fs::path& dir, const std::string& extra = "") {
  auto made = testing::run_command((testing::source_dir() / "scripts/make-certs").string() + " " +
                                   dir.string() + " " + extra);
  EXPECT_EQ(made.exit_code, 0) << made.output;
  return dir;
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("fabrica-tls-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    certs_ = make_certs(root_ / "pki");
    other_ = make_certs(root_ / "other-pki");
    daemon_ = std::make_unique<DaemonProcess>(std::vector<std::string>{
        "--tls-cert", (certs_ / "server.pem").string(), "--tls-key",
        (certs_ / "server.key").string(), "--tls-ca", (certs_ / "ca.pem").string()});
    daemon_->set_client_tls({.ca_file = (certs_ / "ca.pem").string()});
    ASSERT_TRUE(daemon_->start()) << daemon_->log();
    ASSERT_TRUE(daemon_->url().starts_with("https://")) << daemon_->url();
  }
  void TearDown() override {
    daemon_.reset();
    fs::remove_all(root_);
  }
  std::string hostport() const { return daemon_->url().substr(std::string("https://").size()); }
  testing::CommandResult fabrica(const std::string& args) {
    return testing::run_command(
        "env -u FABRICA_TOKEN -u FABRICA_ENDPOINT -u FABRICA_CA_FILE HOME=" + root_.string() + " " +
        testing::binary_path("fabrica") + " " + args);
  }

  fs::path root_, certs_, other_;
  std::unique_ptr<DaemonProcess> daemon_;
};

TEST_F(TlsTest, ClientsVerifyTheServerAndAWrongCaOrPlainHttpIsRefused) {
  auto api = daemon_->login();
  auto me = api.get("/api/v1/auth/whoami");
  ASSERT_TRUE(me) << me.error().message();
  EXPECT_EQ((*me)["name"], "admin");

  // A client that trusts another CA does not talk to this server.
  auto wrong =
      client::HttpClient::create(daemon_->url(), {.ca_file = (other_ / "ca.pem").string()});
  ASSERT_TRUE(wrong);
  auto refused = (*wrong)->request("GET", "/healthz");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnavailable);
  EXPECT_NE(refused.error().message().find("certificate verify failed"), std::string::npos)
      << refused.error().message();

  // Plain HTTP to the TLS port gets no answer.
  auto plain = client::HttpClient::create("http://" + hostport());
  auto plain_reply = (*plain)->request("GET", "/healthz");
  EXPECT_TRUE(!plain_reply || plain_reply->status != 200);

  // The CLI: verified with --ca-file (saved by login), refused without it.
  auto unverified = fabrica("--endpoint " + daemon_->url() + " login --password " +
                            DaemonProcess::kAdminPassword);
  EXPECT_NE(unverified.exit_code, 0);
  EXPECT_NE(unverified.output.find("certificate verify failed"), std::string::npos)
      << unverified.output;
  auto login =
      fabrica("--endpoint " + daemon_->url() + " --ca-file " + (certs_ / "ca.pem").string() +
              " login --password " + DaemonProcess::kAdminPassword);
  ASSERT_EQ(login.exit_code, 0) << login.output;
  auto users = fabrica("user list");
  EXPECT_EQ(users.exit_code, 0) << users.output;
  EXPECT_NE(users.output.find("admin"), std::string::npos) << users.output;
}

// The join token carries the CA's pin: a host trusts the control plane the token came from
// before it sends the token, and keeps that CA for every later connection.
TEST_F(TlsTest, AJoinTokenPinsTheCaBeforeAnythingIsSent) {
  auto api = daemon_->login();
  auto pin = crypto::spki_sha256_of_file((certs_ / "ca.pem").string());
  ASSERT_TRUE(pin);
  auto other_pin = crypto::spki_sha256_of_file((other_ / "ca.pem").string());
  ASSERT_TRUE(other_pin);

  auto added = api.post("/api/v1/hosts", Json{{"name", "gpu-a"}});
  ASSERT_TRUE(added) << added.error().message();
  std::string token = (*added)["join_token"];
  ASSERT_NE(token.find("@sha256:" + *pin), std::string::npos) << token;

  // The same token with another CA's pin: refused by the agent before it sends the token.
  std::string secret = token.substr(0, token.find('@'));
  auto forged = testing::run_command(
      testing::binary_path("fabrica-agent") + " --server " + daemon_->url() + " --join-token " +
      secret + "@sha256:" + *other_pin + " --simulate 1 --rounds 1 --sim-prefix forged");
  EXPECT_NE(forged.exit_code, 0) << forged.output;
  EXPECT_NE(forged.output.find("does not hold the CA"), std::string::npos) << forged.output;
  EXPECT_EQ(read_file(daemon_->data_dir() / "access.log").find("/api/v1/agent/join"),
            std::string::npos)
      << "the join request reached fabricad";

  // The right pin: the agent joins, saves the CA, and reports over TLS from then on.
  fs::path state = root_ / "agent";
  ChildProcess agent(
      {testing::binary_path("fabrica-agent"), "--server", daemon_->url(), "--join-token", token,
       "--state-dir", state.string(), "--hostname", "gpu-a", "--sysfs-root",
       (testing::source_dir() / "tests/fixtures/hosts/hgx-h100").string()},
      (root_ / "agent.log").string());
  ASSERT_TRUE(eventually([&] {
    auto host = api.get("/api/v1/hosts/" + std::to_string((*added)["host"]["id"].get<int64_t>()));
    return host && (*host)["state_name"] == "MONITORED";
  })) << agent.log();
  // The join itself makes the host MONITORED (it carries the inventory); the agent saves the
  // CA once the answer is in, and says so in its log right after.
  ASSERT_TRUE(eventually([&] { return agent.log().find("joined as host") != std::string::npos; }))
      << agent.log();
  EXPECT_EQ(read_file(state / "ca.pem"), read_file(certs_ / "ca.pem"));
}

// A renewed certificate is served to new connections without a restart. The gateway reads
// fabricad over TLS, serves end users over TLS, and reaches an https backend, verifying each.
TEST_F(TlsTest, ARenewedCertificateIsServedWithoutARestartAndTheGatewayVerifies) {
  auto api = daemon_->login();
  auto san = [&] {
    // In a subshell: run_command sends /dev/null to the last command's stdin.
    auto out = testing::run_command("(openssl s_client -connect " + hostport() +
                                    " -servername localhost </dev/null 2>/dev/null | openssl x509 "
                                    "-noout -ext subjectAltName)");
    return out.output;
  };
  EXPECT_EQ(san().find("renewed.example"), std::string::npos);
  make_certs(certs_, "renewed.example");
  EXPECT_TRUE(eventually([&] { return san().find("renewed.example") != std::string::npos; }))
      << san();
  EXPECT_TRUE(api.get("/api/v1/auth/whoami"));  // The kept-alive connection carries on.

  auto basic = client::ApiClient(daemon_->http(), "");
  auto gw_token = basic.login("admin", DaemonProcess::kAdminPassword, Json{{"name", "gateway"}});
  ASSERT_TRUE(gw_token) << gw_token.error().message();
  {
    std::ofstream out(root_ / "gateway-token");
    out << (*gw_token)["token"].get<std::string>() << "\n";
  }
  // An https backend with a certificate of the backends' own CA (the Node test upstream).
  std::string node = testing::run_command("command -v node").output;
  node = node.substr(0, node.find('\n'));
  if (node.empty()) GTEST_SKIP() << "node is not installed (scripts/test installs it)";
  fs::path backend_pki = make_certs(root_ / "backend-pki");
  ChildProcess upstream({node, (testing::source_dir() / "tests/gateway/upstream.mjs").string(),
                         "--name", "secure", "--tls-cert", (backend_pki / "server.pem").string(),
                         "--tls-key", (backend_pki / "server.key").string()},
                        (root_ / "upstream.log").string());
  std::regex port_re(R"re("port":(\d+))re");
  std::string upstream_port;
  ASSERT_TRUE(eventually([&] {
    std::smatch m;
    std::string text = upstream.log();
    if (!std::regex_search(text, m, port_re)) return false;
    upstream_port = m[1];
    return true;
  })) << upstream.log();
  auto endpoint =
      api.post("/api/v1/endpoints", Json{{"name", "secure"},
                                         {"model", "acme/secure"},
                                         {"backends", {"https://localhost:" + upstream_port}}});
  ASSERT_TRUE(endpoint) << endpoint.error().message();
  auto key = api.post("/api/v1/apikeys", Json{{"name", "secure-key"}, {"endpoints", {"secure"}}});
  ASSERT_TRUE(key) << key.error().message();

  fs::create_directories(root_ / "gateway");
  ChildProcess gateway(
      {testing::binary_path("fabrica-gateway"), "--server", daemon_->url(), "--server-ca-file",
       (certs_ / "ca.pem").string(), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
       "--token-file", (root_ / "gateway-token").string(), "--spool-dir",
       (root_ / "gateway").string(), "--tls-cert", (certs_ / "server.pem").string(), "--tls-key",
       (certs_ / "server.key").string(), "--backend-ca-file", (backend_pki / "ca.pem").string()},
      (root_ / "gateway.log").string());
  std::regex listening(R"(listening on 127\.0\.0\.1:(\d+) admin 127\.0\.0\.1:(\d+))");
  std::string admin_port, front_port;
  ASSERT_TRUE(eventually([&] {
    std::smatch m;
    std::string text = gateway.log();
    if (!std::regex_search(text, m, listening)) return false;
    front_port = m[1];
    admin_port = m[2];
    return true;
  })) << gateway.log();
  auto admin = client::HttpClient::create("http://127.0.0.1:" + admin_port);
  EXPECT_TRUE(eventually([&] {
    auto health = (*admin)->request("GET", "/healthz");
    return health && health->body.find("\"snapshot\":true") != std::string::npos;
  })) << gateway.log();

  // An end user, over TLS (verified), through the gateway to the https backend.
  auto front = client::HttpClient::create("https://127.0.0.1:" + front_port,
                                          {.ca_file = (certs_ / "ca.pem").string()});
  ASSERT_TRUE(front);
  Json chat{{"model", "acme/secure"},
            {"messages", Json::array({Json{{"role", "user"}, {"content", "hello"}}})}};
  client::Headers auth{{"Authorization", "Bearer " + (*key)["key"].get<std::string>()},
                       {"Content-Type", "application/json"}};
  bool served = eventually([&] {  // Until the gateway's snapshot has the endpoint and key.
    auto answer = (*front)->request("POST", "/v1/chat/completions", chat.dump(), auth);
    return answer && answer->status == 200 &&
           answer->body.find("chat.completion") != std::string::npos;
  });
  EXPECT_TRUE(served) << gateway.log() << upstream.log();
  // Plain HTTP to the gateway's TLS port gets no answer.
  auto plain = client::HttpClient::create("http://127.0.0.1:" + front_port);
  auto plain_reply = (*plain)->request("POST", "/v1/chat/completions", chat.dump(), auth);
  EXPECT_TRUE(!plain_reply || plain_reply->status != 200);
}

}  // namespace
}  // namespace fabrica
