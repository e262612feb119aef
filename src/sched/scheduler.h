#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "inventory/hardware.h"
#include "sched/host.h"
#include "sched/model.h"

namespace fabrica::sched {

// The outcome for one VM of a pass: where it goes, or why it cannot go anywhere now.
struct Decision {
  int64_t vm_id = -1;
  std::optional<Allocation> allocation;
  std::string explanation;  // "placed on gpu-07: ..." or "no host in ... has 8 free H100 ...".
};

// The placement engine: a pure, deterministic, in-memory model of the fleet's free capacity
// and a placer over it. No I/O; the daemon feeds it hosts and allocations and commits what it
// decides. Hosts are indexed by free whole GPUs per model, free MIG instances per profile and
// free CPU threads, so placing one VM visits only hosts with enough of what it asks for (in
// the order its policy wants) instead of every host. Not thread-safe.
class Scheduler {
 public:
  // Adds or replaces a host (its allocations are then forgotten: hold() them again).
  void set_host(const HostInfo& info, const inventory::HostInventory& inventory);
  // Schedulability, cluster, monitoring; keeps allocations.
  void update_host(const HostInfo& info);
  void remove_host(int64_t host_id);
  bool has_host(int64_t host_id) const { return slots_.contains(host_id); }
  const HostState* host(int64_t host_id) const;
  size_t host_count() const { return slots_.size(); }

  // Records an existing allocation (after a restart, or one committed elsewhere). kNotFound
  // when the host is unknown; kAborted when part of it is already held.
  Result<void> hold(const VmRequest& request, const Allocation& allocation);
  // Frees an allocation; unknown hosts are ignored.
  void release(const VmRequest& request, const Allocation& allocation);

  // Places pending VMs, highest priority first, then oldest (lowest id) first. Each placement
  // is held at once, so later VMs of the pass see it. A request shape refused only for want
  // of devices (which only shrink within a pass) is not searched again in the same pass.
  // `on_decision`, when set, sees each decision before the next VM is considered.
  using DecisionHook = std::function<void(const VmRequest&, const Decision&)>;
  std::vector<Decision> schedule(std::vector<VmRequest> pending,
                                 const DecisionHook& on_decision = {});
  // Places one VM (held at once) or explains why not.
  Decision place(const VmRequest& request);

  // Why no host can take `request` now, checking every host one by one (for tests and
  // audits; the brute-force twin of place()). nullopt when some host can.
  std::optional<std::string> prove_unplaceable(const VmRequest& request) const;

  // Share of free whole GPUs stranded on boards that can no longer take a full-board VM:
  // free GPUs on hosts where some but not all of their non-MIG GPUs are free.
  double gpu_fragmentation() const;
  int free_whole_gpus() const;

 private:
  // A host filed in an index bucket: most free ordinary memory first, then by id, so a scan
  // stops where memory runs short.
  struct Entry {
    int64_t neg_free_memory_kb;
    int64_t id;
    const HostState* host;
    bool operator<(const Entry& o) const {
      return neg_free_memory_kb != o.neg_free_memory_kb ? neg_free_memory_kb < o.neg_free_memory_kb
                                                        : id < o.id;
    }
  };
  using Bucket = std::set<Entry>;
  struct Slot {
    std::unique_ptr<HostState> state;
    Entry entry{};
    // Index keys this host is filed under now.
    std::vector<std::pair<int, int>> gpu_keys;  // (model index, free count)
    std::vector<std::pair<int, int>> mig_keys;  // (profile index, free count)
    int cpu_key = -1;
    bool cpu_gpu_host = false;
  };
  struct Model {
    std::string name;
    int vendor = 0;
    int device = 0;
    std::vector<Bucket> by_free;
  };
  struct GroupKey {
    int64_t gid;
    std::string name;
    auto operator<=>(const GroupKey&) const = default;
  };
  struct GroupState {
    std::map<int64_t, int> hosts;  // Host id -> VMs of the group there.
    std::map<int64_t, int> clusters;
  };

  void unindex(int64_t id, Slot& slot);
  void index(int64_t id, Slot& slot);
  Misfit check(const VmRequest& request, const HostState& host) const;
  // The index buckets a GPU or MIG request draws from and how many devices it needs; empty
  // for a CPU-only request.
  struct DeviceBuckets {
    std::vector<const std::vector<Bucket>*> lists;
    int need = 0;
  };
  DeviceBuckets device_buckets(const VmRequest& request) const;
  template <typename Visit>
  void visit_candidates(const VmRequest& request, Visit&& visit) const;
  using Tally = std::array<int, static_cast<size_t>(Misfit::kCount)>;
  Decision place(const VmRequest& request, Tally& tally);
  std::string explain_failure(const VmRequest& request, const Tally& tally, const HostState* best,
                              int best_count) const;
  std::string explain_placement(const VmRequest& request, const Allocation& a) const;
  std::pair<const HostState*, int> best_below(const VmRequest& request) const;
  void note_group(const VmRequest& request, const Allocation& a, int delta);

  std::map<int64_t, Slot> slots_;  // By id: first fit and brute force walk it in order.
  std::vector<Model> models_;
  std::map<std::string, int> mig_profiles_;
  std::vector<std::vector<Bucket>> mig_index_;  // [profile][free]
  std::vector<Bucket> cpu_index_[2];            // [has GPUs][free threads]
  std::map<GroupKey, GroupState> groups_;
};

}  // namespace fabrica::sched
