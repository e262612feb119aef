#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "auth/authorizer.h"
#include "auth/identity.h"
#include "core/clock.h"
#include "core/object.h"
#include "inventory/hardware.h"
#include "store/store.h"

namespace fabrica::fleet {

// Host states, with OpenNebula's numbers where they correspond.
enum class HostState : int {
  kInit = 0,
  kMonitored = 2,
  kError = 3,
  kDisabled = 4,
  kOffline = 8,
};
std::string_view host_state_name(HostState state);

inline constexpr int64_t kDefaultClusterId = 0;

struct Cluster {
  ObjectHeader header;
  Json to_api_json() const;
};

// Latest monitoring sample an agent reported.
struct Monitoring {
  int64_t timestamp = 0;
  double cpu_used_percent = 0;
  int64_t memory_used_kb = 0;
  Json gpus = Json::array();  // Per GPU: uuid, utilization, memory_used_mib, temperature_c,
                              // power_w, ecc_errors.
};

// What lists and filters need of an inventory, kept on the host record itself.
struct HostSummary {
  int cpu_threads = 0;
  int64_t memory_total_kb = 0;
  std::map<std::string, int> gpus;  // Count by model.
};
HostSummary summarize(const inventory::HostInventory& inventory);

struct Host {
  ObjectHeader header;  // name = hostname; state = HostState.
  int64_t cluster_id = kDefaultClusterId;
  HostSummary summary;
  // The full inventory lives in its own record; loaded by get_host only.
  std::optional<inventory::HostInventory> inventory;
  Monitoring monitoring;
  int64_t last_seen = 0;
  // Allocation bookkeeping, filled by the scheduler: VMs placed here and GPUs they hold.
  int allocated_vms = 0;
  std::map<std::string, int> gpus_allocated;  // Count by model.
  int64_t inventory_version = 0;              // Changes whenever the reported hardware changes.
  int64_t version = 0;

  HostState state() const { return static_cast<HostState>(header.state); }
  Json to_api_json() const;
  // What `host list` shows: no inventory detail, GPU counts by model, CPU and memory use.
  Json to_summary_json() const;
};

struct JoinToken {
  std::string secret;  // "fjt_...", shown once.
  int64_t id = -1;
  int64_t expires_at = 0;
  int uses = 1;
};

struct HostFilter {
  std::optional<std::string> gpu_model;  // Substring of the GPU model ("H100").
  std::optional<int> free_gpus;          // At least this many GPUs not allocated.
  std::optional<int64_t> cluster_id;
  std::optional<HostState> state;
  // One page: hosts with ids above `after_id`, at most `limit` of them.
  int64_t after_id = -1;
  size_t limit = SIZE_MAX;
};

struct FleetOptions {
  std::chrono::seconds join_token_lifetime{std::chrono::hours(24)};
  std::chrono::seconds offline_after{std::chrono::seconds(30)};
  std::chrono::seconds heartbeat_interval{std::chrono::seconds(10)};
};

// Hosts, clusters, join tokens and agent credentials: the domain service behind /hosts,
// /clusters and /agent. Hosts and clusters are infrastructure: the administrators and callers
// an ACL grants (HOST, CLUSTER; %cluster works for hosts) may see or change them. Thread-safe.
class Fleet {
 public:
  Fleet(store::Store& store, auth::Authorizer& authorizer, const Clock& clock,
        FleetOptions options = {})
      : store_(store), authorizer_(authorizer), clock_(clock), options_(options) {}

  // Creates the default cluster (id 0) when missing.
  Result<void> bootstrap();

  Result<Cluster> create_cluster(const auth::Caller& caller, const std::string& name);
  Result<std::vector<Cluster>> list_clusters(const auth::Caller& caller);
  Result<Cluster> get_cluster(const auth::Caller& caller, int64_t id);
  // kFailedPrecondition while it holds hosts or for the default cluster.
  Result<void> delete_cluster(const auth::Caller& caller, int64_t id);

