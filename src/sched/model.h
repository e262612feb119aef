#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "core/error.h"
#include "core/json.h"
#include "sched/expr.h"

namespace fabrica::sched {

// What a VM asks for and what it was given: the scheduler's input and output, with their
// JSON forms (the API's "request" and "allocation" objects).

// How vCPUs map to host CPUs (OpenNebula's PIN_POLICY).
enum class CpuPolicy {
  kShared,  // vCPUs float over the host's unpinned CPUs.
  kCore,    // Each vCPU pinned to its own physical core; the core's sibling threads stay idle.
  kThread,  // Each vCPU pinned to its own hardware thread; siblings filled together.
};
enum class NumaPolicy {
  kPreferred,  // Cores and memory from the NUMA nodes of the VM's devices first, then others.
  kStrict,     // Only from the nodes of the VM's devices (one node when it has none).
};
enum class GpuTopology {
  kAny,
  kSameDomain,  // All GPUs in one NVLink/NVSwitch domain.
};
enum class HostAffinity { kNone, kSameHost, kDifferentHosts };
enum class Policy {
  kPacking,    // Default: fewest free devices that fit (keeps whole boards free).
  kStriping,   // Most free devices first (spreads load).
  kLoadAware,  // Least CPU-busy host first.
  kRank,       // Highest value of the request's rank expression.
  kFirstFit,   // Lowest host id that fits: the baseline for benchmarks.
};

std::string_view cpu_policy_name(CpuPolicy p);
std::string_view numa_policy_name(NumaPolicy p);
std::string_view policy_name(Policy p);
std::string_view host_affinity_name(HostAffinity a);

inline constexpr int64_t kHugepage2M = 2048;
inline constexpr int64_t kHugepage1G = 1048576;

struct GpuRequest {
  int count = 0;
  std::string model;  // Glob over the GPU model ("H100*", "GH200"); "" = any model.
  int vendor = -1;    // With device: exact PCI ids instead of a model.
  int device = -1;
  // kAny still prefers one domain; kSameDomain refuses a host that cannot give one.
  GpuTopology topology = GpuTopology::kAny;

  // "10de:2330" when the request names PCI ids, "" otherwise.
  std::string vendor_device() const;
};

struct MigRequest {
  std::string profile;  // "1g.10gb"
  int count = 0;
};

struct VfRequest {
  std::string fabric;  // "infiniband" or "ethernet"; "" (with pf): the PF's.
  int count = 0;
  bool near_gpus = true;  // On the NUMA nodes of the VM's GPUs (when it has any).
  std::string pf;         // Only VFs of this physical function (its interface name); "" any.
  int nic = -1;           // The VM's NIC the VFs serve (an sriov vnet's lease); -1 none.
};

struct VmRequest {
  int64_t vm_id = -1;
  int64_t gid = -1;  // Affinity groups are scoped to the VM's group.
  int priority = 0;  // Higher first; FIFO (by vm_id) within a priority.
  int vcpus = 1;
  int64_t memory_mb = 1024;
  CpuPolicy cpu_policy = CpuPolicy::kShared;
  NumaPolicy numa_policy = NumaPolicy::kPreferred;
  int64_t hugepage_kb = 0;  // 0, kHugepage2M or kHugepage1G.
  GpuRequest gpus;
  std::vector<MigRequest> mig;
  std::vector<VfRequest> vfs;
  std::string requirements;
  std::string rank;
  Policy policy = Policy::kPacking;
  std::string vm_group;  // "" = none.
  HostAffinity host_affinity = HostAffinity::kNone;
  bool same_cluster = false;      // Every VM of vm_group in one cluster.
  std::vector<int64_t> clusters;  // Only these clusters ("" = any the VM may use).

  // Filled by the caller for each pass, not part of the JSON: hosts the VM's owner may use
  // (its VDC); null = every host. Shared between the VMs of one owner.
  std::shared_ptr<const std::unordered_set<int64_t>> allowed_hosts;
  std::string scope;  // How explanations name allowed_hosts ("VDC acme's hosts").

  // Compiled once by validate().
  std::shared_ptr<const Requirement> compiled_requirements;
  std::shared_ptr<const Rank> compiled_rank;

  // Checks ranges and compiles the expressions. kInvalidArgument naming the field.
  Result<void> validate();
  bool wants_devices() const { return gpus.count > 0 || !mig.empty() || !vfs.empty(); }
  // Quota amounts: vms, vcpus, memory_mb, gpu:<family>, mig:<profile>.
  std::vector<std::pair<std::string, int64_t>> quota_amounts() const;

  Json to_json() const;
  // Reads the API form; kInvalidArgument naming "<field_prefix>.<field>". Then validate().
  static Result<VmRequest> from_json(const Json& json, std::string_view field_prefix = "");
};

struct GpuAssignment {
  std::string pci_address;
  std::string uuid;
  std::string model;
  int numa_node = -1;
  std::string nvlink_domain;
};

struct MigAssignment {
  std::string uuid;
  std::string profile;
  std::string gpu_pci_address;
  std::string gpu_uuid;
};

struct VfAssignment {
  std::string pci_address;
  std::string pf_pci_address;
  std::string pf_name;
  std::string fabric;
  int numa_node = -1;
  int nic = -1;  // The VM's NIC it serves (rendered as that NIC, with its MAC and VLAN).
};

struct NumaAssignment {
  int node = -1;
  std::vector<int> cpus;  // Pinned host CPUs on this node (empty for a shared-CPU VM).
  int64_t memory_kb = 0;  // Ordinary memory, or hugepage memory when hugepages > 0.
  int64_t hugepages = 0;  // Pages of the allocation's hugepage_kb.
};

// Exactly what a placed VM holds on its host. The host agent renders it into libvirt XML.
struct Allocation {
  int64_t vm_id = -1;
  int64_t host_id = -1;
  std::string host_name;
  int64_t cluster_id = -1;
  int64_t inventory_version = 0;  // The inventory this was computed against.
  CpuPolicy cpu_policy = CpuPolicy::kShared;
  int shared_vcpus = 0;  // vCPUs floating over unpinned CPUs (kShared).
  int64_t hugepage_kb = 0;
  std::vector<NumaAssignment> numa;
  std::vector<GpuAssignment> gpus;
  std::vector<MigAssignment> mig;
  std::vector<VfAssignment> vfs;

  std::vector<int> pinned_cpus() const;
  Json to_json() const;
  static Result<Allocation> from_json(const Json& json);
};

// A GPU model's quota family: the first word ("H100 SXM5 80GB" -> "H100", "H100*" -> "H100").
std::string gpu_family(std::string_view model);

}  // namespace fabrica::sched
