#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "agent/discovery.h"
#include "agent/hypervisor/executor.h"
#include "client/http_client.h"
#include "core/error.h"
#include "core/json.h"

namespace fabrica::agent {

struct RunnerOptions {
  std::string server;      // "http://HOST:PORT"
  std::string join_token;  // Needed only until the host holds a credential.
  std::string state_dir = "/var/lib/fabrica-agent";
  std::string hostname;  // Defaults to the discovered hostname.
  std::chrono::seconds max_backoff{60};
  int rediscover_every = 6;  // Heartbeats between inventory re-checks.
  // Run VMs: the libvirt URI ("qemu:///system"); empty for an inventory-only agent.
  std::string libvirt_uri;
  std::string domain_type = "auto";  // kvm, qemu (TCG), or auto (kvm where /dev/kvm opens).
};

// One round of the command channel: fetches the commands waiting for the host `api`
// authenticates as, carries each out with `executor` and posts its answer. Returns how many
// there were. A lost answer is harmless: the command comes again and the journal answers it.
Result<int> answer_commands(client::ApiClient& api, hypervisor::Executor& executor);

// The agent's life: join once (keeping the host credential 0600 in state_dir), report the
// inventory, then heartbeat with CPU and memory use at the interval the server asks for,
// re-sending the inventory when it changes, backing off exponentially while the server is
// unreachable. Returns when `stop` turns true (success) or when the server refuses the
// credential (kUnauthenticated: the host was deleted or re-joined elsewhere).
class AgentRunner {
 public:
  AgentRunner(RunnerOptions options, const HardwareSource& source)
      : options_(std::move(options)), source_(source) {}
  Result<void> run(const std::atomic<bool>& stop);

 private:
  Result<std::string> credential();
  // The discovered hardware, with what runs VMs here.
  Result<inventory::HostInventory> inventory();
  // Long-polls fabricad for commands and answers each through the executor, until `stop`.
  void serve_commands(const std::string& secret, const std::atomic<bool>& stop);
  // Per-GPU utilisation, memory, temperature, power and ECC from nvidia-smi; [] without it.
  Json gpu_samples() const;
  RunnerOptions options_;
  const HardwareSource& source_;
  std::unique_ptr<hypervisor::Hypervisor> hypervisor_;
  std::unique_ptr<hypervisor::Executor> executor_;
};

}  // namespace fabrica::agent