  // Registers host `name` in INIT and returns a join token for it.
  Result<std::pair<Host, JoinToken>> add_host(const auth::Caller& caller, const std::string& name,
                                              int64_t cluster_id);
  // A token good for `count` new hosts joining `cluster_id` under their own hostnames.
  Result<JoinToken> create_fleet_token(const auth::Caller& caller, int64_t cluster_id, int count);
  // A new token for an existing host (lost or re-imaged); its old credential stops working
  // when the host re-joins.
  Result<JoinToken> rejoin_token(const auth::Caller& caller, int64_t host_id);
  // Join tokens not yet used up, expired or revoked, oldest first (never their secrets):
  // {"id", "cluster_id", "host_id", "remaining", "expires_at", "created_by"}. Infrastructure
  // administrators only (kPermissionDenied).
  Result<auth::Page<Json>> list_join_tokens(const auth::Caller& caller, int64_t after_id,
                                            size_t limit);
  // A revoked token joins nothing more; hosts that joined with it keep their credentials.
  // kNotFound when there is no such token (or it is spent).
  Result<void> revoke_join_token(const auth::Caller& caller, int64_t id);
  // Deletes join tokens that are used up or expired. Returns how many went.
  Result<int> prune_join_tokens();
  Result<std::vector<Host>> list_hosts(const auth::Caller& caller, const HostFilter& filter);
  // What a placement engine needs of a host.
  struct HostBrief {
    int64_t id = 0;
    std::string name;
    int64_t cluster_id = 0;
    HostState state = HostState::kInit;
    double cpu_used_percent = 0;
    int64_t inventory_version = 0;
  };
  struct HostChanges {
    uint64_t seq = 0;  // Pass as `since` next time.
    std::vector<HostBrief> changed;
    std::vector<int64_t> removed;
  };
  // The scheduler's view of the fleet, read incrementally from the index: hosts whose record
  // was committed after `since` (0: every host) and hosts deleted after it. A host whose
  // heartbeat is not flushed yet counts as MONITORED at once when its record says INIT,
  // OFFLINE or ERROR (as lists show it). Not filtered by permissions.
  Result<HostChanges> host_changes(uint64_t since);
  // The same list as a JSON array of host summaries, rendered from the index: hosts without a
  // pending heartbeat reuse the text rendered at their last committed change.
  struct HostsJson {
    std::string items;
    std::optional<int64_t> next_cursor;  // Set when the page is full and more hosts may follow.
  };
  Result<HostsJson> list_hosts_json(const auth::Caller& caller, const HostFilter& filter);
  Result<Host> get_host(const auth::Caller& caller, int64_t id);
  Result<Host> set_enabled(const auth::Caller& caller, int64_t id, bool enabled);
  Result<Host> move_host(const auth::Caller& caller, int64_t id, int64_t cluster_id);
  // kFailedPrecondition while VMs are allocated unless `force` (superuser only).
  Result<void> delete_host(const auth::Caller& caller, int64_t id, bool force);

  struct Joined {
    Host host;
    std::string credential;  // "fah_...", shown once; the agent keeps it 0600.
  };
  // Consumes one use of a join token: kUnauthenticated when unknown, expired or used up.
  Result<Joined> join(std::string_view token, const std::string& hostname,
                      const inventory::HostInventory& inventory);
  // The host a credential belongs to; kUnauthenticated otherwise.
  Result<int64_t> authenticate_agent(std::string_view credential);
  struct AgentCredential {
    int64_t host_id = -1;
    // An administrator asked for a new credential (request_credential_rotation): the
    // heartbeat answer tells the agent, which calls rotate_credential.
    bool rotate = false;
  };
  // As authenticate_agent. The first use of a credential that rotate_credential issued
  // retires the one it replaces.
  Result<AgentCredential> authenticate_credential(std::string_view credential);
  // Asks the host's agent for a credential rotation without downtime: its next heartbeat
  // answer says so, it fetches a new credential (rotate_credential) and saves it, and its
  // first request with the new one retires the old one. Needs ADMIN on the host.
  Result<void> request_credential_rotation(const auth::Caller& caller, int64_t host_id);
  // A new credential for the host that presents `credential`. Both work until the new one is
  // first used; one issued earlier and never used stops working now. kUnauthenticated as
  // authenticate_agent.
  Result<std::string> rotate_credential(std::string_view credential);
  Result<Host> report_inventory(int64_t host_id, const inventory::HostInventory& inventory);
  // Records a heartbeat in memory at once (reads see it immediately); flush() makes it
  // durable. Monitoring is soft state: a crash loses at most the last second of it.
  Result<void> heartbeat(int64_t host_id, const Monitoring& monitoring);
  // Writes pending heartbeats in one transaction. Called every second and at shutdown.
  Result<void> flush();
  // Flushes, then marks hosts silent for longer than offline_after OFFLINE; returns their ids.
  Result<std::vector<int64_t>> sweep_offline();

