// fabrica template … and fabrica vm …: VM templates, VM requests, placements and explanations.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/cli.h"
#include "inventory/hardware.h"

namespace fabrica::cli {
namespace {

constexpr std::string_view kWaiting = "waiting for the scheduler";

Error bad_flag(const std::string& flag, const std::string& message) {
  return Error(ErrorCode::kInvalidArgument, message, flag);
}

Result<int64_t> parse_count(std::string_view text, const std::string& flag) {
  int64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 1) {
    return fail(bad_flag(flag, "\"" + std::string(text) + "\" is not a positive count"));
  }
  return n;
}

bool is_hex4(std::string_view s) {
  return s.size() == 4 && s.find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos;
}

// "8" (any GPU), "H100:8" (a model prefix or glob), "10de:2330:8" (PCI vendor:device).
Result<Json> parse_gpus(const std::string& text) {
  auto colon = text.rfind(':');
  std::string what = colon == std::string::npos ? "" : text.substr(0, colon);
  FAB_ASSIGN_OR_RETURN(
      int64_t count,
      parse_count(colon == std::string::npos ? text : text.substr(colon + 1), "--gpu"));
  Json gpus{{"count", count}};
  auto inner = what.find(':');
  if (inner != std::string::npos && is_hex4(what.substr(0, inner)) &&
      is_hex4(what.substr(inner + 1))) {
    gpus["vendor_device"] = what;
  } else if (!what.empty()) {
    // A bare model name is a prefix: "H100" matches "H100 SXM5 80GB".
    gpus["model"] = what.find_first_of("*?") == std::string::npos ? what + "*" : what;
  }
  return gpus;
}

// "NAME:COUNT" or "NAME" (one) into {key: NAME, count: COUNT}.
Result<Json> parse_named_count(const std::string& text, const char* key, const std::string& flag) {
  auto colon = text.rfind(':');
  Json out{{key, text.substr(0, colon)}, {"count", 1}};
  if (colon != std::string::npos) {
    FAB_ASSIGN_OR_RETURN(int64_t n, parse_count(text.substr(colon + 1), flag));
    out["count"] = n;
  }
  if (out[key].get<std::string>().empty()) {
    return fail(bad_flag(flag, "\"" + text + "\" needs a name before the count"));
  }
  return out;
}

// The flags that describe a VM, shared by `template create|update` and `vm create`. Each one
// given replaces that part of the request; the server validates the whole.
struct RequestFlags {
  std::string file;
  std::optional<int> vcpus;
  std::string memory;
  std::string gpu;
  std::string gpu_topology;
  std::vector<std::string> mig;
  std::vector<std::string> vfs;
  std::string cpu_policy;
  std::string numa_policy;
  std::string hugepages;
  std::string requirements;
  std::string rank;
  std::string policy;
  std::optional<int> priority;
  std::string vm_group;
  std::string affinity;
  bool same_cluster = false;
  std::vector<std::string> clusters;

  void add_to(CLI::App* cmd) {
    cmd->add_option("-f,--file", file, "Start from a JSON request (see docs/api/openapi.yaml)");
    cmd->add_option("--cpu", vcpus, "vCPUs");
    cmd->add_option("--memory", memory, "Memory: 128G, 512M, 1T or MiB");
    cmd->add_option("--gpu", gpu, "Whole GPUs: 8, H100:8 (model prefix or glob), 10de:2330:8");
    cmd->add_option("--gpu-topology", gpu_topology, "any or same-domain (one NVLink domain)");
    cmd->add_option("--mig", mig, "MIG slices PROFILE[:COUNT], e.g. 1g.10gb:2 (repeatable)");
    cmd->add_option("--vf", vfs, "SR-IOV NIC functions FABRIC[:COUNT]: infiniband:1, ethernet:2");
    cmd->add_option("--cpu-policy", cpu_policy, "shared, core (dedicated cores) or thread");
    cmd->add_option("--numa-policy", numa_policy, "preferred or strict");
    cmd->add_option("--hugepages", hugepages, "none, 2M or 1G");
    cmd->add_option("--requirements", requirements, "Host filter, e.g. 'CLUSTER_ID = 100'");
    cmd->add_option("--rank", rank, "Host preference (higher wins), e.g. FREE_MEMORY");
    cmd->add_option("--policy", policy, "packing, striping, load-aware, rank or first-fit");
    cmd->add_option("--priority", priority, "-1000..1000; higher is placed first");
    cmd->add_option("--vm-group", vm_group, "VM group name for affinity rules");
    cmd->add_option("--affinity", affinity, "Within the VM group: same-host or different-hosts");
    cmd->add_flag("--same-cluster", same_cluster, "Keep the VM group in one cluster");
    cmd->add_option("--cluster", clusters, "Only these clusters, id or name (repeatable)");
  }

  bool any() const {
    return !file.empty() || vcpus || !memory.empty() || !gpu.empty() || !gpu_topology.empty() ||
           !mig.empty() || !vfs.empty() || !cpu_policy.empty() || !numa_policy.empty() ||
           !hugepages.empty() || !requirements.empty() || !rank.empty() || !policy.empty() ||
           priority || !vm_group.empty() || !affinity.empty() || same_cluster || !clusters.empty();
  }

