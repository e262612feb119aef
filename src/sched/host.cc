#include "sched/host.h"

#include <algorithm>
#include <bit>
#include <numeric>
#include <optional>
#include <set>

namespace fabrica::sched {
namespace {

constexpr AttrSpec kAttributes[] = {
    {"ID", AttrKind::kNumber, "host id"},
    {"NAME", AttrKind::kString, "host name"},
    {"CLUSTER_ID", AttrKind::kNumber, "cluster id"},
    {"ARCH", AttrKind::kString, "x86_64 or aarch64"},
    {"CPU_MODEL", AttrKind::kString, "CPU model name"},
    {"TOTAL_CPU", AttrKind::kNumber, "hardware threads"},
    {"FREE_CPU", AttrKind::kNumber, "threads neither pinned nor given to shared vCPUs"},
    {"TOTAL_MEMORY", AttrKind::kNumber, "memory usable by VMs, MB"},
    {"FREE_MEMORY", AttrKind::kNumber, "ordinary memory free, MB"},
    {"GPU_MODEL", AttrKind::kString, "GPU models (any of them matches)"},
    {"GPU_COUNT", AttrKind::kNumber, "GPUs"},
    {"FREE_GPUS", AttrKind::kNumber, "whole GPUs free"},
    {"MIG_PROFILE", AttrKind::kString, "MIG profiles with a free instance"},
    {"FREE_MIG", AttrKind::kNumber, "MIG instances free"},
    {"NVLINK_DOMAIN", AttrKind::kString, "NVLink/NVSwitch domains"},
    {"NIC_FABRIC", AttrKind::kString, "infiniband, ethernet"},
    {"NIC_MODEL", AttrKind::kString, "NIC models"},
    {"NUMA_NODES", AttrKind::kNumber, "NUMA nodes"},
    {"RUNNING_VMS", AttrKind::kNumber, "VMs placed on the host"},
    {"CPU_USAGE", AttrKind::kNumber, "CPU busy percent, from monitoring"},
};
static_assert(std::size(kAttributes) == static_cast<size_t>(HostAttr::kCount));

constexpr std::string_view kMisfitText[] = {
    "fit",
    "are offline or disabled",
    "are outside the VDC",
    "are in other clusters",
    "break the VM group's affinity",
    "fail the requirements",
    "lack free GPUs",
    "cannot give the GPUs one NVLink domain",
    "lack free MIG instances",
    "lack free SR-IOV VFs",
    "have no free VF beside the GPUs",
    "lack free CPUs",
    "lack free memory",
    "lack free hugepages",
};
static_assert(std::size(kMisfitText) == static_cast<size_t>(Misfit::kCount));

void add_unique(std::vector<std::string>& list, const std::string& value) {
  if (!value.empty() && std::find(list.begin(), list.end(), value) == list.end()) {
    list.push_back(value);
  }
}

// Splits `need` over nodes. With weights, each weighted node first gets its proportional
// share, then the rest spills over the weighted and then the other allowed nodes, largest
// capacity first. Without weights one node takes it all when one can (the tightest), else
// (when `spread`) it spreads largest first. nullopt when it does not fit.
std::optional<std::vector<int64_t>> distribute(int64_t need, const std::vector<int64_t>& caps,
                                               const std::vector<int64_t>& weights,
                                               const std::vector<bool>& allowed, bool spread) {
  size_t n = caps.size();
  std::vector<int64_t> out(n, 0);
  int64_t total_weight = std::accumulate(weights.begin(), weights.end(), int64_t{0});
  if (need == 0) return out;
  if (total_weight == 0) {
    std::optional<size_t> best;
    for (size_t i = 0; i < n; ++i) {
      if (allowed[i] && caps[i] >= need && (!best || caps[i] < caps[*best])) best = i;
    }
    if (best) {
      out[*best] = need;
      return out;
    }
    if (!spread) return std::nullopt;
  }
  int64_t remaining = need;
  if (total_weight > 0) {
    int64_t given = 0;
    for (size_t i = 0; i < n; ++i) {
      if (weights[i] == 0) continue;
      int64_t share = need * weights[i] / total_weight;
      given += share;
      out[i] = std::min(share, caps[i]);
    }
    // Rounding leftovers go to the first weighted nodes.
    for (size_t i = 0; i < n && given < need; ++i) {
      if (weights[i] > 0 && out[i] < caps[i]) {
        ++out[i];
        ++given;
      }
    }
    remaining = need - std::accumulate(out.begin(), out.end(), int64_t{0});
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if ((weights[a] > 0) != (weights[b] > 0)) return weights[a] > 0;
    return caps[a] - out[a] > caps[b] - out[b];
  });
  for (size_t i : order) {
    if (remaining == 0) break;
    if (!allowed[i]) continue;
    int64_t take = std::min(remaining, caps[i] - out[i]);
    out[i] += take;
    remaining -= take;
  }
  if (remaining > 0) return std::nullopt;
  return out;
}

// Chooses `n` items from groups: the tightest single group that holds n, else (when
// `spread`) the largest groups first. Returns indexes into the flattened choice.
std::optional<std::vector<int>> choose_from_groups(std::vector<std::vector<int>> groups, int n,
                                                   bool spread) {
  std::optional<size_t> best;
  for (size_t i = 0; i < groups.size(); ++i) {
    int size = static_cast<int>(groups[i].size());
    if (size >= n && (!best || size < static_cast<int>(groups[*best].size()))) best = i;
  }
  if (best) return std::vector<int>(groups[*best].begin(), groups[*best].begin() + n);
  if (!spread) return std::nullopt;
  std::stable_sort(groups.begin(), groups.end(),
                   [](const auto& a, const auto& b) { return a.size() > b.size(); });
  std::vector<int> out;
  for (const auto& g : groups) {
    for (int item : g) {
      if (static_cast<int>(out.size()) == n) return out;
      out.push_back(item);
    }
  }
  if (static_cast<int>(out.size()) < n) return std::nullopt;
  return out;
}

Error conflict(const HostInfo& host, const std::string& what) {
  return Error(ErrorCode::kAborted, what + " on host " + host.name + " is not free");
}

}  // namespace

