// Random fleets and random request streams (seeded): whatever the scheduler decides, no
// device, core or hugepage is ever held twice, no host goes over capacity, and every VM left
// refused really fits nowhere at that moment (checked host by host, without the indexes).
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "agent/profiles.h"
#include "sched/scheduler.h"

namespace fabrica::sched {
namespace {

struct Fleet {
  std::map<int64_t, std::pair<HostInfo, inventory::HostInventory>> hosts;
};

Fleet random_fleet(std::mt19937& rng, int count) {
  const char* profiles[] = {"hgx-h100", "mig-h100", "gh200", "cpu"};
  Fleet fleet;
  for (int id = 1; id <= count; ++id) {
    std::string profile = profiles[rng() % 4];
    auto inv = agent::simulated_inventory(profile, id);
    EXPECT_TRUE(inv);
    if (profile == "hgx-h100" && rng() % 3 == 0) {
      // Two NVLink boards of four, as on some 8-GPU PCIe servers with bridges.
      for (size_t g = 0; g < inv->gpus.size(); ++g) {
        inv->gpus[g].nvlink_domain = g < 4 ? "a" : "b";
      }
    }
    HostInfo info{.id = id,
                  .name = profile + "-" + std::to_string(id),
                  .cluster_id = static_cast<int64_t>(rng() % 3),
                  .schedulable = rng() % 10 != 0,
                  .cpu_usage = static_cast<double>(rng() % 100)};
    fleet.hosts[id] = {info, *inv};
  }
  return fleet;
}

VmRequest random_request(std::mt19937& rng, int64_t id) {
  VmRequest r;
  r.vm_id = id;
  r.gid = static_cast<int64_t>(rng() % 2);
  r.priority = static_cast<int>(rng() % 3);
  r.vcpus = 1 + static_cast<int>(rng() % 48);
  r.memory_mb = 1024 * (1 + static_cast<int64_t>(rng() % 256));
  r.cpu_policy = static_cast<CpuPolicy>(rng() % 3);
  r.numa_policy = rng() % 4 == 0 ? NumaPolicy::kStrict : NumaPolicy::kPreferred;
  if (rng() % 3 == 0) r.hugepage_kb = kHugepage1G;
  switch (rng() % 6) {
    case 0:
    case 1: {
      const int counts[] = {1, 2, 4, 8};
      r.gpus.count = counts[rng() % 4];
      r.gpus.topology = rng() % 2 ? GpuTopology::kSameDomain : GpuTopology::kAny;
      if (rng() % 4 == 0) r.gpus.model = "GH200";
      break;
    }
    case 2:
      r.mig = {{"1g.10gb", 1 + static_cast<int>(rng() % 4)}};
      break;
    default:
      break;
  }
  if (rng() % 5 == 0) r.vfs = {{"infiniband", 1 + static_cast<int>(rng() % 3), rng() % 2 == 0}};
  if (rng() % 6 == 0) {  // Members of one group share its rules.
    int group = static_cast<int>(rng() % 3);
    r.vm_group = "job" + std::to_string(group);
    r.host_affinity = group == 1 ? HostAffinity::kSameHost : HostAffinity::kDifferentHosts;
    r.same_cluster = group == 2;
  }
  const Policy policies[] = {Policy::kPacking,   Policy::kPacking, Policy::kStriping,
                             Policy::kLoadAware, Policy::kRank,    Policy::kFirstFit};
  r.policy = policies[rng() % 6];
  if (r.policy == Policy::kRank) r.rank = "FREE_CPU - RUNNING_VMS * 4";
  if (rng() % 8 == 0) r.requirements = "CLUSTER_ID != 2 | FREE_MEMORY > 300000";
  if (rng() % 8 == 0) r.clusters = {static_cast<int64_t>(rng() % 3)};
  if (rng() % 8 == 0) {
    r.allowed_hosts = std::make_shared<const std::unordered_set<int64_t>>(
        std::unordered_set<int64_t>{1, 2, 3, 5, 8, 13});
  }
  EXPECT_TRUE(r.validate());
  return r;
}

// Rebuilds every host from its inventory and holds every live allocation again: a device,
// core, hugepage or byte of memory held twice, or beyond what the host has, fails here.
void expect_consistent(const Fleet& fleet, const std::map<int64_t, Allocation>& live) {
  std::map<int64_t, HostState> fresh;
  for (const auto& [id, host] : fleet.hosts) fresh.emplace(id, HostState(host.first, host.second));
  for (const auto& [vm, a] : live) {
    auto it = fresh.find(a.host_id);
    ASSERT_NE(it, fresh.end());
    auto held = it->second.hold(a);
    ASSERT_TRUE(held) << "VM " << vm << ": " << held.error().message();
    EXPECT_TRUE(fleet.hosts.at(a.host_id).first.schedulable) << "VM " << vm << " on offline host";
  }
}

class PropertyTest : public ::testing::TestWithParam<int> {};

TEST_P(PropertyTest, NoDoubleAllocationAndEveryPendingReasonIsTrue) {
  std::mt19937 rng(GetParam());
  Fleet fleet = random_fleet(rng, 24);
  Scheduler sched;
  for (const auto& [id, host] : fleet.hosts) sched.set_host(host.first, host.second);
  std::map<int64_t, Allocation> live;
  std::map<int64_t, VmRequest> requests;
  std::vector<VmRequest> pending;
  int64_t next_id = 1;
  int placed = 0, refused = 0;
  for (int round = 0; round < 12; ++round) {
    for (int i = 0; i < 20; ++i) {
      VmRequest r = random_request(rng, next_id++);
      requests[r.vm_id] = r;
      pending.push_back(r);
    }
    // Each refusal is checked host by host at the moment it is made.
    auto decisions = sched.schedule(pending, [&](const VmRequest& r, const Decision& d) {
      if (d.allocation) return;
      auto reason = sched.prove_unplaceable(r);
      EXPECT_TRUE(reason.has_value())
          << "VM " << r.vm_id << " was left pending but fits: " << dump_json(r.to_json()) << ": "
          << d.explanation;
    });
    std::vector<VmRequest> still;
    for (const auto& d : decisions) {
      const VmRequest& r = requests.at(d.vm_id);
      if (d.allocation) {
        EXPECT_EQ(d.allocation->vm_id, d.vm_id);
        live[d.vm_id] = *d.allocation;
        ++placed;
      } else {
        still.push_back(r);
        ++refused;
      }
    }
    expect_consistent(fleet, live);
    pending = still;
    // Release a third of the running VMs.
    for (auto it = live.begin(); it != live.end();) {
      if (rng() % 3 == 0) {
        sched.release(requests.at(it->first), it->second);
        it = live.erase(it);
      } else {
        ++it;
      }
    }
    // A host goes offline or comes back now and then.
    if (rng() % 2 == 0) {
      auto& [info, inv] = fleet.hosts[1 + static_cast<int64_t>(rng() % fleet.hosts.size())];
      bool has_vms = false;
      for (const auto& [vm, a] : live) has_vms = has_vms || a.host_id == info.id;
      if (!has_vms) {
        info.schedulable = !info.schedulable;
        sched.update_host(info);
      }
    }
  }
  EXPECT_GT(placed, 50);
  EXPECT_GT(refused, 0);
  // Releasing everything leaves a fleet as free as a new one.
  for (const auto& [vm, a] : live) sched.release(requests.at(vm), a);
  Scheduler empty;
  for (const auto& [id, host] : fleet.hosts) empty.set_host(host.first, host.second);
  EXPECT_EQ(sched.free_whole_gpus(), empty.free_whole_gpus());
  for (const auto& [id, host] : fleet.hosts) {
    EXPECT_EQ(sched.host(id)->free_threads(), empty.host(id)->free_threads());
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, PropertyTest, ::testing::Range(1, 13));

}  // namespace
}  // namespace fabrica::sched