  // `base` with the flags applied.
  Result<Json> apply(client::ApiClient& api, Json base) const {
    if (!file.empty()) {
      std::ifstream in(file);
      if (!in) return fail(bad_flag("--file", "cannot read " + file));
      std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      auto json = parse_json(text);
      if (!json || !json->is_object()) {
        return fail(bad_flag("--file", file + " does not hold a JSON object"));
      }
      base = std::move(*json);
    }
    if (vcpus) base["vcpus"] = *vcpus;
    if (!memory.empty()) {
      FAB_ASSIGN_OR_RETURN(int64_t mb, parse_megabytes(memory, "--memory"));
      base["memory_mb"] = mb;
    }
    if (!gpu.empty()) {
      FAB_ASSIGN_OR_RETURN(base["gpus"], parse_gpus(gpu));
    }
    if (!gpu_topology.empty()) {
      if (!base.contains("gpus")) return fail(bad_flag("--gpu-topology", "needs --gpu"));
      base["gpus"]["topology"] = gpu_topology;
    }
    if (!mig.empty()) {
      base["mig"] = Json::array();
      for (const auto& m : mig) {
        FAB_ASSIGN_OR_RETURN(Json one, parse_named_count(m, "profile", "--mig"));
        base["mig"].push_back(std::move(one));
      }
    }
    if (!vfs.empty()) {
      base["vfs"] = Json::array();
      for (const auto& v : vfs) {
        FAB_ASSIGN_OR_RETURN(Json one, parse_named_count(v, "fabric", "--vf"));
        base["vfs"].push_back(std::move(one));
      }
    }
    auto set = [&](const char* key, const std::string& value) {
      if (!value.empty()) base[key] = value;
    };
    set("cpu_policy", cpu_policy);
    set("numa_policy", numa_policy);
    set("hugepages", hugepages);
    set("requirements", requirements);
    set("rank", rank);
    set("policy", policy);
    set("vm_group", vm_group);
    set("host_affinity", affinity);
    if (priority) base["priority"] = *priority;
    if (same_cluster) base["same_cluster"] = true;
    if (!clusters.empty()) {
      base["clusters"] = Json::array();
      for (const auto& c : clusters) {
        FAB_ASSIGN_OR_RETURN(int64_t id, resolve_cluster(api, c));
        base["clusters"].push_back(id);
      }
    }
    return base;
  }
};

// What the guest is told and how it boots: `--context NAME=VALUE` (repeatable), `--kernel`,
// `--initrd`, `--cmdline`. Applied over a base, so updates keep what is not given.
struct GuestFlags {
  std::vector<std::string> context;
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  std::string kernel_image;
  std::string initrd_image;
  std::vector<std::string> disks;
  std::vector<std::string> nics;

  void add_to(CLI::App* cmd) {
    cmd->add_option("--context", context,
                    "Guest variable NAME=VALUE on its CONTEXT CD-ROM (repeatable)");
    cmd->add_option("--kernel", kernel, "Direct kernel boot: path on the host");
    cmd->add_option("--initrd", initrd, "Initrd for --kernel: path on the host");
    cmd->add_option("--cmdline", cmdline, "Kernel command line for --kernel");
    cmd->add_option("--kernel-image", kernel_image, "Direct kernel boot: a KERNEL image");
    cmd->add_option("--initrd-image", initrd_image, "Initrd: a RAMDISK image");
    cmd->add_option("--disk", disks,
                    "A disk: an image (id or name), or size=10G[,format=raw] for a volatile "
                    "one (repeatable, vda first)");
    cmd->add_option("--nic", nics, "A NIC on a vnet: VNET or VNET:IP (repeatable)");
  }
  bool any() const {
    return !context.empty() || !kernel.empty() || !initrd.empty() || !cmdline.empty() ||
           !kernel_image.empty() || !initrd_image.empty() || !disks.empty() || !nics.empty();
  }
  static Result<Json> parse_disk(client::ApiClient& api, const std::string& text) {
    if (text.rfind("size=", 0) == 0) {
      std::string size = text.substr(5), format;
      auto comma = size.find(",format=");
      if (comma != std::string::npos) {
        format = size.substr(comma + 8);
        size = size.substr(0, comma);
      }
      FAB_ASSIGN_OR_RETURN(int64_t mb, parse_megabytes(size, "--disk"));
      Json d{{"size_mb", mb}};
      if (!format.empty()) d["format"] = format;
      return d;
    }
    FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "images", text));
    return Json{{"image_id", id}};
  }
  static Result<Json> parse_nic(client::ApiClient& api, const std::string& text) {
    auto colon = text.find(':');
    FAB_ASSIGN_OR_RETURN(int64_t vnet, resolve_vnet(api, text.substr(0, colon)));
    Json nic{{"vnet_id", vnet}};
    if (colon != std::string::npos) nic["ip"] = text.substr(colon + 1);
    return nic;
  }
  // Sets "context" and "os" in `body`, starting from `base` (a template or VM JSON, or {}).
  Result<void> apply(client::ApiClient& api, const Json& base, Json& body) const {
    Json vars = base.value("context", Json::object());
    for (const auto& kv : context) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) {
        return fail(bad_flag("--context", "\"" + kv + "\" is not NAME=VALUE"));
      }
      vars[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    body["context"] = vars;
    Json os = base.value("os", Json::object());
    if (!kernel.empty()) os["kernel"] = kernel;
    if (!initrd.empty()) os["initrd"] = initrd;
    if (!cmdline.empty()) os["cmdline"] = cmdline;
    if (!kernel_image.empty()) {
      FAB_ASSIGN_OR_RETURN(os["kernel_image_id"], resolve_id(api, "images", kernel_image));
      os.erase("kernel");
    }
    if (!initrd_image.empty()) {
      FAB_ASSIGN_OR_RETURN(os["initrd_image_id"], resolve_id(api, "images", initrd_image));
      os.erase("initrd");
    }
    body["os"] = os;
    if (!disks.empty()) {
      body["disks"] = Json::array();
      for (const auto& d : disks) {
        FAB_ASSIGN_OR_RETURN(Json disk, parse_disk(api, d));
        body["disks"].push_back(std::move(disk));
      }
    }
    if (!nics.empty()) {
      body["nics"] = Json::array();
      for (const auto& n : nics) {
        FAB_ASSIGN_OR_RETURN(Json nic, parse_nic(api, n));
        body["nics"].push_back(std::move(nic));
      }
    }
    return {};
  }
};

std::string memory_text(const Json& mb) {
  if (!mb.is_number_integer()) return "-";
  int64_t v = mb.get<int64_t>();
  if (v % 1024 == 0) return std::to_string(v / 1024) + "G";
  return std::to_string(v) + "M";
}

// "8×H100*, 2×1g.10gb, 1×infiniband": what a request asks for beyond CPU and memory.
std::string devices_text(const Json& request) {
  std::string out;
  auto add = [&](const Json& count, const std::string& what) {
    out += (out.empty() ? "" : ", ") + count.dump() + "x" + what;
  };
  if (const Json& g = request.value("gpus", Json()); g.is_object()) {
    add(g["count"], g.contains("model")           ? g["model"].get<std::string>()
                    : g.contains("vendor_device") ? g["vendor_device"].get<std::string>()
                                                  : "GPU");
  }
  for (const auto& m : request.value("mig", Json::array())) add(m["count"], to_text(m["profile"]));
  for (const auto& v : request.value("vfs", Json::array())) add(v["count"], to_text(v["fabric"]));
  return out.empty() ? "-" : out;
}