std::span<const AttrSpec> host_attributes() { return kAttributes; }

std::string_view misfit_text(Misfit misfit) { return kMisfitText[static_cast<int>(misfit)]; }

int HostState::Core::free_threads() const {
  return static_cast<int>(cpus.size()) - std::popcount(used);
}

HostState::HostState(HostInfo info, const inventory::HostInventory& inv) : info_(std::move(info)) {
  int tpc = inv.cpu.cores > 0 ? std::max(1, inv.cpu.threads / inv.cpu.cores) : 1;
  for (const auto& numa : inv.numa_nodes) {
    Node node{.id = numa.id};
    std::vector<int> cpus = numa.cpus;
    std::sort(cpus.begin(), cpus.end());
    // Linux numbers the first thread of every core before their siblings.
    int threads = cpus.size() % tpc == 0 ? tpc : 1;
    size_t per = cpus.size() / threads;
    for (size_t c = 0; c < per; ++c) {
      Core core{.node = numa.id};
      for (int t = 0; t < threads && core.cpus.size() < 32; ++t)
        core.cpus.push_back(cpus[c + t * per]);
      for (int cpu : core.cpus) core_of_cpu_[cpu] = static_cast<int>(cores_.size());
      node.cores.push_back(static_cast<int>(cores_.size()));
      total_threads_ += static_cast<int>(core.cpus.size());
      cores_.push_back(std::move(core));
    }
    int64_t huge_kb = 0;
    for (const auto& h : numa.hugepages) {
      if (h.total <= 0) continue;
      node.hugepages[h.size_kb] = h.total;
      huge_kb += h.total * h.size_kb;
    }
    int64_t reserve = std::min(kHostReserveKb, numa.memory_total_kb / 20);
    node.memory_kb = std::max<int64_t>(0, numa.memory_total_kb - huge_kb - reserve);
    total_memory_mb_ += static_cast<double>(node.memory_kb) / 1024;
    free_memory_kb_ += node.memory_kb;
    nodes_.push_back(std::move(node));
  }
  for (const auto& spec : inv.gpus) {
    Gpu gpu{.spec = spec, .mig_enabled = spec.mig_mode == "Enabled"};
    auto known = std::find(domains_.begin(), domains_.end(), spec.nvlink_domain);
    if (spec.nvlink_domain.empty() || known == domains_.end()) {
      gpu.domain = static_cast<int>(domains_.size());
      domains_.push_back(spec.nvlink_domain);
    } else {
      gpu.domain = static_cast<int>(known - domains_.begin());
    }
    for (const auto& m : spec.mig_instances) gpu.mig.push_back(Mig{m.profile, m.uuid});
    add_unique(strings_[static_cast<int>(HostAttr::kGpuModel)], spec.model);
    add_unique(strings_[static_cast<int>(HostAttr::kNvlinkDomain)], spec.nvlink_domain);
    gpus_.push_back(std::move(gpu));
  }
  for (const auto& pf : inv.pci_devices) {
    if (pf.virtual_functions.empty()) continue;
    auto nic = std::find_if(inv.nics.begin(), inv.nics.end(),
                            [&](const auto& n) { return n.pci_address == pf.address; });
    if (nic == inv.nics.end()) continue;
    std::string fabric =
        nic->link_layer == inventory::LinkLayer::kInfiniBand ? "infiniband" : "ethernet";
    for (const auto& vf : pf.virtual_functions) {
      vfs_.push_back(Vf{.spec = VfAssignment{vf, pf.address, nic->name, fabric,
                                             pf.numa_node < 0 ? 0 : pf.numa_node}});
    }
  }
  for (const auto& nic : inv.nics) {
    if (nic.virtual_function) continue;
    add_unique(strings_[static_cast<int>(HostAttr::kNicFabric)],
               nic.link_layer == inventory::LinkLayer::kInfiniBand ? "infiniband" : "ethernet");
    add_unique(strings_[static_cast<int>(HostAttr::kNicModel)], nic.model);
  }
  strings_[static_cast<int>(HostAttr::kArch)] = {inv.cpu.architecture};
  strings_[static_cast<int>(HostAttr::kCpuModel)] = {inv.cpu.model};
  refresh_attributes();
}

