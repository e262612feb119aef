// VMs through their whole life on a simulated host that runs VMs (fabrica-agent --simulate
// --sim-hypervisor): fabricad queues each step, the agent's executor carries it out on the
// simulated hypervisor and answers, and fabricad moves the VM on, holding and releasing the
// host's devices exactly as the lifecycle table says.
#include <gtest/gtest.h>

#include "testing/daemon_process.h"

namespace fabrica {
namespace {

using testing::DaemonProcess;
using testing::eventually;

class LifecycleE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    api_ = std::make_unique<client::ApiClient>(daemon_.login());
    auto token = api_->post("/api/v1/hosts/join-tokens", Json{{"count", 1}});
    ASSERT_TRUE(token) << token.error().message();
    agent_ = std::make_unique<testing::ChildProcess>(
        std::vector<std::string>{testing::binary_path("fabrica-agent"), "--server", daemon_.url(),
                                 "--join-token", (*token)["join_token"].get<std::string>(),
                                 "--simulate", "1", "--profile", "hgx-h100", "--sim-prefix", "hv",
                                 "--sim-hypervisor", "--sim-threads", "1", "--vm-root",
                                 (daemon_.data_dir() / "sim-vms").string()},
        (daemon_.data_dir() / "agent.log").string());
    ASSERT_TRUE(eventually([&] {
      auto hosts = api_->get("/api/v1/hosts?state=MONITORED");
      return hosts && (*hosts)["items"].size() == 1;
    }));
    host_ = "/api/v1/hosts/" +
            std::to_string((*api_->get("/api/v1/hosts"))["items"][0]["id"].get<int64_t>());
  }

  // Waits until VM `id` is in `state` (its state_name) and returns it.
  Json wait_for(int64_t id, const std::string& state) {
    Json vm;
    EXPECT_TRUE(eventually([&] {
      auto got = api_->get("/api/v1/vms/" + std::to_string(id));
      if (got) vm = *got;
      return got && vm["state_name"] == state && vm["operation"].is_null();
    })) << "wanted "
        << state << ", have " << vm.dump();
    return vm;
  }
  Result<Json> act(int64_t id, Json action) {
    return api_->post("/api/v1/vms/" + std::to_string(id) + "/actions", action);
  }
  int gpus_held() { return (*api_->get(host_))["gpus_allocated"].value("H100 SXM5 80GB", 0); }

  DaemonProcess daemon_{{"--host-offline-after", "600"}};
  std::unique_ptr<client::ApiClient> api_;
  std::unique_ptr<testing::ChildProcess> agent_;
  std::string host_;
};

// README finding: `fabrica vm reboot tiny-1; fabrica vm poweroff tiny-1; fabrica vm resume
// tiny-1` failed because actions returned before the state changed. With --wait each one
// returns once its operation is done and the VM is where the action leads.
TEST_F(LifecycleE2eTest, TheCliChainsActionsWithWaitAsTheReadmeDoes) {
  std::string home = (daemon_.data_dir() / "home").string();
  auto cli = [&](const std::string& args) {
    return testing::run_command(
        "env -u FABRICA_TOKEN -u FABRICA_ENDPOINT -u FABRICA_PASSWORD HOME=" + home + " " +
        testing::binary_path("fabrica") + " " + args);
  };
  auto login =
      cli("--endpoint " + daemon_.url() + " login --password " + DaemonProcess::kAdminPassword);
  ASSERT_EQ(login.exit_code, 0) << login.output;
  auto created = cli("vm create chain --cpu 4 --memory 1G --gpu 1 --wait");
  ASSERT_EQ(created.exit_code, 0) << created.output;
  EXPECT_NE(created.output.find("STATE       : RUNNING"), std::string::npos) << created.output;
  const std::pair<std::string, std::string> chain[] = {
      {"reboot", "RUNNING"},      {"poweroff", "POWEROFF"}, {"resume", "RUNNING"},
      {"undeploy", "UNDEPLOYED"}, {"resume", "RUNNING"},    {"suspend", "SUSPENDED"},
      {"resume", "RUNNING"},      {"terminate", "DONE"}};
  for (const auto& [action, state] : chain) {
    auto r = cli("vm " + action + " chain --wait");
    EXPECT_EQ(r.exit_code, 0) << action << ": " << r.output;
    EXPECT_NE(r.output.find(" is " + state + "\n"), std::string::npos)
        << action << ": " << r.output;
  }
  // A refusal offers only what a person can type.
  auto refused = cli("vm resume chain");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.output.find("cannot resume a VM that is DONE"), std::string::npos)
      << refused.output;
  for (const char* internal : {"done", "failed", "seen running", "placed"}) {
    EXPECT_EQ(refused.output.find(std::string(", ") + internal), std::string::npos)
        << refused.output;
  }
}