std::vector<Column> request_columns() {
  return {Column{"VCPUS", [](const Json& o) { return to_text(o["request"]["vcpus"]); }},
          Column{"MEMORY", [](const Json& o) { return memory_text(o["request"]["memory_mb"]); }},
          Column{"DEVICES", [](const Json& o) { return devices_text(o["request"]); }}};
}

// A template id, or its name within what the caller can see.
Result<int64_t> resolve_template(client::ApiClient& api, const std::string& id_or_name) {
  return resolve_id(api, "templates", id_or_name);
}

// A VM id, or the name of exactly one VM the caller can see (a DONE VM's name is free again).
Result<int64_t> resolve_vm(client::ApiClient& api, const std::string& id_or_name) {
  int64_t id = 0;
  auto [ptr, ec] = std::from_chars(id_or_name.data(), id_or_name.data() + id_or_name.size(), id);
  if (ec == std::errc() && ptr == id_or_name.data() + id_or_name.size()) return id;
  FAB_ASSIGN_OR_RETURN(Json all, list_all(api, "/api/v1/vms?limit=1000"));
  std::vector<int64_t> found, done;
  for (const auto& vm : all) {
    if (vm["name"] != id_or_name) continue;
    (vm["state_name"] == "DONE" ? done : found).push_back(vm["id"].get<int64_t>());
  }
  if (found.empty()) found = done;
  if (found.empty()) return fail(ErrorCode::kNotFound, "VM \"" + id_or_name + "\" not found");
  if (found.size() > 1) {
    return fail(ErrorCode::kInvalidArgument,
                std::to_string(found.size()) + " VMs are named \"" + id_or_name + "\"; give the id",
                "vm");
  }
  return found[0];
}

