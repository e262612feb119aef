#include "agent/hypervisor/executor.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "agent/hypervisor/context.h"
#include "agent/hypervisor/domain.h"
#include "core/operation_id.h"
#include "core/process.h"
#include "sched/model.h"

namespace fabrica::hypervisor {
namespace {

namespace fs = std::filesystem;

constexpr size_t kJournalKeep = 4096;

// kvm where hardware virtualization really works: /dev/kvm opens and, on x86, the CPU
// advertises VT-x or AMD-V. Some sandboxes offer a /dev/kvm on a CPU without either, where
// guests hang in early boot; TCG is slower there but boots.
std::string decide_type(const std::string& wanted, const std::string& arch) {
  if (wanted != "auto") return wanted;
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return "qemu";
  ::close(fd);
  if (arch != "x86_64") return "kvm";
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (!line.starts_with("flags")) continue;
    line += ' ';
    return line.find(" vmx ") != std::string::npos || line.find(" svm ") != std::string::npos
               ? "kvm"
               : "qemu";
  }
  return "qemu";
}

Error bad(const std::string& message, const std::string& field) {
  return Error(ErrorCode::kInvalidArgument, message, field);
}

// Why an operation ended without an answer: the agent is stopping.
constexpr std::string_view kStopping = "the agent is stopping";

// The whole file, or "" when it cannot be read.
std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

Executor::Executor(Hypervisor& hypervisor, ExecutorOptions options)
    : Executor(hypervisor, std::move(options), make_ip_link_network(), nullptr) {}

Executor::Executor(Hypervisor& hypervisor, ExecutorOptions options, HostNetwork& network)
    : Executor(hypervisor, std::move(options), nullptr, &network) {}

Executor::Executor(Hypervisor& hypervisor, ExecutorOptions options,
                   std::unique_ptr<HostNetwork> own, HostNetwork* network)
    : hypervisor_(hypervisor),
      options_(std::move(options)),
      own_network_(std::move(own)),
      network_(network ? network : own_network_.get()),
      type_(decide_type(options_.domain_type, options_.arch)) {
  if (options_.journal.empty()) return;
  std::ifstream in(options_.journal);
  std::string line;
  std::vector<std::pair<std::string, Json>> entries;
  while (std::getline(in, line)) {
    auto entry = parse_json(line);
    if (!entry || !entry->is_object() || !(*entry)["id"].is_string()) continue;  // Torn write.
    entries.emplace_back((*entry)["id"].get<std::string>(), *entry);
  }
  size_t first = entries.size() > kJournalKeep ? entries.size() - kJournalKeep : 0;
  for (size_t i = first; i < entries.size(); ++i) {
    journal_[entries[i].first] = entries[i].second;
    if (auto vm = operation_vm(entries[i].first)) last_operation_[*vm] = entries[i].first;
  }
}

void Executor::remember(const std::string& id, const Json& answer) {
  std::lock_guard lock(mutex_);
  journal_[id] = answer;
  if (auto vm = operation_vm(id)) last_operation_[*vm] = id;
  if (options_.journal.empty()) return;
  fs::create_directories(fs::path(options_.journal).parent_path());
  int fd = ::open(options_.journal.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  std::string line = dump_json(answer) + "\n";
  if (::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size())) ::fsync(fd);
  ::close(fd);
}

std::string Executor::vm_dir(int64_t vm_id) const {
  return options_.vm_root + "/" + std::to_string(vm_id);
}

Json Executor::run(const Json& command) {
  std::string id = command.is_object() && command.value("id", Json()).is_string()
                       ? command["id"].get<std::string>()
                       : "";
  {
    std::lock_guard lock(mutex_);
    auto known = journal_.find(id);
    if (!id.empty() && known != journal_.end()) return known->second;
  }
  Json answer{{"id", id}};
  Result<Json> done = [&]() -> Result<Json> {
    if (id.empty()) return fail(bad("is required", "id"));
    if (!command["vm_id"].is_number_integer() || command["vm_id"].get<int64_t>() < 0) {
      return fail(bad("must be a VM id", "vm_id"));
    }
    if (!command["action"].is_string()) return fail(bad("is required", "action"));
    return execute(command["action"].get<std::string>(), command["vm_id"].get<int64_t>(), command);
  }();
  if (done) {
    answer.update(*done);
    answer["ok"] = true;
  } else {
    answer["ok"] = false;
    answer["error"] = done.error().message();
    if (stopping_ && done.error().message() == kStopping) return answer;  // Not journaled.
  }
  if (!id.empty()) remember(id, answer);
  return answer;
}

Result<Json> Executor::execute(const std::string& action, int64_t vm_id, const Json& command) {
  std::string domain = domain_name(vm_id);
  std::string dir = vm_dir(vm_id);
  Json out{{"domain", domain}, {"console_log", dir + "/console.log"}};
  if (action == "deploy") {
    if (!command.contains("vm") || !command["vm"].is_object()) {
      return fail(bad("is required for deploy", "vm"));
    }
    FAB_TRY(deploy(vm_id, command["vm"], true));
  } else if (action == "start") {
    // Defined again first: a VM resized while powered off starts with its new shape.
    if (command.contains("vm") && command["vm"].is_object() &&
        command["vm"].value("allocation", Json()).is_object()) {
      FAB_TRY(deploy(vm_id, command["vm"], false));
    }
    FAB_TRY(hypervisor_.start(domain));
  } else if (action == "shutdown") {
    FAB_TRY(hypervisor_.shutdown(domain));
    FAB_TRY(wait_shutoff(domain));
  } else if (action == "destroy") {
    FAB_TRY(hypervisor_.destroy(domain));
  } else if (action == "reboot") {
    FAB_TRY(hypervisor_.reboot(domain));
  } else if (action == "reset") {
    FAB_TRY(hypervisor_.reset(domain));
  } else if (action == "suspend") {
    FAB_TRY(hypervisor_.suspend(domain));
  } else if (action == "resume") {
    FAB_TRY(hypervisor_.resume(domain));
  } else if (action == "cleanup") {
    FAB_TRY(cleanup(vm_id));
  } else if (action == "saveas") {
    FAB_TRY(saveas(vm_id, command));
  } else {
    return fail(bad("unknown action \"" + action + "\"", "action"));
  }
  return out;
}

Result<void> Executor::deploy(int64_t vm_id, const Json& vm, bool write_context) {
  FAB_ASSIGN_OR_RETURN(auto request,
                       sched::VmRequest::from_json(vm.value("request", Json()), "vm.request."));
  FAB_ASSIGN_OR_RETURN(auto allocation,
                       sched::Allocation::from_json(vm.value("allocation", Json())));
  std::string dir = vm_dir(vm_id);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot create " + dir + ": " + ec.message());
  const Json os = vm.value("os", Json::object());
  DomainOptions options{.type = type_,
                        .arch = options_.arch,
                        .vm_dir = dir,
                        .kernel = os.value("kernel", ""),
                        .initrd = os.value("initrd", ""),
                        .cmdline = os.value("cmdline", ""),
                        .context = vm.contains("context")};
  if (options.context) {
    FAB_ASSIGN_OR_RETURN(std::string sh, render_context_sh(vm["context"]));
    if (!options_.host_files) {
      options.context = false;
    } else if (write_context) {
      FAB_TRY(build_context_iso(dir, dir + "/context.iso", sh));
    } else {
      options.context = fs::exists(dir + "/context.iso");
    }
  }
  FAB_ASSIGN_OR_RETURN(options.disks, prepare_disks(dir, vm.value("disks", Json::array())));
  FAB_ASSIGN_OR_RETURN(options.nics,
                       prepare_nics(dir, vm.value("nics", Json::array()), allocation));
  FAB_ASSIGN_OR_RETURN(auto spec,
                       resolve_domain(vm_id, vm.value("name", ""), request, allocation, options));
  return hypervisor_.define(render_domain_xml(spec));
}

namespace {

// Where one of vm.disks lives on the host and how it is opened. `owned`: a file of the VM's
// own in its directory (a volatile disk, a private copy, an overlay), made at the first deploy.
struct DiskPlace {
  DiskSpec spec;
  bool owned = false;
};

Result<DiskPlace> place_disk(const std::string& dir, const Json& d) {
  if (!d.is_object() || !d["target"].is_string() || !d["disk_id"].is_number_integer()) {
    return fail(ErrorCode::kInvalidArgument, "vm.disks holds a malformed disk");
  }
  std::string format = d.value("format", "raw");
  if (format != "qcow2" && format != "raw") {
    return fail(ErrorCode::kInvalidArgument, "disk format must be qcow2 or raw");
  }
  DiskPlace place{.spec = {.format = format, .target = d["target"].get<std::string>()}};
  std::string own = dir + "/disk." + std::to_string(d["disk_id"].get<int64_t>());
  std::string source = d.value("source", "");
  if (d.value("volatile", false)) {
    place.spec.path = own;
    place.owned = true;
  } else if (source.empty() || source.front() != '/') {
    return fail(ErrorCode::kInvalidArgument, "disk " + place.spec.target + " has no image path");
  } else if (d.value("type", "") == "CDROM") {
    place.spec.path = source;
    place.spec.cdrom = true;
    place.spec.format = "raw";
  } else if (d.value("type", "") == "MODEL") {
    place.spec.path = source;  // Shared by every VM serving the model; nobody writes to it.
    place.spec.readonly = true;
    place.spec.format = "raw";
  } else if (d.value("persistent", false)) {
    place.spec.path = source;  // The VM writes to the image itself.
  } else {
    // A private copy on this host (local datastore), or a qcow2 overlay: writes stay with the
    // VM, the image is shared.
    place.spec.path = own;
    place.owned = true;
    if (d.value("driver", "shared") != "local") place.spec.format = "qcow2";
  }
  return place;
}

// The virtual size of a disk file in MiB, rounded up (qemu-img info).
Result<int64_t> virtual_mb(const std::string& path, const std::string& format) {
  FAB_ASSIGN_OR_RETURN(std::string out,
                       run_process({"qemu-img", "info", "--output=json", "-f", format, path}));
  auto info = parse_json(out);
  if (!info || !(*info)["virtual-size"].is_number_integer()) {
    return fail(ErrorCode::kInternal, "qemu-img info gave no virtual size for " + path);
  }
  return ((*info)["virtual-size"].get<int64_t>() + (1 << 20) - 1) >> 20;
}

}  // namespace

Result<std::vector<DiskSpec>> Executor::prepare_disks(const std::string& dir, const Json& disks) {
  std::vector<DiskSpec> out;
  if (!disks.is_array()) return fail(ErrorCode::kInvalidArgument, "vm.disks must be an array");
  std::set<std::string> owned;
  for (const Json& d : disks) {
    FAB_ASSIGN_OR_RETURN(DiskPlace place, place_disk(dir, d));
    out.push_back(place.spec);
    if (!place.owned || !options_.host_files) continue;
    const std::string& own = place.spec.path;
    owned.insert(fs::path(own).filename().string());
    if (!fs::exists(own)) {
      std::string source = d.value("source", "");
      if (d.value("volatile", false)) {
        FAB_TRY(run_process({"qemu-img", "create", "-q", "-f", place.spec.format, own,
                             std::to_string(d.value("size_mb", int64_t{1})) + "M"}));
      } else if (d.value("driver", "shared") == "local") {
        FAB_TRY(run_process({"cp", "--sparse=always", source, own}));
      } else {
        FAB_TRY(run_process({"qemu-img", "create", "-q", "-f", "qcow2", "-F",
                             d.value("format", "raw"), "-b", source, own}));
      }
    }
    // disk-resize: the VM's own file grows to the size asked (never shrinks).
    if (d.value("resized", false)) {
      int64_t want = d.value("size_mb", int64_t{0});
      FAB_ASSIGN_OR_RETURN(int64_t have, virtual_mb(own, place.spec.format));
      if (want > have) {
        FAB_TRY(run_process({"qemu-img", "resize", "-q", "-f", place.spec.format, own,
                             std::to_string(want) + "M"}));
      }
    }
  }
  // A disk detached while the VM was powered off leaves its file: removed now.
  std::error_code ec;
  if (options_.host_files && fs::is_directory(dir, ec)) {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      std::string name = entry.path().filename().string();
      if (name.starts_with("disk.") && !owned.contains(name)) fs::remove(entry.path(), ec);
    }
  }
  return out;
}

