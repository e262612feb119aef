#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "testing/daemon_process.h"

namespace fabrica {
namespace {

using testing::DaemonProcess;

struct CliResult {
  int exit_code;
  std::string out;  // stdout and stderr together.
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    home_ = daemon_.data_dir() / "home";
    std::filesystem::create_directories(home_);
  }

  CliResult fabrica(const std::string& args, const std::string& env = "") {
    auto r = testing::run_command(
        "env -u FABRICA_TOKEN -u FABRICA_ENDPOINT -u FABRICA_PASSWORD -u XDG_CONFIG_HOME HOME=" +
        home_.string() + " " + env + " " + testing::binary_path("fabrica") + " " + args);
    return {r.exit_code, r.output};
  }

  DaemonProcess daemon_;
  std::filesystem::path home_;
};

TEST_F(CliTest, QuickstartFlowFromTheReadme) {
  auto login =
      fabrica("--endpoint " + daemon_.url() + " login --password " + DaemonProcess::kAdminPassword);
  ASSERT_EQ(login.exit_code, 0) << login.out;
  EXPECT_NE(login.out.find("as admin"), std::string::npos);
  auto config = home_ / ".config/fabrica/config.json";
  ASSERT_TRUE(std::filesystem::exists(config));
  struct stat st {};
  ::stat(config.c_str(), &st);
  EXPECT_EQ(st.st_mode & 0777, 0600);

  auto create = fabrica("user create alice --password alice-password-1");
  ASSERT_EQ(create.exit_code, 0) << create.out;
  EXPECT_NE(create.out.find("ID: "), std::string::npos);
  ASSERT_EQ(fabrica("user create bob --password bob-password-1").exit_code, 0);
  auto admin_list = fabrica("user list");
  EXPECT_NE(admin_list.out.find("bob"), std::string::npos);
  EXPECT_NE(admin_list.out.find("NAME"), std::string::npos);

  auto config_text = [&] {
    std::ifstream in(config);
    return parse_json(std::string(std::istreambuf_iterator<char>(in), {}));
  };
  std::string admin_token = (*config_text())["token"];
  auto alice = fabrica("login -u alice --password alice-password-1");
  ASSERT_EQ(alice.exit_code, 0) << alice.out;
  // The administrator's token that alice's replaced in the config file no longer works.
  auto replaced = daemon_.http()->request("GET", "/api/v1/auth/whoami", "",
                                          {{"Authorization", "Bearer " + admin_token}});
  ASSERT_TRUE(replaced);
  EXPECT_EQ(replaced->status, 401) << replaced->body;
  auto list = fabrica("user list -o json");
  ASSERT_EQ(list.exit_code, 0) << list.out;
  auto users = parse_json(list.out);
  ASSERT_TRUE(users) << list.out;
  ASSERT_EQ(users->size(), 1u);
  EXPECT_EQ((*users)[0]["name"], "alice");

  auto denied = fabrica("user show bob");
  EXPECT_NE(denied.exit_code, 0);
  EXPECT_NE(denied.out.find("not found"), std::string::npos) << denied.out;
  auto acl = fabrica("acl list");
  EXPECT_NE(acl.exit_code, 0);
  EXPECT_NE(acl.out.find("only the administrators"), std::string::npos) << acl.out;
  auto whoami = fabrica("whoami");
  EXPECT_NE(whoami.out.find("alice"), std::string::npos);

  auto logout = fabrica("logout");
  ASSERT_EQ(logout.exit_code, 0) << logout.out;
  auto after = fabrica("user list");
  EXPECT_NE(after.exit_code, 0);
  EXPECT_NE(after.out.find("fabrica login"), std::string::npos) << after.out;
}

TEST_F(CliTest, HostAndClusterCommands) {
  ASSERT_EQ(
      fabrica("--endpoint " + daemon_.url() + " login --password " + DaemonProcess::kAdminPassword)
          .exit_code,
      0);
  ASSERT_EQ(fabrica("cluster create west").exit_code, 0);
  auto added = fabrica("host add gpu-node-01 --cluster west -o json");
  ASSERT_EQ(added.exit_code, 0) << added.out;
  auto token = parse_json(added.out);
  ASSERT_TRUE(token) << added.out;
  testing::ChildProcess agent(
      {testing::binary_path("fabrica-agent"), "--server", daemon_.url(), "--join-token",
       (*token)["join_token"].get<std::string>(), "--state-dir",
       (daemon_.data_dir() / "agent").string(), "--sysfs-root",
       (testing::source_dir() / "tests/fixtures/hosts/hgx-h100").string()},
      (daemon_.data_dir() / "agent.log").string());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::string listed;
  while (std::chrono::steady_clock::now() < deadline) {
    listed = fabrica("host list").out;
    if (listed.find("MONITORED") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(listed.find("0/8 H100 SXM5 80GB"), std::string::npos) << listed;
  auto show = fabrica("host show gpu-node-01");
  EXPECT_NE(show.out.find("0-55,112-167"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("nvswitch"), std::string::npos);
  EXPECT_NE(show.out.find("ConnectX-7"), std::string::npos);
  auto fits = parse_json(fabrica("host list --gpu-model H100 --free-gpus 8 -o json").out);
  EXPECT_EQ(fits->size(), 1u);
  auto too_many = parse_json(fabrica("host list --gpu-model H100 --free-gpus 9 -o json").out);
  EXPECT_TRUE(too_many->empty());
  auto cluster = parse_json(fabrica("cluster show west -o json").out);
  EXPECT_EQ((*cluster)["hosts"].size(), 1u);
  ASSERT_EQ(fabrica("cluster delhost west gpu-node-01").exit_code, 0);
  EXPECT_TRUE((*parse_json(fabrica("cluster show west -o json").out))["hosts"].empty());
  ASSERT_EQ(fabrica("host disable gpu-node-01").exit_code, 0);
  EXPECT_NE(fabrica("host list").out.find("DISABLED"), std::string::npos);
  ASSERT_EQ(fabrica("host delete gpu-node-01").exit_code, 0);
  ASSERT_EQ(fabrica("cluster delete west").exit_code, 0);
  auto gone = fabrica("host show gpu-node-01");
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_NE(gone.out.find("not found"), std::string::npos);
}

TEST_F(CliTest, AdministratorCommands) {
  ASSERT_EQ(
      fabrica("--endpoint " + daemon_.url() + " login --password " + DaemonProcess::kAdminPassword)
          .exit_code,
      0);
  ASSERT_EQ(fabrica("group create acme-ml").exit_code, 0);
  ASSERT_EQ(fabrica("user create carol --password carol-password --group acme-ml").exit_code, 0);
  auto show = fabrica("group show acme-ml -o json");
  auto group = parse_json(show.out);
  ASSERT_TRUE(group) << show.out;
  EXPECT_EQ((*group)["users"].size(), 1u);
  auto rule = fabrica("acl create \"@100 USER/@100 USE\"");
  ASSERT_EQ(rule.exit_code, 0) << rule.out;
  EXPECT_NE(rule.out.find("@100 USER/@100 USE #0"), std::string::npos);
  auto rules = parse_json(fabrica("acl list -o json").out);
  // The default rule, the rule group acme-ml generated (members create in it), and ours.
  ASSERT_EQ(rules->size(), 3u);
  EXPECT_EQ((*rules)[1]["rule"], "@100 VM+NET+IMAGE+TEMPLATE+DOCUMENT/@100 CREATE #0");
  EXPECT_EQ((*rules)[1]["owners"], Json::array({"group:100"}));
  auto generated = fabrica("acl delete " + std::to_string((*rules)[1]["id"].get<int64_t>()));
  EXPECT_NE(generated.exit_code, 0);
  EXPECT_NE(generated.out.find("generated by group:100"), std::string::npos) << generated.out;
  auto bad = fabrica("acl create \"@100 BOATS/* USE\"");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("BOATS"), std::string::npos);
  ASSERT_EQ(fabrica("acl delete " + std::to_string((*rules)[2]["id"].get<int64_t>())).exit_code, 0);
  auto chmod = fabrica("chmod group acme-ml 644 -o json");
  ASSERT_EQ(chmod.exit_code, 0) << chmod.out;
  EXPECT_EQ((*parse_json(chmod.out))["permissions"], "644");
  ASSERT_EQ(fabrica("chown group acme-ml carol").exit_code, 0);
  ASSERT_EQ(fabrica("user passwd carol --password carol-password-2").exit_code, 0);
  ASSERT_EQ(fabrica("user chgrp carol users").exit_code, 0);
  ASSERT_EQ(fabrica("user disable carol").exit_code, 0);
  auto tokens = fabrica("token list");
  EXPECT_NE(tokens.out.find("this session"), std::string::npos) << tokens.out;
  auto created = fabrica("token create --name ci --expires 1h",
                         "FABRICA_PASSWORD=" + std::string(DaemonProcess::kAdminPassword));
  ASSERT_EQ(created.exit_code, 0) << created.out;
  EXPECT_NE(created.out.find("fab_"), std::string::npos);
  ASSERT_EQ(fabrica("user delete carol").exit_code, 0);
  ASSERT_EQ(fabrica("group delete acme-ml").exit_code, 0);
  auto missing = fabrica("group delete acme-ml");
  EXPECT_NE(missing.exit_code, 0);
  // Environment overrides the config file.
  auto env = fabrica("user list", "FABRICA_TOKEN=fab_invalid");
  EXPECT_NE(env.exit_code, 0);
}

}  // namespace
}  // namespace fabrica

namespace fabrica {
namespace {

TEST(AgentCliTest, DiscoverPrintsATableOrJsonForAFixtureTree) {
  std::string root = (testing::source_dir() / "tests/fixtures/hosts/hgx-h100").string();
  auto json = testing::run_command(testing::binary_path("fabrica-agent") +
                                   " discover -o json --sysfs-root " + root);
  ASSERT_EQ(json.exit_code, 0) << json.output;
  auto inv = parse_json(json.output);
  ASSERT_TRUE(inv) << json.output;
  EXPECT_EQ((*inv)["gpus"].size(), 8u);
  EXPECT_EQ((*inv)["hostname"], "gpu-node-01");
  auto table = testing::run_command(testing::binary_path("fabrica-agent") +
                                    " discover --sysfs-root " + root);
  ASSERT_EQ(table.exit_code, 0);
  EXPECT_NE(table.output.find("H100 SXM5 80GB"), std::string::npos) << table.output;
  auto missing = testing::run_command(testing::binary_path("fabrica-agent") +
                                      " discover --sysfs-root /nonexistent-root");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.output.find("/proc/cpuinfo"), std::string::npos) << missing.output;
}

TEST_F(CliTest, TenantsFromVdcToTenantAdministratorToUser) {
  auto as = [&](const std::string& user, const std::string& password) {
    auto r = fabrica("--endpoint " + daemon_.url() + " login --user " + user + " --password " +
                     password);
    ASSERT_EQ(r.exit_code, 0) << r.out;
  };
  as("admin", DaemonProcess::kAdminPassword);
  ASSERT_EQ(fabrica("group create acme-ml").exit_code, 0);
  ASSERT_EQ(fabrica("cluster create gpu-west").exit_code, 0);
  ASSERT_EQ(fabrica("vdc create acme").exit_code, 0);
  ASSERT_EQ(fabrica("vdc addgroup acme acme-ml").exit_code, 0);
  auto added = fabrica("vdc addcluster acme gpu-west");
  ASSERT_EQ(added.exit_code, 0) << added.out;
  EXPECT_NE(added.out.find("HOST/%"), std::string::npos) << added.out;
  std::filesystem::create_directories(daemon_.data_dir() / "weka");  // The mounted filesystem.
  auto weka = fabrica("datastore create weka --path " + (daemon_.data_dir() / "weka").string() +
                      " --cluster 0");
  ASSERT_EQ(weka.exit_code, 0) << weka.out;
  EXPECT_NE(weka.out.find("ID: 100"), std::string::npos) << weka.out;
  ASSERT_EQ(fabrica("vdc adddatastore acme weka").exit_code, 0);
  auto missing = fabrica("vdc adddatastore acme 101");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("101"), std::string::npos) << missing.out;
  auto vdcs = fabrica("vdc list");
  EXPECT_NE(vdcs.out.find("cluster:"), std::string::npos) << vdcs.out;
  ASSERT_EQ(fabrica("user create acme-boss --password boss-password --group acme-ml").exit_code, 0);
  ASSERT_EQ(fabrica("group addadmin acme-ml acme-boss").exit_code, 0);
  auto quota = fabrica("quota set group acme-ml gpu:H100=16 mig:1g.10gb=14 vms=20");
  ASSERT_EQ(quota.exit_code, 0) << quota.out;
  EXPECT_NE(quota.out.find("gpu:H100"), std::string::npos) << quota.out;

