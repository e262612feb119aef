#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "testing/daemon_process.h"

namespace fabrica {
namespace {

using testing::ChildProcess;
using testing::DaemonProcess;
using testing::eventually;

class FleetE2eTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(daemon_.start()) << daemon_.log(); }

  std::unique_ptr<ChildProcess> agent(const std::string& token, const std::string& fixture) {
    std::vector<std::string> argv = {
        testing::binary_path("fabrica-agent"),
        "--server",
        daemon_.url(),
        "--state-dir",
        (daemon_.data_dir() / "agent").string(),
        "--sysfs-root",
        (testing::source_dir() / "tests/fixtures/hosts" / fixture).string()};
    if (!token.empty()) {
      argv.push_back("--join-token");
      argv.push_back(token);
    }
    return std::make_unique<ChildProcess>(argv, (daemon_.data_dir() / "agent.log").string());
  }

  std::string state_of(client::ApiClient& api, int64_t id) {
    auto host = api.get("/api/v1/hosts/" + std::to_string(id));
    return host ? (*host)["state_name"].get<std::string>() : "gone";
  }

  DaemonProcess daemon_{{"--host-offline-after", "2", "--heartbeat-interval", "1"}};
};

TEST_F(FleetE2eTest, AgentJoinsReportsGoesOfflineAndRecovers) {
  auto api = daemon_.login();
  auto added = api.post("/api/v1/hosts", Json{{"name", "gpu-node-01"}});
  ASSERT_TRUE(added) << added.error().message();
  int64_t id = (*added)["host"]["id"];
  EXPECT_EQ((*added)["host"]["state_name"], "INIT");
  std::string token = (*added)["join_token"];

  auto a = agent(token, "hgx-h100");
  ASSERT_TRUE(eventually([&] { return state_of(api, id) == "MONITORED"; })) << a->log();
  auto host = api.get("/api/v1/hosts/" + std::to_string(id));
  EXPECT_EQ((*host)["inventory"]["gpus"].size(), 8u);
  EXPECT_EQ((*host)["inventory"]["nvswitches"].size(), 4u);
  EXPECT_EQ((*host)["inventory"]["hostname"], "gpu-node-01");
  auto credential = daemon_.data_dir() / "agent/credential";
  ASSERT_TRUE(std::filesystem::exists(credential));
  EXPECT_EQ(std::filesystem::status(credential).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  // The token was single-use.
  client::ApiClient anon(daemon_.http(), "");
  auto reuse =
      anon.post("/api/v1/agent/join",
                Json{{"token", token}, {"hostname", "thief"}, {"inventory", (*host)["inventory"]}});
  EXPECT_EQ(reuse.error().code(), ErrorCode::kUnauthenticated);

  // Silence -> OFFLINE -> the agent comes back with its stored credential -> MONITORED.
  EXPECT_EQ(a->stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(eventually([&] { return state_of(api, id) == "OFFLINE"; }));

  // README finding: a second host's join token given to an agent whose state directory holds
  // gpu-node-01's credential was ignored without a word. Now it is refused, naming both.
  auto second = api.post("/api/v1/hosts", Json{{"name", "gpu-node-02"}});
  ASSERT_TRUE(second) << second.error().message();
  auto wrong = agent((*second)["join_token"], "hgx-h100");
  auto refused = wrong->wait_for(std::chrono::seconds(30));
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(*refused, 0);
  EXPECT_NE(wrong->log().find("already holds the credential of host gpu-node-01 (id " +
                              std::to_string(id) + "); give this agent its own --state-dir"),
            std::string::npos)
      << wrong->log();
  EXPECT_EQ(state_of(api, (*second)["host"]["id"]), "INIT");
  // The same command started again (the token it joined with) goes on with its credential.
  a = agent(token, "hgx-h100");
  ASSERT_TRUE(eventually([&] { return state_of(api, id) == "MONITORED"; })) << a->log();
  EXPECT_EQ(a->stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(eventually([&] { return state_of(api, id) == "OFFLINE"; }));

  a = agent("", "hgx-h100");
  ASSERT_TRUE(eventually([&] { return state_of(api, id) == "MONITORED"; })) << a->log();

  // fabricad restarts under a running agent: the agent backs off and reconnects.
  EXPECT_EQ(daemon_.stop(SIGTERM), 0);
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  auto api2 = daemon_.login();
  std::string before = (*api2.get("/api/v1/hosts/" + std::to_string(id)))["last_seen"];
  ASSERT_TRUE(eventually([&] {
    auto h = api2.get("/api/v1/hosts/" + std::to_string(id));
    return h && (*h)["last_seen"] != before && (*h)["state_name"] == "MONITORED";
  })) << a->log();

  // Deleting the host revokes its credential: the agent stops with a clear error.
  ASSERT_TRUE(api2.del("/api/v1/hosts/" + std::to_string(id)));
  auto exited = a->wait_for(std::chrono::seconds(30));
  ASSERT_TRUE(exited.has_value());
  EXPECT_NE(*exited, 0);
  EXPECT_NE(a->log().find("unknown or revoked host credential"), std::string::npos) << a->log();
}

TEST_F(FleetE2eTest, MigNodeReportsSlicesAndGpuMonitoring) {
  auto api = daemon_.login();
  auto added = api.post("/api/v1/hosts", Json{{"name", "mig-node-01"}});
  ASSERT_TRUE(added);
  int64_t id = (*added)["host"]["id"];
  auto a = agent((*added)["join_token"], "mig-h100");
  ASSERT_TRUE(eventually([&] {
    auto h = api.get("/api/v1/hosts/" + std::to_string(id));
    return h && (*h)["monitoring"]["gpus"].size() == 3;
  })) << a->log();
  auto host = api.get("/api/v1/hosts/" + std::to_string(id));
  const Json& gpus = (*host)["inventory"]["gpus"];
  ASSERT_EQ(gpus.size(), 3u);
  EXPECT_EQ(gpus[0]["mig_instances"].size(), 4u);
  EXPECT_EQ(gpus[0]["mig_instances"][0]["profile"], "3g.40gb");
  EXPECT_EQ(gpus[1]["mig_instances"].size(), 7u);
  const Json& sample = (*host)["monitoring"]["gpus"][1];
  EXPECT_EQ(sample["uuid"], gpus[1]["uuid"]);
  EXPECT_EQ(sample["temperature_c"], 32.0);
  EXPECT_EQ(sample["utilization_percent"], 35.0);
}

TEST_F(FleetE2eTest, BadAgentInputIsRejectedAndChangesNothing) {
  auto api = daemon_.login();
  auto token = api.post("/api/v1/hosts/join-tokens", Json{{"count", 3}});
  ASSERT_TRUE(token) << token.error().message();
  std::string secret = (*token)["join_token"];
  client::ApiClient anon(daemon_.http(), "");
  Json good = Json{{"hostname", "sim-1"}, {"cpu", {{"threads", 8}, {"cores", 4}, {"sockets", 1}}}};
  struct Case {
    Json body;
    std::string field;
  };
  const Case cases[] = {
      {Json{{"token", secret}, {"hostname", "sim-1"}}, "inventory"},
      {Json{{"token", secret}, {"hostname", "a/b"}, {"inventory", good}}, "hostname"},
      {Json{{"token", secret},
            {"hostname", "sim-1"},
            {"inventory", {{"hostname", "x"}, {"cpu", {{"cores", 9}, {"threads", 8}}}}}},
       "inventory/cpu"},
      {Json{{"token", secret},
            {"hostname", "sim-1"},
            {"inventory", {{"hostname", "x"}, {"numa_nodes", "lots"}}}},
       "inventory/"},
  };
  for (const Case& c : cases) {
    auto r = anon.post("/api/v1/agent/join", c.body);
    ASSERT_FALSE(r) << c.body.dump();
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << c.body.dump();
    EXPECT_EQ(r.error().field(), c.field) << r.error().message();
  }
  EXPECT_TRUE((*api.get("/api/v1/hosts"))["items"].empty());  // No use of the token was spent.
  auto joined = anon.post("/api/v1/agent/join",
                          Json{{"token", secret}, {"hostname", "sim-1"}, {"inventory", good}});
  ASSERT_TRUE(joined) << joined.error().message();
  client::ApiClient agent_api(daemon_.http(), (*joined)["credential"]);
  auto bad_beat = agent_api.post("/api/v1/agent/heartbeat", Json{{"cpu_used_permille", 5000}});
  EXPECT_EQ(bad_beat.error().field(), "cpu_used_permille");
  auto bad_inv = agent_api.call(
      "PUT", "/api/v1/agent/inventory",
      Json{{"inventory", {{"hostname", "x"}, {"pci_devices", {{{"address", ""}}}}}}});
  EXPECT_EQ(bad_inv.error().field(), "inventory/pci_devices");
  auto host = api.get("/api/v1/hosts/" + std::to_string((*joined)["host_id"].get<int64_t>()));
  EXPECT_EQ((*host)["inventory"]["cpu"]["threads"], 8);  // Unchanged by the rejected report.
  client::ApiClient forged(daemon_.http(), "fah_forged");
  EXPECT_EQ(forged.post("/api/v1/agent/heartbeat", Json::object()).error().code(),
            ErrorCode::kUnauthenticated);
}

// An administrator rotates a running host's credential: the agent picks up a new one at its
// next heartbeat, saves it, and the old one stops working once the new one is used. The host
// never goes OFFLINE and keeps its VMs' channel; a restarted agent uses the saved one.
TEST_F(FleetE2eTest, AHostCredentialRotatesWhileTheAgentKeepsReporting) {
  auto api = daemon_.login();
  auto added = api.post("/api/v1/hosts", Json{{"name", "gpu-node-01"}});
  ASSERT_TRUE(added) << added.error().message();
  int64_t id = (*added)["host"]["id"];
  std::string path = "/api/v1/hosts/" + std::to_string(id) + "/rotate-credential";
  auto a = agent((*added)["join_token"], "hgx-h100");
  ASSERT_TRUE(eventually([&] { return state_of(api, id) == "MONITORED"; })) << a->log();
  auto credential_file = daemon_.data_dir() / "agent/credential";
  auto read = [&] {
    std::ifstream in(credential_file);
    std::string line;
    std::getline(in, line);
    return line;
  };
  std::string old = read();
  ASSERT_TRUE(old.starts_with("fah_"));

  // Who may ask: administrators of the host; not a tenant, not an agent, not a stranger.
  ASSERT_TRUE(api.post("/api/v1/users", Json{{"name", "tenant"}, {"password", "tenant-password"}}));
  auto tenant = daemon_.login("tenant", "tenant-password");
  EXPECT_EQ(tenant.post(path, Json::object()).error().code(), ErrorCode::kNotFound);
  client::ApiClient as_agent(daemon_.http(), old);
  EXPECT_EQ(as_agent.post(path, Json::object()).error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(api.post("/api/v1/hosts/999999/rotate-credential", Json::object()).error().code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(api.post(path, Json{{"now", true}}).error().field(), "now");
  // Only a host's own credential gets a new one: a user's token or a forged one gets nothing.
  EXPECT_EQ(tenant.post("/api/v1/agent/credential", Json::object()).error().code(),
            ErrorCode::kUnauthenticated);
  client::ApiClient forged(daemon_.http(), "fah_forged");
  EXPECT_EQ(forged.post("/api/v1/agent/credential", Json::object()).error().code(),
            ErrorCode::kUnauthenticated);

  auto asked = api.post(path, Json::object());
  ASSERT_TRUE(asked) << asked.error().message();
  EXPECT_EQ((*asked)["rotation_requested"], true);
  ASSERT_TRUE(eventually([&] { return read() != old && read().starts_with("fah_"); })) << a->log();
  std::string fresh = read();
  // The agent's next request with the new credential retires the old one.
  ASSERT_TRUE(eventually([&] {
    auto beat = as_agent.post("/api/v1/agent/heartbeat", Json::object());
    return !beat && beat.error().code() == ErrorCode::kUnauthenticated;
  })) << a->log();
  client::ApiClient as_new(daemon_.http(), fresh);
  auto beat = as_new.post("/api/v1/agent/heartbeat", Json::object());
  ASSERT_TRUE(beat) << beat.error().message();
  EXPECT_EQ((*beat)["rotate_credential"], false);
  EXPECT_EQ(state_of(api, id), "MONITORED");
  EXPECT_TRUE(a->running()) << a->log();
  EXPECT_NE(a->log().find("host credential rotated"), std::string::npos) << a->log();
  // The rotation is audited; the secret is not.
  auto audit = api.get("/api/v1/audit?limit=1000");
  ASSERT_TRUE(audit);
  EXPECT_NE(dump_json(*audit).find("rotate-credential"), std::string::npos);
  EXPECT_EQ(dump_json(*audit).find(fresh), std::string::npos);

  // A restarted agent uses the saved credential.
  EXPECT_EQ(a->stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(eventually([&] { return state_of(api, id) == "OFFLINE"; }));
  a = agent("", "hgx-h100");
  ASSERT_TRUE(eventually([&] { return state_of(api, id) == "MONITORED"; })) << a->log();
  EXPECT_EQ(read(), fresh);
}

TEST_F(FleetE2eTest, TenantsCannotSeeOrTouchInfrastructure) {
  auto api = daemon_.login();
  auto added = api.post("/api/v1/hosts", Json{{"name", "secret-node"}});
  int64_t id = (*added)["host"]["id"];
  ASSERT_TRUE(api.post("/api/v1/users", Json{{"name", "tenant"}, {"password", "tenant-password"}}));
  auto tenant = daemon_.login("tenant", "tenant-password");
  EXPECT_TRUE((*tenant.get("/api/v1/hosts"))["items"].empty());
  EXPECT_TRUE((*tenant.get("/api/v1/clusters"))["items"].empty());
  EXPECT_EQ(tenant.get("/api/v1/hosts/" + std::to_string(id)).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(tenant.post("/api/v1/hosts/" + std::to_string(id) + "/disable", Json::object())
                .error()
                .code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(tenant.del("/api/v1/hosts/" + std::to_string(id)).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(tenant.post("/api/v1/hosts", Json{{"name", "mine"}}).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(tenant.post("/api/v1/hosts/join-tokens", Json{{"count", 5}}).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(tenant.post("/api/v1/clusters", Json{{"name", "c"}}).error().code(),
            ErrorCode::kPermissionDenied);
  // An ACL lets the users group see the default cluster's hosts, not change them.
  ASSERT_TRUE(api.post("/api/v1/acl", Json{{"rule", "@1 HOST/%0 USE"}}));
  EXPECT_EQ((*tenant.get("/api/v1/hosts"))["items"].size(), 1u);
  EXPECT_EQ(tenant.post("/api/v1/hosts/" + std::to_string(id) + "/disable", Json::object())
                .error()
                .code(),
            ErrorCode::kPermissionDenied);
}

// Its own daemon: under sanitizers the fleet takes longer to join than the 2 s the other
// tests allow before OFFLINE.
TEST(FleetScaleTest, SimulatedFleetOfAThousandHostsJoinsAndHeartbeats) {
  DaemonProcess daemon_({"--host-offline-after", "600"});
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  auto api = daemon_.login();
  auto token = api.post("/api/v1/hosts/join-tokens", Json{{"count", 1000}});
  ASSERT_TRUE(token) << token.error().message();
  auto sim =
      testing::run_command(testing::binary_path("fabrica-agent") + " --server " + daemon_.url() +
                           " --join-token " + (*token)["join_token"].get<std::string>() +
                           " --simulate 1000 --profile hgx-h100 --rounds 2 --interval-ms 1");
  ASSERT_EQ(sim.exit_code, 0) << sim.output;
  EXPECT_NE(sim.output.find("joined: 1000"), std::string::npos) << sim.output;
  EXPECT_NE(sim.output.find("heartbeats: 2000"), std::string::npos) << sim.output;
  auto hosts = api.get("/api/v1/hosts?gpu_model=H100&free_gpus=8&state=MONITORED");
  ASSERT_TRUE(hosts) << hosts.error().message();
  ASSERT_EQ((*hosts)["items"].size(), 1000u);
  for (const auto& h : (*hosts)["items"]) EXPECT_EQ(h["gpus"]["H100 SXM5 80GB"], 8);
  // The token is used up: one more simulated host cannot join.
  auto extra = testing::run_command(
      testing::binary_path("fabrica-agent") + " --server " + daemon_.url() + " --join-token " +
      (*token)["join_token"].get<std::string>() + " --simulate 1 --sim-prefix extra --rounds 1");
  EXPECT_NE(extra.exit_code, 0);
  EXPECT_NE(extra.output.find("join token"), std::string::npos) << extra.output;
}

}  // namespace
}  // namespace fabrica