TEST_F(LifecycleE2eTest, AVmGoesFromPendingToRunningAndThroughEveryAction) {
  auto created =
      api_->post("/api/v1/vms", Json{{"name", "svc"},
                                     {"request", {{"vcpus", 4}, {"gpus", {{"count", 1}}}}},
                                     {"context", {{"HOSTNAME", "svc"}}}});
  ASSERT_TRUE(created) << created.error().message();
  int64_t id = (*created)["id"];
  Json vm = wait_for(id, "RUNNING");
  EXPECT_EQ(vm["state"], 3);
  EXPECT_EQ(vm["lcm_state"], 3);
  EXPECT_EQ(vm["op_seq"], 2);  // deploy, start.
  EXPECT_NE(vm["console_log"].get<std::string>().find("console.log"), std::string::npos);
  ASSERT_EQ(vm["history"].size(), 1u);
  EXPECT_TRUE(vm["history"][0]["end"].is_null());
  EXPECT_EQ(gpus_held(), 1);

  ASSERT_TRUE(act(id, {{"action", "reboot"}}));
  wait_for(id, "RUNNING");
  ASSERT_TRUE(act(id, {{"action", "poweroff"}}));
  wait_for(id, "POWEROFF");
  EXPECT_EQ(gpus_held(), 1);  // POWEROFF keeps the devices.
  auto refused = act(id, {{"action", "suspend"}});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("cannot suspend a VM that is POWEROFF"),
            std::string::npos);
  ASSERT_TRUE(act(id, {{"action", "resume"}}));
  wait_for(id, "RUNNING");
  auto busy = api_->del("/api/v1/vms/" + std::to_string(id));
  ASSERT_FALSE(busy);  // A running VM is terminated, not deleted under its guest.
  ASSERT_TRUE(act(id, {{"action", "undeploy"}, {"hard", true}}));
  vm = wait_for(id, "UNDEPLOYED");
  EXPECT_EQ(gpus_held(), 0);  // Undeploy frees the host.
  EXPECT_FALSE(vm["history"][0]["end"].is_null());
  EXPECT_EQ(vm["history"][0]["reason"], "done");
  ASSERT_TRUE(act(id, {{"action", "resume"}}));  // Back to the scheduler.
  vm = wait_for(id, "RUNNING");
  EXPECT_EQ(vm["history"].size(), 2u);
  ASSERT_TRUE(act(id, {{"action", "terminate"}}));
  vm = wait_for(id, "DONE");
  EXPECT_EQ(gpus_held(), 0);
  EXPECT_TRUE(vm["allocation"].is_null());
  ASSERT_TRUE(api_->del("/api/v1/vms/" + std::to_string(id)));  // DONE records can go.
  EXPECT_FALSE(api_->get("/api/v1/vms/" + std::to_string(id)));
}

TEST_F(LifecycleE2eTest, BadActionsAndOtherTenantsAreRefused) {
  auto created = api_->post(
      "/api/v1/vms", Json{{"name", "svc"}, {"request", {{"vcpus", 2}, {"gpus", {{"count", 1}}}}}});
  ASSERT_TRUE(created);
  int64_t id = (*created)["id"];
  wait_for(id, "RUNNING");
  auto unknown = act(id, {{"action", "explode"}});
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().field(), "action");
  auto no_hard = act(id, {{"action", "suspend"}, {"hard", true}});
  ASSERT_FALSE(no_hard);
  EXPECT_EQ(no_hard.error().field(), "hard");
  auto how = act(id, {{"action", "recover"}, {"how", "sideways"}});
  ASSERT_FALSE(how);
  EXPECT_EQ(how.error().field(), "how");
  // A VM that cannot be placed can be held and released.
  auto big =
      api_->post("/api/v1/vms", Json{{"name", "big"}, {"request", {{"gpus", {{"count", 9}}}}}});
  ASSERT_TRUE(big);
  int64_t big_id = (*big)["id"];
  auto held = act(big_id, {{"action", "hold"}});
  ASSERT_TRUE(held) << held.error().message();
  EXPECT_EQ((*held)["state_name"], "HOLD");
  auto holding = api_->get("/api/v1/vms?state=HOLD");
  ASSERT_EQ((*holding)["items"].size(), 1u);
  EXPECT_EQ((*act(big_id, {{"action", "release"}}))["state_name"], "PENDING");
  ASSERT_TRUE(api_->del("/api/v1/vms/" + std::to_string(big_id)));
  ASSERT_TRUE(api_->post("/api/v1/users", Json{{"name", "eve"}, {"password", "eve-password"}}));
  auto eve = daemon_.login("eve", "eve-password");
  auto stolen = eve.post("/api/v1/vms/" + std::to_string(id) + "/actions",
                         Json{{"action", "terminate"}, {"hard", true}});
  ASSERT_FALSE(stolen);
  EXPECT_EQ(stolen.error().code(), ErrorCode::kNotFound);
  wait_for(id, "RUNNING");
}