// Polls VM `id` until the scheduler has ruled on it and, on a host that runs VMs, until its
// deploy and boot are done. Succeeds once it holds its devices with no operation in flight
// (ALLOCATED, or RUNNING); fails with the scheduler's explanation if it stays PENDING (it is
// still queued and may be placed later), or with the hypervisor's message on a failure.
Result<Json> wait_for_placement(client::ApiClient& api, int64_t id, int timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  Json vm;
  std::string said;
  while (true) {
    FAB_ASSIGN_OR_RETURN(vm, api.get("/api/v1/vms/" + std::to_string(id)));
    std::string state = to_text(vm["state_name"]);
    if (state.ends_with("FAILURE")) {
      return fail(ErrorCode::kUnavailable, "VM " + std::to_string(id) + " is " + state + ": " +
                                               to_text(vm["error"]) + " (fabrica vm recover " +
                                               std::to_string(id) + " --retry tries again)");
    }
    // Placed; on a host that runs VMs, also deployed and booted.
    if (vm["allocation"].is_object() && vm["operation"].is_null()) return vm;
    if (vm["allocation"].is_object()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return fail(ErrorCode::kUnavailable, "VM " + std::to_string(id) + " is still " + state +
                                                 " on " + to_text(vm["host_name"]));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    // Not placed yet: it may fit as soon as something is freed, so --wait waits its whole
    // --timeout, saying once why the VM waits.
    std::string why = to_text(vm["explanation"]);
    if (why != kWaiting && why != said) {
      std::cerr << "VM " << id << " is PENDING: " << why << "; waiting up to " << timeout_s << " s"
                << std::endl;
      said = why;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return fail(ErrorCode::kUnavailable, "VM " + std::to_string(id) + " is still PENDING (" +
                                           to_text(vm["explanation"]) +
                                           "); it stays queued until it fits or is deleted");
}

// The state a lifecycle action leaves a VM in once its operation is done ("" for any: a
// released VM may be placed at once).
std::string_view settled_state(std::string_view action) {
  static constexpr std::pair<std::string_view, std::string_view> kSettled[] = {
      {"shutdown", "DONE"},       {"terminate", "DONE"},    {"poweroff", "POWEROFF"},
      {"reboot", "RUNNING"},      {"suspend", "SUSPENDED"}, {"resume", "RUNNING"},
      {"undeploy", "UNDEPLOYED"}, {"hold", "HOLD"},
  };
  for (auto [a, state] : kSettled) {
    if (a == action) return state;
  }
  return "";
}

// Polls VM `id` after `action` until its operation is done and it is in the state the action
// leads to (a terminated VM is gone: DONE). Fails with the VM's error when it settles
// elsewhere (a guest that never shut down is RUNNING again), or after `timeout_s`. A guest
// that has not answered its power button for 10 s gets a note on stderr naming --hard.
Result<Json> wait_for_action(client::ApiClient& api, int64_t id, std::string_view action,
                             int timeout_s) {
  auto start = std::chrono::steady_clock::now();
  auto deadline = start + std::chrono::seconds(timeout_s);
  std::string_view want = settled_state(action);
  bool warned = false;
  while (true) {
    auto got = api.get("/api/v1/vms/" + std::to_string(id));
    if (!got && got.error().code() == ErrorCode::kNotFound && want == "DONE") {
      return Json{{"id", id}, {"state_name", "DONE"}};
    }
    FAB_ASSIGN_OR_RETURN(Json vm, std::move(got));
    std::string state = to_text(vm["state_name"]);
    bool busy = !vm["operation"].is_null();
    if (state.ends_with("FAILURE")) {
      return fail(ErrorCode::kUnavailable, "VM " + std::to_string(id) + " is " + state + ": " +
                                               to_text(vm["error"]) + " (fabrica vm recover " +
                                               std::to_string(id) + " --retry tries again)");
    }
    if (!busy && (want.empty() || state == want)) return vm;
    // On a host whose agent runs no hypervisor a placed VM stays ALLOCATED: that is running.
    if (!busy && want == "RUNNING" && state == "ALLOCATED") return vm;
    // Resuming an UNDEPLOYED VM queues it: PENDING until placed, then it boots.
    bool queued = want == "RUNNING" && (state == "PENDING" || state == "PROLOG");
    if (!busy && !queued) {
      std::string error = to_text(vm["error"]);
      return fail(ErrorCode::kFailedPrecondition,
                  "VM " + std::to_string(id) + " is " + state + ", not " + std::string(want) +
                      (error.empty() || error == "-" ? "" : ": " + error),
                  "state");
    }
    auto now = std::chrono::steady_clock::now();
    if (!warned && state.starts_with("SHUTDOWN") && now - start >= std::chrono::seconds(10)) {
      std::cerr << "VM " << id << " is " << state
                << ": the guest has not answered its ACPI power button in 10 s (the agent "
                   "presses it again every 5 s and gives up after 120 s); `fabrica vm "
                << (action == "shutdown" ? "terminate" : std::string(action)) << " --hard " << id
                << "` stops it at once" << std::endl;
      warned = true;
    }
    if (now >= deadline) {
      return fail(ErrorCode::kUnavailable, "VM " + std::to_string(id) + " is still " + state +
                                               " after " + std::to_string(timeout_s) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// The names of the context variables, not their values (tokens would land on the screen;
// -o json shows them).
std::string context_names(const Json& object) {
  std::string out;
  if (!object.contains("context") || !object["context"].is_object()) return "-";
  for (auto it = object["context"].begin(); it != object["context"].end(); ++it) {
    out += (out.empty() ? "" : ", ") + it.key();
  }
  return out.empty() ? "-" : out;
}

// "running, CPU 12.5%, memory 1G (2026-11-25T10:00:00Z)": the agent's last report.
std::string monitoring_text(const Json& m) {
  if (!m.is_object()) return "-";
  char cpu[32];
  std::snprintf(cpu, sizeof cpu, "%.1f%%", m.value("cpu_percent", 0.0));
  return to_text(m["domain_state"]) + ", CPU " + cpu + ", memory " +
         memory_text(Json(m.value("memory_kb", int64_t{0}) / 1024)) + " (" + to_text(m["seen_at"]) +
         ")";
}

// The VM as the person who made it wants to see it: where it went and what it holds.
// vm disk-attach | disk-detach | disk-resize | disk-saveas.
void add_disk_commands(Context& ctx, CLI::App* vm) {
  struct Flags {
    std::string vm, disk, size, name, datastore;
    int64_t disk_id = 0;
    bool wait = false;
    int timeout = 600;
  };
  auto f = std::make_shared<Flags>();
  auto disks_path = [](int64_t id) { return "/api/v1/vms/" + std::to_string(id) + "/disks"; };
  auto done = [&ctx](const Json& v, const std::string& what) {
    if (ctx.output == Output::kJson) return print_object(ctx, v);
    std::cout << what << "; VM " << to_text(v["id"]) << " is " << to_text(v["state_name"])
              << " (changes apply at its next resume)" << std::endl;
  };

  auto* attach = vm->add_subcommand(
      "disk-attach", "Attach a disk to a stopped (POWEROFF, UNDEPLOYED, PENDING, HOLD) VM");
  attach->add_option("vm", f->vm, "VM id or name")->required();
  attach->add_option("--disk", f->disk, "An image (id or name), or size=10G[,format=raw]")
      ->required();
  attach->callback([&ctx, f, disks_path, done] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, f->vm));
      FAB_ASSIGN_OR_RETURN(Json disk, GuestFlags::parse_disk(api, f->disk));
      FAB_ASSIGN_OR_RETURN(Json v, api.post(disks_path(id), disk));
      const Json& added = v["disks"].back();
      done(v, "Disk " + to_text(added["disk_id"]) + " attached as " + to_text(added["target"]));
      return {};
    });
  });

  auto* detach = vm->add_subcommand("disk-detach", "Detach a disk from a stopped VM");
  detach->add_option("vm", f->vm, "VM id or name")->required();
  detach->add_option("disk_id", f->disk_id, "The disk's ID (vm show lists them)")->required();
  detach->callback([&ctx, f, disks_path, done] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, f->vm));
      FAB_ASSIGN_OR_RETURN(Json v, api.del(disks_path(id) + "/" + std::to_string(f->disk_id)));
      done(v, "Disk " + std::to_string(f->disk_id) + " detached");
      return {};
    });
  });

  auto* grow = vm->add_subcommand("disk-resize", "Grow a disk of a stopped VM (never shrinks)");
  grow->add_option("vm", f->vm, "VM id or name")->required();
  grow->add_option("disk_id", f->disk_id, "The disk's ID")->required();
  grow->add_option("size", f->size, "The new size: 20G, 512M or MiB")->required();
  grow->callback([&ctx, f, disks_path, done] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, f->vm));
      FAB_ASSIGN_OR_RETURN(int64_t mb, parse_megabytes(f->size, "size"));
      FAB_ASSIGN_OR_RETURN(Json v,
                           api.post(disks_path(id) + "/" + std::to_string(f->disk_id) + "/resize",
                                    Json{{"size_mb", mb}}));
      done(v, "Disk " + std::to_string(f->disk_id) + " grows to " + memory_text(mb));
      return {};
    });
  });

  auto* saveas = vm->add_subcommand(
      "disk-saveas", "Save a POWEROFF VM's disk as a new image (written by its host)");
  saveas->add_option("vm", f->vm, "VM id or name")->required();
  saveas->add_option("disk_id", f->disk_id, "The disk's ID")->required();
  saveas->add_option("name", f->name, "The new image's name")->required();
  saveas->add_option("--datastore", f->datastore,
                     "A shared image datastore the host mounts (default: the disk image's)");
  saveas->add_flag("--wait", f->wait, "Wait until the image is READY (or ERROR)");
  saveas->add_option("--timeout", f->timeout, "Seconds --wait waits at most (default 600)");
  saveas->callback([&ctx, f, disks_path] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, f->vm));
      Json body{{"name", f->name}};
      if (!f->datastore.empty()) {
        FAB_ASSIGN_OR_RETURN(body["datastore_id"], resolve_datastore(api, f->datastore));
      }
      FAB_ASSIGN_OR_RETURN(
          Json r, api.post(disks_path(id) + "/" + std::to_string(f->disk_id) + "/saveas", body));
      if (f->wait) {
        std::string image = "/api/v1/images/" + to_text(r["image"]["id"]);
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(f->timeout);
        while (r["image"]["state_name"] == "LOCKED") {
          if (std::chrono::steady_clock::now() > deadline) {
            return fail(ErrorCode::kDeadlineExceeded, "image " + to_text(r["image"]["id"]) +
                                                          " is still LOCKED after " +
                                                          std::to_string(f->timeout) + " s");
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(250));
          FAB_ASSIGN_OR_RETURN(r["image"], api.get(image));
        }
        FAB_ASSIGN_OR_RETURN(r["vm"], api.get("/api/v1/vms/" + std::to_string(id)));
        if (ctx.output == Output::kJson) return print_object(ctx, r), Result<void>{};
        std::cout << "Image " << to_text(r["image"]["id"]) << " (" << f->name << ") is "
                  << to_text(r["image"]["state_name"]);
        if (r["image"]["state_name"] == "ERROR") std::cout << ": " << to_text(r["image"]["error"]);
        std::cout << "; VM " << id << " is " << to_text(r["vm"]["state_name"]) << std::endl;
        if (r["image"]["state_name"] != "READY") {
          return fail(ErrorCode::kFailedPrecondition, "the disk was not saved");
        }
        return {};
      }
      if (ctx.output == Output::kJson) return print_object(ctx, r), Result<void>{};
      std::cout << "Image " << to_text(r["image"]["id"]) << " (" << f->name
                << ") is LOCKED while the host copies disk " << f->disk_id << "; VM " << id
                << " is " << to_text(r["vm"]["state_name"]) << " until it is done" << std::endl;
      return {};
    });
  });
}

