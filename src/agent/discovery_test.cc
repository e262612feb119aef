#include "agent/discovery.h"

#include <gtest/gtest.h>

namespace fabrica::agent {
namespace {

using namespace inventory;

HostInventory discover_fixture(const std::string& name) {
  SysfsSource source(std::string(FABRICA_FIXTURES) + "/" + name);
  auto inv = discover(source);
  EXPECT_TRUE(inv) << name << ": " << inv.error().message();
  return inv ? *inv : HostInventory{};
}

TEST(DiscoveryTest, HgxH100NodeWithNvSwitchesAndNdrInfiniBand) {
  HostInventory inv = discover_fixture("hgx-h100");
  EXPECT_EQ(inv.hostname, "gpu-node-01");
  EXPECT_EQ(inv.cpu.model, "Intel(R) Xeon(R) Platinum 8480C");
  EXPECT_EQ(inv.cpu.architecture, "x86_64");
  EXPECT_EQ(inv.cpu.sockets, 2);
  EXPECT_EQ(inv.cpu.cores, 112);
  EXPECT_EQ(inv.cpu.threads, 224);
  ASSERT_EQ(inv.numa_nodes.size(), 2u);
  EXPECT_EQ(format_cpu_list(inv.numa_nodes[0].cpus), "0-55,112-167");
  EXPECT_EQ(format_cpu_list(inv.numa_nodes[1].cpus), "56-111,168-223");
  EXPECT_EQ(inv.numa_nodes[1].memory_total_kb, 1056LL * 1024 * 1024);
  EXPECT_EQ(inv.numa_nodes[1].memory_free_kb, 980LL * 1024 * 1024);
  ASSERT_EQ(inv.numa_nodes[0].hugepages.size(), 2u);
  EXPECT_EQ(inv.numa_nodes[0].hugepages[1].size_kb, 1048576);
  EXPECT_EQ(inv.numa_nodes[0].hugepages[1].total, 448);

  ASSERT_EQ(inv.gpus.size(), 8u);
  const char* addresses[] = {"0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
                             "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"};
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(inv.gpus[i].pci_address, addresses[i]);
    EXPECT_EQ(inv.gpus[i].model, "H100 SXM5 80GB");
    EXPECT_EQ(inv.gpus[i].device_id, 0x2330);
    EXPECT_EQ(inv.gpus[i].numa_node, i < 4 ? 0 : 1);
    EXPECT_EQ(inv.gpus[i].iommu_group, static_cast<int>(20 + i));
    EXPECT_EQ(inv.gpus[i].driver, "vfio-pci");
  }
  ASSERT_EQ(inv.nvswitches.size(), 4u);
  EXPECT_EQ(inv.nvswitches[0].pci_address, "0000:05:00.0");
  EXPECT_EQ(inv.nvswitches[3].device_id, 0x22a3);

