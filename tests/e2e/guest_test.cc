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
#include <regex>
#include <sstream>
#include <thread>

#include "agent/discovery.h"
#include "agent/hypervisor/domain.h"
#include "agent/hypervisor/executor.h"
#include "sched/host.h"
#include "testing/daemon_process.h"
#include "testing/fake_hub.h"

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
// fabricad with this machine as its one host (libvirt, TCG) and the test guest's initrd built.
struct OneHostCloud {
  explicit OneHostCloud(std::vector<std::string> extra = {}) : daemon(with_defaults(extra)) {}
  static std::vector<std::string> with_defaults(std::vector<std::string> extra) {
    // A host silent for 3 s is OFFLINE: tests kill its agent on purpose.
    extra.insert(extra.begin(), {"--host-offline-after", "3", "--heartbeat-interval", "1"});
    return extra;
  }
  testing::DaemonProcess daemon;
  std::optional<client::ApiClient> api;
  std::string kernel = hypervisor::newest_kernel_for_test();
  fs::path work;
  std::string join_token;
  std::optional<testing::ChildProcess> agent;

  void start() {
    ASSERT_TRUE(daemon.start()) << daemon.log();
    api.emplace(daemon.login());
    work = daemon.data_dir();
    auto built = testing::run_command(
        (testing::source_dir() / "tests/guest/build-initrd").string() + " " +
        (work / "initrd.img").string() + " " + fs::path(kernel).filename().string().substr(8));
    ASSERT_EQ(built.exit_code, 0) << built.output;
    auto token = api->post("/api/v1/hosts/join-tokens", Json{{"count", 1}});
    ASSERT_TRUE(token);
    join_token = (*token)["join_token"].get<std::string>();
    start_agent();
    ASSERT_TRUE(testing::eventually([&] {
      auto hosts = api->get("/api/v1/hosts?state=MONITORED");
      return hosts && (*hosts)["items"].size() == 1;
    })) << hypervisor::read(work / "agent.log");
  }
  void start_agent() {
    agent.emplace(std::vector<std::string>{testing::binary_path("fabrica-agent"), "--server",
                                           daemon.url(), "--join-token", join_token, "--state-dir",
                                           (work / "agent").string(), "--libvirt", "qemu:///system",
                                           "--domain-type", "qemu"},
                  (work / "agent.log").string());
  }
  // Runs the fabrica CLI as the administrator.
  testing::CommandResult cli(const std::string& args) {
    auto http = daemon.http();
    client::ApiClient fresh(std::move(http), "");
    auto login = fresh.login("admin", testing::DaemonProcess::kAdminPassword, Json::object());
    return testing::run_command("FABRICA_ENDPOINT=" + daemon.url() +
                                " FABRICA_TOKEN=" + (*login)["token"].get<std::string>() + " " +
                                testing::binary_path("fabrica") + " -o json " + args);
  }
};