  as("acme-boss", "boss-password");
  EXPECT_NE(fabrica("whoami").out.find("tenant-admin"), std::string::npos);
  ASSERT_EQ(fabrica("user create bob --password bob-password --group acme-ml").exit_code, 0);
  auto too_much = fabrica("quota set user bob gpu:H100=20");
  EXPECT_NE(too_much.exit_code, 0);
  EXPECT_NE(too_much.out.find("cannot grant more than group acme-ml holds"), std::string::npos)
      << too_much.out;
  ASSERT_EQ(fabrica("quota set user bob gpu:H100=8").exit_code, 0);
  auto shown = fabrica("quota show user bob -o json");
  EXPECT_EQ((*parse_json(shown.out))["limits"]["gpu:H100"], 8) << shown.out;
  EXPECT_NE(fabrica("quota set user acme-boss gpu:H100=16").exit_code, 0);  // Not its own.
  EXPECT_NE(fabrica("vdc create mine").exit_code, 0);
  auto vdc = fabrica("vdc show acme");
  EXPECT_NE(vdc.out.find("CLUSTER/#"), std::string::npos) << vdc.out;
  // The tenant administrator defines the endpoint its keys name; the backend key comes from a
  // file and is never shown again.
  auto key_file = daemon_.data_dir() / "vllm.key";
  { std::ofstream(key_file) << "sk-upstream-7Qz\n"; }
  auto endpoint = fabrica(
      "endpoint create llama-8b --model meta-llama/Llama-3.1-8B-Instruct "
      "--backend http://vllm-0.acme.internal:8000 --backend http://vllm-1.acme.internal:8000 "
      "--backend-key-file " +
      key_file.string());
  ASSERT_EQ(endpoint.exit_code, 0) << endpoint.out;
  EXPECT_NE(endpoint.out.find("serves meta-llama/Llama-3.1-8B-Instruct from 2 backends"),
            std::string::npos)
      << endpoint.out;
  auto bad_backend = fabrica("endpoint create spare --model m --backend vllm:8000");
  EXPECT_NE(bad_backend.exit_code, 0);
  EXPECT_NE(bad_backend.out.find("backends[0]"), std::string::npos) << bad_backend.out;
  auto endpoint_shown = fabrica("endpoint show llama-8b");
  EXPECT_NE(endpoint_shown.out.find("set (never shown)"), std::string::npos) << endpoint_shown.out;
  auto endpoint_json = fabrica("endpoint list -o json");
  EXPECT_EQ(endpoint_json.out.find("sk-upstream"), std::string::npos) << endpoint_json.out;
  auto cleared = fabrica("endpoint update llama-8b --no-backend-key");
  EXPECT_NE(cleared.out.find("BACKEND KEY : none"), std::string::npos) << cleared.out;
  auto key = fabrica(
      "apikey create chat-app --endpoints llama-8b --rpm 600 --tpm 200000 "
      "--expires 30d");
  ASSERT_EQ(key.exit_code, 0) << key.out;
  EXPECT_NE(key.out.find("fak_"), std::string::npos);
  // A typo names no endpoint: refused, naming which one, rather than a key that can call nothing.
  auto typo = fabrica("apikey create typo-app --endpoints llama-8b,does-not-exist");
  EXPECT_NE(typo.exit_code, 0);
  EXPECT_NE(typo.out.find("endpoints[1]"), std::string::npos) << typo.out;
  EXPECT_NE(typo.out.find("does-not-exist"), std::string::npos) << typo.out;
  auto keys = fabrica("apikey list");
  EXPECT_NE(keys.out.find("chat-app"), std::string::npos) << keys.out;
  EXPECT_EQ(keys.out.find(key.out.substr(key.out.find("fak_"), 30)), std::string::npos);
  EXPECT_NE(fabrica("audit list").exit_code, 0);  // Administrators only.