void HostState::refresh_attributes() {
  strings_[static_cast<int>(HostAttr::kName)] = {info_.name};
  auto& profiles = strings_[static_cast<int>(HostAttr::kMigProfile)];
  profiles.clear();
  for (const auto& [profile, free] : free_mig_by_profile()) {
    if (free > 0) profiles.push_back(profile);
  }
}

int HostState::free_threads() const { return total_threads_ - pinned_threads_ - shared_vcpus_; }

int HostState::device_reserve(int gpus_taken, int mig_taken) const {
  if (gpus_.empty()) return 0;
  double fair = static_cast<double>(total_threads_) / static_cast<double>(gpus_.size());
  double reserve = 0;
  for (const auto& g : gpus_) {
    if (!g.mig_enabled) {
      reserve += g.held ? 0 : fair;
    } else if (!g.mig.empty()) {
      int free = 0;
      for (const auto& m : g.mig) free += m.held ? 0 : 1;
      reserve += fair * free / static_cast<double>(g.mig.size());
    }
  }
  // The VM's own devices no longer need holding back for others.
  reserve -= fair * gpus_taken;
  for (const auto& g : gpus_) {
    if (g.mig_enabled && !g.mig.empty() && mig_taken > 0) {
      reserve -= fair * mig_taken / static_cast<double>(g.mig.size());
      break;
    }
  }
  return std::max(0, static_cast<int>(reserve));
}

std::vector<HostState::ModelCount> HostState::free_gpus_by_model() const {
  std::vector<ModelCount> out;
  for (const auto& g : gpus_) {
    if (g.mig_enabled) continue;
    auto it = std::find_if(out.begin(), out.end(), [&](const ModelCount& m) {
      return m.model == g.spec.model && m.device == g.spec.device_id;
    });
    if (it == out.end()) {
      out.push_back(ModelCount{g.spec.model, inventory::kVendorNvidia, g.spec.device_id, 0, 0});
      it = out.end() - 1;
    }
    ++it->total;
    if (!g.held) ++it->free;
  }
  return out;
}