Result<void> Executor::saveas(int64_t vm_id, const Json& command) {
  const Json args = command.value("args", Json());
  if (!args.is_object() || !args["disk_id"].is_number_integer() || !args["dest"].is_string() ||
      args["dest"].get<std::string>().empty() || args["dest"].get<std::string>().front() != '/') {
    return fail(bad("needs disk_id and an absolute dest", "args"));
  }
  const Json vm = command.value("vm", Json::object());
  const Json disks = vm.value("disks", Json::array());
  auto disk = std::find_if(disks.begin(), disks.end(), [&](const Json& d) {
    return d.value("disk_id", int64_t{-1}) == args["disk_id"].get<int64_t>();
  });
  if (disk == disks.end()) return fail(bad("names no disk of the VM", "args.disk_id"));
  FAB_ASSIGN_OR_RETURN(DiskPlace place, place_disk(vm_dir(vm_id), *disk));
  if (!options_.host_files) return {};
  std::string dest = args["dest"].get<std::string>();
  if (!fs::exists(place.spec.path)) {
    return fail(ErrorCode::kFailedPrecondition,
                "the disk's file " + place.spec.path + " is not on this host");
  }
  if (!fs::is_directory(fs::path(dest).parent_path())) {
    return fail(ErrorCode::kFailedPrecondition, "the datastore directory " +
                                                    fs::path(dest).parent_path().string() +
                                                    " is not mounted on this host");
  }
  // One standalone qcow2: an overlay's backing chain is flattened into it.
  return run_process({"qemu-img", "convert", "-q", "-f", place.spec.format, "-O", "qcow2",
                      place.spec.path, dest})
      .map([](const std::string&) {});
}