void print_vm(const Context& ctx, const Json& vm) {
  if (ctx.output == Output::kJson) {
    print_object(ctx, vm);
    return;
  }
  print_fields(
      {{"ID", to_text(vm["id"])},
       {"NAME", to_text(vm["name"])},
       {"GROUP", to_text(vm["gid"])},
       {"STATE", to_text(vm["state_name"])},
       {"HOST", to_text(vm["host_name"])},
       {"TEMPLATE", to_text(vm["template_id"])},
       {"VCPUS", to_text(vm["request"]["vcpus"])},
       {"MEMORY", memory_text(vm["request"]["memory_mb"])},
       {"DEVICES", devices_text(vm["request"])},
       {"CONTEXT", context_names(vm)},
       {"KERNEL", vm.contains("os") ? to_text(vm["os"]["kernel"]) : "-"},
       {"CREATED", to_text(vm["created_at"])},
       {"PLACED", to_text(vm["placed_at"])},
       {"DOMAIN", vm["operation"].is_null() && vm["console_log"] == ""
                      ? "-"
                      : "fabrica-vm-" + to_text(vm["id"])},
       {"OPERATION", vm["operation"].is_object() ? to_text(vm["operation"]["action"]) + " (" +
                                                       to_text(vm["operation"]["id"]) + ")"
                                                 : "-"},
       {"ERROR", to_text(vm.value("error", Json("")))},
       {"CONSOLE LOG", to_text(vm.value("console_log", Json("")))},
       {"MONITORING", monitoring_text(vm.value("monitoring", Json()))},
       {"EXPLANATION", to_text(vm["explanation"])}});
  if (vm.contains("disks") && !vm["disks"].empty()) {
    std::cout << "\nDISKS\n";
    print_list(ctx, vm["disks"],
               {field("ID", "disk_id"),
                field("TARGET", "target"),
                {"IMAGE",
                 [](const Json& d) {
                   return d.value("volatile", false)
                              ? std::string("volatile")
                              : to_text(d["image_name"]) + " (" + to_text(d["image_id"]) + ")";
                 }},
                field("TYPE", "type"),
                field("FORMAT", "format"),
                {"SIZE",
                 [](const Json& d) {
                   return d.contains("size_mb") ? memory_text(d["size_mb"]) : std::string("-");
                 }},
                {"PERSISTENT", [](const Json& d) {
                   return std::string(d.value("persistent", false) ? "yes" : "no");
                 }}});
  }
  if (vm.contains("nics") && !vm["nics"].empty()) {
    std::cout << "\nNICS\n";
    print_list(ctx, vm["nics"],
               {field("ID", "nic_id"), field("VNET", "vnet_name"), field("IP", "ip"),
                field("MAC", "mac"), field("BRIDGE", "bridge"), field("MODE", "mode")});
  }
  if (vm.contains("history") && !vm["history"].empty()) {
    std::cout << "\nHISTORY\n";
    print_list(ctx, vm["history"],
               {field("HOST", "host_name"), field("START", "start"), field("END", "end"),
                field("REASON", "reason")});
  }
  const Json& a = vm["allocation"];
  if (!a.is_object()) return;
  std::cout << "\nCPU: " << to_text(a["cpu_policy"]);
  if (a["cpu_policy"] == "shared") {
    std::cout << ", " << a["shared_vcpus"] << " shared vCPUs";
  } else {
    std::cout << ", pinned to "
              << inventory::format_cpu_list(a["pinned_cpus"].get<std::vector<int>>());
  }
  std::cout << "; hugepages " << to_text(a["hugepages"]) << "\n\nNUMA\n";
  print_list(ctx, a["numa"],
             {field("NODE", "node"),
              Column{"CPUS",
                     [](const Json& n) {
                       auto cpus = n["cpus"].get<std::vector<int>>();
                       return cpus.empty() ? std::string("-") : inventory::format_cpu_list(cpus);
                     }},
              Column{"MEMORY",
                     [](const Json& n) {
                       return memory_text(Json(n["memory_kb"].get<int64_t>() / 1024));
                     }},
              field("HUGEPAGES", "hugepages")});
  if (!a["gpus"].empty()) {
    std::cout << "\nGPUS\n";
    print_list(ctx, a["gpus"],
               {field("PCI", "pci_address"), field("MODEL", "model"), field("NUMA", "numa_node"),
                field("NVLINK", "nvlink_domain"), field("UUID", "uuid")});
  }
  if (!a["mig"].empty()) {
    std::cout << "\nMIG\n";
    print_list(
        ctx, a["mig"],
        {field("PROFILE", "profile"), field("GPU", "gpu_pci_address"), field("UUID", "uuid")});
  }
  if (!a["vfs"].empty()) {
    std::cout << "\nVFS\n";
    print_list(ctx, a["vfs"],
               {field("PCI", "pci_address"), field("FABRIC", "fabric"), field("PF", "pf_name"),
                field("NUMA", "numa_node")});
  }
}