std::map<std::string, int> HostState::free_mig_by_profile() const {
  std::map<std::string, int> out;
  for (const auto& g : gpus_) {
    if (!g.mig_enabled) continue;
    for (const auto& m : g.mig) out[m.profile] += m.held ? 0 : 1;
  }
  return out;
}

double HostState::number(int attr) const {
  switch (static_cast<HostAttr>(attr)) {
    case HostAttr::kId:
      return static_cast<double>(info_.id);
    case HostAttr::kClusterId:
      return static_cast<double>(info_.cluster_id);
    case HostAttr::kTotalCpu:
      return total_threads_;
    case HostAttr::kFreeCpu:
      return free_threads();
    case HostAttr::kTotalMemory:
      return total_memory_mb_;
    case HostAttr::kFreeMemory: {
      return static_cast<double>(free_memory_kb_ / 1024);
    }
    case HostAttr::kGpuCount:
      return static_cast<double>(gpus_.size());
    case HostAttr::kFreeGpus: {
      int free = 0;
      for (const auto& m : free_gpus_by_model()) free += m.free;
      return free;
    }
    case HostAttr::kFreeMig: {
      int free = 0;
      for (const auto& [p, n] : free_mig_by_profile()) free += n;
      return free;
    }
    case HostAttr::kNumaNodes:
      return static_cast<double>(nodes_.size());
    case HostAttr::kRunningVms:
      return vms_;
    case HostAttr::kCpuUsage:
      return info_.cpu_usage;
    default:
      return 0;
  }
}

std::span<const std::string> HostState::strings(int attr) const {
  return strings_[static_cast<size_t>(attr)];
}

int HostState::node_index(int id) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].id == id) return static_cast<int>(i);
  }
  return -1;
}

int HostState::free_units(const Node& node, CpuPolicy policy) const {
  int units = 0;
  for (int c : node.cores) {
    const Core& core = cores_[c];
    if (policy == CpuPolicy::kCore) {
      units += core.used == 0 ? 1 : 0;
    } else {
      units += core.free_threads();
    }
  }
  return units;
}

HostState::Fit HostState::fit(const VmRequest& request) const {
  Fit first = fit_on(request, -1);
  bool placement_issue = first.misfit == Misfit::kVfTopology || first.misfit == Misfit::kCpu ||
                         first.misfit == Misfit::kMemory || first.misfit == Misfit::kHugepages;
  if (!placement_issue || nodes_.size() < 2) return first;
  for (const Node& node : nodes_) {
    Fit alone = fit_on(request, node.id);
    if (alone.misfit == Misfit::kNone) return alone;
  }
  return first;
}

HostState::Fit HostState::fit_on(const VmRequest& request, int only_node) const {
  Fit fit;
  Allocation& a = fit.allocation;
  a.vm_id = request.vm_id;
  a.host_id = info_.id;
  a.host_name = info_.name;
  a.cluster_id = info_.cluster_id;
  a.inventory_version = info_.inventory_version;
  a.cpu_policy = request.cpu_policy;
  a.hugepage_kb = request.hugepage_kb;
  std::vector<int> device_nodes;
  if (request.gpus.count > 0) {
    auto picked = pick_gpus(request, fit, only_node);
    if (!picked) return fit;
    for (int g : *picked) device_nodes.push_back(gpus_[g].numa());
  }
  if (!request.mig.empty()) {
    if (!pick_mig(request, fit, only_node)) return fit;
    for (const auto& m : a.mig) {
      for (const auto& g : gpus_) {
        if (g.spec.pci_address == m.gpu_pci_address) device_nodes.push_back(g.numa());
      }
    }
  }
  // VFs go beside the GPUs; they do not steer where cores and memory go.
  if (!request.vfs.empty() && !pick_vfs(request, device_nodes, fit, only_node)) return fit;
  if (!pick_cpus_and_memory(request, device_nodes, fit, only_node)) return fit;
  return fit;
}

