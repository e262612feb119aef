// VM requests against a simulated fleet (fabrica-agent --simulate, the real join protocol):
// exact placements, explanations, VDC limits, and many clients creating and deleting VMs at
// once without any device ever given twice.
#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "testing/daemon_process.h"

namespace fabrica {
namespace {

using testing::DaemonProcess;
using testing::eventually;

class SchedulerE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    api_ = std::make_unique<client::ApiClient>(daemon_.login());
    join(3, "hgx-h100", "gpu");
    join(1, "mig-h100", "mig");
  }
  void join(int count, const std::string& profile, const std::string& prefix) {
    auto token = api_->post("/api/v1/hosts/join-tokens", Json{{"count", count}});
    ASSERT_TRUE(token) << token.error().message();
    auto sim = testing::run_command(
        testing::binary_path("fabrica-agent") + " --server " + daemon_.url() + " --join-token " +
        (*token)["join_token"].get<std::string>() + " --simulate " + std::to_string(count) +
        " --profile " + profile + " --sim-prefix " + prefix + " --rounds 1");
    ASSERT_EQ(sim.exit_code, 0) << sim.output;
  }
  // Waits for the scheduler's verdict on VM `id`.
  Json settled(client::ApiClient& api, int64_t id) {
    Json vm;
    EXPECT_TRUE(eventually([&] {
      auto got = api.get("/api/v1/vms/" + std::to_string(id));
      if (!got) return false;
      vm = *got;
      return vm["explanation"] != "waiting for the scheduler";
    })) << vm.dump();
    return vm;
  }

  DaemonProcess daemon_{{"--host-offline-after", "600"}};
  std::unique_ptr<client::ApiClient> api_;
};

TEST_F(SchedulerE2eTest, EightGpuVmGetsOneBoardAndMigVmASliceAndExplainSaysWhy) {
  auto created =
      api_->post("/api/v1/vms",
                 Json{{"name", "trainer"},
                      {"request",
                       {{"vcpus", 32},
                        {"memory_mb", 262144},
                        {"cpu_policy", "core"},
                        {"hugepages", "1G"},
                        {"gpus", {{"count", 8}, {"model", "H100*"}, {"topology", "same-domain"}}},
                        {"vfs", Json::array({{{"fabric", "infiniband"}, {"count", 2}}})}}}});
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_EQ((*created)["state_name"], "PENDING");
  Json vm = settled(*api_, (*created)["id"]);
  ASSERT_EQ(vm["state_name"], "ALLOCATED") << vm.dump();
  const Json& a = vm["allocation"];
  EXPECT_EQ(a["gpus"].size(), 8u);
  EXPECT_EQ(a["numa"].size(), 2u);
  EXPECT_EQ(a["pinned_cpus"].size(), 32u);
  EXPECT_EQ(a["vfs"].size(), 2u);
  std::set<std::string> domains;
  for (const auto& g : a["gpus"]) domains.insert(g["nvlink_domain"]);
  EXPECT_EQ(domains, std::set<std::string>{"nvswitch"});
  auto host = api_->get("/api/v1/hosts/" + std::to_string(a["host_id"].get<int64_t>()));
  ASSERT_TRUE(host);
  EXPECT_EQ((*host)["allocated_vms"], 1);
  EXPECT_EQ((*host)["gpus_allocated"]["H100 SXM5 80GB"], 8);

  auto mig = api_->post(
      "/api/v1/vms",
      Json{{"name", "notebook"},
           {"request", {{"mig", Json::array({{{"profile", "1g.10gb"}, {"count", 1}}})}}}});
  ASSERT_TRUE(mig) << mig.error().message();
  Json m = settled(*api_, (*mig)["id"]);
  ASSERT_EQ(m["state_name"], "ALLOCATED") << m.dump();
  EXPECT_EQ(m["allocation"]["host_name"].get<std::string>().rfind("mig", 0), 0u);
  EXPECT_EQ(m["allocation"]["mig"][0]["uuid"].get<std::string>().rfind("MIG-", 0), 0u);

  // Two boards left: a third and fourth 8-GPU VM, then the explanation of the fifth.
  for (int i = 0; i < 2; ++i) {
    auto more =
        api_->post("/api/v1/vms", Json{{"name", "more"}, {"request", {{"gpus", {{"count", 8}}}}}});
    ASSERT_TRUE(more);
    EXPECT_EQ(settled(*api_, (*more)["id"])["state_name"], "ALLOCATED");
  }
  auto last = api_->post(
      "/api/v1/vms",
      Json{{"name", "late"}, {"request", {{"gpus", {{"count", 8}, {"model", "H100*"}}}}}});
  ASSERT_TRUE(last);
  settled(*api_, (*last)["id"]);
  auto why = api_->get("/api/v1/vms/" + std::to_string((*last)["id"].get<int64_t>()) + "/explain");
  ASSERT_TRUE(why);
  EXPECT_EQ((*why)["state_name"], "PENDING");
  EXPECT_EQ((*why)["explanation"], "no host in the fleet has 8 free H100* GPUs");
  // Deleting one frees its board at once, and the pending VM takes it.
  ASSERT_TRUE(api_->del("/api/v1/vms/" + std::to_string((*created)["id"].get<int64_t>())));
  EXPECT_TRUE(eventually([&] {
    auto got = api_->get("/api/v1/vms/" + std::to_string((*last)["id"].get<int64_t>()));
    return got && (*got)["state_name"] == "ALLOCATED";
  }));
}