  as("admin", DaemonProcess::kAdminPassword);
  auto denied = fabrica("audit list --outcome denied --user acme-boss");
  ASSERT_EQ(denied.exit_code, 0) << denied.out;
  EXPECT_NE(denied.out.find("PUT /api/v1/users/{id}/quota"), std::string::npos) << denied.out;
  auto recount = fabrica("quota recount");
  EXPECT_EQ(recount.exit_code, 0) << recount.out;
  EXPECT_NE(recount.out.find("no drift"), std::string::npos);
  ASSERT_EQ(fabrica("vdc delcluster acme gpu-west").exit_code, 0);
  ASSERT_EQ(fabrica("vdc delete acme").exit_code, 0);
}

// The lifecycle verbs on a simulated host that runs VMs.
TEST_F(CliTest, VmVerbsDriveTheLifecycle) {
  ASSERT_EQ(
      fabrica("--endpoint " + daemon_.url() + " login --password " + DaemonProcess::kAdminPassword)
          .exit_code,
      0);
  auto token = parse_json(fabrica("host add --count 1 -o json").out);
  ASSERT_TRUE(token);
  testing::ChildProcess agent(
      {testing::binary_path("fabrica-agent"), "--server", daemon_.url(), "--join-token",
       (*token)["join_token"].get<std::string>(), "--simulate", "1", "--profile", "hgx-h100",
       "--sim-prefix", "hv", "--sim-hypervisor", "--sim-threads", "1", "--vm-root",
       (daemon_.data_dir() / "sim-vms").string()},
      (daemon_.data_dir() / "agent.log").string());
  auto in_state = [&](const std::string& state) {
    return testing::eventually([&] {
      auto vm = parse_json(fabrica("vm show web -o json").out);
      return vm && (*vm)["state_name"] == state && (*vm)["operation"].is_null();
    });
  };
  ASSERT_TRUE(testing::eventually(
      [&] { return fabrica("host list").out.find("MONITORED") != std::string::npos; }));
  auto placed = fabrica("vm create web --cpu 2 --memory 2G --gpu 1 --context PORT=80 --wait");
  ASSERT_EQ(placed.exit_code, 0) << placed.out;  // --wait waits for the boot too.
  EXPECT_NE(placed.out.find("RUNNING"), std::string::npos) << placed.out;
  ASSERT_TRUE(in_state("RUNNING"));
  ASSERT_TRUE(testing::eventually(
      [&] { return fabrica("vm show web").out.find("running, CPU") != std::string::npos; }));
  auto off = fabrica("vm poweroff web");
  EXPECT_NE(off.out.find("is SHUTDOWN_POWEROFF"), std::string::npos) << off.out;
  ASSERT_TRUE(in_state("POWEROFF"));
  auto resized = fabrica("vm resize web --cpu 4 --memory 4G");
  EXPECT_NE(resized.out.find("is POWEROFF with 4 vCPUs and 4G"), std::string::npos) << resized.out;
  EXPECT_NE(fabrica("vm resize web").exit_code, 0);  // Says what to give.
  auto wrong = fabrica("vm suspend web");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.out.find("it allows: resume"), std::string::npos) << wrong.out;
  ASSERT_EQ(fabrica("vm resume web").exit_code, 0);
  ASSERT_TRUE(in_state("RUNNING"));
  EXPECT_NE(fabrica("vm recover web --retry").exit_code, 0);  // Nothing in flight.
  EXPECT_NE(fabrica("vm recover web").exit_code, 0);          // Says how.
  ASSERT_EQ(fabrica("vm terminate --hard web").exit_code, 0);
  ASSERT_TRUE(in_state("DONE"));
  auto show = fabrica("vm show web");
  EXPECT_NE(show.out.find("HISTORY"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("hv-hgx-h100-0"), std::string::npos) << show.out;
  ASSERT_EQ(fabrica("vm delete web").exit_code, 0);
}

// A tenant describes VMs with flags or templates, watches the scheduler place them on a
// simulated fleet, reads why one waits, and frees devices; another tenant sees none of it.
TEST_F(CliTest, TenantRequestsVmsWithFlagsAndTemplates) {
  auto as = [&](const std::string& user, const std::string& password) {
    auto r = fabrica("--endpoint " + daemon_.url() + " login --user " + user + " --password " +
                     password);
    ASSERT_EQ(r.exit_code, 0) << r.out;
  };
  as("admin", DaemonProcess::kAdminPassword);
  for (auto [profile, prefix] : {std::pair{"hgx-h100", "gpu"}, std::pair{"mig-h100", "mig"}}) {
    auto token = parse_json(fabrica("host add --count 1 -o json").out);
    ASSERT_TRUE(token);
    auto sim = testing::run_command(
        testing::binary_path("fabrica-agent") + " --server " + daemon_.url() + " --join-token " +
        (*token)["join_token"].get<std::string>() + " --simulate 1 --profile " + profile +
        " --sim-prefix " + prefix + " --rounds 1");
    ASSERT_EQ(sim.exit_code, 0) << sim.output;
  }
  ASSERT_EQ(fabrica("group create acme-ml").exit_code, 0);
  ASSERT_EQ(fabrica("vdc create acme").exit_code, 0);
  ASSERT_EQ(fabrica("vdc addgroup acme acme-ml").exit_code, 0);
  ASSERT_EQ(fabrica("vdc addcluster acme default").exit_code, 0);
  ASSERT_EQ(fabrica("user create bob --password bob-password --group acme-ml").exit_code, 0);
  ASSERT_EQ(fabrica("user create carol --password carol-password").exit_code, 0);
  ASSERT_EQ(fabrica("quota set group acme-ml gpu:H100=16 mig:1g.10gb=2 vms=10").exit_code, 0);

  as("bob", "bob-password");
  // A host path is for infrastructure administrators only: a tenant boots KERNEL images.
  auto host_kernel = fabrica("template create trainer-8x --cpu 32 --kernel /boot/vmlinuz");
  EXPECT_NE(host_kernel.exit_code, 0);
  EXPECT_NE(host_kernel.out.find("os.kernel"), std::string::npos) << host_kernel.out;
  EXPECT_NE(host_kernel.out.find("only infrastructure administrators"), std::string::npos)
      << host_kernel.out;
  auto tmpl = fabrica(
      "template create trainer-8x --cpu 32 --memory 256G --gpu H100:8 --gpu-topology "
      "same-domain --cpu-policy core --hugepages 1G --vf infiniband:4 --description "
      "\"one HGX board\" --context VLLM_PORT=8000 --context \"HF_TOKEN=hf_secret value\"");
  ASSERT_EQ(tmpl.exit_code, 0) << tmpl.out;
  auto listed = fabrica("template list");
  EXPECT_NE(listed.out.find("8xH100*, 4xinfiniband"), std::string::npos) << listed.out;
  auto placed = fabrica("template instantiate trainer-8x --name trainer --wait -o json");
  ASSERT_EQ(placed.exit_code, 0) << placed.out;
  auto vm = parse_json(placed.out);
  ASSERT_TRUE(vm) << placed.out;
  EXPECT_EQ((*vm)["state_name"], "ALLOCATED");
  EXPECT_EQ((*vm)["host_name"], "gpu-hgx-h100-0");
  EXPECT_EQ((*vm)["allocation"]["gpus"].size(), 8u);
  EXPECT_EQ((*vm)["allocation"]["vfs"].size(), 4u);
  EXPECT_EQ((*vm)["allocation"]["pinned_cpus"].size(), 32u);
  auto show = fabrica("vm show trainer");
  EXPECT_NE(show.out.find("pinned to"), std::string::npos) << show.out;
  // Context variables are listed by name; their values (tokens) only with -o json.
  EXPECT_NE(show.out.find("CONTEXT     : HF_TOKEN, VLLM_PORT"), std::string::npos) << show.out;
  EXPECT_EQ(show.out.find("hf_secret"), std::string::npos);
  auto guest = parse_json(fabrica("vm show trainer -o json").out);
  EXPECT_EQ((*guest)["context"]["HF_TOKEN"], "hf_secret value");
  EXPECT_EQ((*guest)["os"]["kernel"], "");
  EXPECT_NE(fabrica("template update trainer-8x --context BAD-NAME=x").out.find("context.BAD-NAME"),
            std::string::npos);
  EXPECT_NE(show.out.find("nvswitch"), std::string::npos) << show.out;

  auto notebook = fabrica("vm create notebook --cpu 4 --memory 16G --mig 1g.10gb --wait");
  ASSERT_EQ(notebook.exit_code, 0) << notebook.out;
  EXPECT_NE(notebook.out.find("mig-mig-h100-0"), std::string::npos) << notebook.out;
  EXPECT_NE(notebook.out.find("1g.10gb  0000:"), std::string::npos) << notebook.out;

  // The only free H100 board is gone: --wait reports the scheduler's reason, the VM queues.
  // --wait waits its --timeout while the VM is PENDING; short here, so the simulated hosts
  // (one round each) are still MONITORED when the board is freed below.
  auto late = fabrica("vm create late --cpu 8 --memory 64G --gpu H100:8 --wait --timeout 2");
  EXPECT_EQ(late.exit_code, 1);
  EXPECT_NE(late.out.find("no host in the tenant's VDCs has 8 free H100* GPUs"), std::string::npos)
      << late.out;
  EXPECT_NE(fabrica("vm explain late").out.find("VM 2 is PENDING"), std::string::npos);
  auto pending = parse_json(fabrica("vm list --state PENDING -o json").out);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0]["name"], "late");
  auto table = fabrica("vm list");
  EXPECT_NE(table.out.find("ALLOCATED  gpu-hgx-h100-0"), std::string::npos) << table.out;

  // Bad input names the flag; the server's checks name the request field.
  auto bad_memory = fabrica("vm create x --memory 12Q");
  EXPECT_NE(bad_memory.out.find("(field: --memory)"), std::string::npos) << bad_memory.out;
  auto bad_policy = fabrica("vm create x --cpu-policy bogus");
  EXPECT_NE(bad_policy.out.find("(field: request.cpu_policy)"), std::string::npos)
      << bad_policy.out;
  EXPECT_NE(fabrica("vm create x --template trainer-8x --cpu 4").exit_code, 0);
  auto over = fabrica("vm create x --gpu H100:9");
  EXPECT_NE(over.exit_code, 0);
  EXPECT_NE(over.out.find("gpu:H100"), std::string::npos) << over.out;  // Quota refusal.

  // Another tenant cannot see, explain or delete any of it.
  as("carol", "carol-password");
  EXPECT_TRUE(parse_json(fabrica("vm list -o json").out)->empty());
  EXPECT_NE(fabrica("vm show 0").exit_code, 0);
  EXPECT_NE(fabrica("vm explain trainer").out.find("not found"), std::string::npos);
  EXPECT_NE(fabrica("vm delete 0").exit_code, 0);
  EXPECT_NE(fabrica("template show trainer-8x").exit_code, 0);

  // Freeing the board lets the queued VM in.
  as("bob", "bob-password");
  ASSERT_EQ(fabrica("vm delete trainer").exit_code, 0);
  EXPECT_TRUE(testing::eventually(
      [&] { return fabrica("vm show late").out.find("ALLOCATED") != std::string::npos; }));
  auto updated = fabrica("template update trainer-8x --cpu 16 -o json");
  ASSERT_EQ(updated.exit_code, 0) << updated.out;
  EXPECT_EQ((*parse_json(updated.out))["request"]["vcpus"], 16);
  EXPECT_EQ((*parse_json(updated.out))["request"]["gpus"]["count"], 8);  // Kept.
  ASSERT_EQ(fabrica("vm delete late notebook").exit_code, 0);
  ASSERT_EQ(fabrica("template delete trainer-8x").exit_code, 0);
  EXPECT_TRUE(parse_json(fabrica("vm list -o json").out)->empty());
}

