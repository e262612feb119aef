// A real guest on the real hypervisor: libvirtd + QEMU (TCG) on qemu:///system, started by
// scripts/libvirt-up. The agent's executor deploys a VM placed by the scheduler with a context,
// the guest's init mounts the CONTEXT CD-ROM and prints the variables on its serial console,
// and the VM is rebooted, shut down (ACPI), started, destroyed and cleaned up, leaving nothing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

#include "agent/discovery.h"
#include "agent/hypervisor/domain.h"
#include "agent/hypervisor/executor.h"
#include "sched/host.h"
#include "testing/daemon_process.h"

namespace fabrica::hypervisor {

namespace fs = std::filesystem;

std::string read(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

std::string newest_kernel_for_test() {
  std::string best;
  for (const auto& e : fs::directory_iterator("/boot")) {
    std::string name = e.path().filename().string();
    if (name.starts_with("vmlinuz-") && name > best) best = name;
  }
  return best.empty() ? "" : "/boot/" + best;
}

namespace {

TEST(GuestTest, ARealGuestReadsItsContextAndLivesThroughTheWholeLifecycle) {
  auto libvirt = open_libvirt("qemu:///system");
  ASSERT_TRUE(libvirt) << libvirt.error().message()
                       << " (scripts/libvirt-up starts libvirtd and virtlogd as root)";
  std::string kernel = newest_kernel_for_test();
  ASSERT_FALSE(kernel.empty()) << "no /boot/vmlinuz-* (package linux-image-cloud-amd64)";
  fs::path root = fs::temp_directory_path() / ("fabrica-guest-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  std::string kver = fs::path(kernel).filename().string().substr(std::string("vmlinuz-").size());
  auto built = testing::run_command((testing::source_dir() / "tests/guest/build-initrd").string() +
                                    " " + (root / "initrd.img").string() + " " + kver);
  ASSERT_EQ(built.exit_code, 0) << built.output;

  // Placed by the scheduler on this machine's own hardware.
  agent::SysfsSource machine("/");
  auto inv = agent::discover(machine);
  ASSERT_TRUE(inv) << inv.error().message();
  sched::HostState host(sched::HostInfo{.id = 1, .name = "local"}, *inv);
  sched::VmRequest request;
  request.vm_id = 900000 + ::getpid() % 10000;
  request.vcpus = 1;
  request.memory_mb = 256;
  ASSERT_TRUE(request.validate());
  auto fit = host.fit(request);
  ASSERT_EQ(fit.misfit, sched::Misfit::kNone) << sched::misfit_text(fit.misfit);

  Executor ex(**libvirt, {.vm_root = (root / "vms").string(),
                          .journal = (root / "operations.jsonl").string(),
                          .domain_type = "qemu",
                          .shutdown_timeout = std::chrono::seconds(60)});
  int64_t id = request.vm_id;
  std::string domain = domain_name(id);
  fs::path console = root / "vms" / std::to_string(id) / "console.log";
  int op = 0;
  auto run = [&](const std::string& action, Json extra = Json::object()) {
    Json command{{"id", "op-" + std::to_string(++op)}, {"vm_id", id}, {"action", action}};
    command.update(extra);
    Json answer = ex.run(command);
    EXPECT_TRUE(answer["ok"]) << action << ": " << answer.dump();
    return answer;
  };
  auto booted = [&](size_t times) {
    return testing::eventually(
        [&] { return count(read(console), "FABRICA-GUEST: ready") >= times; },
        std::chrono::seconds(120));
  };

  auto started = std::chrono::steady_clock::now();
  Json deployed = run("deploy", {{"vm",
                                  {{"name", "guest-test"},
                                   {"request", request.to_json()},
                                   {"allocation", fit.allocation.to_json()},
                                   {"context",
                                    {{"HOSTNAME", "guest-test"},
                                     {"HF_MODEL_ID", "Qwen/Qwen3-0.6B"},
                                     {"VLLM_PORT", 8000},
                                     {"TOKEN", "s3cr3t 'quoted' $value"}}},
                                   {"os",
                                    {{"kernel", kernel},
                                     {"initrd", (root / "initrd.img").string()},
                                     {"cmdline", "console=ttyS0 panic=-1"}}}}}});
  EXPECT_EQ(deployed["console_log"], console.string());
  run("start");
  ASSERT_TRUE(booted(1)) << read(console);
  auto boot_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - started)
                     .count();
  std::printf("deploy to guest ready (TCG): %lld ms\n", static_cast<long long>(boot_ms));
  std::string log = read(console);
  EXPECT_NE(log.find("FABRICA-CONTEXT: HOSTNAME='guest-test'"), std::string::npos) << log;
  EXPECT_NE(log.find("FABRICA-CONTEXT: HF_MODEL_ID='Qwen/Qwen3-0.6B'"), std::string::npos);
  EXPECT_NE(log.find("FABRICA-CONTEXT: VLLM_PORT='8000'"), std::string::npos);
  EXPECT_NE(log.find("FABRICA-CONTEXT: TOKEN='s3cr3t '\"'\"'quoted'\"'\"' $value'"),
            std::string::npos)
      << log;

  run("reboot");  // ACPI: the guest powers off and libvirt starts it again.
  ASSERT_TRUE(booted(2)) << read(console);
  run("shutdown");  // ACPI, waiting until the guest is off.
  EXPECT_EQ((*libvirt)->status(domain)->state, DomainState::kShutoff);
  run("start");
  ASSERT_TRUE(booted(3)) << read(console);
  run("destroy");
  run("cleanup");
  EXPECT_EQ((*libvirt)->status(domain)->state, DomainState::kMissing);
  auto left = (*libvirt)->list();
  ASSERT_TRUE(left);
  EXPECT_EQ(std::count(left->begin(), left->end(), domain), 0);
  EXPECT_FALSE(fs::exists(root / "vms" / std::to_string(id)));
  fs::remove_all(root);
}

}  // namespace
}  // namespace fabrica::hypervisor

namespace fabrica {
namespace {

namespace fs = std::filesystem;

// The whole product on a real hypervisor: fabricad, the fabrica CLI and fabrica-agent
// --libvirt qemu:///system on this machine. A VM made from a template with a context boots,
// reads its CONTEXT CD-ROM, goes through reboot, poweroff, resume, undeploy, resume and
// terminate, and leaves no domain behind and nothing held on the host.
TEST(RealGuestE2eTest, TemplateToRunningGuestAndBackToNothing) {
  // A host silent for 3 s is OFFLINE: the test kills its agent on purpose.
  testing::DaemonProcess daemon({"--host-offline-after", "3", "--heartbeat-interval", "1"});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto api = daemon.login();
  auto libvirt = hypervisor::open_libvirt("qemu:///system");
  ASSERT_TRUE(libvirt) << libvirt.error().message();
  std::string kernel = hypervisor::newest_kernel_for_test();
  fs::path work = daemon.data_dir();
  auto built = testing::run_command((testing::source_dir() / "tests/guest/build-initrd").string() +
                                    " " + (work / "initrd.img").string() + " " +
                                    fs::path(kernel).filename().string().substr(8));
  ASSERT_EQ(built.exit_code, 0) << built.output;
  auto token = api.post("/api/v1/hosts/join-tokens", Json{{"count", 1}});
  ASSERT_TRUE(token);
  std::optional<testing::ChildProcess> agent;
  auto start_agent = [&] {
    agent.emplace(
        std::vector<std::string>{testing::binary_path("fabrica-agent"), "--server", daemon.url(),
                                 "--join-token", (*token)["join_token"].get<std::string>(),
                                 "--state-dir", (work / "agent").string(), "--libvirt",
                                 "qemu:///system", "--domain-type", "qemu"},
        (work / "agent.log").string());
  };
  start_agent();
  ASSERT_TRUE(testing::eventually([&] {
    auto hosts = api.get("/api/v1/hosts?state=MONITORED");
    return hosts && (*hosts)["items"].size() == 1;
  })) << hypervisor::read(work / "agent.log");
  std::string host = "/api/v1/hosts/" +
                     std::to_string((*api.get("/api/v1/hosts"))["items"][0]["id"].get<int64_t>());

  auto t = api.post("/api/v1/templates",
                    Json{{"name", "tiny"},
                         {"request", {{"vcpus", 1}, {"memory_mb", 256}}},
                         {"context", {{"HOSTNAME", "tiny-1"}, {"HF_MODEL_ID", "Qwen/Qwen3-0.6B"}}},
                         {"os",
                          {{"kernel", kernel},
                           {"initrd", (work / "initrd.img").string()},
                           {"cmdline", "console=ttyS0 panic=-1"}}}});
  ASSERT_TRUE(t) << t.error().message();
  auto started = std::chrono::steady_clock::now();
  auto vm =
      api.post("/api/v1/templates/" + std::to_string((*t)["id"].get<int64_t>()) + "/instantiate",
               Json{{"name", "tiny-1"}});
  ASSERT_TRUE(vm) << vm.error().message();
  std::string path = "/api/v1/vms/" + std::to_string((*vm)["id"].get<int64_t>());
  Json now;
  auto settled = [&](const std::string& state) {
    return testing::eventually(
        [&] {
          auto got = api.get(path);
          if (got) now = *got;
          return got && now["state_name"] == state && now["operation"].is_null();
        },
        std::chrono::seconds(180));
  };
  // The guest is up once its init has read the context: only then does it hear ACPI.
  auto ready = [&](size_t times) {
    return testing::eventually(
        [&] {
          return hypervisor::count(hypervisor::read(now["console_log"].get<std::string>()),
                                   "FABRICA-GUEST: ready") >= times;
        },
        std::chrono::seconds(120));
  };
  auto act = [&](Json action) { return api.post(path + "/actions", action).has_value(); };

  ASSERT_TRUE(settled("RUNNING")) << now.dump() << hypervisor::read(work / "agent.log");
  ASSERT_TRUE(ready(1)) << hypervisor::read(now["console_log"].get<std::string>());
  std::printf("vm create to guest ready (TCG): %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - started)
                                         .count()));
  std::string console = hypervisor::read(now["console_log"].get<std::string>());
  EXPECT_NE(console.find("FABRICA-CONTEXT: HOSTNAME='tiny-1'"), std::string::npos) << console;
  EXPECT_NE(console.find("FABRICA-CONTEXT: HF_MODEL_ID='Qwen/Qwen3-0.6B'"), std::string::npos);
  EXPECT_EQ((*api.get(host))["allocated_vms"], 1);