// A template carries what the guest is told (context) and how it boots (os); a VM made from it
// adds its own variables. Bad names and paths are refused with the field at fault.
TEST_F(SchedulerE2eTest, TemplatesCarryTheGuestsContextAndKernel) {
  auto t = api_->post("/api/v1/templates",
                      Json{{"name", "vllm"},
                           {"request", {{"gpus", {{"count", 1}}}}},
                           {"context",
                            {{"HF_MODEL_ID", "meta-llama/Llama-3.1-8B-Instruct"},
                             {"VLLM_PORT", 8000},
                             {"HOSTNAME", "vllm"}}},
                           {"os", {{"kernel", "/boot/vmlinuz"}, {"cmdline", "console=ttyS0"}}}});
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ((*t)["context"]["VLLM_PORT"], 8000);
  EXPECT_EQ((*t)["os"]["kernel"], "/boot/vmlinuz");
  std::string path = "/api/v1/templates/" + std::to_string((*t)["id"].get<int64_t>());
  auto vm = api_->post(path + "/instantiate",
                       Json{{"name", "vllm-1"}, {"context", {{"HOSTNAME", "vllm-1"}}}});
  ASSERT_TRUE(vm) << vm.error().message();
  EXPECT_EQ((*vm)["context"]["HOSTNAME"], "vllm-1");
  EXPECT_EQ((*vm)["context"]["HF_MODEL_ID"], "meta-llama/Llama-3.1-8B-Instruct");
  EXPECT_EQ((*vm)["os"]["cmdline"], "console=ttyS0");
  auto stored = api_->get("/api/v1/vms/" + std::to_string((*vm)["id"].get<int64_t>()));
  EXPECT_EQ((*stored)["context"], (*vm)["context"]);

  auto bad_name = api_->post("/api/v1/vms", Json{{"name", "x"}, {"context", {{"1BAD", "x"}}}});
  ASSERT_FALSE(bad_name);
  EXPECT_EQ(bad_name.error().field(), "context.1BAD");
  auto nested = api_->post("/api/v1/vms", Json{{"name", "x"}, {"context", {{"A", {{"b", 1}}}}}});
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().field(), "context.A");
  auto relative = api_->post("/api/v1/vms", Json{{"name", "x"}, {"os", {{"kernel", "vmlinuz"}}}});
  ASSERT_FALSE(relative);
  EXPECT_EQ(relative.error().field(), "os.kernel");
  auto orphan = api_->post("/api/v1/vms", Json{{"name", "x"}, {"os", {{"initrd", "/i.img"}}}});
  ASSERT_FALSE(orphan);
  EXPECT_EQ(orphan.error().field(), "os.kernel");
  auto changed = api_->call("PUT", path, Json{{"context", {{"VLLM_PORT", 9000}}}});
  ASSERT_TRUE(changed) << changed.error().message();
  EXPECT_EQ((*changed)["context"], Json({{"VLLM_PORT", 9000}}));
  EXPECT_EQ((*changed)["os"]["kernel"], "");  // Context and os replace together.
  EXPECT_EQ((*changed)["request"]["gpus"]["count"], 1);
}

