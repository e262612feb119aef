#include "sched/scheduler.h"

#include <algorithm>
#include <array>
#include <cstdio>

namespace fabrica::sched {
namespace {

constexpr int kMaxCpuKey = 4096;
constexpr int kBestBelowLimit = 2000;  // Hosts examined for "best candidate" hints.

// Misfits that stay true while a pass only adds allocations: too few free devices, or a
// host the VM may never use. (Memory and CPU choices depend on which devices are taken, and
// requirements may read any attribute, so those are searched again.)
bool stays_refused(const std::array<int, static_cast<size_t>(Misfit::kCount)>& tally) {
  for (int m = 0; m < static_cast<int>(Misfit::kCount); ++m) {
    Misfit misfit = static_cast<Misfit>(m);
    bool monotone = misfit == Misfit::kNotSchedulable || misfit == Misfit::kNotAllowed ||
                    misfit == Misfit::kCluster || misfit == Misfit::kGpus ||
                    misfit == Misfit::kGpuTopology || misfit == Misfit::kMig ||
                    misfit == Misfit::kVfs;
    if (tally[m] > 0 && !monotone) return false;
  }
  return true;
}

template <typename Entry>
void put(std::vector<std::set<Entry>>& buckets, int key, const Entry& entry) {
  if (static_cast<int>(buckets.size()) <= key) buckets.resize(key + 1);
  buckets[key].insert(entry);
}

bool model_matches(const GpuRequest& want, const std::string& model, int vendor, int device) {
  if (want.vendor >= 0) return want.vendor == vendor && want.device == device;
  return want.model.empty() || glob_match(want.model, model);
}

std::string plural(int n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

std::string gpu_words(const GpuRequest& g) {
  std::string model = g.vendor >= 0 ? g.vendor_device() : g.model;
  return std::to_string(g.count) + " free " + (model.empty() ? "" : model + " ") +
         (g.count == 1 ? "GPU" : "GPUs") +
         (g.topology == GpuTopology::kSameDomain && g.count > 1 ? " in one NVLink domain" : "");
}

std::string describe(const VmRequest& r) {
  if (r.gpus.count > 0) return gpu_words(r.gpus);
  if (!r.mig.empty()) {
    const auto& m = r.mig.front();
    return std::to_string(m.count) + " free MIG " + m.profile +
           (m.count == 1 ? " instance" : " instances");
  }
  std::string mem = r.memory_mb % 1024 == 0 ? std::to_string(r.memory_mb / 1024) + " GiB"
                                            : std::to_string(r.memory_mb) + " MiB";
  return std::to_string(r.vcpus) + " free " +
         (r.cpu_policy == CpuPolicy::kCore ? "cores" : "CPUs") + " and " + mem + " of memory";
}

std::string scope_of(const VmRequest& r) {
  if (!r.allowed_hosts) return "the fleet";
  return r.scope.empty() ? "the VM's VDCs" : r.scope;
}

std::string node_list(const Allocation& a) {
  std::string out;
  for (const auto& n : a.numa) out += (out.empty() ? "" : ",") + std::to_string(n.node);
  return out;
}

}  // namespace

void Scheduler::set_host(const HostInfo& info, const inventory::HostInventory& inventory) {
  remove_host(info.id);
  Slot& slot = slots_[info.id];
  slot.state = std::make_unique<HostState>(info, inventory);
  index(info.id, slot);
}

void Scheduler::update_host(const HostInfo& info) {
  auto it = slots_.find(info.id);
  if (it == slots_.end() || it->second.state->info() == info) return;
  unindex(info.id, it->second);
  it->second.state->set_info(info);
  index(info.id, it->second);
}

void Scheduler::remove_host(int64_t host_id) {
  auto it = slots_.find(host_id);
  if (it == slots_.end()) return;
  unindex(host_id, it->second);
  for (auto& [key, group] : groups_) {
    group.hosts.erase(host_id);
  }
  slots_.erase(it);
}

const HostState* Scheduler::host(int64_t host_id) const {
  auto it = slots_.find(host_id);
  return it == slots_.end() ? nullptr : it->second.state.get();
}

void Scheduler::unindex(int64_t id, Slot& slot) {
  (void)id;
  for (auto [model, free] : slot.gpu_keys) models_[model].by_free[free].erase(slot.entry);
  for (auto [profile, free] : slot.mig_keys) mig_index_[profile][free].erase(slot.entry);
  if (slot.cpu_key >= 0) cpu_index_[slot.cpu_gpu_host][slot.cpu_key].erase(slot.entry);
  slot.gpu_keys.clear();
  slot.mig_keys.clear();
  slot.cpu_key = -1;
}

void Scheduler::index(int64_t id, Slot& slot) {
  const HostState& state = *slot.state;
  if (!state.info().schedulable) return;  // Offline and disabled hosts are never candidates.
  slot.entry = Entry{-state.free_memory_kb(), id, &state};
  const Entry& entry = slot.entry;
  for (const auto& m : state.free_gpus_by_model()) {
    if (m.free == 0) continue;
    auto it = std::find_if(models_.begin(), models_.end(), [&](const Model& x) {
      return x.name == m.model && x.device == m.device;
    });
    if (it == models_.end()) {
      models_.push_back(Model{m.model, m.vendor, m.device, {}});
      it = models_.end() - 1;
    }
    int model = static_cast<int>(it - models_.begin());
    put(it->by_free, m.free, entry);
    slot.gpu_keys.emplace_back(model, m.free);
  }
  for (const auto& [profile, free] : state.free_mig_by_profile()) {
    if (free == 0) continue;
    auto [it, added] = mig_profiles_.emplace(profile, static_cast<int>(mig_index_.size()));
    if (added) mig_index_.emplace_back();
    put(mig_index_[it->second], free, entry);
    slot.mig_keys.emplace_back(it->second, free);
  }
  int free = std::min(state.free_threads_for_cpu_vms(), kMaxCpuKey);
  if (free > 0) {
    slot.cpu_gpu_host = state.has_gpus();
    slot.cpu_key = free;
    put(cpu_index_[slot.cpu_gpu_host], free, entry);
  }
}

void Scheduler::note_group(const VmRequest& request, const Allocation& a, int delta) {
  if (request.vm_group.empty()) return;
  GroupKey key{request.gid, request.vm_group};
  GroupState& group = groups_[key];
  if ((group.hosts[a.host_id] += delta) <= 0) group.hosts.erase(a.host_id);
  if ((group.clusters[a.cluster_id] += delta) <= 0) group.clusters.erase(a.cluster_id);
  if (group.hosts.empty() && group.clusters.empty()) groups_.erase(key);
}

Result<void> Scheduler::hold(const VmRequest& request, const Allocation& allocation) {
  auto it = slots_.find(allocation.host_id);
  if (it == slots_.end()) {
    return fail(ErrorCode::kNotFound, "host " + std::to_string(allocation.host_id) + " not found");
  }
  unindex(allocation.host_id, it->second);
  auto held = it->second.state->hold(allocation);
  index(allocation.host_id, it->second);
  if (held) note_group(request, allocation, +1);
  return held;
}

void Scheduler::release(const VmRequest& request, const Allocation& allocation) {
  auto it = slots_.find(allocation.host_id);
  if (it == slots_.end()) return;
  unindex(allocation.host_id, it->second);
  it->second.state->release(allocation);
  index(allocation.host_id, it->second);
  note_group(request, allocation, -1);
}

Misfit Scheduler::check(const VmRequest& r, const HostState& host) const {
  const HostInfo& info = host.info();
  if (!info.schedulable) return Misfit::kNotSchedulable;
  if (r.allowed_hosts && !r.allowed_hosts->contains(info.id)) return Misfit::kNotAllowed;
  if (!r.clusters.empty() &&
      !std::binary_search(r.clusters.begin(), r.clusters.end(), info.cluster_id)) {
    return Misfit::kCluster;
  }
  if (!r.vm_group.empty()) {
    auto g = groups_.find(GroupKey{r.gid, r.vm_group});
    if (g != groups_.end()) {
      const GroupState& group = g->second;
      if (r.same_cluster && !group.clusters.empty() && !group.clusters.contains(info.cluster_id)) {
        return Misfit::kAffinity;
      }
      bool here = group.hosts.contains(info.id);
      if (r.host_affinity == HostAffinity::kDifferentHosts && here) return Misfit::kAffinity;
      if (r.host_affinity == HostAffinity::kSameHost && !group.hosts.empty() && !here) {
        return Misfit::kAffinity;
      }
    }
  }
  if (r.compiled_requirements && !r.compiled_requirements->matches(host)) {
    return Misfit::kRequirements;
  }
  return Misfit::kNone;
}

template <typename Visit>
void Scheduler::visit_candidates(const VmRequest& r, Visit&& visit) const {
  bool descending = r.policy == Policy::kStriping;
  // Within a bucket, hosts come with the most free memory first: once one has too little
  // ordinary memory for the VM, so have the rest of the bucket.
  int64_t memory_kb = r.hugepage_kb == 0 ? r.memory_mb * 1024 : 0;
  auto walk = [&](std::vector<const std::vector<Bucket>*> lists, int need) -> bool {
    int top = 0;
    for (const auto* l : lists) top = std::max(top, static_cast<int>(l->size()) - 1);
    for (int step = 0; step <= top - need; ++step) {
      int c = descending ? top - step : need + step;
      for (const auto* l : lists) {
        if (c >= static_cast<int>(l->size())) continue;
        for (const Entry& e : (*l)[c]) {
          if (-e.neg_free_memory_kb < memory_kb) break;
          if (visit(*e.host)) return true;
        }
      }
    }
    return false;
  };
  auto [lists, need] = device_buckets(r);
  if (r.policy == Policy::kFirstFit) {
    // The baseline: every host in id order, skipping at once those whose index keys show
    // too few devices or CPUs.
    std::set<const Bucket*> buckets;
    for (const auto* l : lists) {
      for (int c = need; c < static_cast<int>(l->size()); ++c) buckets.insert(&(*l)[c]);
    }
    for (const auto& [id, slot] : slots_) {
      if (!r.wants_devices() || lists.empty()) {
        if (slot.cpu_key < std::min(r.vcpus, kMaxCpuKey)) continue;
      } else {
        bool enough = false;
        for (const Bucket* b : buckets) enough = enough || b->contains(slot.entry);
        if (!enough) continue;
      }
      if (slot.state->free_memory_kb() < memory_kb) continue;
      if (visit(*slot.state)) return;
    }
    return;
  }
  if (r.gpus.count > 0 || !r.mig.empty()) {
    walk(lists, need);
    return;
  }
  // CPU-only VMs try hosts without GPUs first, so GPU hosts keep their cores for GPU VMs.
  int cpus = std::min(r.vcpus, kMaxCpuKey);
  if (walk({&cpu_index_[0]}, cpus)) return;
  walk({&cpu_index_[1]}, cpus);
}

Decision Scheduler::place(const VmRequest& r) {
  Tally tally{};
  return place(r, tally);
}

Decision Scheduler::place(const VmRequest& r, Tally& tally) {
  std::optional<HostState::Fit> chosen;
  double best_score = 0;
  const HostState* best_host = nullptr;
  int best_count = 0;
  auto consider = [&](const HostState& host) -> bool {
    Misfit m = check(r, host);
    // Hosts outside the VDC are not counted: a tenant learns nothing about them.
    if (m == Misfit::kNotAllowed) return false;
    if (m != Misfit::kNone) {
      ++tally[static_cast<int>(m)];
      return false;
    }
    HostState::Fit fit = host.fit(r);
    if (fit.misfit != Misfit::kNone) {
      ++tally[static_cast<int>(fit.misfit)];
      if (fit.best > best_count) {
        best_count = fit.best;
        best_host = &host;
      }
      return false;
    }
    if (r.policy == Policy::kLoadAware || r.policy == Policy::kRank) {
      double score = r.policy == Policy::kRank ? r.compiled_rank->score(host)
                                               : -host.info().cpu_usage - host.running_vms();
      if (!chosen || score > best_score) {
        best_score = score;
        chosen = std::move(fit);
      }
      return false;
    }
    chosen = std::move(fit);
    return true;
  };
  const GroupState* group = nullptr;
  if (!r.vm_group.empty()) {
    auto g = groups_.find(GroupKey{r.gid, r.vm_group});
    if (g != groups_.end()) group = &g->second;
  }
  if (r.host_affinity == HostAffinity::kSameHost && group && !group->hosts.empty()) {
    for (const auto& [id, n] : group->hosts) {
      auto it = slots_.find(id);
      if (it != slots_.end() && consider(*it->second.state)) break;
    }
  } else {
    visit_candidates(r, consider);
  }
  Decision d{.vm_id = r.vm_id};
  if (!chosen) {
    d.explanation = explain_failure(r, tally, best_host, best_count);
    return d;
  }
  auto held = hold(r, chosen->allocation);
  if (!held) {  // Cannot happen: fit() only offers what is free.
    d.explanation = "internal error: " + held.error().message();
    return d;
  }
  d.explanation = explain_placement(r, chosen->allocation);
  d.allocation = std::move(chosen->allocation);
  return d;
}

std::vector<Decision> Scheduler::schedule(std::vector<VmRequest> pending,
                                          const DecisionHook& on_decision) {
  std::stable_sort(pending.begin(), pending.end(), [](const VmRequest& a, const VmRequest& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.vm_id < b.vm_id;
  });
  std::vector<Decision> out;
  out.reserve(pending.size());
  std::map<std::string, std::string> failed;  // Request shape -> explanation.
  for (const VmRequest& r : pending) {
    std::string shape;
    if (r.vm_group.empty()) {
      char ptr[32];
      std::snprintf(ptr, sizeof ptr, "%p|", static_cast<const void*>(r.allowed_hosts.get()));
      shape = ptr + r.scope + "|" + dump_json(r.to_json());
      auto known = failed.find(shape);
      if (known != failed.end()) {
        out.push_back(Decision{.vm_id = r.vm_id, .explanation = known->second});
        if (on_decision) on_decision(r, out.back());
        continue;
      }
    }
    Tally tally{};
    Decision d = place(r, tally);
    bool memo = !d.allocation && !shape.empty() && stays_refused(tally) &&
                (!r.compiled_requirements || r.compiled_requirements->empty());
    if (memo) failed.emplace(shape, d.explanation);
    out.push_back(std::move(d));
    if (on_decision) on_decision(r, out.back());
  }
  return out;
}

Scheduler::DeviceBuckets Scheduler::device_buckets(const VmRequest& r) const {
  DeviceBuckets out;
  if (r.gpus.count > 0) {
    for (const auto& m : models_) {
      if (model_matches(r.gpus, m.name, m.vendor, m.device)) out.lists.push_back(&m.by_free);
    }
    out.need = r.gpus.count;
  } else if (!r.mig.empty()) {
    auto p = mig_profiles_.find(r.mig.front().profile);
    if (p != mig_profiles_.end()) out.lists.push_back(&mig_index_[p->second]);
    out.need = r.mig.front().count;
  }
  return out;
}

std::pair<const HostState*, int> Scheduler::best_below(const VmRequest& r) const {
  if (r.gpus.count == 0 && r.mig.empty()) return {nullptr, 0};
  auto [lists, need] = device_buckets(r);
  int examined = 0;
  for (int c = need - 1; c >= 1; --c) {
    for (const auto* l : lists) {
      if (c >= static_cast<int>(l->size())) continue;
      for (const Entry& e : (*l)[c]) {
        if (++examined > kBestBelowLimit) return {nullptr, 0};
        if (check(r, *e.host) == Misfit::kNone) return {e.host, c};
      }
    }
  }
  return {nullptr, 0};
}

std::string Scheduler::explain_failure(const VmRequest& r, const Tally& tally,
                                       const HostState* best, int best_count) const {
  int examined = 0;
  for (int n : tally) examined += n;
  std::string out = "no host in " + scope_of(r) + " has " + describe(r);
  if (examined > 0) {
    std::string parts;
    for (int m = 1; m < static_cast<int>(Misfit::kCount); ++m) {
      if (tally[m] == 0) continue;
      parts += (parts.empty() ? "" : ", ") + std::to_string(tally[m]) + " " +
               std::string(misfit_text(static_cast<Misfit>(m)));
    }
    out = "no host in " + scope_of(r) + " can take " + describe(r) + ": of " +
          plural(examined, "host", "hosts") + " considered, " + parts;
  }
  auto [below, count] = best_below(r);
  if (best && best_count >= count) {
    below = best;
    count = best_count;
  }
  if (below) {
    out += "; best candidate " + below->info().name + " has " + std::to_string(count);
  }
  return out;
}

std::string Scheduler::explain_placement(const VmRequest& r, const Allocation& a) const {
  std::string out = "placed on " + a.host_name + " (cluster " + std::to_string(a.cluster_id) +
                    ") by " + std::string(policy_name(r.policy));
  if (!a.gpus.empty()) {
    out +=
        ": " + plural(static_cast<int>(a.gpus.size()), "GPU", "GPUs") + " " + a.gpus.front().model;
    if (!a.gpus.front().nvlink_domain.empty()) {
      bool one = std::all_of(a.gpus.begin(), a.gpus.end(), [&](const GpuAssignment& g) {
        return g.nvlink_domain == a.gpus.front().nvlink_domain;
      });
      if (one) out += " in NVLink domain " + a.gpus.front().nvlink_domain;
    }
  }
  if (!a.mig.empty())
    out += ", " + plural(static_cast<int>(a.mig.size()), "MIG instance", "MIG instances");
  if (!a.vfs.empty()) out += ", " + plural(static_cast<int>(a.vfs.size()), "VF", "VFs");
  auto pinned = a.pinned_cpus();
  if (!pinned.empty()) {
    out += ", " + plural(static_cast<int>(pinned.size()), "pinned CPU", "pinned CPUs");
  } else {
    out += ", " + plural(a.shared_vcpus, "shared vCPU", "shared vCPUs");
  }
  out += " and memory on NUMA node" + std::string(a.numa.size() == 1 ? " " : "s ") + node_list(a);
  if (a.hugepage_kb > 0) out += a.hugepage_kb == kHugepage1G ? " (1G pages)" : " (2M pages)";
  return out;
}

std::optional<std::string> Scheduler::prove_unplaceable(const VmRequest& r) const {
  Tally tally{};
  for (const auto& [id, slot] : slots_) {
    const HostState& host = *slot.state;
    Misfit m = check(r, host);
    if (m == Misfit::kNone) m = host.fit(r).misfit;
    if (m == Misfit::kNone) return std::nullopt;
    if (m != Misfit::kNotAllowed) ++tally[static_cast<int>(m)];
  }
  return explain_failure(r, tally, nullptr, 0);
}

int Scheduler::free_whole_gpus() const {
  int free = 0;
  for (const auto& [id, slot] : slots_) {
    for (const auto& m : slot.state->free_gpus_by_model()) free += m.free;
  }
  return free;
}

double Scheduler::gpu_fragmentation() const {
  int free = 0;
  int stranded = 0;
  for (const auto& [id, slot] : slots_) {
    int host_free = 0, host_total = 0;
    for (const auto& m : slot.state->free_gpus_by_model()) {
      host_free += m.free;
      host_total += m.total;
    }
    free += host_free;
    if (host_free < host_total) stranded += host_free;
  }
  return free == 0 ? 0 : static_cast<double>(stranded) / free;
}

}  // namespace fabrica::sched