// Prints a VM just created, waiting for its placement first with --wait.
Result<void> report_created(Context& ctx, client::ApiClient& api, const Json& vm, bool wait,
                            int timeout_s) {
  int64_t id = vm["id"].get<int64_t>();
  if (wait) {
    FAB_ASSIGN_OR_RETURN(Json placed, wait_for_placement(api, id, timeout_s));
    print_vm(ctx, placed);
    return {};
  }
  if (ctx.output == Output::kJson) {
    print_object(ctx, vm);
  } else {
    std::cout << "VM " << id << " (" << to_text(vm["name"])
              << ") created, PENDING; see `fabrica vm show " << id << "`" << std::endl;
  }
  return {};
}

Result<void> set_gid(client::ApiClient& api, const std::string& group, Json& body) {
  if (group.empty()) return {};
  FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", group));
  body["gid"] = gid;
  return {};
}

}  // namespace

void add_template_commands(CLI::App& app, Context& ctx) {
  auto* tmpl = app.add_subcommand("template", "VM templates: reusable VM shapes");
  tmpl->require_subcommand(1);

  auto flags = std::make_shared<RequestFlags>();
  auto guest = std::make_shared<GuestFlags>();
  auto name = std::make_shared<std::string>();
  auto description = std::make_shared<std::optional<std::string>>();
  auto group = std::make_shared<std::string>();
  auto* create = tmpl->add_subcommand("create", "Create a template");
  create->add_option("name", *name, "Template name")->required();
  create->add_option("--description", *description, "What it is for");
  create->add_option("--group", *group, "Owning group (default: yours)");
  flags->add_to(create);
  guest->add_to(create);
  create->callback([&ctx, flags, guest, name, description, group] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json request, flags->apply(api, Json::object()));
      Json body{{"name", *name}, {"request", request}};
      FAB_TRY(guest->apply(api, Json::object(), body));
      if (*description) body["description"] = **description;
      FAB_TRY(set_gid(api, *group, body));
      FAB_ASSIGN_OR_RETURN(Json t, api.post("/api/v1/templates", body));
      if (ctx.output == Output::kJson) return print_object(ctx, t), Result<void>{};
      std::cout << "Template " << t["id"] << " (" << *name << ") created" << std::endl;
      return {};
    });
  });

  tmpl->add_subcommand("list", "List the templates you can see")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json all, list_all(api, "/api/v1/templates?limit=1000"));
      std::vector<Column> columns{field("ID", "id"), field("NAME", "name"), field("GROUP", "gid")};
      for (auto& c : request_columns()) columns.push_back(std::move(c));
      columns.push_back(field("DESCRIPTION", "description"));
      print_list(ctx, all, columns);
      return {};
    });
  });

  auto target = std::make_shared<std::string>();
  auto* show = tmpl->add_subcommand("show", "Show a template");
  show->add_option("template", *target, "Template id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_template(api, *target));
      FAB_ASSIGN_OR_RETURN(Json t, api.get("/api/v1/templates/" + std::to_string(id)));
      if (ctx.output == Output::kJson) return print_object(ctx, t), Result<void>{};
      const Json& r = t["request"];
      print_fields({{"ID", to_text(t["id"])},
                    {"NAME", to_text(t["name"])},
                    {"OWNER", to_text(t["uid"])},
                    {"GROUP", to_text(t["gid"])},
                    {"PERMISSIONS", to_text(t["permissions"])},
                    {"DESCRIPTION", to_text(t["description"])},
                    {"VCPUS", to_text(r["vcpus"])},
                    {"MEMORY", memory_text(r["memory_mb"])},
                    {"DEVICES", devices_text(r)},
                    {"CPU POLICY", to_text(r["cpu_policy"])},
                    {"NUMA POLICY", to_text(r["numa_policy"])},
                    {"HUGEPAGES", to_text(r["hugepages"])},
                    {"PLACEMENT", to_text(r["policy"])},
                    {"REQUIREMENTS", to_text(r["requirements"])},
                    {"RANK", to_text(r["rank"])},
                    {"VM GROUP", r.contains("vm_group") ? to_text(r["vm_group"]) : "-"},
                    {"CONTEXT", context_names(t)},
                    {"KERNEL", t.contains("os") ? to_text(t["os"]["kernel"]) : "-"},
                    {"INITRD", t.contains("os") ? to_text(t["os"]["initrd"]) : "-"},
                    {"CMDLINE", t.contains("os") ? to_text(t["os"]["cmdline"]) : "-"},
                    {"UPDATED", to_text(t["updated_at"])}});
      return {};
    });
  });

  auto* update = tmpl->add_subcommand(
      "update", "Change a template's description or request; flags not given keep their value");
  update->add_option("template", *target, "Template id or name")->required();
  update->add_option("--description", *description, "What it is for");
  flags->add_to(update);
  guest->add_to(update);
  update->callback([&ctx, flags, guest, target, description] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_template(api, *target));
      std::string path = "/api/v1/templates/" + std::to_string(id);
      Json body = Json::object();
      if (*description) body["description"] = **description;
      if (flags->any() || guest->any()) {
        FAB_ASSIGN_OR_RETURN(Json current, api.get(path));
        if (flags->any()) {
          FAB_ASSIGN_OR_RETURN(body["request"], flags->apply(api, current["request"]));
        }
        if (guest->any()) FAB_TRY(guest->apply(api, current, body));
      }
      if (body.empty()) {
        return fail(ErrorCode::kInvalidArgument,
                    "nothing to change: give --description, request flags such as --cpu, "
                    "or guest flags such as --context");
      }
      FAB_ASSIGN_OR_RETURN(Json t, api.call("PUT", path, body));
      if (ctx.output == Output::kJson) return print_object(ctx, t), Result<void>{};
      std::cout << "Template " << id << " updated" << std::endl;
      return {};
    });
  });

  auto* del = tmpl->add_subcommand("delete", "Delete a template (its VMs keep running)");
  del->add_option("template", *target, "Template id or name")->required();
  del->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_template(api, *target));
      FAB_TRY(api.del("/api/v1/templates/" + std::to_string(id)));
      std::cout << "Template " << id << " deleted" << std::endl;
      return {};
    });
  });

  auto vm_name = std::make_shared<std::string>();
  auto wait = std::make_shared<bool>(false);
  auto timeout = std::make_shared<int>(60);
  auto* inst = tmpl->add_subcommand("instantiate", "Create a VM from a template");
  inst->add_option("template", *target, "Template id or name")->required();
  inst->add_option("--name", *vm_name, "VM name")->required();
  inst->add_option("--group", *group, "Owning group (default: yours)");
  inst->add_flag("--wait", *wait, "Wait for the scheduler and show the placement");
  inst->add_option("--timeout", *timeout, "Seconds --wait waits at most (default 60)");
  auto inst_guest = std::make_shared<GuestFlags>();
  inst_guest->add_to(inst);
  inst->callback([&ctx, target, vm_name, group, wait, timeout, inst_guest] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_template(api, *target));
      Json body{{"name", *vm_name}};
      FAB_TRY(inst_guest->apply(api, Json::object(), body));
      FAB_TRY(set_gid(api, *group, body));
      FAB_ASSIGN_OR_RETURN(
          Json vm, api.post("/api/v1/templates/" + std::to_string(id) + "/instantiate", body));
      return report_created(ctx, api, vm, *wait, *timeout);
    });
  });
}

