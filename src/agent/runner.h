#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/discovery.h"
#include "agent/guest_relay.h"
#include "agent/hypervisor/executor.h"
#include "client/http_client.h"
#include "core/error.h"
#include "core/json.h"

namespace fabrica::agent {

// A join token as `fabrica host add` prints it: the secret, then, when fabricad has a CA,
// "@sha256:" and the CA's pin (SHA-256 of its SubjectPublicKeyInfo).
struct JoinToken {
  std::string secret;
  std::string pin;
};
JoinToken parse_join_token(const std::string& text);

struct RunnerOptions {
  std::string server;      // "https://HOST:PORT" ("http://" on loopback in development)
  std::string join_token;  // Needed only until the host holds a credential.
  // CA certificates to trust (PEM). Empty: STATE_DIR/ca.pem when a pinned join saved it,
  // else the system's trust store.
  std::string ca_file;
  std::string state_dir = "/var/lib/fabrica-agent";
  std::string hostname;  // Defaults to the discovered hostname.
  std::chrono::seconds max_backoff{60};
  int rediscover_every = 6;  // Heartbeats between inventory re-checks.
  // Run VMs: the libvirt URI ("qemu:///system"); empty for an inventory-only agent.
  std::string libvirt_uri;
  std::string domain_type = "auto";  // kvm, qemu (TCG), or auto (kvm where /dev/kvm opens).
  // With libvirt: relay the guest API to the VMs' bridges at 169.254.169.254 (GuestRelay).
  bool guest_relay = true;
};

struct ChannelOptions {
  // How often the VMs' states are read from the hypervisor; a change is reported at once.
  std::chrono::milliseconds observe_every{1000};
  // A full report (CPU and memory use) at least this often, changed or not.
  std::chrono::milliseconds report_every{10000};
};

// One host's side of the command channel. Each round posts the answers of finished
// commands, fetches the commands waiting for the host and starts each new one on a thread of
// its own (a graceful shutdown waiting for its guest holds up nothing else), and reports the
// VMs' states (POST /api/v1/agent/vms) when they changed or a report is due. Answers and
// reports go out from the polling thread in order, so the control plane never sees a state
// older than an answer it already has. A lost answer is harmless: it is posted again next
// round, and a command that comes again is answered from the executor's journal.
class CommandChannel {
 public:
  CommandChannel(hypervisor::Executor& executor, ChannelOptions options = {})
      : executor_(executor), options_(options) {}
  // Stops the executor's waits and joins the commands in progress.
  ~CommandChannel();
  // One round for the host `api` authenticates as. Returns how many answers it posted plus
  // how many commands it started.
  Result<int> poll(client::ApiClient& api);
  // Sleeps up to `d`, waking early when a command finishes.
  void wait(std::chrono::milliseconds d);
  size_t in_progress();

 private:
  Result<void> report_states(client::ApiClient& api);
  hypervisor::Executor& executor_;
  ChannelOptions options_;
  std::mutex mutex_;  // Guards the three below.
  std::condition_variable finished_;
  std::map<std::string, std::thread> running_;  // Operation id -> its thread.
  std::vector<Json> answers_;                   // Finished, not yet posted.
  std::set<std::string> busy_;  // Running or answered but not posted: never started twice.
  std::string reported_;        // The states last reported.
  std::chrono::steady_clock::time_point next_observe_{}, next_report_{};
};

// The agent's life: join once (keeping the host credential 0600 in state_dir), report the
// inventory, then heartbeat with CPU and memory use at the interval the server asks for,
// re-sending the inventory when it changes, backing off exponentially while the server is
// unreachable. Returns when `stop` turns true (success) or when the server refuses the
// credential (kUnauthenticated: the host was deleted or re-joined elsewhere). When the
// heartbeat answer asks for it, fetches a new credential, saves it, and uses it from then on
// (the server retires the old one on its first use).
class AgentRunner {
 public:
  AgentRunner(RunnerOptions options, const HardwareSource& source)
      : options_(std::move(options)), source_(source) {}
  Result<void> run(const std::atomic<bool>& stop);

 private:
  Result<std::string> credential();
  // How this agent trusts fabricad (RunnerOptions::ca_file).
  crypto::TlsClientOptions client_tls() const;
  // The discovered hardware, with what runs VMs here.
  Result<inventory::HostInventory> inventory();
  // Fetches a new credential, saves it 0600 and makes it the current one.
  Result<void> rotate_credential(client::ApiClient& api);
  // The credential in use, shared by the heartbeat and command threads.
  std::string secret() const;
  void set_secret(std::string secret);
  // Polls fabricad for commands and answers each through the executor, until `stop`.
  void serve_commands(const std::atomic<bool>& stop);
  // Per-GPU utilisation, memory, temperature, power and ECC from nvidia-smi; [] without it.
  Json gpu_samples() const;
  RunnerOptions options_;
  const HardwareSource& source_;
  std::unique_ptr<hypervisor::Hypervisor> hypervisor_;
  std::unique_ptr<GuestRelay> relay_;  // Before executor_: destroyed after it.
  std::unique_ptr<hypervisor::Executor> executor_;
  mutable std::mutex secret_mutex_;
  std::string secret_;
};

}  // namespace fabrica::agent