Result<void> Executor::cleanup(int64_t vm_id) {
  std::string domain = domain_name(vm_id);
  FAB_TRY(hypervisor_.destroy(domain));
  FAB_TRY(hypervisor_.undefine(domain));
  std::string dir = vm_dir(vm_id);
  auto nics = parse_json(read_file(dir + "/nics.json"));
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot remove the VM's files: " + ec.message());
  if (nics) FAB_TRY(release_nics(*nics));
  return {};
}

Result<std::vector<NicSpec>> Executor::prepare_nics(const std::string& dir, const Json& nics,
                                                    const sched::Allocation& allocation) {
  std::vector<NicSpec> out;
  if (!nics.is_array()) return fail(ErrorCode::kInvalidArgument, "vm.nics must be an array");
  for (const Json& n : nics) {
    if (!n.is_object() || !n["mac"].is_string() || !n["bridge"].is_string()) {
      return fail(ErrorCode::kInvalidArgument, "vm.nics holds a malformed NIC");
    }
    std::string mode = n.value("mode", "bridge");
    NicSpec nic{.mac = n["mac"].get<std::string>(),
                .bridge = n["bridge"].get<std::string>(),
                .mtu = n.value("mtu", 0)};
    if (mode == "sriov") {
      int id = n.value("nic_id", -1);
      auto vf = std::find_if(allocation.vfs.begin(), allocation.vfs.end(),
                             [&](const sched::VfAssignment& v) { return v.nic == id; });
      if (vf == allocation.vfs.end()) {
        return fail(ErrorCode::kFailedPrecondition,
                    "NIC " + std::to_string(id) +
                        " is on an SR-IOV vnet but the VM holds no VF of " +
                        n.value("phydev", std::string("its physical function")) + " for it");
      }
      nic.vf_pci = vf->pci_address;
      nic.vlan_id = n.value("vlan_id", -1);
      nic.infiniband = vf->fabric == "infiniband";
      nic.bridge.clear();
      out.push_back(std::move(nic));
      continue;
    }
    if (mode == "vlan" && options_.host_files) {
      std::lock_guard lock(network_mutex_);
      FAB_TRY(network_->ensure_vlan_bridge(n.value("phydev", ""), n.value("vlan_id", 0), nic.bridge,
                                           nic.mtu));
    }
    if (options_.host_files && options_.bridge_used) FAB_TRY(options_.bridge_used(nic.bridge));
    out.push_back(std::move(nic));
  }
  if (options_.host_files && !nics.empty()) {
    std::ofstream(dir + "/nics.json") << nics.dump();
  }
  return out;
}