// The README findings about the CLI itself: a version flag, no "--password-stdin" that does
// not exist, no login hint after a refused login, names that mean one object, quota clusters
// by name and only existing ones, and objects printed with headings rather than raw keys.
TEST_F(CliTest, TheReadmeFindingsAboutTheCliStayFixed) {
  auto version = fabrica("--version");
  EXPECT_EQ(version.exit_code, 0) << version.out;
  EXPECT_EQ(version.out, "fabrica 0.1.0\n");

  auto no_password = fabrica("--endpoint " + daemon_.url() + " login -u admin </dev/null");
  EXPECT_NE(no_password.exit_code, 0);
  EXPECT_EQ(no_password.out.find("--password-stdin"), std::string::npos) << no_password.out;
  EXPECT_NE(no_password.out.find("pass --password, set FABRICA_PASSWORD, or write it on "
                                 "standard input"),
            std::string::npos)
      << no_password.out;
  auto wrong = fabrica("--endpoint " + daemon_.url() + " login -u admin --password nope-nope");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_EQ(wrong.out.find("Hint: run `fabrica login`"), std::string::npos) << wrong.out;

  ASSERT_EQ(
      fabrica("--endpoint " + daemon_.url() + " login --password " + DaemonProcess::kAdminPassword)
          .exit_code,
      0);
  ASSERT_EQ(fabrica("template create tiny --cpu 1 --memory 256M").exit_code, 0);
  auto again = fabrica("template create tiny --cpu 2 --memory 512M");
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.out.find("already has a template \"tiny\""), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("[ALREADY_EXISTS]"), std::string::npos) << again.out;

  ASSERT_EQ(fabrica("group create acme-ml").exit_code, 0);
  ASSERT_EQ(fabrica("cluster create gpu-west").exit_code, 0);
  auto by_name = fabrica("quota set group acme-ml --cluster gpu-west gpu:H100=8");
  EXPECT_EQ(by_name.exit_code, 0) << by_name.out;
  auto missing = fabrica("quota set group acme-ml --cluster 3 gpu:H100=8");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.out.find("cluster 3 does not exist"), std::string::npos) << missing.out;
  auto help = fabrica("quota set --help");
  for (const char* key : {"images", "image_mb", "leases"}) {
    EXPECT_NE(help.out.find(key), std::string::npos) << key << ": " << help.out;
  }

  auto chmod = fabrica("chmod group acme-ml 644");
  ASSERT_EQ(chmod.exit_code, 0) << chmod.out;
  EXPECT_EQ(chmod.out.find("{\""), std::string::npos) << "no raw JSON: " << chmod.out;
  EXPECT_NE(chmod.out.find("PERMISSIONS"), std::string::npos) << chmod.out;
}

}  // namespace
}  // namespace fabrica