Result<std::vector<int>> HostState::pick_gpus(const VmRequest& request, Fit& fit,
                                              int only_node) const {
  const GpuRequest& want = request.gpus;
  std::map<int, std::vector<int>> by_domain;
  int matching = 0;
  for (size_t i = 0; i < gpus_.size(); ++i) {
    const Gpu& g = gpus_[i];
    if (g.mig_enabled || g.held || (only_node >= 0 && g.numa() != only_node)) continue;
    bool match = want.vendor >= 0
                     ? want.vendor == inventory::kVendorNvidia && want.device == g.spec.device_id
                     : want.model.empty() || glob_match(want.model, g.spec.model);
    if (!match) continue;
    by_domain[g.domain].push_back(static_cast<int>(i));
    ++matching;
  }
  if (matching < want.count) {
    fit.misfit = Misfit::kGpus;
    fit.best = matching;
    return fail(ErrorCode::kResourceExhausted, "gpus");
  }
  // Tightest domain that holds them all; within it, the tightest NUMA node.
  std::vector<std::vector<int>> domains;
  int largest = 0;
  for (auto& [d, list] : by_domain) {
    largest = std::max(largest, static_cast<int>(list.size()));
    domains.push_back(list);
  }
  std::vector<int> chosen;
  if (largest >= want.count) {
    std::optional<size_t> best;
    for (size_t i = 0; i < domains.size(); ++i) {
      if (static_cast<int>(domains[i].size()) >= want.count &&
          (!best || domains[i].size() < domains[*best].size())) {
        best = i;
      }
    }
    std::map<int, std::vector<int>> by_node;
    for (int g : domains[*best]) by_node[gpus_[g].numa()].push_back(g);
    std::vector<std::vector<int>> nodes;
    for (auto& [n, list] : by_node) nodes.push_back(list);
    chosen = *choose_from_groups(std::move(nodes), want.count, true);
  } else if (want.topology == GpuTopology::kSameDomain) {
    fit.misfit = Misfit::kGpuTopology;
    fit.best = largest;
    return fail(ErrorCode::kResourceExhausted, "topology");
  } else {
    chosen = *choose_from_groups(std::move(domains), want.count, true);
  }
  std::sort(chosen.begin(), chosen.end());
  for (int i : chosen) {
    const auto& s = gpus_[i].spec;
    fit.allocation.gpus.push_back(
        GpuAssignment{s.pci_address, s.uuid, s.model, gpus_[i].numa(), s.nvlink_domain});
  }
  return chosen;
}

bool HostState::pick_mig(const VmRequest& request, Fit& fit, int only_node) const {
  // Fullest MIG GPUs first, so whole partitioned GPUs stay free for larger slices.
  std::vector<int> order;
  std::vector<int> free_on(gpus_.size(), 0);
  for (size_t i = 0; i < gpus_.size(); ++i) {
    if (!gpus_[i].mig_enabled || (only_node >= 0 && gpus_[i].numa() != only_node)) continue;
    order.push_back(static_cast<int>(i));
    for (const auto& m : gpus_[i].mig) free_on[i] += m.held ? 0 : 1;
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return free_on[a] < free_on[b]; });
  for (const auto& want : request.mig) {
    std::vector<MigAssignment> picked;
    for (int g : order) {
      for (const auto& m : gpus_[g].mig) {
        if (static_cast<int>(picked.size()) == want.count) break;
        if (!m.held && m.profile == want.profile) {
          picked.push_back(
              MigAssignment{m.uuid, m.profile, gpus_[g].spec.pci_address, gpus_[g].spec.uuid});
        }
      }
    }
    if (static_cast<int>(picked.size()) < want.count) {
      fit.misfit = Misfit::kMig;
      fit.best = static_cast<int>(picked.size());
      return false;
    }
    fit.allocation.mig.insert(fit.allocation.mig.end(), picked.begin(), picked.end());
  }
  return true;
}