std::set<std::string> Executor::bridges_in_use() const {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.vm_root, ec)) {
    auto nics = parse_json(read_file((entry.path() / "nics.json").string()));
    if (!nics || !nics->is_array()) continue;
    for (const Json& n : *nics) {
      if (n.value("mode", "") != "sriov" && !n.value("bridge", "").empty()) {
        out.insert(n.value("bridge", ""));
      }
    }
  }
  return out;
}

Result<void> Executor::release_nics(const Json& nics) {
  if (!options_.host_files || !nics.is_array()) return {};
  std::lock_guard lock(network_mutex_);
  // The bridges the host's other VMs still use.
  std::set<std::string> in_use = bridges_in_use();
  for (const Json& n : nics) {
    std::string bridge = n.value("bridge", "");
    std::string mode = n.value("mode", "");
    if (bridge.empty() || mode == "sriov" || in_use.contains(bridge)) continue;
    in_use.insert(bridge);  // Once, even if two NICs named it.
    if (options_.bridge_unused) options_.bridge_unused(bridge);
    if (mode == "vlan") {
      FAB_TRY(network_->remove_vlan_bridge(n.value("phydev", ""), n.value("vlan_id", 0), bridge));
    }
  }
  return {};
}

Result<void> Executor::wait_shutoff(const std::string& domain) {
  auto now = std::chrono::steady_clock::now();
  auto deadline = now + options_.shutdown_timeout;
  // A guest that was not listening yet (its ACPI daemon starts late in its boot) misses one
  // press of the power button: it is pressed again every few seconds until the guest goes.
  auto press_again = now + options_.acpi_repeat;
  while (true) {
    FAB_ASSIGN_OR_RETURN(auto status, hypervisor_.status(domain));
    if (status.state == DomainState::kShutoff || status.state == DomainState::kMissing) return {};
    if (stopping_) return fail(ErrorCode::kUnavailable, std::string(kStopping));
    if (std::chrono::steady_clock::now() >= press_again) {
      // Best effort: a domain that went away in between is seen on the next pass.
      (void)hypervisor_.shutdown(domain);
      press_again = std::chrono::steady_clock::now() + options_.acpi_repeat;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return fail(ErrorCode::kDeadlineExceeded,
                  "the guest did not shut down within " +
                      std::to_string(options_.shutdown_timeout.count()) +
                      " ms; use the --hard variant to stop it at once");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

Result<Json> Executor::observe() {
  std::map<int64_t, std::string> last;
  {
    std::lock_guard lock(mutex_);
    last = last_operation_;
  }
  FAB_ASSIGN_OR_RETURN(auto names, hypervisor_.list());
  Json out = Json::array();
  for (const auto& name : names) {
    FAB_ASSIGN_OR_RETURN(auto status, hypervisor_.status(name));
    auto vm = operation_vm(name.substr(std::string("fabrica-vm-").size()) + "-");
    if (!vm) continue;  // Not named by us after all.
    int64_t vm_id = *vm;
    out.push_back({{"vm_id", vm_id},
                   {"domain", name},
                   {"state", domain_state_name(status.state)},
                   {"cpu_time_ns", status.cpu_time_ns},
                   {"memory_kb", status.memory_kb},
                   {"last_operation", last.contains(vm_id) ? Json(last[vm_id]) : Json()}});
  }
  return out;
}

Json operation_report(const Json& answer) {
  Json report{{"id", answer["id"]}, {"ok", answer["ok"]}};
  if (answer.contains("error")) report["error"] = answer["error"];
  if (answer.contains("console_log")) report["console_log"] = answer["console_log"];
  return report;
}

}  // namespace fabrica::hypervisor