  const FleetOptions& options() const { return options_; }

  // For the scheduler's commits: runs `work` in one transaction whose host changes reach the
  // host index once committed, and, inside it, adds to a host's allocation counters.
  Result<void> write_with_hosts(const store::Store::Work& work) { return write(work); }
  Result<void> count_allocation(store::Transaction& tx, int64_t host_id, int vms,
                                const std::map<std::string, int>& gpus);

 private:
  Result<JoinToken> issue_token(store::Transaction& tx, int64_t cluster_id,
                                std::optional<int64_t> host_id, int uses, int64_t creator);
  Result<Host> load_host(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                         Right right);
  Result<Host> update_host(store::Transaction& tx, Host host);
  // Returns whether the stored inventory changed.
  Result<bool> put_inventory(store::Transaction& tx, int64_t host_id,
                             const inventory::HostInventory& inventory);
  Result<void> remove_credentials(store::Transaction& tx, int64_t host_id);
  // Inserts a new credential for `host`; body extras (e.g. "replaces") go in `body`.
  Result<std::string> insert_credential(store::Transaction& tx, const Host& host, Json body);
  // Every write goes through these: hosts the transaction saved or deleted reach the index
  // once it has committed (never before, never for a rolled-back transaction).
  template <typename Fn>
  auto indexed(Fn&& write) -> decltype(write());
  template <typename T, typename Fn>
  Result<T> write_value(Fn&& work);
  Result<void> write(const store::Store::Work& work);
  void index_apply(std::vector<Host>& saved, const std::vector<int64_t>& deleted);
  Result<void> load_index();
  // Calls visit(host, summary_json_or_null) for every host `caller` may see that passes
  // `filter`, with pending heartbeats overlaid (then summary_json is null). Holds the index
  // lock while visiting. Stops after `filter.limit` hosts, answering the last one's id when
  // more may follow (nullopt otherwise).
  template <typename Visit>
  Result<std::optional<int64_t>> visit_hosts(const auth::Caller& caller, const HostFilter& filter,
                                             Visit&& visit);

  // Applies a pending heartbeat to a host read from the store.
  void overlay(Host& host);
  void forget_credentials();

  struct Live {
    int64_t last_seen = 0;
    Monitoring monitoring;
  };

  store::Store& store_;
  auth::Authorizer& authorizer_;
  const Clock& clock_;
  FleetOptions options_;
  std::mutex live_mutex_;
  std::unordered_map<int64_t, Live> live_;  // Heartbeats not yet flushed.
  // Host credential hash -> host id. Entries are dropped whenever a credential is removed;
  // the epoch keeps a lookup racing with a removal from caching what was removed.
  std::mutex credentials_mutex_;
  std::unordered_map<std::string, AgentCredential> credentials_;
  std::atomic<uint64_t> credential_epoch_{0};
  // Host records (without inventory) for lists: loaded once, then written through after every
  // commit, moving forward in version only; deleted ids stay tombstoned (ids are never reused).
  // Valid while this process is the only writer of hosts.
  std::mutex index_mutex_;
  bool index_loaded_ = false;
  struct Indexed {
    Host host;
    std::string summary_json;  // host.to_summary_json(), rendered once per committed change.
    uint64_t seq = 0;          // index_seq_ when it last changed.
  };
  std::map<int64_t, Indexed> index_;
  std::map<int64_t, uint64_t> deleted_;  // Host id -> index_seq_ at its deletion.
  uint64_t index_seq_ = 0;
};

inline constexpr std::string_view kClusterType = "cluster";
inline constexpr std::string_view kHostType = "host";
inline constexpr std::string_view kInventoryType = "host_inventory";

store::Record host_record(const Host& host);
Result<Host> host_from_record(const store::Record& record);

}  // namespace fabrica::fleet
