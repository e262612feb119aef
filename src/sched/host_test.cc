#include "sched/host.h"

#include <gtest/gtest.h>

#include <set>

#include "agent/discovery.h"
#include "agent/profiles.h"

namespace fabrica::sched {
namespace {

inventory::HostInventory fixture(const std::string& name) {
  agent::SysfsSource source(std::string(FABRICA_FIXTURES) + "/" + name);
  auto inv = agent::discover(source);
  EXPECT_TRUE(inv.has_value());
  return *inv;
}

HostState state_of(const inventory::HostInventory& inv, int64_t id = 1) {
  return HostState(HostInfo{.id = id, .name = inv.hostname.empty() ? "h" : inv.hostname}, inv);
}

VmRequest request(int vcpus, int64_t memory_mb) {
  VmRequest r;
  r.vm_id = 1;
  r.vcpus = vcpus;
  r.memory_mb = memory_mb;
  EXPECT_TRUE(r.validate());
  return r;
}

std::set<int> node_cpus(const inventory::HostInventory& inv, int node) {
  for (const auto& n : inv.numa_nodes) {
    if (n.id == node) return {n.cpus.begin(), n.cpus.end()};
  }
  return {};
}

// The golden case of the issue: 8 H100s on one NVSwitch board, vCPUs on physical cores of
// both GPU-local NUMA nodes, memory in 1G hugepages beside them, an InfiniBand VF.
TEST(HostStateTest, EightGpuVmGetsTheWholeBoardAndCoresFromBothGpuNodes) {
  auto inv = fixture("hgx-h100");
  HostState host = state_of(inv);
  VmRequest r = request(32, 256 * 1024);
  r.cpu_policy = CpuPolicy::kCore;
  r.hugepage_kb = kHugepage1G;
  r.gpus = GpuRequest{.count = 8, .model = "H100*", .topology = GpuTopology::kSameDomain};
  auto fit = host.fit(r);
  ASSERT_EQ(fit.misfit, Misfit::kNone);
  const Allocation& a = fit.allocation;
  ASSERT_EQ(a.gpus.size(), 8u);
  std::set<std::string> pci;
  for (const auto& g : a.gpus) {
    pci.insert(g.pci_address);
    EXPECT_EQ(g.nvlink_domain, "nvswitch");
  }
  EXPECT_EQ(pci.size(), 8u);
  ASSERT_EQ(a.numa.size(), 2u);
  for (const auto& n : a.numa) {
    EXPECT_EQ(n.cpus.size(), 16u) << "node " << n.node;
    EXPECT_EQ(n.hugepages, 128);
    auto local = node_cpus(inv, n.node);
    for (int cpu : n.cpus) EXPECT_TRUE(local.contains(cpu)) << cpu << " not on node " << n.node;
  }
  // Core policy: one vCPU per physical core, so no two pinned CPUs are siblings (N, N+112).
  std::set<int> pinned;
  for (int cpu : a.pinned_cpus()) pinned.insert(cpu % 112);
  EXPECT_EQ(pinned.size(), 32u);
  ASSERT_TRUE(host.hold(a));
  // Nothing left for another GPU VM; the 32 cores' siblings are not handed out either.
  VmRequest one = request(1, 1024);
  one.gpus.count = 1;
  EXPECT_EQ(host.fit(one).misfit, Misfit::kGpus);
  VmRequest threads = request(224 - 64, 1024);
  threads.cpu_policy = CpuPolicy::kThread;
  auto rest = host.fit(threads);
  ASSERT_EQ(rest.misfit, Misfit::kNone);
  for (int cpu : rest.allocation.pinned_cpus()) {
    EXPECT_FALSE(pinned.contains(cpu % 112)) << cpu << " is a sibling of a VM's core";
  }
  threads.vcpus = 224 - 64 + 1;
  EXPECT_EQ(host.fit(threads).misfit, Misfit::kCpu);
}

TEST(HostStateTest, FourGpuVmsTakeOneNumaNodeEachAndTheSingleGpuTheTightestNode) {
  auto inv = fixture("hgx-h100");
  HostState host = state_of(inv);
  VmRequest one = request(4, 8192);
  one.gpus.count = 1;
  one.cpu_policy = CpuPolicy::kThread;
  auto first = host.fit(one);
  ASSERT_EQ(first.misfit, Misfit::kNone);
  EXPECT_EQ(first.allocation.gpus[0].numa_node, 0);
  ASSERT_EQ(first.allocation.numa.size(), 1u);
  EXPECT_EQ(first.allocation.numa[0].node, 0);
  ASSERT_TRUE(host.hold(first.allocation));
  VmRequest four = request(8, 8192);
  four.gpus.count = 4;
  auto second = host.fit(four);
  ASSERT_EQ(second.misfit, Misfit::kNone);
  for (const auto& g : second.allocation.gpus) EXPECT_EQ(g.numa_node, 1);
  ASSERT_TRUE(host.hold(second.allocation));
  // Three GPUs left: a 4-GPU VM no longer fits, and the host says how close it came.
  auto third = host.fit(four);
  EXPECT_EQ(third.misfit, Misfit::kGpus);
  EXPECT_EQ(third.best, 3);
}

TEST(HostStateTest, SameDomainRefusesGpusSpreadOverDomains) {
  auto inv = fixture("hgx-h100");
  for (int i = 0; i < 8; ++i) inv.gpus[i].nvlink_domain = i < 4 ? "board-a" : "board-b";
  HostState host = state_of(inv);
  VmRequest r = request(8, 8192);
  r.gpus = GpuRequest{.count = 6, .topology = GpuTopology::kSameDomain};
  auto fit = host.fit(r);
  EXPECT_EQ(fit.misfit, Misfit::kGpuTopology);
  EXPECT_EQ(fit.best, 4);
  r.gpus.topology = GpuTopology::kAny;
  EXPECT_EQ(host.fit(r).misfit, Misfit::kNone);
}

TEST(HostStateTest, Gh200GetsItsGpuWithCoresAndMemoryOnTheGraceNode) {
  auto inv = fixture("gh200");
  HostState host = state_of(inv);
  VmRequest r = request(64, 400 * 1024);
  r.cpu_policy = CpuPolicy::kThread;
  r.numa_policy = NumaPolicy::kStrict;
  r.gpus = GpuRequest{.count = 1, .model = "GH200"};
  auto fit = host.fit(r);
  ASSERT_EQ(fit.misfit, Misfit::kNone);
  ASSERT_EQ(fit.allocation.numa.size(), 1u);
  EXPECT_EQ(fit.allocation.numa[0].node, 0);
  EXPECT_EQ(fit.allocation.numa[0].cpus.size(), 64u);
  // Strict: memory beyond the Grace node is refused rather than spilled to the HBM node.
  r.memory_mb = 490 * 1024;
  EXPECT_EQ(host.fit(r).misfit, Misfit::kMemory);
  r.numa_policy = NumaPolicy::kPreferred;
  EXPECT_EQ(host.fit(r).misfit, Misfit::kNone);
}

TEST(HostStateTest, MixedMigSlicesComeFromTheFullestPartitionedGpu) {
  auto inv = fixture("mig-h100");
  HostState host = state_of(inv);
  VmRequest r = request(2, 4096);
  r.mig = {{"1g.10gb", 1}};
  auto first = host.fit(r);
  ASSERT_EQ(first.misfit, Misfit::kNone);
  // GPU 0000:18 has 4 instances, 0000:2a has 7: the fuller one is used first.
  EXPECT_EQ(first.allocation.mig[0].gpu_pci_address, "0000:18:00.0");
  ASSERT_TRUE(host.hold(first.allocation));
  VmRequest mixed = request(2, 4096);
  mixed.mig = {{"3g.40gb", 1}, {"1g.10gb", 2}};
  auto second = host.fit(mixed);
  ASSERT_EQ(second.misfit, Misfit::kNone);
  ASSERT_EQ(second.allocation.mig.size(), 3u);
  EXPECT_EQ(second.allocation.mig[0].profile, "3g.40gb");
  EXPECT_EQ(second.allocation.mig[1].gpu_pci_address, "0000:18:00.0");
  ASSERT_TRUE(host.hold(second.allocation));
  // MIG requests never take the whole GPU, whole-GPU requests never take a MIG GPU.
  VmRequest whole = request(2, 4096);
  whole.gpus.count = 1;
  auto w = host.fit(whole);
  ASSERT_EQ(w.misfit, Misfit::kNone);
  EXPECT_EQ(w.allocation.gpus[0].pci_address, "0000:3a:00.0");
  whole.gpus.count = 2;
  EXPECT_EQ(host.fit(whole).misfit, Misfit::kGpus);
  VmRequest big = request(2, 4096);
  big.mig = {{"3g.40gb", 1}};
  EXPECT_EQ(host.fit(big).misfit, Misfit::kMig);
}

TEST(HostStateTest, SriovVfsSpreadOverPortsAndRespectTheFabric) {
  auto inv = fixture("sriov-ib-bf3");
  HostState host = state_of(inv);
  VmRequest r = request(4, 4096);
  r.vfs = {{"infiniband", 2, true}};
  auto fit = host.fit(r);
  ASSERT_EQ(fit.misfit, Misfit::kNone);
  ASSERT_EQ(fit.allocation.vfs.size(), 2u);
  EXPECT_EQ(fit.allocation.vfs[0].pf_pci_address, "0000:17:00.0");
  EXPECT_NE(fit.allocation.vfs[0].pci_address, fit.allocation.vfs[1].pci_address);
  ASSERT_TRUE(host.hold(fit.allocation));
  r.vfs = {{"infiniband", 3, true}};
  EXPECT_EQ(host.fit(r).misfit, Misfit::kVfs);
  r.vfs = {{"ethernet", 1, true}};
  EXPECT_EQ(host.fit(r).misfit, Misfit::kVfs);  // Its Ethernet ports have no VFs.
}

TEST(HostStateTest, AnSriovNicsVfComesFromItsVnetsPhysicalFunction) {
  auto inv = fixture("sriov-ib-bf3");
  HostState host = state_of(inv);
  VmRequest r = request(4, 4096);
  r.vfs = {{.count = 1, .pf = "ibp23s0", .nic = 2}};
  ASSERT_TRUE(r.validate());
  auto fit = host.fit(r);
  ASSERT_EQ(fit.misfit, Misfit::kNone);
  ASSERT_EQ(fit.allocation.vfs.size(), 1u);
  EXPECT_EQ(fit.allocation.vfs[0].pf_name, "ibp23s0");
  EXPECT_EQ(fit.allocation.vfs[0].nic, 2);
  auto back = Allocation::from_json(fit.allocation.to_json());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->vfs[0].nic, 2);
  r.vfs = {{.count = 1, .pf = "ens1f0np0", .nic = 0}};
  EXPECT_EQ(host.fit(r).misfit, Misfit::kVfs) << "that port has no VFs";
  auto json = VmRequest::from_json(Json{{"vfs", {{{"count", 1}}}}});
  ASSERT_FALSE(json) << "a fabric or a pf is needed";
  EXPECT_EQ(json.error().field(), "vfs[0].fabric");
}

TEST(HostStateTest, VfsBesideTheGpusOnSimulatedHgx) {
  auto inv = agent::simulated_inventory("hgx-h100", 3);
  ASSERT_TRUE(inv);
  HostState host = state_of(*inv);
  VmRequest r = request(8, 8192);
  r.gpus.count = 4;
  r.vfs = {{"infiniband", 4, true}};
  auto fit = host.fit(r);
  ASSERT_EQ(fit.misfit, Misfit::kNone);
  for (const auto& v : fit.allocation.vfs) EXPECT_EQ(v.numa_node, fit.allocation.gpus[0].numa_node);
  std::set<std::string> ports;
  for (const auto& v : fit.allocation.vfs) ports.insert(v.pf_pci_address);
  EXPECT_EQ(ports.size(), 4u);  // One VF per port: full rail bandwidth.
}

TEST(HostStateTest, HoldRefusesWhatIsTakenAndChangesNothing) {
  auto inv = fixture("hgx-h100");
  HostState host = state_of(inv);
  VmRequest r = request(4, 8192);
  r.cpu_policy = CpuPolicy::kThread;
  r.gpus.count = 2;
  auto fit = host.fit(r);
  ASSERT_TRUE(host.hold(fit.allocation));
  int free_before = host.free_threads();
  auto again = host.hold(fit.allocation);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAborted);
  EXPECT_NE(again.error().message().find("is not free"), std::string::npos);
  EXPECT_EQ(host.free_threads(), free_before);
  Allocation bogus = fit.allocation;
  bogus.gpus.clear();
  bogus.numa[0].cpus = {9999};
  EXPECT_FALSE(host.hold(bogus));
  host.release(fit.allocation);
  EXPECT_TRUE(host.hold(fit.allocation));
}