// Hundreds of VMs on 40 simulated hosts through the whole lifecycle at once: every one
// reaches each state, devices follow (POWEROFF keeps them, UNDEPLOYED and DONE free them), and
// at the end no host holds anything.
TEST(LifecycleFleetE2eTest, HundredsOfVmsLiveAndDieTogether) {
  constexpr int kHosts = 40, kVms = 300;
  DaemonProcess daemon({"--host-offline-after", "600"});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto api = daemon.login();
  auto token = api.post("/api/v1/hosts/join-tokens", Json{{"count", kHosts}});
  ASSERT_TRUE(token) << token.error().message();
  testing::ChildProcess agent(
      {testing::binary_path("fabrica-agent"), "--server", daemon.url(), "--join-token",
       (*token)["join_token"].get<std::string>(), "--simulate", std::to_string(kHosts), "--profile",
       "hgx-h100", "--sim-prefix", "fleet", "--sim-hypervisor", "--sim-threads", "4", "--vm-root",
       (daemon.data_dir() / "sim-vms").string()},
      (daemon.data_dir() / "agent.log").string());
  ASSERT_TRUE(eventually([&] {
    auto hosts = api.get("/api/v1/hosts?state=MONITORED");
    return hosts && (*hosts)["items"].size() == kHosts;
  }));
  std::vector<int64_t> ids;
  for (int i = 0; i < kVms; ++i) {
    auto vm =
        api.post("/api/v1/vms",
                 Json{{"name", "w" + std::to_string(i)},
                      {"request", {{"vcpus", 2}, {"memory_mb", 4096}, {"gpus", {{"count", 1}}}}}});
    ASSERT_TRUE(vm) << vm.error().message();
    ids.push_back((*vm)["id"].get<int64_t>());
  }
  // How many VMs are settled (no operation in flight) in `state`.
  auto settled = [&](const std::string& state) {
    auto page = api.get("/api/v1/vms?state=" + state + "&limit=1000");
    if (!page) return 0;
    int n = 0;
    for (const Json& vm : (*page)["items"]) n += vm["operation"].is_null() ? 1 : 0;
    return n;
  };
  auto all_reach = [&](const std::string& state, int count) {
    int seen = 0;
    bool ok =
        eventually([&] { return (seen = settled(state)) == count; }, std::chrono::seconds(120));
    EXPECT_TRUE(ok) << seen << " of " << count << " VMs " << state;
    return ok;
  };
  auto host_totals = [&] {
    int vms = 0, gpus = 0;
    auto hosts = api.get("/api/v1/hosts");
    if (!hosts) return std::pair{-1, -1};
    for (const Json& h : (*hosts)["items"]) {
      vms += h.value("allocated_vms", 0);
      gpus += h["gpus_allocated"].value("H100 SXM5 80GB", 0);
    }
    return std::pair{vms, gpus};
  };
  auto each = [&](auto&& pick, const Json& action) {
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!pick(i)) continue;
      auto done = api.post("/api/v1/vms/" + std::to_string(ids[i]) + "/actions", action);
      ASSERT_TRUE(done) << done.error().message();
    }
  };
  auto all = [](size_t) { return true; };
  auto even = [](size_t i) { return i % 2 == 0; };

  ASSERT_TRUE(all_reach("RUNNING", kVms));
  EXPECT_EQ(host_totals(), std::pair(kVms, kVms));
  each(all, {{"action", "poweroff"}});
  ASSERT_TRUE(all_reach("POWEROFF", kVms));
  EXPECT_EQ(host_totals(), std::pair(kVms, kVms)) << "POWEROFF keeps the devices";
  each(all, {{"action", "resume"}});
  ASSERT_TRUE(all_reach("RUNNING", kVms));
  each(even, {{"action", "undeploy"}});
  ASSERT_TRUE(all_reach("UNDEPLOYED", kVms / 2));
  EXPECT_EQ(host_totals(), std::pair(kVms / 2, kVms / 2)) << "UNDEPLOYED frees the host";
  each(even, {{"action", "resume"}});  // Placed and deployed afresh.
  ASSERT_TRUE(all_reach("RUNNING", kVms));
  each(even, {{"action", "terminate"}});
  each([](size_t i) { return i % 2 == 1; }, {{"action", "terminate"}, {"hard", true}});
  ASSERT_TRUE(all_reach("DONE", kVms));
  EXPECT_EQ(host_totals(), std::pair(0, 0));
  EXPECT_TRUE(agent.running()) << agent.log();
}

}  // namespace
}  // namespace fabrica
