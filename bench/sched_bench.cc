// The placement engine at fleet scale: 10,000 hosts x 8 GPUs (80% whole H100 boards, 20% in
// MIG mode with 7 slices per GPU) and 100,000 pending VMs of mixed shapes (1, 2, 4 and 8
// GPUs, MIG slices, CPU-only) arriving in random order, first with packing (the default), then with
// first fit as the baseline. Prints placements/s, p50/p99 time to place one VM into the loaded
// fleet, and GPU fragmentation at the end: the share of free GPUs stranded on boards that can no
// longer take an 8-GPU VM.
//   build-release/bin/sched_bench [--benchmark_filter=...]   (or bench/sched)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>

#include "agent/profiles.h"
#include "sched/scheduler.h"

namespace fabrica::sched {
namespace {

constexpr int kHosts = 10000;
constexpr int kVms = 100000;

void build_fleet(Scheduler& sched) {
  auto hgx = agent::simulated_inventory("hgx-h100", 0);
  auto mig = agent::simulated_inventory("mig-h100", 0);
  for (int id = 1; id <= kHosts; ++id) {
    bool partitioned = id % 5 == 0;
    // Each host needs its own device UUIDs only for the record; the layout is the same.
    sched.set_host(HostInfo{.id = id,
                            .name = "gpu-" + std::to_string(id),
                            .cluster_id = id % 10,
                            .cpu_usage = static_cast<double>(id % 97)},
                   partitioned ? *mig : *hgx);
  }
}

VmRequest shape(std::mt19937& rng, int64_t id, Policy policy) {
  VmRequest r;
  r.vm_id = id;
  r.policy = policy;
  // Shapes by share: CPU-only 50%, MIG 25%, 1/2/4/8 GPUs 12/7/4/2%: about 91% of the fleet's
  // whole GPUs and a third of its MIG slices are asked for.
  int pick = static_cast<int>(rng() % 100);
  if (pick < 50) {  // CPU-only.
    r.vcpus = 2 << (rng() % 3);
    r.memory_mb = r.vcpus * 4096;
  } else if (pick < 75) {  // MIG slices.
    r.mig = {{"1g.10gb", 1 + static_cast<int>(rng() % 2)}};
    r.vcpus = 4;
    r.memory_mb = 16384;
  } else {
    int gpus = pick < 87 ? 1 : pick < 94 ? 2 : pick < 98 ? 4 : 8;
    r.gpus = GpuRequest{.count = gpus, .model = "H100*", .topology = GpuTopology::kSameDomain};
    r.vcpus = 12 * gpus;
    r.memory_mb = 96 * 1024 * gpus;
    r.cpu_policy = CpuPolicy::kCore;
    r.hugepage_kb = kHugepage1G;
  }
  (void)r.validate();
  return r;
}

std::vector<VmRequest> workload(Policy policy, int count, int64_t first_id, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<VmRequest> out;
  out.reserve(count);
  for (int64_t id = first_id; id < first_id + count; ++id) out.push_back(shape(rng, id, policy));
  return out;
}

struct PassResult {
  int placed = 0;
  double seconds = 0;
  double fragmentation = 0;
  double churn_fragmentation = 0;
  int free_gpus = 0;
};

// 100,000 VMs in one pass; then churn: a third of the placed VMs leave and 30,000 new ones
// arrive, as a fleet sees over a day.
PassResult run_pass(Scheduler& sched, Policy policy) {
  auto pending = workload(policy, kVms, 1, 42);
  std::map<int64_t, VmRequest> requests;
  for (const auto& r : pending) requests[r.vm_id] = r;
  auto start = std::chrono::steady_clock::now();
  auto decisions = sched.schedule(std::move(pending));
  PassResult out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const auto& d : decisions) out.placed += d.allocation ? 1 : 0;
  out.fragmentation = sched.gpu_fragmentation();
  out.free_gpus = sched.free_whole_gpus();
  std::mt19937 rng(9);
  for (const auto& d : decisions) {
    if (d.allocation && rng() % 3 == 0) sched.release(requests.at(d.vm_id), *d.allocation);
  }
  (void)sched.schedule(workload(policy, kVms * 3 / 10, kVms + 1, 43));
  out.churn_fragmentation = sched.gpu_fragmentation();
  return out;
}

void BM_Schedule100kVms(benchmark::State& state) {
  Policy policy = static_cast<Policy>(state.range(0));
  PassResult result;
  for (auto _ : state) {
    state.PauseTiming();
    Scheduler sched;
    build_fleet(sched);
    state.ResumeTiming();
    result = run_pass(sched, policy);
  }
  state.counters["placed"] = result.placed;
  state.counters["placements/s"] = result.placed / result.seconds;
  state.counters["vms/s"] = kVms / result.seconds;
  state.counters["free_gpus"] = result.free_gpus;
  state.counters["frag_%"] = 100 * result.fragmentation;
  state.counters["frag_after_churn_%"] = 100 * result.churn_fragmentation;
  state.SetLabel(std::string(policy_name(policy)));
}
BENCHMARK(BM_Schedule100kVms)
    ->Arg(static_cast<int>(Policy::kPacking))
    ->Arg(static_cast<int>(Policy::kFirstFit))
    ->Arg(static_cast<int>(Policy::kStriping))
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

// One VM into a loaded fleet (half the workload placed): place, then release so the load
// stays the same. Reports p50 and p99 of single placements.
void BM_PlaceOneIntoLoadedFleet(benchmark::State& state) {
  Scheduler sched;
  build_fleet(sched);
  auto load = workload(Policy::kPacking, kVms / 2, 1, 42);
  (void)sched.schedule(load);
  std::mt19937 rng(7);
  std::vector<double> micros;
  int64_t id = kVms + 1;
  for (auto _ : state) {
    VmRequest r = shape(rng, id++, Policy::kPacking);
    auto start = std::chrono::steady_clock::now();
    Decision d = sched.place(r);
    micros.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
            .count());
    if (d.allocation) sched.release(r, *d.allocation);
  }
  std::sort(micros.begin(), micros.end());
  state.counters["p50_us"] = micros[micros.size() / 2];
  state.counters["p99_us"] = micros[micros.size() * 99 / 100];
  state.counters["hosts"] = sched.host_count();
}
BENCHMARK(BM_PlaceOneIntoLoadedFleet)->Iterations(20000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace fabrica::sched

BENCHMARK_MAIN();