  ASSERT_EQ(inv.nics.size(), 9u);  // 8 ConnectX-7 NDR ports + the management NIC; no lo.
  int ib = 0;
  for (const auto& nic : inv.nics) {
    if (nic.link_layer != LinkLayer::kInfiniBand) continue;
    ++ib;
    EXPECT_EQ(nic.model, "ConnectX-7");
    EXPECT_EQ(nic.speed_mbps, 400000);
    EXPECT_EQ(nic.state, "4: ACTIVE");
    EXPECT_TRUE(nic.rdma_device.starts_with("mlx5_"));
    EXPECT_FALSE(nic.virtual_function);
  }
  EXPECT_EQ(ib, 8);
  const Nic& first = inv.nics[0];
  EXPECT_EQ(first.name, "eno1");
  EXPECT_EQ(first.link_layer, LinkLayer::kEthernet);
  EXPECT_EQ(first.speed_mbps, 10000);
  EXPECT_EQ(first.rdma_device, "irdma0");
  EXPECT_EQ(first.numa_node, 1);
  EXPECT_TRUE(inv.dpus.empty());
  EXPECT_EQ(inv.pci_devices.size(), 21u);
}

TEST(DiscoveryTest, Gh200ArmNodeWithCpuLessHbmNode) {
  HostInventory inv = discover_fixture("gh200");
  EXPECT_EQ(inv.cpu.architecture, "aarch64");
  EXPECT_EQ(inv.cpu.model, "Neoverse-V2");
  EXPECT_EQ(inv.cpu.sockets, 1);
  EXPECT_EQ(inv.cpu.cores, 72);
  EXPECT_EQ(inv.cpu.threads, 72);
  ASSERT_EQ(inv.numa_nodes.size(), 2u);
  EXPECT_EQ(inv.numa_nodes[0].cpus.size(), 72u);
  EXPECT_TRUE(inv.numa_nodes[1].cpus.empty());
  EXPECT_EQ(inv.numa_nodes[1].memory_total_kb, 96LL * 1024 * 1024);
  ASSERT_EQ(inv.gpus.size(), 1u);
  EXPECT_EQ(inv.gpus[0].model, "GH200");
  EXPECT_EQ(inv.gpus[0].pci_address, "0009:01:00.0");
  EXPECT_EQ(inv.gpus[0].driver, "nvidia");
  ASSERT_EQ(inv.nics.size(), 1u);
  EXPECT_EQ(inv.nics[0].link_layer, LinkLayer::kEthernet);
  EXPECT_EQ(inv.nics[0].speed_mbps, 400000);
  EXPECT_EQ(inv.nics[0].mtu, 9000);
}

TEST(DiscoveryTest, SriovInfiniBandVfsAndBlueField3) {
  HostInventory inv = discover_fixture("sriov-ib-bf3");
  const PciDevice* pf = nullptr;
  for (const auto& d : inv.pci_devices) {
    if (d.address == "0000:17:00.0") pf = &d;
  }
  ASSERT_NE(pf, nullptr);
  EXPECT_EQ(pf->sriov_total_vfs, 16);
  EXPECT_EQ(pf->sriov_num_vfs, 4);
  EXPECT_EQ(pf->virtual_functions, (std::vector<std::string>{"0000:17:00.2", "0000:17:00.3",
                                                             "0000:17:00.4", "0000:17:00.5"}));
  int vfs = 0;
  for (const auto& d : inv.pci_devices) {
    if (d.physical_function == "0000:17:00.0") {
      ++vfs;
      EXPECT_EQ(d.device, 0x101e);
    }
  }
  EXPECT_EQ(vfs, 4);
  int vf_nics = 0;
  for (const auto& n : inv.nics) {
    if (!n.virtual_function) continue;
    ++vf_nics;
    EXPECT_EQ(n.link_layer, LinkLayer::kInfiniBand);
    EXPECT_EQ(n.model, "ConnectX VF");
  }
  EXPECT_EQ(vf_nics, 4);
  ASSERT_EQ(inv.dpus.size(), 1u);
  EXPECT_EQ(inv.dpus[0].pci_address, "0000:b1:00.0");
  EXPECT_EQ(inv.dpus[0].model, "BlueField-3");
  const Nic* down = nullptr;
  for (const auto& n : inv.nics) {
    if (n.name == "ens1f1np1") down = &n;
  }
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->state, "down");
  EXPECT_EQ(down->speed_mbps, -1);
  EXPECT_EQ(down->model, "BlueField-3");
  EXPECT_EQ(inv.numa_nodes[0].hugepages[0].free, 4000);
}

TEST(DiscoveryTest, CpuOnlyNodeWithoutNumaFallsBackToMeminfo) {
  HostInventory inv = discover_fixture("cpu-only");
  EXPECT_EQ(inv.cpu.cores, 16);
  EXPECT_EQ(inv.cpu.threads, 32);
  ASSERT_EQ(inv.numa_nodes.size(), 1u);
  EXPECT_EQ(inv.numa_nodes[0].cpus.size(), 32u);
  EXPECT_EQ(inv.numa_nodes[0].memory_total_kb, 263921152);
  ASSERT_EQ(inv.numa_nodes[0].hugepages.size(), 1u);
  EXPECT_EQ(inv.numa_nodes[0].hugepages[0].total, 1024);
  EXPECT_TRUE(inv.gpus.empty());
  ASSERT_EQ(inv.nics.size(), 1u);
  EXPECT_EQ(inv.nics[0].numa_node, -1);
}

TEST(DiscoveryTest, EveryFixtureInventoryPassesValidation) {
  for (const char* name : {"hgx-h100", "gh200", "sriov-ib-bf3", "cpu-only"}) {
    auto back = HostInventory::from_json(discover_fixture(name).to_json());
    EXPECT_TRUE(back) << name << ": " << back.error().message();
  }
}

TEST(DiscoveryTest, ThisMachineDiscoversWithoutError) {
  SysfsSource live;
  auto inv = discover(live);
  ASSERT_TRUE(inv) << inv.error().message();
  EXPECT_GE(inv->cpu.threads, 1);
  EXPECT_GE(inv->numa_nodes.size(), 1u);
  EXPECT_TRUE(HostInventory::from_json(inv->to_json())) << inv->to_json().dump();
}

TEST(DiscoveryTest, RecognisesPciAddresses) {
  EXPECT_TRUE(is_pci_address("0000:18:00.0"));
  EXPECT_TRUE(is_pci_address("0009:01:00.0"));
  EXPECT_FALSE(is_pci_address("virtio2"));
  EXPECT_FALSE(is_pci_address("0000:18:00"));
  EXPECT_FALSE(is_pci_address("000g:18:00.0"));
}

TEST(DiscoveryTest, MissingRootIsUnavailable) {
  SysfsSource nowhere("/nonexistent-fabrica-root");
  auto inv = discover(nowhere);
  ASSERT_FALSE(inv);
  EXPECT_EQ(inv.error().code(), ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace fabrica::agent
