#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "inventory/hardware.h"
#include "sched/expr.h"
#include "sched/model.h"

namespace fabrica::sched {

// Host attributes that requirement and rank expressions read.
enum class HostAttr : int {
  kId,
  kName,
  kClusterId,
  kArch,
  kCpuModel,
  kTotalCpu,
  kFreeCpu,
  kTotalMemory,
  kFreeMemory,
  kGpuModel,
  kGpuCount,
  kFreeGpus,
  kMigProfile,
  kFreeMig,
  kNvlinkDomain,
  kNicFabric,
  kNicModel,
  kNumaNodes,
  kRunningVms,
  kCpuUsage,
  kCount,
};
std::span<const AttrSpec> host_attributes();

// Why a host cannot take a VM, most basic first.
enum class Misfit : int {
  kNone,
  kNotSchedulable,
  kNotAllowed,
  kCluster,
  kAffinity,
  kRequirements,
  kGpus,
  kGpuTopology,
  kMig,
  kVfs,
  kVfTopology,
  kCpu,
  kMemory,
  kHugepages,
  kCount,
};
// "lack free cores", "fail the requirements"...
std::string_view misfit_text(Misfit misfit);

struct HostInfo {
  int64_t id = -1;
  std::string name;
  int64_t cluster_id = 0;
  bool schedulable = true;  // MONITORED and enabled.
  double cpu_usage = 0;     // Percent, from monitoring.
  int64_t inventory_version = 0;
  bool operator==(const HostInfo&) const = default;
};

// How much of a host is free, and exactly which devices. Built from the inventory; changed only
// by hold() and release(). Not thread-safe. A host keeps a small reserve of ordinary memory
// per NUMA node for its own use (kHostReserveKb, or a twentieth of the node when smaller).
class HostState final : public AttributeSource {
 public:
  static constexpr int64_t kHostReserveKb = 2LL * 1024 * 1024;

  HostState(HostInfo info, const inventory::HostInventory& inventory);

  const HostInfo& info() const { return info_; }
  void set_info(HostInfo info) { info_ = std::move(info); }

  struct Fit {
    Misfit misfit = Misfit::kNone;
    int best = 0;  // With kGpus / kGpuTopology / kMig: the most matching devices on offer.
    Allocation allocation;
  };
  // The exact devices, cores and memory this host would give `request` now (packing within
  // the host: fullest NVLink domain and NUMA node that fits), or why it cannot. When the
  // natural choice of devices leaves no room beside them, each NUMA node is tried alone. Does not
  // check the host's schedulability, cluster, VDC or requirements (the engine does).
  Fit fit(const VmRequest& request) const;

  // Marks an allocation held. kAborted naming the first device, core or amount that is
  // missing or already held (nothing changes then).
  Result<void> hold(const Allocation& allocation);
  // Frees what hold() took. REQUIRES: the allocation is held.
  void release(const Allocation& allocation);

  // Index keys.
  int free_threads() const;  // Threads neither pinned nor promised to shared vCPUs.
  // Threads kept for the VMs of the devices still free: each free GPU holds back its fair
  // share of the host's threads (a free MIG instance its share of its GPU's), so CPU-only
  // VMs cannot strand a host's GPUs without cores.
  int device_reserve(int gpus_taken = 0, int mig_taken = 0) const;
  int free_threads_for_cpu_vms() const { return free_threads() - device_reserve(); }
  bool has_gpus() const { return !gpus_.empty(); }
  // Whole GPUs free, by (model, vendor, device).
  struct ModelCount {
    std::string model;
    int vendor = 0;
    int device = 0;
    int free = 0;
    int total = 0;
  };
  std::vector<ModelCount> free_gpus_by_model() const;
  std::map<std::string, int> free_mig_by_profile() const;
  int running_vms() const { return vms_; }
  int64_t free_memory_kb() const { return free_memory_kb_; }  // Ordinary memory, all nodes.

  double number(int attr) const override;
  std::span<const std::string> strings(int attr) const override;

 private:
  struct Core {
    int node = 0;
    std::vector<int> cpus;  // Sibling threads, first thread first.
    uint32_t used = 0;      // Bit i: cpus[i] pinned.
    int free_threads() const;
  };
  struct Node {
    int id = 0;
    std::vector<int> cores;  // Indexes into cores_.
    int64_t memory_kb = 0;   // Ordinary memory usable by VMs.
    int64_t memory_used_kb = 0;
    std::map<int64_t, int64_t> hugepages;  // Size kB -> total pages.
    std::map<int64_t, int64_t> hugepages_used;
  };
  struct Mig {
    std::string profile;
    std::string uuid;
    bool held = false;
  };
  struct Gpu {
    inventory::Gpu spec;
    int domain = -1;  // Index into domains_.
    bool mig_enabled = false;
    bool held = false;
    std::vector<Mig> mig;
    int numa() const { return spec.numa_node < 0 ? 0 : spec.numa_node; }
  };
  struct Vf {
    VfAssignment spec;
    bool held = false;
  };

  // One attempt; with `only_node` >= 0 everything comes from that NUMA node (strict) or
  // that node first (preferred).
  Fit fit_on(const VmRequest& request, int only_node) const;
  Result<std::vector<int>> pick_gpus(const VmRequest& request, Fit& fit, int only_node) const;
  bool pick_mig(const VmRequest& request, Fit& fit, int only_node) const;
  bool pick_vfs(const VmRequest& request, const std::vector<int>& device_nodes, Fit& fit,
                int only_node) const;
  bool pick_cpus_and_memory(const VmRequest& request, const std::vector<int>& device_nodes,
                            Fit& fit, int only_node) const;
  std::vector<int> node_order(const VmRequest& request, const std::vector<int>& device_nodes,
                              int units) const;
  int free_units(const Node& node, CpuPolicy policy) const;
  int node_index(int id) const;
  void refresh_attributes();

  HostInfo info_;
  std::vector<Core> cores_;
  std::vector<Node> nodes_;
  std::map<int, int> core_of_cpu_;
  std::vector<Gpu> gpus_;
  std::vector<std::string> domains_;
  std::vector<Vf> vfs_;
  int total_threads_ = 0;
  int pinned_threads_ = 0;
  int shared_vcpus_ = 0;
  int vms_ = 0;
  // String attributes, fixed at construction.
  std::array<std::vector<std::string>, static_cast<size_t>(HostAttr::kCount)> strings_;
  std::vector<std::string> free_mig_profiles_;
  double total_memory_mb_ = 0;
  int64_t free_memory_kb_ = 0;
  std::string arch_;
};

}  // namespace fabrica::sched