  ASSERT_TRUE(act({{"action", "reboot"}}));
  ASSERT_TRUE(settled("RUNNING"));
  ASSERT_TRUE(ready(2));
  ASSERT_TRUE(act({{"action", "poweroff"}}));
  ASSERT_TRUE(settled("POWEROFF")) << now.dump();
  EXPECT_EQ((*api.get(host))["allocated_vms"], 1);  // POWEROFF keeps the host.
  ASSERT_TRUE(act({{"action", "resume"}}));
  ASSERT_TRUE(settled("RUNNING"));
  ASSERT_TRUE(ready(3));
  ASSERT_TRUE(act({{"action", "undeploy"}}));
  ASSERT_TRUE(settled("UNDEPLOYED")) << now.dump();
  EXPECT_EQ((*api.get(host))["allocated_vms"], 0);
  ASSERT_TRUE(act({{"action", "resume"}}));  // Placed again, deployed afresh.
  ASSERT_TRUE(settled("RUNNING")) << now.dump();
  ASSERT_TRUE(ready(1));  // A new console log: undeploy removed the old files.
  std::string domain = "fabrica-vm-" + std::to_string(now["id"].get<int64_t>());

  // Monitoring: the guest powers itself off (its acpid hears the button) -> POWEROFF.
  ASSERT_TRUE((*libvirt)->shutdown(domain));
  ASSERT_TRUE(settled("POWEROFF")) << now.dump();
  EXPECT_EQ(now["monitoring"]["domain_state"], "shutoff") << now.dump();
  ASSERT_TRUE(act({{"action", "resume"}}));
  ASSERT_TRUE(settled("RUNNING"));
  ASSERT_TRUE(ready(2));
  EXPECT_GT(now["monitoring"]["memory_kb"].get<int64_t>(), 0) << now.dump();