bool HostState::pick_vfs(const VmRequest& request, const std::vector<int>& device_nodes, Fit& fit,
                         int only_node) const {
  std::set<std::string> taken;
  std::map<std::string, int> held_on_pf;
  for (const auto& v : vfs_) held_on_pf[v.spec.pf_pci_address] += v.held ? 1 : 0;
  for (const auto& want : request.vfs) {
    std::vector<int> near_nodes = device_nodes;
    if (only_node >= 0 && want.near_gpus && near_nodes.empty()) near_nodes = {only_node};
    bool restrict = want.near_gpus && !near_nodes.empty();
    std::vector<const Vf*> near, any;
    for (const auto& v : vfs_) {
      if (v.held || (!want.fabric.empty() && v.spec.fabric != want.fabric) ||
          taken.contains(v.spec.pci_address) || (!want.pf.empty() && v.spec.pf_name != want.pf)) {
        continue;
      }
      any.push_back(&v);
      if (!restrict ||
          std::find(near_nodes.begin(), near_nodes.end(), v.spec.numa_node) != near_nodes.end()) {
        near.push_back(&v);
      }
    }
    if (static_cast<int>(near.size()) < want.count) {
      fit.misfit = static_cast<int>(any.size()) >= want.count ? Misfit::kVfTopology : Misfit::kVfs;
      return false;
    }
    // Spread over physical functions: each VF from the least used port so far.
    for (int i = 0; i < want.count; ++i) {
      auto least = std::min_element(near.begin(), near.end(), [&](const Vf* a, const Vf* b) {
        bool a_free = !taken.contains(a->spec.pci_address);
        bool b_free = !taken.contains(b->spec.pci_address);
        if (a_free != b_free) return a_free;
        return held_on_pf[a->spec.pf_pci_address] < held_on_pf[b->spec.pf_pci_address];
      });
      taken.insert((*least)->spec.pci_address);
      ++held_on_pf[(*least)->spec.pf_pci_address];
      fit.allocation.vfs.push_back((*least)->spec);
      fit.allocation.vfs.back().nic = want.nic;
    }
  }
  return true;
}

bool HostState::pick_cpus_and_memory(const VmRequest& request, const std::vector<int>& device_nodes,
                                     Fit& fit, int only_node) const {
  Allocation& a = fit.allocation;
  size_t n = nodes_.size();
  bool strict = request.numa_policy == NumaPolicy::kStrict;
  std::vector<int64_t> device_weight(n, 0);
  for (int node : device_nodes) {
    int i = node_index(node);
    if (i >= 0) ++device_weight[i];
  }
  bool has_devices =
      std::any_of(device_weight.begin(), device_weight.end(), [](int64_t w) { return w > 0; });
  if (!has_devices && only_node >= 0 && node_index(only_node) >= 0) {
    device_weight[node_index(only_node)] = 1;  // The node this attempt is about.
    has_devices = true;
  }
  std::vector<bool> allowed(n, true);
  if (strict && has_devices) {
    for (size_t i = 0; i < n; ++i) allowed[i] = device_weight[i] > 0;
  }
  std::vector<int64_t> cpus_per_node(n, 0);
  int new_threads = 0;
  std::vector<std::vector<int>> pinned(n);
  if (request.cpu_policy == CpuPolicy::kShared) {
    new_threads = request.vcpus;
    a.shared_vcpus = request.vcpus;
  } else {
    std::vector<int64_t> caps(n);
    for (size_t i = 0; i < n; ++i) caps[i] = free_units(nodes_[i], request.cpu_policy);
    auto split = distribute(request.vcpus, caps, device_weight, allowed, !strict);
    if (!split) {
      fit.misfit = Misfit::kCpu;
      return false;
    }
    cpus_per_node = *split;
    for (size_t i = 0; i < n; ++i) {
      int want = static_cast<int>(cpus_per_node[i]);
      // Half-used cores first for threads, so whole cores stay whole.
      for (int pass = 0; pass < 2 && want > 0; ++pass) {
        for (int c : nodes_[i].cores) {
          const Core& core = cores_[c];
          if (want == 0) break;
          if (request.cpu_policy == CpuPolicy::kCore) {
            if (pass == 1 || core.used != 0) continue;
            pinned[i].push_back(core.cpus[0]);
            new_threads += static_cast<int>(core.cpus.size());
            --want;
            continue;
          }
          bool partial = core.used != 0;
          if ((pass == 0) != partial) continue;
          for (size_t t = 0; t < core.cpus.size() && want > 0; ++t) {
            if (core.used & (1u << t)) continue;
            pinned[i].push_back(core.cpus[t]);
            ++new_threads;
            --want;
          }
        }
      }
    }
  }
  int reserve = device_reserve(static_cast<int>(a.gpus.size()), static_cast<int>(a.mig.size()));
  if (pinned_threads_ + shared_vcpus_ + new_threads + reserve > total_threads_) {
    fit.misfit = Misfit::kCpu;
    return false;
  }
  // Memory follows the pinned CPUs, else the devices, else one node.
  std::vector<int64_t> mem_weight =
      request.cpu_policy == CpuPolicy::kShared ? device_weight : cpus_per_node;
  bool weighted = std::any_of(mem_weight.begin(), mem_weight.end(), [](int64_t w) { return w; });
  std::vector<bool> mem_allowed = allowed;
  if (strict && weighted) {
    for (size_t i = 0; i < n; ++i) mem_allowed[i] = mem_weight[i] > 0;
  }
  int64_t need_kb = request.memory_mb * 1024;
  std::vector<int64_t> caps(n);
  int64_t unit = request.hugepage_kb > 0 ? request.hugepage_kb : 1;
  for (size_t i = 0; i < n; ++i) {
    const Node& node = nodes_[i];
    if (request.hugepage_kb > 0) {
      auto total = node.hugepages.find(request.hugepage_kb);
      auto used = node.hugepages_used.find(request.hugepage_kb);
      caps[i] = (total == node.hugepages.end() ? 0 : total->second) -
                (used == node.hugepages_used.end() ? 0 : used->second);
    } else {
      caps[i] = node.memory_kb - node.memory_used_kb;
    }
  }
  auto memory = distribute(need_kb / unit, caps, mem_weight, mem_allowed, !strict);
  if (!memory) {
    fit.misfit = request.hugepage_kb > 0 ? Misfit::kHugepages : Misfit::kMemory;
    return false;
  }
  for (size_t i = 0; i < n; ++i) {
    if (pinned[i].empty() && (*memory)[i] == 0) continue;
    a.numa.push_back(NumaAssignment{.node = nodes_[i].id,
                                    .cpus = pinned[i],
                                    .memory_kb = (*memory)[i] * unit,
                                    .hugepages = request.hugepage_kb > 0 ? (*memory)[i] : 0});
  }
  return true;
}

