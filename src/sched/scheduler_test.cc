#include "sched/scheduler.h"

#include <gtest/gtest.h>

#include <set>

#include "agent/profiles.h"

namespace fabrica::sched {
namespace {

class SchedulerTest : public ::testing::Test {
 protected:
  // Adds host `id` named "<profile>-<id>" in `cluster`.
  void add(int64_t id, const std::string& profile, int64_t cluster = 0, bool schedulable = true) {
    auto inv = agent::simulated_inventory(profile, static_cast<int>(id));
    ASSERT_TRUE(inv);
    sched_.set_host(HostInfo{.id = id,
                             .name = profile + "-" + std::to_string(id),
                             .cluster_id = cluster,
                             .schedulable = schedulable},
                    *inv);
  }
  VmRequest vm(int gpus, int vcpus = 4, int64_t memory_mb = 16384) {
    VmRequest r;
    r.vm_id = next_id_++;
    r.vcpus = vcpus;
    r.memory_mb = memory_mb;
    r.gpus.count = gpus;
    EXPECT_TRUE(r.validate());
    return r;
  }
  int64_t placed_on(const Decision& d) {
    EXPECT_TRUE(d.allocation.has_value()) << d.explanation;
    return d.allocation ? d.allocation->host_id : -1;
  }

  Scheduler sched_;
  int64_t next_id_ = 1;
};

TEST_F(SchedulerTest, PackingFillsPartlyUsedBoardsAndKeepsWholeBoardsForEightGpuVms) {
  for (int id = 1; id <= 3; ++id) add(id, "hgx-h100");
  EXPECT_EQ(placed_on(sched_.place(vm(1))), 1);
  EXPECT_EQ(placed_on(sched_.place(vm(2))), 1);  // The board already in use, not a fresh one.
  EXPECT_EQ(placed_on(sched_.place(vm(8))), 2);
  EXPECT_EQ(placed_on(sched_.place(vm(4))), 1);
  EXPECT_EQ(placed_on(sched_.place(vm(8))), 3);
  EXPECT_EQ(sched_.free_whole_gpus(), 1);
}

TEST_F(SchedulerTest, StripingSpreadsAndFirstFitFragments) {
  for (int id = 1; id <= 3; ++id) add(id, "hgx-h100");
  std::set<int64_t> hosts;
  for (int i = 0; i < 3; ++i) {
    VmRequest r = vm(1);
    r.policy = Policy::kStriping;
    hosts.insert(placed_on(sched_.place(r)));
  }
  EXPECT_EQ(hosts.size(), 3u);
  EXPECT_DOUBLE_EQ(sched_.gpu_fragmentation(), 1.0);  // Every free GPU is on a broken board.
}

TEST_F(SchedulerTest, OfflineAndDisabledHostsReceiveNothing) {
  add(1, "hgx-h100", 0, /*schedulable=*/false);
  Decision d = sched_.place(vm(1));
  EXPECT_FALSE(d.allocation);
  EXPECT_EQ(d.explanation, "no host in the fleet has 1 free GPU");
  add(2, "hgx-h100");
  EXPECT_EQ(placed_on(sched_.place(vm(1))), 2);
  sched_.update_host(HostInfo{.id = 2, .name = "hgx-h100-2", .schedulable = false});
  EXPECT_FALSE(sched_.place(vm(1)).allocation);
  sched_.update_host(HostInfo{.id = 1, .name = "hgx-h100-1", .schedulable = true});
  EXPECT_EQ(placed_on(sched_.place(vm(1))), 1);
}

TEST_F(SchedulerTest, VdcLimitsHostsAndExplanationsNameIt) {
  for (int id = 1; id <= 3; ++id) add(id, "hgx-h100");
  auto allowed =
      std::make_shared<const std::unordered_set<int64_t>>(std::unordered_set<int64_t>{3});
  VmRequest r = vm(8);
  r.allowed_hosts = allowed;
  r.scope = "VDC acme's hosts";
  EXPECT_EQ(placed_on(sched_.place(r)), 3);
  VmRequest again = vm(8);
  again.allowed_hosts = allowed;
  again.scope = "VDC acme's hosts";
  Decision d = sched_.place(again);
  ASSERT_FALSE(d.allocation);
  EXPECT_EQ(d.explanation, "no host in VDC acme's hosts has 8 free GPUs");
  EXPECT_EQ(placed_on(sched_.place(vm(8))), 1);  // Others still use the rest of the fleet.
}

TEST_F(SchedulerTest, ExplainsTheBestCandidateOfAFragmentedFleet) {
  add(1, "hgx-h100");
  add(2, "hgx-h100");
  ASSERT_TRUE(sched_.place(vm(2)).allocation);
  VmRequest three = vm(3);
  three.policy = Policy::kStriping;
  ASSERT_EQ(placed_on(sched_.place(three)), 2);
  VmRequest r = vm(8);
  r.gpus.model = "H100*";
  r.gpus.topology = GpuTopology::kSameDomain;
  Decision d = sched_.place(r);
  ASSERT_FALSE(d.allocation);
  EXPECT_EQ(d.explanation,
            "no host in the fleet has 8 free H100* GPUs in one NVLink domain; best candidate "
            "hgx-h100-1 has 6");
}

TEST_F(SchedulerTest, ExplainsWhyCandidatesWithEnoughGpusWereRejected) {
  add(1, "hgx-h100");
  add(2, "hgx-h100");
  VmRequest r = vm(8, 300);  // More vCPUs than a 224-thread host has.
  Decision d = sched_.place(r);
  ASSERT_FALSE(d.allocation);
  EXPECT_EQ(d.explanation,
            "no host in the fleet can take 8 free GPUs: of 2 hosts considered, 2 lack free CPUs");
}

TEST_F(SchedulerTest, RequirementsAndRankChooseTheHost) {
  add(1, "hgx-h100");
  add(2, "gh200");
  add(3, "cpu");
  VmRequest r = vm(1, 2, 2048);
  r.requirements = R"(ARCH = "aarch64" & FREE_MEMORY > 65536)";
  ASSERT_TRUE(r.validate());
  EXPECT_EQ(placed_on(sched_.place(r)), 2);
  // CPU-only now: host 1's cores are its free GPUs', hosts 2 and 3 compete on rank.
  VmRequest ranked = vm(0, 2, 2048);
  ranked.policy = Policy::kRank;
  ranked.rank = "FREE_MEMORY";
  ASSERT_TRUE(ranked.validate());
  EXPECT_EQ(placed_on(sched_.place(ranked)), 2);
  ranked.vm_id = next_id_++;
  ranked.rank = "-FREE_MEMORY";
  ASSERT_TRUE(ranked.validate());
  EXPECT_EQ(placed_on(sched_.place(ranked)), 3);
  VmRequest none = vm(0, 2, 2048);
  none.requirements = R"(GPU_MODEL = "B200*")";
  ASSERT_TRUE(none.validate());
  Decision d = sched_.place(none);
  ASSERT_FALSE(d.allocation);
  EXPECT_EQ(d.explanation,
            "no host in the fleet can take 2 free CPUs and 2 GiB of memory: of 2 hosts "
            "considered, 2 fail the requirements");
}

TEST_F(SchedulerTest, CpuOnlyVmsLeaveGpuHostsCoresForTheirGpus) {
  add(1, "hgx-h100");
  add(2, "cpu");
  EXPECT_EQ(placed_on(sched_.place(vm(0, 8, 8192))), 2);
  // Too big for what is left on host 2, and host 1's cores belong to its free GPUs.
  Decision d = sched_.place(vm(0, 30, 8192));
  ASSERT_FALSE(d.allocation);
  EXPECT_EQ(d.explanation, "no host in the fleet has 30 free CPUs and 8 GiB of memory");
  // Once the GPUs are taken, what their VMs left over is open to CPU-only VMs.
  EXPECT_EQ(placed_on(sched_.place(vm(8, 64, 8192))), 1);
  EXPECT_EQ(placed_on(sched_.place(vm(0, 30, 8192))), 1);
  EXPECT_EQ(sched_.host(1)->free_threads_for_cpu_vms(), 224 - 64 - 30);
}

TEST_F(SchedulerTest, TrainingJobLandsOnDifferentHostsInOneCluster) {
  add(1, "hgx-h100", 100);
  add(2, "hgx-h100", 100);
  add(3, "hgx-h100", 200);
  add(4, "hgx-h100", 200);
  add(5, "hgx-h100", 200);
  std::set<int64_t> hosts, clusters;
  std::vector<VmRequest> job;
  for (int i = 0; i < 3; ++i) {
    VmRequest r = vm(8);
    r.gid = 7;
    r.vm_group = "train";
    r.host_affinity = HostAffinity::kDifferentHosts;
    r.same_cluster = true;
    ASSERT_TRUE(r.validate());
    job.push_back(r);
  }
  job[0].clusters = {200};
  for (const auto& d : sched_.schedule(job)) {
    ASSERT_TRUE(d.allocation) << d.explanation;
    hosts.insert(d.allocation->host_id);
    clusters.insert(d.allocation->cluster_id);
  }
  EXPECT_EQ(hosts.size(), 3u);
  EXPECT_EQ(clusters, std::set<int64_t>{200});
  VmRequest fourth = job[1];
  fourth.vm_id = next_id_++;
  Decision d = sched_.place(fourth);
  ASSERT_FALSE(d.allocation);
  EXPECT_NE(d.explanation.find("break the VM group's affinity"), std::string::npos)
      << d.explanation;
  // Another tenant's group of the same name is independent.
  fourth.gid = 8;
  EXPECT_TRUE(sched_.place(fourth).allocation);
}

TEST_F(SchedulerTest, SameHostAffinityKeepsAGroupTogether) {
  add(1, "hgx-h100");
  add(2, "hgx-h100");
  VmRequest a = vm(1);
  a.vm_group = "pair";
  a.host_affinity = HostAffinity::kSameHost;
  a.policy = Policy::kStriping;
  ASSERT_TRUE(a.validate());
  int64_t host = placed_on(sched_.place(a));
  VmRequest b = a;
  b.vm_id = next_id_++;
  EXPECT_EQ(placed_on(sched_.place(b)), host);
}

TEST_F(SchedulerTest, HigherPriorityFirstThenOldestFirst) {
  add(1, "hgx-h100");
  VmRequest old_low = vm(8);
  VmRequest new_high = vm(8);
  new_high.priority = 10;
  VmRequest newer_low = vm(8);
  auto decisions = sched_.schedule({newer_low, old_low, new_high});
  ASSERT_EQ(decisions.size(), 3u);
  EXPECT_EQ(decisions[0].vm_id, new_high.vm_id);
  EXPECT_TRUE(decisions[0].allocation);
  EXPECT_EQ(decisions[1].vm_id, old_low.vm_id);
  EXPECT_FALSE(decisions[1].allocation);
  EXPECT_EQ(decisions[2].explanation, decisions[1].explanation);
}

TEST_F(SchedulerTest, ReleaseFreesDevicesForTheNextVm) {
  add(1, "hgx-h100");
  VmRequest big = vm(8);
  Decision d = sched_.place(big);
  ASSERT_TRUE(d.allocation);
  EXPECT_FALSE(sched_.place(vm(1)).allocation);
  sched_.release(big, *d.allocation);
  EXPECT_EQ(placed_on(sched_.place(vm(8))), 1);
}

TEST_F(SchedulerTest, MigSlicesAreIndexedByProfile) {
  add(1, "hgx-h100");
  add(2, "mig-h100");
  VmRequest r = vm(0, 2, 4096);
  r.mig = {{"1g.10gb", 3}};
  Decision d = sched_.place(r);
  EXPECT_EQ(placed_on(d), 2);
  ASSERT_EQ(d.allocation->mig.size(), 3u);
  EXPECT_EQ(d.allocation->mig[0].gpu_pci_address, d.allocation->mig[2].gpu_pci_address);
  r.mig = {{"7g.80gb", 1}};
  Decision none = sched_.place(r);
  EXPECT_FALSE(none.allocation);
  EXPECT_EQ(none.explanation, "no host in the fleet has 1 free MIG 7g.80gb instance");
}

TEST_F(SchedulerTest, HoldRestoresAllocationsAndRefusesConflicts) {
  add(1, "hgx-h100");
  VmRequest r = vm(4);
  Decision d = sched_.place(r);
  ASSERT_TRUE(d.allocation);
  Scheduler other;
  auto inv = agent::simulated_inventory("hgx-h100", 1);
  other.set_host(HostInfo{.id = 1, .name = "hgx-h100-1"}, *inv);
  ASSERT_TRUE(other.hold(r, *d.allocation));
  auto twice = other.hold(r, *d.allocation);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code(), ErrorCode::kAborted);
  Allocation elsewhere = *d.allocation;
  elsewhere.host_id = 99;
  EXPECT_EQ(other.hold(r, elsewhere).error().code(), ErrorCode::kNotFound);
}

TEST(VmRequestTest, JsonValidationNamesTheField) {
  struct Case {
    const char* json;
    const char* field;
  } cases[] = {
      {R"({"vcpus":0})", "vcpus"},
      {R"({"memory_mb":0})", "memory_mb"},
      {R"({"cpu_policy":"dedicated"})", "cpu_policy"},
      {R"({"hugepages":"4K"})", "hugepages"},
      {R"({"memory_mb":1000,"hugepages":"1G"})", "memory_mb"},
      {R"({"gpus":{"count":0}})", "gpus.count"},
      {R"({"gpus":{"count":1,"vendor_device":"nvidia"}})", "gpus.vendor_device"},
      {R"({"gpus":{"count":1,"model":"H100","vendor_device":"10de:2330"}})", "gpus.model"},
      {R"({"gpus":{"count":1,"colour":"green"}})", "gpus.colour"},
      {R"({"mig":[{"profile":"big","count":1}]})", "mig[0].profile"},
      {R"({"vfs":[{"fabric":"token-ring","count":1}]})", "vfs[0].fabric"},
      {R"({"requirements":"FREE_GPU > 1"})", "requirements"},
      {R"({"policy":"rank"})", "rank"},
      {R"({"host_affinity":"different-hosts"})", "vm_group"},
      {R"({"clusters":[-1]})", "clusters"},
      {R"({"priority":5000})", "priority"},
      {R"({"surprise":1})", "surprise"},
  };
  for (const auto& c : cases) {
    auto json = parse_json(c.json);
    ASSERT_TRUE(json);
    auto r = VmRequest::from_json(*json);
    ASSERT_FALSE(r.has_value()) << c.json;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().field(), c.field) << c.json << ": " << r.error().message();
  }
  auto ok = VmRequest::from_json(*parse_json(
      R"({"vcpus":16,"memory_mb":131072,"cpu_policy":"core","hugepages":"1G",
          "gpus":{"count":8,"model":"H100*","topology":"same-domain"},
          "mig":[],"vfs":[{"fabric":"infiniband","count":1}],
          "requirements":"FREE_MEMORY > 65536","vm_group":"job","host_affinity":"different-hosts"})"));
  ASSERT_TRUE(ok) << ok.error().message();
  auto again = VmRequest::from_json(ok->to_json());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->to_json(), ok->to_json());
  auto amounts = ok->quota_amounts();
  EXPECT_EQ(amounts.back(), (std::pair<std::string, int64_t>{"gpu:H100", 8}));
}

}  // namespace
}  // namespace fabrica::sched