  // The host goes silent (agent killed): its VM is UNKNOWN, and RUNNING again once the agent
  // is back and libvirt still runs the guest.
  agent->stop(SIGKILL);
  ASSERT_TRUE(settled("UNKNOWN")) << now.dump();
  start_agent();
  ASSERT_TRUE(settled("RUNNING")) << now.dump();

  // The agent killed in the middle of a graceful poweroff: the command comes again after the
  // restart and the VM ends POWEROFF, once.
  ASSERT_TRUE(act({{"action", "poweroff"}}));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  agent->stop(SIGKILL);
  start_agent();
  ASSERT_TRUE(settled("POWEROFF")) << now.dump() << hypervisor::read(work / "agent.log");
  EXPECT_EQ((*libvirt)->status(domain)->state, hypervisor::DomainState::kShutoff);
  // Resized while powered off: the guest comes back with the new memory.
  ASSERT_TRUE(api.post(path + "/resize", Json{{"memory_mb", 320}})) << now.dump();
  ASSERT_TRUE(act({{"action", "resume"}}));
  ASSERT_TRUE(settled("RUNNING"));
  ASSERT_TRUE(ready(3));
  EXPECT_NE((*libvirt)->xml(domain)->find("<memory unit='KiB'>327680</memory>"), std::string::npos)
      << *(*libvirt)->xml(domain);

  // fabricad killed right after acknowledging a reboot: after its restart the reboot is
  // carried out and answered, and the guest boots exactly once more.
  ASSERT_TRUE(act({{"action", "reboot"}}));
  daemon.stop(SIGKILL);
  ASSERT_TRUE(daemon.start()) << daemon.log();
  api = daemon.login();
  ASSERT_TRUE(settled("RUNNING")) << now.dump();
  ASSERT_TRUE(ready(4));
  std::this_thread::sleep_for(std::chrono::seconds(2));
  EXPECT_EQ(hypervisor::count(hypervisor::read(now["console_log"].get<std::string>()),
                              "FABRICA-GUEST: ready"),
            4u);

  ASSERT_TRUE(act({{"action", "terminate"}}));
  ASSERT_TRUE(settled("DONE")) << now.dump();
  EXPECT_EQ((*api.get(host))["allocated_vms"], 0);
  EXPECT_EQ(now["history"].size(), 2u);
  EXPECT_EQ((*libvirt)->status(domain)->state, hypervisor::DomainState::kMissing);
}

}  // namespace
}  // namespace fabrica