void add_vm_commands(CLI::App& app, Context& ctx) {
  auto* vm = app.add_subcommand("vm", "Virtual machines: request, place, inspect");
  vm->require_subcommand(1);

  auto flags = std::make_shared<RequestFlags>();
  auto guest = std::make_shared<GuestFlags>();
  auto name = std::make_shared<std::string>();
  auto from = std::make_shared<std::string>();
  auto group = std::make_shared<std::string>();
  auto wait = std::make_shared<bool>(false);
  auto timeout = std::make_shared<int>(60);
  auto* create = vm->add_subcommand("create", "Request a VM from a template or from flags");
  create->add_option("name", *name, "VM name")->required();
  create->add_option("--template", *from, "Template id or name");
  create->add_option("--group", *group, "Owning group (default: yours)");
  create->add_flag("--wait", *wait, "Wait for the scheduler and show the placement");
  create->add_option("--timeout", *timeout, "Seconds --wait waits at most (default 60)");
  flags->add_to(create);
  guest->add_to(create);
  create->callback([&ctx, flags, guest, name, from, group, wait, timeout] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      Json body{{"name", *name}};
      FAB_TRY(guest->apply(api, Json::object(), body));
      if (!from->empty()) {
        if (flags->any()) {
          return fail(bad_flag("--template",
                               "give a template or request flags, not both (change the "
                               "template, or copy it with `fabrica template show -o json`)"));
        }
        FAB_ASSIGN_OR_RETURN(int64_t tid, resolve_template(api, *from));
        body["template_id"] = tid;
      } else {
        FAB_ASSIGN_OR_RETURN(body["request"], flags->apply(api, Json::object()));
      }
      FAB_TRY(set_gid(api, *group, body));
      FAB_ASSIGN_OR_RETURN(Json created, api.post("/api/v1/vms", body));
      return report_created(ctx, api, created, *wait, *timeout);
    });
  });

  auto state = std::make_shared<std::string>();
  auto host = std::make_shared<std::string>();
  auto* list = vm->add_subcommand("list", "List the VMs you can see");
  list->add_option("--state", *state, "PENDING or ALLOCATED");
  list->add_option("--host", *host, "Only VMs on this host (id or name)");
  list->add_option("--group", *group, "Only VMs of this group (id or name)");
  list->callback([&ctx, state, host, group] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      std::string target = "/api/v1/vms?limit=1000";
      if (!state->empty()) target += "&state=" + client::url_encode(*state);
      if (!host->empty()) {
        FAB_ASSIGN_OR_RETURN(int64_t hid, resolve_host(api, *host));
        target += "&host=" + std::to_string(hid);
      }
      if (!group->empty()) {
        FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", *group));
        target += "&gid=" + std::to_string(gid);
      }
      FAB_ASSIGN_OR_RETURN(Json all, list_all(api, target));
      std::vector<Column> columns{field("ID", "id"), field("NAME", "name"), field("GROUP", "gid"),
                                  field("STATE", "state_name"), field("HOST", "host_name")};
      for (auto& c : request_columns()) columns.push_back(std::move(c));
      print_list(ctx, all, columns);
      return {};
    });
  });

  auto target = std::make_shared<std::string>();
  auto* show = vm->add_subcommand("show", "Show a VM and the devices, cores and memory it holds");
  show->add_option("vm", *target, "VM id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, *target));
      FAB_ASSIGN_OR_RETURN(Json v, api.get("/api/v1/vms/" + std::to_string(id)));
      print_vm(ctx, v);
      return {};
    });
  });

  auto wait_state = std::make_shared<std::string>();
  auto wait_timeout = std::make_shared<int>(180);
  auto* wait_cmd = vm->add_subcommand("wait", "Wait until a VM reaches a state (for scripts)");
  wait_cmd->add_option("vm", *target, "VM id or name")->required();
  wait_cmd->add_option("--state", *wait_state, "RUNNING, POWEROFF, ALLOCATED, DONE...")->required();
  wait_cmd->add_option("--timeout", *wait_timeout, "Seconds to wait at most (default 180)");
  wait_cmd->callback([&ctx, target, wait_state, wait_timeout] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, *target));
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(*wait_timeout);
      while (true) {
        FAB_ASSIGN_OR_RETURN(Json v, api.get("/api/v1/vms/" + std::to_string(id)));
        std::string state = to_text(v["state_name"]);
        if (state == *wait_state && v["operation"].is_null()) {
          if (ctx.output == Output::kJson) return print_object(ctx, v), Result<void>{};
          std::cout << "VM " << id << " is " << state << std::endl;
          return {};
        }
        if (std::chrono::steady_clock::now() >= deadline) {
          return fail(ErrorCode::kUnavailable, "VM " + std::to_string(id) + " is still " + state +
                                                   " after " + std::to_string(*wait_timeout) +
                                                   " s: " + to_text(v["explanation"]));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    });
  });

  auto* explain = vm->add_subcommand("explain", "Why a VM is where it is, or why it waits");
  explain->add_option("vm", *target, "VM id or name")->required();
  explain->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, *target));
      FAB_ASSIGN_OR_RETURN(Json e, api.get("/api/v1/vms/" + std::to_string(id) + "/explain"));
      if (ctx.output == Output::kJson) return print_object(ctx, e), Result<void>{};
      std::cout << "VM " << id << " is " << to_text(e["state_name"]);
      if (e["host_name"].is_string()) std::cout << " on " << to_text(e["host_name"]);
      std::cout << ": " << to_text(e["explanation"]) << std::endl;
      return {};
    });
  });

  // Lifecycle actions: fabrica vm poweroff [--hard] VM...
  struct Verb {
    const char* name;
    const char* help;
    bool has_hard;
  };
  static constexpr Verb kVerbs[] = {
      {"shutdown", "Stop the guest (ACPI) and delete the VM", true},
      {"terminate", "Stop the guest (ACPI, or at once with --hard) and delete the VM", true},
      {"poweroff", "Stop the guest; the VM keeps its devices", true},
      {"reboot", "Reboot the guest (ACPI, or reset with --hard)", true},
      {"suspend", "Pause the guest in memory", false},
      {"resume", "Start a POWEROFF or SUSPENDED VM, or queue an UNDEPLOYED one", false},
      {"undeploy", "Stop the guest and free its host; resume places it again", true},
      {"hold", "Keep a PENDING VM from the scheduler", false},
      {"release", "Give a held VM back to the scheduler", false},
  };
  for (const auto& verb : kVerbs) {
    auto names = std::make_shared<std::vector<std::string>>();
    auto hard = std::make_shared<bool>(false);
    auto wait = std::make_shared<bool>(false);
    auto timeout = std::make_shared<int>(180);
    auto* cmd = vm->add_subcommand(verb.name, verb.help);
    cmd->add_option("vm", *names, "VM ids or names")->required();
    if (verb.has_hard) cmd->add_flag("--hard", *hard, "At once, without asking the guest");
    std::string_view settled = settled_state(verb.name);
    cmd->add_flag("--wait", *wait,
                  "Wait until the operation is done" +
                      (settled.empty() ? std::string() : " and the VM is " + std::string(settled)));
    cmd->add_option("--timeout", *timeout, "Seconds --wait waits at most (default 180)");
    std::string action = verb.name;
    cmd->callback([&ctx, names, hard, wait, timeout, action] {
      for (const auto& n : *names) {
        ctx.run([&]() -> Result<void> {
          FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
          FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, n));
          Json body{{"action", action}};
          if (*hard) body["hard"] = true;
          FAB_ASSIGN_OR_RETURN(Json v,
                               api.post("/api/v1/vms/" + std::to_string(id) + "/actions", body));
          if (*wait) {
            FAB_ASSIGN_OR_RETURN(v, wait_for_action(api, id, action, *timeout));
          }
          if (ctx.output == Output::kJson) return print_object(ctx, v), Result<void>{};
          std::cout << "VM " << id << " is " << to_text(v["state_name"]) << std::endl;
          return {};
        });
      }
    });
  }
  auto recover_names = std::make_shared<std::vector<std::string>>();
  auto how = std::make_shared<std::string>();
  auto* recover = vm->add_subcommand(
      "recover",
      "Settle a VM whose operation failed or hangs: --success, --failure, --retry "
      "or --delete");
  recover->add_option("vm", *recover_names, "VM ids or names")->required();
  auto* how_group = recover->add_option_group("how");
  for (const char* h : {"success", "failure", "retry", "delete"}) {
    how_group->add_flag_callback(std::string("--") + h, [how, h] { *how = h; });
  }
  how_group->require_option(1);
  auto recover_wait = std::make_shared<bool>(false);
  auto recover_timeout = std::make_shared<int>(180);
  recover->add_flag("--wait", *recover_wait, "Wait until the operation it starts is done");
  recover->add_option("--timeout", *recover_timeout, "Seconds --wait waits at most (default 180)");
  recover->callback([&ctx, recover_names, how, recover_wait, recover_timeout] {
    for (const auto& n : *recover_names) {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, n));
        FAB_ASSIGN_OR_RETURN(Json v, api.post("/api/v1/vms/" + std::to_string(id) + "/actions",
                                              Json{{"action", "recover"}, {"how", *how}}));
        if (*recover_wait) {
          FAB_ASSIGN_OR_RETURN(v, wait_for_action(api, id, "recover", *recover_timeout));
        }
        if (ctx.output == Output::kJson) return print_object(ctx, v), Result<void>{};
        std::cout << "VM " << id << " is " << to_text(v["state_name"]) << std::endl;
        return {};
      });
    }
  });

  auto resize_target = std::make_shared<std::string>();
  auto resize_cpu = std::make_shared<int>(0);
  auto resize_memory = std::make_shared<std::string>();
  auto* resize = vm->add_subcommand(
      "resize", "Change a stopped (POWEROFF, UNDEPLOYED, PENDING) VM's vCPUs and memory");
  resize->add_option("vm", *resize_target, "VM id or name")->required();
  resize->add_option("--cpu", *resize_cpu, "vCPUs");
  resize->add_option("--memory", *resize_memory, "Memory: 128G, 512M, 1T or MiB");
  resize->callback([&ctx, resize_target, resize_cpu, resize_memory] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, *resize_target));
      Json body = Json::object();
      if (*resize_cpu != 0) body["vcpus"] = *resize_cpu;
      if (!resize_memory->empty()) {
        FAB_ASSIGN_OR_RETURN(body["memory_mb"], parse_megabytes(*resize_memory, "--memory"));
      }
      if (body.empty()) return fail(ErrorCode::kInvalidArgument, "give --cpu, --memory or both");
      FAB_ASSIGN_OR_RETURN(Json v, api.post("/api/v1/vms/" + std::to_string(id) + "/resize", body));
      if (ctx.output == Output::kJson) return print_object(ctx, v), Result<void>{};
      std::cout << "VM " << id << " is " << to_text(v["state_name"]) << " with "
                << to_text(v["request"]["vcpus"])
                << (v["request"]["vcpus"] == 1 ? " vCPU" : " vCPUs") << " and "
                << memory_text(v["request"]["memory_mb"]) << std::endl;
      return {};
    });
  });

  add_disk_commands(ctx, vm);

  auto targets = std::make_shared<std::vector<std::string>>();
  auto* del = vm->add_subcommand("delete", "Delete VMs, freeing their devices and quota");
  del->add_option("vm", *targets, "VM ids or names")->required();
  del->callback([&ctx, targets] {
    for (const auto& t : *targets) {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vm(api, t));
        FAB_TRY(api.del("/api/v1/vms/" + std::to_string(id)));
        std::cout << "VM " << id << " deleted" << std::endl;
        return {};
      });
    }
  });
}

}  // namespace fabrica::cli