// Host paths (os.kernel, os.initrd) are infrastructure administrators' to set: a tenant is
// refused them on every way in (VM create, template create and update, instantiate overrides),
// may instantiate an administrator's template that carries them, and may not change them there.
TEST_F(SchedulerE2eTest, OnlyAdministratorsNameHostFilesAndTenantsKeepWhatTheyWereGiven) {
  ASSERT_TRUE(api_->post("/api/v1/groups", Json{{"name", "acme"}}));
  int64_t gid = (*api_->get("/api/v1/groups?name=acme"))["items"][0]["id"];
  ASSERT_TRUE(api_->post("/api/v1/users",
                         Json{{"name", "alice"}, {"password", "alice-password"}, {"gid", gid}}));
  auto alice = daemon_.login("alice", "alice-password");
  Json stolen = {{"kernel", "/boot/vmlinuz"}, {"initrd", "/var/lib/fabrica/sealing.key"}};
  auto refused = [](const Result<Json>& r, const std::string& field) {
    if (r) return ::testing::AssertionFailure() << "accepted: " << r->dump();
    if (r.error().code() != ErrorCode::kPermissionDenied || r.error().field() != field) {
      return ::testing::AssertionFailure()
             << "refused with " << r.error().message() << " (field " << r.error().field() << ")";
    }
    return ::testing::AssertionSuccess();
  };
  EXPECT_TRUE(refused(alice.post("/api/v1/vms", Json{{"name", "x"}, {"os", stolen}}), "os.kernel"));
  EXPECT_TRUE(refused(
      alice.post("/api/v1/vms",
                 Json{{"name", "x"}, {"os", {{"kernel_image_id", 0}, {"initrd", "/etc/shadow"}}}}),
      "os.initrd"));
  EXPECT_TRUE(
      refused(alice.post("/api/v1/templates", Json{{"name", "t"}, {"os", stolen}}), "os.kernel"));
  auto own = alice.post("/api/v1/templates", Json{{"name", "own"}});
  ASSERT_TRUE(own) << own.error().message();
  std::string own_path = "/api/v1/templates/" + std::to_string((*own)["id"].get<int64_t>());
  EXPECT_TRUE(refused(alice.call("PUT", own_path, Json{{"os", stolen}}), "os.kernel"));
  EXPECT_TRUE(refused(alice.post(own_path + "/instantiate", Json{{"name", "x"}, {"os", stolen}}),
                      "os.kernel"));

  // The administrator's template: alice may use it as it is, or boot another kernel image, but
  // not point it at another host file.
  auto boot = api_->post("/api/v1/templates", Json{{"name", "tiny"},
                                                   {"gid", gid},
                                                   {"os",
                                                    {{"kernel", "/boot/vmlinuz"},
                                                     {"initrd", "/srv/initrd.img"},
                                                     {"cmdline", "console=ttyS0"}}}});
  ASSERT_TRUE(boot) << boot.error().message();
  std::string tiny = "/api/v1/templates/" + std::to_string((*boot)["id"].get<int64_t>());
  std::string rule = "@" + std::to_string(gid) + " TEMPLATE/#" +
                     std::to_string((*boot)["id"].get<int64_t>()) + " USE";
  ASSERT_TRUE(api_->post("/api/v1/acl", Json{{"rule", rule}}));
  auto vm = alice.post(tiny + "/instantiate", Json{{"name", "tiny-1"}});
  ASSERT_TRUE(vm) << vm.error().message();
  EXPECT_EQ((*vm)["os"]["initrd"], "/srv/initrd.img");
  EXPECT_TRUE(refused(
      alice.post(
          tiny + "/instantiate",
          Json{{"name", "tiny-2"},
               {"os", {{"kernel", "/boot/vmlinuz"}, {"initrd", "/var/lib/fabrica/sealing.key"}}}}),
      "os.initrd"));
  auto resized = alice.post("/api/v1/vms/" + std::to_string((*vm)["id"].get<int64_t>()) + "/resize",
                            Json{{"vcpus", 2}});
  ASSERT_TRUE(resized) << resized.error().message();  // Keeping what it was given is allowed.
  auto manage = alice.call("PUT", tiny, Json{{"os", stolen}});
  ASSERT_FALSE(manage);  // USE is not MANAGE: the template itself stays the administrator's.
  EXPECT_EQ(manage.error().code(), ErrorCode::kPermissionDenied);
  // The administrator may do all of it.
  auto admin_vm = api_->post("/api/v1/vms", Json{{"name", "host-boot"}, {"os", stolen}});
  EXPECT_TRUE(admin_vm) << admin_vm.error().message();
}