Result<void> HostState::hold(const Allocation& a) {
  // Check everything first: a refused allocation changes nothing.
  std::set<int> cores_taken;
  std::set<int> cpus_taken;
  int new_threads = a.shared_vcpus;
  for (const auto& na : a.numa) {
    int ni = node_index(na.node);
    if (ni < 0) return fail(conflict(info_, "NUMA node " + std::to_string(na.node)));
    const Node& node = nodes_[ni];
    if (na.hugepages > 0) {
      auto total = node.hugepages.find(a.hugepage_kb);
      auto used = node.hugepages_used.find(a.hugepage_kb);
      int64_t free = (total == node.hugepages.end() ? 0 : total->second) -
                     (used == node.hugepages_used.end() ? 0 : used->second);
      if (na.hugepages > free) {
        return fail(conflict(info_, "hugepage memory on NUMA node " + std::to_string(na.node)));
      }
    } else if (na.memory_kb > node.memory_kb - node.memory_used_kb) {
      return fail(conflict(info_, "memory on NUMA node " + std::to_string(na.node)));
    }
    for (int cpu : na.cpus) {
      auto it = core_of_cpu_.find(cpu);
      if (it == core_of_cpu_.end() || cores_[it->second].node != na.node ||
          !cpus_taken.insert(cpu).second) {
        return fail(conflict(info_, "CPU " + std::to_string(cpu)));
      }
      const Core& core = cores_[it->second];
      if (a.cpu_policy == CpuPolicy::kCore) {
        if (core.used != 0 || !cores_taken.insert(it->second).second) {
          return fail(conflict(info_, "core of CPU " + std::to_string(cpu)));
        }
        new_threads += static_cast<int>(core.cpus.size());
      } else {
        size_t t = std::find(core.cpus.begin(), core.cpus.end(), cpu) - core.cpus.begin();
        if (core.used & (1u << t)) return fail(conflict(info_, "CPU " + std::to_string(cpu)));
        ++new_threads;
      }
    }
  }
  if (pinned_threads_ + shared_vcpus_ + new_threads > total_threads_) {
    return fail(conflict(info_, "CPU capacity"));
  }
  std::vector<Gpu*> gpus;
  for (const auto& ga : a.gpus) {
    auto it = std::find_if(gpus_.begin(), gpus_.end(),
                           [&](const Gpu& g) { return g.spec.pci_address == ga.pci_address; });
    if (it == gpus_.end() || it->held || it->mig_enabled ||
        std::find(gpus.begin(), gpus.end(), &*it) != gpus.end()) {
      return fail(conflict(info_, "GPU " + ga.pci_address));
    }
    gpus.push_back(&*it);
  }
  std::vector<Mig*> migs;
  for (const auto& ma : a.mig) {
    Mig* found = nullptr;
    for (auto& g : gpus_) {
      for (auto& m : g.mig) {
        if (g.mig_enabled && m.uuid == ma.uuid) found = &m;
      }
    }
    if (!found || found->held || std::find(migs.begin(), migs.end(), found) != migs.end()) {
      return fail(conflict(info_, "MIG instance " + ma.uuid));
    }
    migs.push_back(found);
  }
  std::vector<Vf*> vfs;
  for (const auto& va : a.vfs) {
    auto it = std::find_if(vfs_.begin(), vfs_.end(),
                           [&](const Vf& v) { return v.spec.pci_address == va.pci_address; });
    if (it == vfs_.end() || it->held || std::find(vfs.begin(), vfs.end(), &*it) != vfs.end()) {
      return fail(conflict(info_, "VF " + va.pci_address));
    }
    vfs.push_back(&*it);
  }
  // Apply.
  for (const auto& na : a.numa) {
    Node& node = nodes_[node_index(na.node)];
    if (na.hugepages > 0) {
      node.hugepages_used[a.hugepage_kb] += na.hugepages;
    } else {
      node.memory_used_kb += na.memory_kb;
      free_memory_kb_ -= na.memory_kb;
    }
    for (int cpu : na.cpus) {
      Core& core = cores_[core_of_cpu_[cpu]];
      if (a.cpu_policy == CpuPolicy::kCore) {
        core.used = (1u << core.cpus.size()) - 1;
        pinned_threads_ += static_cast<int>(core.cpus.size());
      } else {
        core.used |= 1u << (std::find(core.cpus.begin(), core.cpus.end(), cpu) - core.cpus.begin());
        ++pinned_threads_;
      }
    }
  }
  shared_vcpus_ += a.shared_vcpus;
  for (Gpu* g : gpus) g->held = true;
  for (Mig* m : migs) m->held = true;
  for (Vf* v : vfs) v->held = true;
  ++vms_;
  refresh_attributes();
  return {};
}

