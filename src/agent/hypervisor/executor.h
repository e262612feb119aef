#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "agent/hypervisor/domain.h"
#include "agent/hypervisor/host_network.h"
#include "agent/hypervisor/hypervisor.h"
#include "core/error.h"
#include "core/json.h"

namespace fabrica::hypervisor {

struct ExecutorOptions {
  std::string vm_root = "/var/lib/fabrica-agent/vms";  // One directory per VM.
  std::string journal;  // Completed operations (JSON lines); empty: kept in memory only.
  std::string domain_type = "auto";  // kvm, qemu (TCG), or auto: kvm where /dev/kvm opens.
  std::string arch = "x86_64";
  std::chrono::milliseconds shutdown_timeout{std::chrono::seconds(120)};
  // A graceful shutdown presses the guest's power button again this often while it waits.
  std::chrono::milliseconds acpi_repeat{std::chrono::seconds(5)};
  // false for simulated hosts: the context and disks are checked, no file is written.
  bool host_files = true;
  // Told of each bridge a VM's NIC joins (before the domain starts) and of each bridge the
  // host's last VM on it left: the agent's guest API relay follows them. Unset: nothing.
  std::function<Result<void>(const std::string& bridge)> bridge_used;
  std::function<void(const std::string& bridge)> bridge_unused;
};

// Carries out the control plane's commands on this host's hypervisor. A command is
//   {"id": "op-7", "vm_id": 12, "action": "deploy", "vm": {...}}
// with action deploy | start | shutdown | destroy | reboot | reset | suspend | resume | cleanup;
// `vm` (deploy only) holds the VM's name, request, allocation, context variables and os
// (kernel, initrd, cmdline) and disks. Disks are files in the VM's directory: a qcow2 overlay
// on a non-persistent image of a shared datastore, a copy of one on a local datastore, a
// volatile disk; persistent images and CD-ROMs are used where they are. They are made once
// (a repeated deploy or a start keeps them) and removed by cleanup. The answer is {"id", "ok",
// "error"?, "domain", "console_log"}.
//
// Exactly once per operation id: the result of every finished operation is journaled before
// it is returned, and a command whose id is in the journal gets the journaled answer without
// touching the hypervisor again (a repeated reboot does not reboot twice). Every action is
// also idempotent on its own, so a command cut short by a crash is safe to run again.
//
// Thread-safe: different VMs' commands run at once (a graceful shutdown waits for its guest
// without holding up the others); the caller runs one command per operation id at a time.
class Executor {
 public:
  // The bridges the NICs of this host's VMs are on (after a restart: what to relay again).
  std::set<std::string> bridges_in_use() const;
  Executor(Hypervisor& hypervisor, ExecutorOptions options);
  // With the host's VLAN bridges made and removed through `network` (default: ip link).
  Executor(Hypervisor& hypervisor, ExecutorOptions options, HostNetwork& network);
  Json run(const Json& command);
  // The state of every Fabrica domain on this host, for the monitoring report:
  // [{"vm_id", "domain", "state", "cpu_time_ns", "memory_kb", "last_operation"}], where
  // last_operation is the id of the VM's last finished operation here, read before the
  // state: the control plane trusts a state only when no operation finished after it.
  Result<Json> observe();
  // Makes operations that wait (a graceful shutdown) give up at once without an answer: they
  // are not journaled, so the command runs again when the agent is back.
  void stop() { stopping_ = true; }
  // kvm or qemu, as decided from the options and the machine.
  const std::string& domain_type() const { return type_; }

 private:
  Executor(Hypervisor& hypervisor, ExecutorOptions options, std::unique_ptr<HostNetwork> own,
           HostNetwork* network);
  Result<Json> execute(const std::string& action, int64_t vm_id, const Json& command);
  // Defines the VM's domain; with `write_context`, (re)writes its context CD-ROM first.
  Result<void> deploy(int64_t vm_id, const Json& vm, bool write_context);
  Result<void> cleanup(int64_t vm_id);
  // disk-saveas: the command's args {"disk_id", "dest"}; the disk is copied to dest (qcow2).
  Result<void> saveas(int64_t vm_id, const Json& command);
  // The VM's disks as files, made in `dir` where missing.
  Result<std::vector<DiskSpec>> prepare_disks(const std::string& dir, const Json& disks);
  // The VM's NICs; VLAN bridges made where missing. Records them in dir/nics.json so cleanup
  // knows which bridges the host's other VMs still use.
  // Bridged NICs (a VLAN's bridge made first), and SR-IOV NICs on the VFs `allocation` holds
  // for them.
  Result<std::vector<NicSpec>> prepare_nics(const std::string& dir, const Json& nics,
                                            const sched::Allocation& allocation);
  // Removes the VLAN bridges `nics` used that no remaining VM on this host uses.
  Result<void> release_nics(const Json& nics);
  Result<void> wait_shutoff(const std::string& domain);
  std::string vm_dir(int64_t vm_id) const;  // The VM's files on this host.
  void remember(const std::string& id, const Json& answer);

  Hypervisor& hypervisor_;
  ExecutorOptions options_;
  std::unique_ptr<HostNetwork> own_network_;  // When none was given.
  HostNetwork* network_;
  std::mutex network_mutex_;  // One VLAN bridge change at a time.
  std::string type_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;                               // Guards the journal.
  std::map<std::string, Json> journal_;            // Operation id -> answer.
  std::map<int64_t, std::string> last_operation_;  // VM id -> its last journaled operation.
};

// The body of POST /api/v1/agent/operations for an executor's answer: {id, ok, error?,
// console_log?}.
Json operation_report(const Json& answer);

}  // namespace fabrica::hypervisor