TEST(HostStateTest, SharedCpusCountAgainstUnpinnedThreadsAndMemoryKeepsAReserve) {
  auto inv = agent::simulated_inventory("cpu", 0);  // 32 threads, 256 GiB, 1G pages 204.
  ASSERT_TRUE(inv);
  HostState host = state_of(*inv);
  VmRequest shared = request(24, 16 * 1024);
  ASSERT_TRUE(host.hold(host.fit(shared).allocation));
  VmRequest pinned = request(9, 1024);
  pinned.cpu_policy = CpuPolicy::kThread;
  EXPECT_EQ(host.fit(pinned).misfit, Misfit::kCpu);
  pinned.vcpus = 8;
  EXPECT_EQ(host.fit(pinned).misfit, Misfit::kNone);
  VmRequest huge = request(1, 205 * 1024);
  huge.hugepage_kb = kHugepage1G;
  EXPECT_EQ(host.fit(huge).misfit, Misfit::kHugepages);
  huge.memory_mb = 204 * 1024;
  EXPECT_EQ(host.fit(huge).misfit, Misfit::kNone);
  // 256 GiB - 204 GiB of pages - 2 GiB reserve - 16 GiB used = 34 GiB of ordinary memory.
  VmRequest mem = request(1, 35 * 1024);
  EXPECT_EQ(host.fit(mem).misfit, Misfit::kMemory);
  mem.memory_mb = 34 * 1024;
  EXPECT_EQ(host.fit(mem).misfit, Misfit::kNone);
}

TEST(HostStateTest, AllocationJsonRoundTrips) {
  auto inv = fixture("hgx-h100");
  HostState host = state_of(inv);
  VmRequest r = request(4, 4096);
  r.cpu_policy = CpuPolicy::kCore;
  r.hugepage_kb = kHugepage1G;
  r.gpus.count = 2;
  auto a = host.fit(r).allocation;
  auto back = Allocation::from_json(a.to_json());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->to_json(), a.to_json());
}

}  // namespace
}  // namespace fabrica::sched