TEST_F(SchedulerE2eTest, TenantVmsGoOnlyWhereTheirVdcAllows) {
  ASSERT_TRUE(api_->post("/api/v1/groups", Json{{"name", "acme"}}));
  auto groups = api_->get("/api/v1/groups?name=acme");
  int64_t gid = (*groups)["items"][0]["id"];
  ASSERT_TRUE(api_->post("/api/v1/users",
                         Json{{"name", "alice"}, {"password", "alice-password"}, {"gid", gid}}));
  auto alice = daemon_.login("alice", "alice-password");
  auto created =
      alice.post("/api/v1/vms", Json{{"name", "job"}, {"request", {{"gpus", {{"count", 1}}}}}});
  ASSERT_TRUE(created) << created.error().message();
  Json vm = settled(alice, (*created)["id"]);
  EXPECT_EQ(vm["state_name"], "PENDING");
  EXPECT_EQ(vm["explanation"], "no host in the tenant's VDCs has 1 free GPU");
  auto vdc = api_->post("/api/v1/vdcs", Json{{"name", "acme-vdc"}});
  ASSERT_TRUE(vdc);
  std::string path = "/api/v1/vdcs/" + std::to_string((*vdc)["id"].get<int64_t>());
  ASSERT_TRUE(api_->post(path + "/groups", Json{{"gid", gid}}));
  ASSERT_TRUE(api_->post(path + "/resources", Json{{"kind", "cluster"}, {"id", 0}}));
  EXPECT_TRUE(eventually([&] {
    auto got = alice.get("/api/v1/vms/" + std::to_string((*created)["id"].get<int64_t>()));
    return got && (*got)["state_name"] == "ALLOCATED";
  }));
  // Another tenant sees nothing of it.
  ASSERT_TRUE(
      api_->post("/api/v1/users", Json{{"name", "mallory"}, {"password", "mallory-password"}}));
  auto mallory = daemon_.login("mallory", "mallory-password");
  auto peek = mallory.get("/api/v1/vms/" + std::to_string((*created)["id"].get<int64_t>()));
  ASSERT_FALSE(peek);
  EXPECT_EQ(peek.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ((*mallory.get("/api/v1/vms"))["items"].size(), 0u);
}

TEST_F(SchedulerE2eTest, ManyClientsCreatingAndDeletingNeverShareADevice) {
  std::atomic<int> failures{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 6; ++c) {
    clients.emplace_back([&, c] {
      auto api = daemon_.login();
      for (int i = 0; i < 8; ++i) {
        Json request = {{"vcpus", 2}, {"memory_mb", 4096}, {"cpu_policy", "thread"}};
        if (i % 3 == 0) {
          request["mig"] = Json::array({{{"profile", "1g.10gb"}, {"count", 1}}});
        } else {
          request["gpus"] = {{"count", 1 + (i + c) % 2}};
        }
        auto vm =
            api.post("/api/v1/vms", Json{{"name", "c" + std::to_string(c)}, {"request", request}});
        if (!vm) {
          ++failures;
          continue;
        }
        if (i % 2 == 1) {
          if (!api.del("/api/v1/vms/" + std::to_string((*vm)["id"].get<int64_t>()))) ++failures;
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(failures, 0);
  ASSERT_TRUE(eventually([&] {
    auto pending = api_->get("/api/v1/vms?state=PENDING");
    return pending && (*pending)["items"].empty();
  }));
  auto vms = api_->get("/api/v1/vms?state=ALLOCATED&limit=1000");
  ASSERT_TRUE(vms);
  EXPECT_EQ((*vms)["items"].size(), 24u);
  std::set<std::string> devices;
  std::set<std::string> cpus;
  std::map<int64_t, int> gpus_per_host;
  for (const auto& vm : (*vms)["items"]) {
    const Json& a = vm["allocation"];
    std::string host = std::to_string(a["host_id"].get<int64_t>());
    for (const auto& g : a["gpus"]) {
      EXPECT_TRUE(devices.insert(host + "/" + g["pci_address"].get<std::string>()).second);
      ++gpus_per_host[a["host_id"]];
    }
    for (const auto& m : a["mig"]) EXPECT_TRUE(devices.insert(m["uuid"].get<std::string>()).second);
    for (int cpu : a["pinned_cpus"])
      EXPECT_TRUE(cpus.insert(host + "/" + std::to_string(cpu)).second);
  }
  // The hosts' counters agree with the VMs.
  for (const auto& [host, n] : gpus_per_host) {
    auto h = api_->get("/api/v1/hosts/" + std::to_string(host));
    ASSERT_TRUE(h);
    EXPECT_EQ((*h)["gpus_allocated"]["H100 SXM5 80GB"], n);
  }
}

}  // namespace
}  // namespace fabrica