void HostState::release(const Allocation& a) {
  for (const auto& na : a.numa) {
    int ni = node_index(na.node);
    if (ni < 0) continue;
    Node& node = nodes_[ni];
    if (na.hugepages > 0) {
      node.hugepages_used[a.hugepage_kb] -= na.hugepages;
    } else {
      node.memory_used_kb -= na.memory_kb;
      free_memory_kb_ += na.memory_kb;
    }
    for (int cpu : na.cpus) {
      auto it = core_of_cpu_.find(cpu);
      if (it == core_of_cpu_.end()) continue;
      Core& core = cores_[it->second];
      if (a.cpu_policy == CpuPolicy::kCore) {
        pinned_threads_ -= std::popcount(core.used);
        core.used = 0;
      } else {
        uint32_t bit =
            1u << (std::find(core.cpus.begin(), core.cpus.end(), cpu) - core.cpus.begin());
        if (core.used & bit) --pinned_threads_;
        core.used &= ~bit;
      }
    }
  }
  shared_vcpus_ -= a.shared_vcpus;
  for (const auto& ga : a.gpus) {
    for (auto& g : gpus_) {
      if (g.spec.pci_address == ga.pci_address) g.held = false;
    }
  }
  for (const auto& ma : a.mig) {
    for (auto& g : gpus_) {
      for (auto& m : g.mig) {
        if (m.uuid == ma.uuid) m.held = false;
      }
    }
  }
  for (const auto& va : a.vfs) {
    for (auto& v : vfs_) {
      if (v.spec.pci_address == va.pci_address) v.held = false;
    }
  }
  --vms_;
  refresh_attributes();
}

}  // namespace fabrica::sched