TEST(RealGuestE2eTest, TemplateToRunningGuestAndBackToNothing) {
  OneHostCloud cloud;
  ASSERT_NO_FATAL_FAILURE(cloud.start());
  auto& daemon = cloud.daemon;
  auto& api = *cloud.api;
  auto& agent = cloud.agent;
  auto start_agent = [&] { cloud.start_agent(); };
  auto libvirt = hypervisor::open_libvirt("qemu:///system");
  ASSERT_TRUE(libvirt) << libvirt.error().message();
  const std::string& kernel = cloud.kernel;
  fs::path work = cloud.work;
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
  cloud.api.emplace(daemon.login());
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

// Disks from uploaded images: an ext4 image made here, uploaded with the CLI, and the kernel
// and initrd as KERNEL and RAMDISK images in the files datastore. A non-persistent image gives
// each VM its own overlay (kept through poweroff, gone with the VM); a persistent one keeps
// what its VM wrote for the next VM.
TEST(RealGuestE2eTest, BootsFromUploadedImagesAndKeepsOnlyPersistentWrites) {
  OneHostCloud cloud;
  ASSERT_NO_FATAL_FAILURE(cloud.start());
  auto& api = *cloud.api;
  fs::path root = cloud.work / "rootfs";
  fs::create_directories(root);
  { std::ofstream(root / "marker") << "MARKER-7f3a\n"; }
  fs::path raw = cloud.work / "data.raw", qcow = cloud.work / "data.qcow2";
  auto made = testing::run_command(
      "truncate -s 32M " + raw.string() + " && mkfs.ext4 -q -F -d " + root.string() + " " +
      raw.string() + " && qemu-img convert -O qcow2 " + raw.string() + " " + qcow.string());
  ASSERT_EQ(made.exit_code, 0) << made.output;
  auto upload = [&](const std::string& file, const std::string& args) -> int64_t {
    auto r = cloud.cli("image upload " + file + " " + args);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    auto json = parse_json(r.output.substr(r.output.find('{')));
    EXPECT_TRUE(json) << r.output;
    EXPECT_EQ((*json)["state_name"], "READY") << r.output;
    return (*json)["id"].get<int64_t>();
  };
  int64_t data = upload(qcow.string(), "--name data --type DATABLOCK");
  int64_t kernel = upload(cloud.kernel, "--name vmlinuz --type KERNEL");
  int64_t initrd = upload((cloud.work / "initrd.img").string(), "--name initrd --type RAMDISK");
  EXPECT_EQ((*api.get("/api/v1/images/" + std::to_string(kernel)))["datastore_id"], 2);
  auto clone = api.post("/api/v1/images/" + std::to_string(data) + "/clone",
                        Json{{"name", "data-persistent"}});
  ASSERT_TRUE(clone);
  int64_t pers = (*clone)["id"].get<int64_t>();
  ASSERT_TRUE(testing::eventually([&] {
    return (*api.get("/api/v1/images/" + std::to_string(pers)))["state_name"] == "READY";
  }));
  ASSERT_TRUE(api.post("/api/v1/images/" + std::to_string(pers) + "/persistent",
                       Json{{"persistent", true}}));

  // Boots a VM with `image` as vda; returns its path once the guest is ready.
  auto boot = [&](const std::string& name, int64_t image) -> std::string {
    auto vm = api.post("/api/v1/vms", Json{{"name", name},
                                           {"request", {{"vcpus", 1}, {"memory_mb", 256}}},
                                           {"context", {{"HOSTNAME", name}}},
                                           {"os",
                                            {{"kernel_image_id", kernel},
                                             {"initrd_image_id", initrd},
                                             {"cmdline", "console=ttyS0 panic=-1"}}},
                                           {"disks", Json::array({Json{{"image_id", image}}})}});
    EXPECT_TRUE(vm) << vm.error().message();
    return "/api/v1/vms/" + std::to_string((*vm)["id"].get<int64_t>());
  };
  Json now;
  auto settled = [&](const std::string& path, const std::string& state) {
    return testing::eventually(
        [&] {
          auto got = api.get(path);
          if (got) now = *got;
          return got && now["state_name"] == state && now["operation"].is_null();
        },
        std::chrono::seconds(180));
  };
  auto console = [&] { return hypervisor::read(now["console_log"].get<std::string>()); };
  auto ready = [&](size_t times) {
    return testing::eventually(
        [&] { return hypervisor::count(console(), "FABRICA-GUEST: ready") >= times; },
        std::chrono::seconds(120));
  };
  auto act = [&](const std::string& path, const std::string& action, bool hard = false) {
    return api.post(path + "/actions", Json{{"action", action}, {"hard", hard}}).has_value();
  };

  // Non-persistent: the marker is there, the guest writes to its overlay.
  std::string a = boot("scratch-a", data);
  ASSERT_TRUE(settled(a, "RUNNING")) << now.dump() << hypervisor::read(cloud.work / "agent.log");
  ASSERT_TRUE(ready(1)) << console();
  EXPECT_NE(console().find("FABRICA-DISK: marker MARKER-7f3a"), std::string::npos) << console();
  EXPECT_NE(console().find("FABRICA-DISK: earlier writes 0"), std::string::npos) << console();
  EXPECT_EQ((*api.get("/api/v1/images/" + std::to_string(data)))["state_name"], "USED");
  // The overlay lives as long as the VM: after a poweroff the write is still there.
  ASSERT_TRUE(act(a, "poweroff"));
  ASSERT_TRUE(settled(a, "POWEROFF")) << now.dump();
  ASSERT_TRUE(act(a, "resume"));
  ASSERT_TRUE(settled(a, "RUNNING"));
  ASSERT_TRUE(ready(2)) << console();
  EXPECT_NE(console().find("FABRICA-DISK: earlier writes 1"), std::string::npos) << console();
  EXPECT_NE(console().find("FABRICA-DISK: sizes vda=65536"), std::string::npos) << console();

  // Powered off, its disk is saved as a new image (written by the host), grown to 64 MiB,
  // and a volatile disk is attached: all through the CLI.
  ASSERT_TRUE(act(a, "poweroff"));
  ASSERT_TRUE(settled(a, "POWEROFF")) << now.dump();
  std::string vm_id = std::to_string(now["id"].get<int64_t>());
  auto saved = cloud.cli("vm disk-saveas " + vm_id + " 0 golden --wait");
  ASSERT_EQ(saved.exit_code, 0) << saved.output;
  int64_t golden = (*parse_json(saved.output))["image"]["id"].get<int64_t>();
  std::string golden_path = "/api/v1/images/" + std::to_string(golden);
  EXPECT_EQ((*parse_json(saved.output))["image"]["state_name"], "READY") << saved.output;
  EXPECT_EQ((*parse_json(saved.output))["vm"]["state_name"], "POWEROFF") << saved.output;
  EXPECT_EQ((*api.get(golden_path))["format"], "qcow2");
  ASSERT_TRUE(settled(a, "POWEROFF")) << now.dump();
  for (const std::string& args : {"vm disk-resize " + vm_id + " 0 64M",
                                  "vm disk-attach " + vm_id + " --disk size=8M,format=raw"}) {
    auto r = cloud.cli(args);
    ASSERT_EQ(r.exit_code, 0) << args << "\n" << r.output;
  }
  ASSERT_TRUE(act(a, "resume"));
  ASSERT_TRUE(settled(a, "RUNNING")) << now.dump();
  ASSERT_TRUE(ready(3)) << console();
  EXPECT_NE(console().find("FABRICA-DISK: sizes vda=131072 vdb=16384"), std::string::npos)
      << console();
  EXPECT_NE(console().find("FABRICA-DISK: earlier writes 2"), std::string::npos) << console();
  auto busy = cloud.cli("vm disk-attach " + vm_id + " --disk size=8M");
  EXPECT_NE(busy.exit_code, 0);
  EXPECT_NE(busy.output.find("poweroff or undeploy it first"), std::string::npos) << busy.output;
  ASSERT_TRUE(act(a, "terminate", true));
  ASSERT_TRUE(settled(a, "DONE")) << now.dump();
  // A VM from the saved image reads what the first one had written by then.
  std::string g = boot("from-golden", golden);
  ASSERT_TRUE(settled(g, "RUNNING")) << now.dump();
  ASSERT_TRUE(ready(1)) << console();
  EXPECT_NE(console().find("FABRICA-DISK: marker MARKER-7f3a"), std::string::npos) << console();
  EXPECT_NE(console().find("FABRICA-DISK: earlier writes 2"), std::string::npos) << console();
  ASSERT_TRUE(act(g, "terminate", true));
  ASSERT_TRUE(settled(g, "DONE")) << now.dump();
  EXPECT_EQ((*api.get("/api/v1/images/" + std::to_string(data)))["state_name"], "READY");
  // ... and a new VM from the same image sees none of it.
  std::string b = boot("scratch-b", data);
  ASSERT_TRUE(settled(b, "RUNNING")) << now.dump();
  ASSERT_TRUE(ready(1)) << console();
  EXPECT_NE(console().find("FABRICA-DISK: earlier writes 0"), std::string::npos) << console();
  ASSERT_TRUE(act(b, "terminate", true));
  ASSERT_TRUE(settled(b, "DONE"));

  // Persistent: one VM at a time, and the next VM reads what the last one wrote.
  std::string c = boot("keeper-c", pers);
  ASSERT_TRUE(settled(c, "RUNNING")) << now.dump();
  ASSERT_TRUE(ready(1)) << console();
  EXPECT_NE(console().find("FABRICA-DISK: wrote"), std::string::npos) << console();
  EXPECT_EQ((*api.get("/api/v1/images/" + std::to_string(pers)))["state_name"], "USED_PERS");
  auto second = api.post(
      "/api/v1/vms", Json{{"name", "greedy"}, {"disks", Json::array({Json{{"image_id", pers}}})}});
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(act(c, "terminate"));  // Graceful: the guest's ACPI handler powers off.
  ASSERT_TRUE(settled(c, "DONE")) << now.dump();
  std::string d = boot("keeper-d", pers);
  ASSERT_TRUE(settled(d, "RUNNING")) << now.dump();
  ASSERT_TRUE(ready(1)) << console();
  EXPECT_NE(console().find("FABRICA-DISK: earlier writes 1"), std::string::npos) << console();
  ASSERT_TRUE(act(d, "terminate", true));
  ASSERT_TRUE(settled(d, "DONE"));
  for (int64_t image : {data, pers, kernel, initrd}) {
    EXPECT_EQ((*api.get("/api/v1/images/" + std::to_string(image)))["state_name"], "READY");
  }
}

// Runs a shell command for the test's network set-up; fails the test when it fails.
void sh(const std::string& command) {
  auto r = testing::run_command(command);
  ASSERT_EQ(r.exit_code, 0) << command << "\n" << r.output;
}

// The test's own network: a bridge with no uplink, a namespace plugged into it (10.66.0.2),
// and a veth standing in for a VLAN trunk. Removed on destruction, whatever happened.
struct IsolatedNetwork {
  IsolatedNetwork() {
    teardown();
    sh("ip link add fabt-br0 type bridge && ip link set fabt-br0 up && "
       "ip netns add fabt-ns && ip link add fabt-veth0 type veth peer name fabt-veth1 && "
       "ip link set fabt-veth1 netns fabt-ns && ip link set fabt-veth0 master fabt-br0 && "
       "ip link set fabt-veth0 up && "
       "ip netns exec fabt-ns ip addr add 10.66.0.2/24 dev fabt-veth1 && "
       "ip netns exec fabt-ns ip link set fabt-veth1 up && "
       "ip link add fabt-trunk type veth peer name fabt-trunkp && ip link set fabt-trunk up");
    // 802.1Q needs the kernel's 8021q support, which some sandboxes lack.
    vlan = testing::run_command(
               "ip link add link fabt-trunk name fabt-probe.7 type vlan id 7 && "
               "ip link del fabt-probe.7")
               .exit_code == 0;
  }
  ~IsolatedNetwork() { teardown(); }
  static void teardown() {
    testing::run_command(
        "ip netns del fabt-ns; ip link del fabt-veth0; ip link del fabt-br0; "
        "ip link del fabt-trunk.120; ip link del fabt-trunk");
  }
  bool vlan = false;
};

TEST(RealGuestE2eTest, NicsOnABridgeAndAVlanGetLeasesAndReachTheTestsNamespace) {
  IsolatedNetwork net;
  if (!net.vlan) {
    std::printf(
        "this kernel has no 802.1Q support: the VLAN NIC is left out here (the agent's "
        "VLAN handling is covered with a fake backend in hypervisor_test)\n");
  }
  OneHostCloud cloud;
  ASSERT_NO_FATAL_FAILURE(cloud.start());
  auto& api = *cloud.api;
  auto lab = api.post("/api/v1/vnets",
                      Json{{"name", "lab"},
                           {"bridge", "fabt-br0"},
                           {"mtu", 1400},
                           {"gateway", "10.66.0.1"},
                           {"dns", {"10.66.0.53"}},
                           {"ranges", Json::array({Json{{"ip", "10.66.0.10"}, {"size", 4}}})}});
  ASSERT_TRUE(lab) << lab.error().message();
  auto tenant = api.post("/api/v1/vnets",
                         Json{{"name", "tenant"},
                              {"mode", "vlan"},
                              {"phydev", "fabt-trunk"},
                              {"vlan_id", 120},
                              {"ranges", Json::array({Json{{"ip", "10.67.0.10"}, {"size", 4}}})}});
  ASSERT_TRUE(tenant) << tenant.error().message();
  std::string vlan_bridge = (*tenant)["bridge"].get<std::string>();
  auto vm = api.post("/api/v1/vms",
                     Json{{"name", "netted"},
                          {"request", {{"vcpus", 1}, {"memory_mb", 256}}},
                          {"os",
                           {{"kernel", cloud.kernel},
                            {"initrd", (cloud.work / "initrd.img").string()},
                            {"cmdline", "console=ttyS0 panic=-1"}}},
                          {"nics", net.vlan ? Json::array({Json{{"vnet_id", (*lab)["id"]}},
                                                           Json{{"vnet_id", (*tenant)["id"]}}})
                                            : Json::array({Json{{"vnet_id", (*lab)["id"]}}})}});
  ASSERT_TRUE(vm) << vm.error().message();
  EXPECT_EQ((*vm)["context"]["ETH0_IP"], "10.66.0.10");
  std::string path = "/api/v1/vms/" + std::to_string((*vm)["id"].get<int64_t>());
  Json now;
  auto settled = [&](const std::string& state) {
    return testing::eventually(
               [&] {
                 auto got = api.get(path);
                 if (got) now = *got;
                 if (got && now["state_name"].get<std::string>().ends_with("FAILURE")) return true;
                 return got && now["state_name"] == state && now["operation"].is_null();
               },
               std::chrono::seconds(180)) &&
           now["state_name"] == state;
  };
  auto console = [&] { return hypervisor::read(now["console_log"].get<std::string>()); };
  ASSERT_TRUE(settled("RUNNING")) << now.dump() << hypervisor::read(cloud.work / "agent.log");
  ASSERT_TRUE(
      testing::eventually([&] { return hypervisor::count(console(), "FABRICA-GUEST: ready") >= 1; },
                          std::chrono::seconds(120)))
      << console();
  EXPECT_NE(console().find("FABRICA-NET: eth0 10.66.0.10/24 gw 10.66.0.1 dns 10.66.0.53 mtu "
                           "1400 mac 02:00:0a:42:00:0a"),
            std::string::npos)
      << console();
  if (net.vlan) {  // The agent made the VLAN interface and its bridge.
    EXPECT_TRUE(fs::exists("/sys/class/net/fabt-trunk.120"));
    EXPECT_TRUE(fs::exists("/sys/class/net/" + vlan_bridge + "/brif/fabt-trunk.120"));
  }
  // The namespace on the same bridge reaches the guest.
  auto ping = testing::eventually(
      [] {
        return testing::run_command("ip netns exec fabt-ns busybox ping -c 1 -W 2 10.66.0.10")
                   .exit_code == 0;
      },
      std::chrono::seconds(30));
  EXPECT_TRUE(ping) << "the guest did not answer on 10.66.0.10";

  ASSERT_TRUE(api.post(path + "/actions", Json{{"action", "terminate"}, {"hard", true}}));
  ASSERT_TRUE(settled("DONE")) << now.dump();
  EXPECT_FALSE(fs::exists("/sys/class/net/" + vlan_bridge)) << "the VLAN bridge outlived its VM";
  EXPECT_FALSE(fs::exists("/sys/class/net/fabt-trunk.120"));
  EXPECT_EQ((*api.get("/api/v1/vnets/" + (*lab)["id"].dump()))["used"], 0);
}

// The vLLM appliance on a real guest: a model imported from the Hub look-alike into a local
// datastore (a raw ext4 volume), an appliance template published as the app "vllm", and
// `instantiate` with that model. In the guest the appliance's bootstrap (product code) mounts
// the volume read-only, starts the stand-in `vllm` (a test fixture that records its argv and
// speaks the OpenAI protocol) and reports READY through the agent's link-local relay; the VM
// becomes a backend of the tenant's endpoint, and the official openai client gets the
// stand-in's answer through fabrica-gateway. A poweroff takes the backend away in the same
// transaction that starts it, before the VM is POWEROFF; after DONE its token is dead.
TEST(RealGuestE2eTest, VllmApplianceRegistersItselfAndServesThroughTheGateway) {
  if (testing::node_binary().empty() ||
      !fs::exists(testing::source_dir() / "tests/gateway/node_modules/openai")) {
    GTEST_SKIP() << "node or tests/gateway/node_modules missing: run scripts/test (npm ci)";
  }
  IsolatedNetwork net;
  sh("ip addr add 10.66.0.1/24 dev fabt-br0");  // The network the gateway reaches backends on.
  testing::FakeHub hub(fs::temp_directory_path() / ("fabrica-hub-" + std::to_string(::getpid())));
  ASSERT_GT(hub.port(), 0);
  OneHostCloud cloud({"--hub-url", hub.url()});
  ASSERT_NO_FATAL_FAILURE(cloud.start());
  auto& api = *cloud.api;

  auto local = api.post("/api/v1/datastores", Json{{"name", "local"}, {"driver", "local"}});
  ASSERT_TRUE(local) << local.error().message();
  auto imported = api.post(
      "/api/v1/models", Json{{"source", "hf://acme/tiny@main"}, {"datastore_id", (*local)["id"]}});
  ASSERT_TRUE(imported) << imported.error().message();
  std::string model_path = "/api/v1/models/" + (*imported)["id"].dump();
  ASSERT_TRUE(testing::eventually([&] { return (*api.get(model_path))["state_name"] == "READY"; },
                                  std::chrono::seconds(120)))
      << api.get(model_path)->dump();

  auto lab = api.post("/api/v1/vnets",
                      Json{{"name", "lab"},
                           {"bridge", "fabt-br0"},
                           {"gateway", "10.66.0.1"},
                           {"ranges", Json::array({Json{{"ip", "10.66.0.10"}, {"size", 4}}})}});
  ASSERT_TRUE(lab) << lab.error().message();
  // The template asks for a GPU this machine lacks; instantiate's "gpus": 0 replaces it.
  auto t = api.post("/api/v1/templates",
                    Json{{"name", "vllm-appliance"},
                         {"request", {{"vcpus", 1}, {"memory_mb", 256}, {"gpus", {{"count", 1}}}}},
                         {"os",
                          {{"kernel", cloud.kernel},
                           {"initrd", (cloud.work / "initrd.img").string()},
                           {"cmdline", "console=ttyS0 panic=-1"}}},
                         {"nics", Json::array({{{"vnet_id", (*lab)["id"]}}})}});
  ASSERT_TRUE(t) << t.error().message();
  auto app = api.post("/api/v1/apps", Json{{"name", "vllm"},
                                           {"template_id", (*t)["id"]},
                                           {"appliance", "vllm"},
                                           {"publisher", "Fabrica"},
                                           {"version", "test"},
                                           {"gpus", {{"count", 1}}},
                                           {"public", true}});
  ASSERT_TRUE(app) << app.error().message();
  auto vm = api.post("/api/v1/apps/" + (*app)["id"].dump() + "/instantiate",
                     Json{{"name", "chat-0"}, {"model_id", (*imported)["id"]}, {"gpus", 0}});
  ASSERT_TRUE(vm) << vm.error().message();
  std::string path = "/api/v1/vms/" + (*vm)["id"].dump();
  std::string endpoint = "/api/v1/endpoints/" + (*vm)["endpoint_id"].dump();
  EXPECT_EQ((*api.get(endpoint))["model"], "acme/tiny");
  EXPECT_EQ((*vm)["context"].dump().find("FABRICA_BACKEND_KEY"), std::string::npos);
  Json now;
  auto console = [&] {
    return now["console_log"].is_string() ? hypervisor::read(now["console_log"].get<std::string>())
                                          : std::string();
  };
  ASSERT_TRUE(testing::eventually(
      [&] {
        auto got = api.get(path);
        if (got) now = *got;
        return got && now["guest"]["ready"] == true;
      },
      std::chrono::seconds(240)))
      << now.dump() << "\n"
      << console() << hypervisor::read(cloud.work / "agent.log");
  std::string log = console();
  std::smatch argv;
  ASSERT_TRUE(std::regex_search(log, argv, std::regex("FABRICA-VLLM-ARGV: ([^\r\n]*)"))) << log;
  EXPECT_TRUE(std::regex_search(
      std::string(argv[1]),
      std::regex("^serve /models --served-model-name acme/tiny --api-key fbk_[0-9a-f]{64} "
                 "--tensor-parallel-size 1 --host 0\\.0\\.0\\.0 --port 8000$")))
      << argv[1];
  EXPECT_EQ(now["guest"]["attributes"]["url"], "http://10.66.0.10:8000") << now.dump();
  Json backends = (*api.get(endpoint))["vm_backends"];
  ASSERT_EQ(backends.size(), 1u) << backends.dump();
  EXPECT_EQ(backends[0]["vm_id"], now["id"]);
  EXPECT_EQ(backends[0]["url"], "http://10.66.0.10:8000");

  // The guest's token (its context, printed by the test guest) reaches its own VM only.
  std::smatch token;
  ASSERT_TRUE(std::regex_search(log, token, std::regex("FABRICA_GUEST_TOKEN='(fgt_[0-9a-f_]+)'")));
  auto guest_http = cloud.daemon.http();
  auto as_guest = [&](const std::string& method, const std::string& secret, const Json& body) {
    return guest_http->request(method, "/api/v1/guest/self", body.is_null() ? "" : body.dump(),
                               {{"Authorization", "Bearer " + secret}});
  };
  auto self = as_guest("GET", token[1], nullptr);
  ASSERT_TRUE(self);
  EXPECT_EQ(self->status, 200) << self->body;
  EXPECT_EQ((*parse_json(self->body))["id"], now["id"]);
  EXPECT_EQ(self->body.find("host"), std::string::npos) << self->body;
  std::string forged = token[1];
  forged.back() = forged.back() == '0' ? '1' : '0';
  EXPECT_EQ(as_guest("GET", forged, nullptr)->status, 401);
  auto elsewhere = as_guest("PUT", token[1],
                            Json{{"ready", true}, {"attributes", {{"url", "http://10.66.0.1:9"}}}});
  EXPECT_EQ(elsewhere->status, 403) << elsewhere->body;
  EXPECT_EQ((*api.get(endpoint))["vm_backends"][0]["url"], "http://10.66.0.10:8000");

  // An end user's key and the official openai client through fabrica-gateway.
  auto key =
      api.post("/api/v1/apikeys",
               Json{{"name", "alice"}, {"endpoints", Json::array({(*api.get(endpoint))["name"]})}});
  ASSERT_TRUE(key) << key.error().message();
  fs::path gw = cloud.work / "gateway";
  fs::create_directories(gw);
  {
    client::ApiClient fresh(cloud.daemon.http(), "");
    auto login = fresh.login("admin", testing::DaemonProcess::kAdminPassword, Json::object());
    std::ofstream(gw / "token") << (*login)["token"].get<std::string>() << "\n";
  }
  testing::ChildProcess gateway(
      {testing::binary_path("fabrica-gateway"), "--server", cloud.daemon.url(), "--listen",
       "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--token-file", (gw / "token").string(),
       "--spool-dir", (gw / "spool").string(), "--name", "gw-guest", "--insecure-http",
       "--sync-interval-ms", "500"},
      (gw / "gateway.log").string());
  int port = 0;
  ASSERT_TRUE(testing::eventually([&] {
    std::smatch m;
    std::string text = gateway.log();
    if (!std::regex_search(text, m, std::regex(R"(listening on 127\.0\.0\.1:(\d+))"))) return false;
    port = std::stoi(m[1]);
    return true;
  })) << gateway.log();
  // The client from tests/gateway/node_modules, run from the test's own directory.
  fs::path call = gw / "call.cjs";
  std::ofstream(call)
      << "const {OpenAI} = require(process.env.OPENAI_MODULE);"
         "const c = new OpenAI({baseURL: process.env.BASE, apiKey: process.env.KEY, maxRetries: "
         "5});"
         "c.chat.completions.create({model: 'acme/tiny', messages: [{role: 'user', content: "
         "'hi'}]})"
         ".then(r => console.log('ANSWER: ' + r.choices[0].message.content + ' TOKENS: ' + "
         "r.usage.total_tokens), e => { console.error(e); process.exit(1); });";
  testing::CommandResult called;
  bool answered = testing::eventually(
      [&] {
        called = testing::run_command(
            "OPENAI_MODULE=" +
            (testing::source_dir() / "tests/gateway/node_modules/openai").string() +
            " BASE=http://127.0.0.1:" + std::to_string(port) + "/v1 KEY=" +
            (*key)["key"].get<std::string>() + " " + testing::node_binary() + " " + call.string());
        return called.exit_code == 0;
      },
      std::chrono::seconds(30));
  ASSERT_TRUE(answered) << called.output << gateway.log();
  EXPECT_NE(called.output.find("ANSWER: stand-in vLLM on"), std::string::npos) << called.output;
  EXPECT_NE(called.output.find("serving /models TOKENS: 16"), std::string::npos) << called.output;
  // The usage record names the VM behind the backend.
  ASSERT_TRUE(testing::eventually(
      [&] {
        auto usage = api.get("/api/v1/usage?limit=100");
        if (!usage) return false;
        for (const Json& r : (*usage)["items"]) {
          if (r.value("vm_id", int64_t{-1}) == now["id"].get<int64_t>() &&
              r["output_tokens"] == 9) {
            return true;
          }
        }
        return false;
      },
      std::chrono::seconds(30)))
      << api.get("/api/v1/usage?limit=100")->dump();

  // Poweroff: the backend goes in the transaction that starts the shutdown.
  ASSERT_TRUE(api.post(path + "/actions", Json{{"action", "poweroff"}}));
  Json after = *api.get(path);
  EXPECT_NE(after["state_name"], "POWEROFF");                 // The guest is still shutting down...
  EXPECT_EQ((*api.get(endpoint))["vm_backends"].size(), 0u);  // ...and already no backend.
  EXPECT_EQ(after["guest"]["ready"], false);
  ASSERT_TRUE(testing::eventually([&] { return (*api.get(path))["state_name"] == "POWEROFF"; },
                                  std::chrono::seconds(120)));
  auto late = as_guest("PUT", token[1],
                       Json{{"ready", true}, {"attributes", {{"url", "http://10.66.0.10:8000"}}}});
  EXPECT_EQ(late->status, 409) << late->body;  // Not RUNNING: it cannot claim to serve.
  ASSERT_TRUE(api.post(path + "/actions", Json{{"action", "terminate"}, {"hard", true}}));
  ASSERT_TRUE(testing::eventually([&] { return (*api.get(path))["state_name"] == "DONE"; },
                                  std::chrono::seconds(120)));
  EXPECT_EQ(as_guest("GET", token[1], nullptr)->status, 401);
  EXPECT_EQ((*api.get(endpoint))["vm_backends"].size(), 0u);
}

}  // namespace
}  // namespace fabrica
