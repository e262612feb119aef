#include "inventory/hardware.h"

#include <gtest/gtest.h>

#include <functional>

namespace fabrica::inventory {
namespace {

HostInventory sample() {
  HostInventory inv;
  inv.hostname = "gpu-node-01";
  inv.cpu = Cpu{"Intel(R) Xeon(R) Platinum 8480C", "x86_64", 2, 112, 224};
  inv.numa_nodes = {NumaNode{0, {0, 1, 2}, 1000, 900, {HugePages{1048576, 448, 440}}}};
  inv.pci_devices = {PciDevice{.address = "0000:18:00.0",
                               .vendor = 0x10de,
                               .device = 0x2330,
                               .class_code = 0x030200,
                               .numa_node = 0,
                               .iommu_group = 20,
                               .driver = "vfio-pci"}};
  inv.gpus = {Gpu{"0000:18:00.0", "H100 SXM5 80GB", 0x2330, 0, 20, "vfio-pci"}};
  inv.nics = {Nic{.name = "ibp26s0",
                  .rdma_device = "mlx5_0",
                  .pci_address = "0000:1a:00.0",
                  .link_layer = LinkLayer::kInfiniBand,
                  .speed_mbps = 400000}};
  return inv;
}

TEST(HostInventoryTest, JsonRoundTrip) {
  HostInventory inv = sample();
  Json j = inv.to_json();
  EXPECT_EQ(j["nics"][0]["link_layer"], "infiniband");
  EXPECT_EQ(j["gpus"][0]["model"], "H100 SXM5 80GB");
  auto back = HostInventory::from_json(j);
  ASSERT_TRUE(back) << back.error().message();
  EXPECT_EQ(back->to_json(), j);
}

TEST(HostInventoryTest, RejectsMalformedAndImpossibleInventories) {
  struct Case {
    std::function<void(Json&)> mutate;
    std::string field;
  };
  const Case cases[] = {
      {[](Json& j) { j["hostname"] = ""; }, "inventory/hostname"},
      {[](Json& j) { j["cpu"]["cores"] = 999; }, "inventory/cpu"},
      {[](Json& j) { j["cpu"]["threads"] = "many"; }, "inventory/"},
      {[](Json& j) { j["numa_nodes"][0]["memory_free_kb"] = 5000; }, "inventory/numa_nodes"},
      {[](Json& j) { j["numa_nodes"].push_back(j["numa_nodes"][0]); }, "inventory/numa_nodes"},
      {[](Json& j) { j["numa_nodes"][0]["hugepages"][0]["free"] = -1; }, "inventory/numa_nodes"},
      {[](Json& j) { j["pci_devices"].push_back(j["pci_devices"][0]); }, "inventory/pci_devices"},
      {[](Json& j) { j["pci_devices"][0]["sriov_num_vfs"] = 4; }, "inventory/pci_devices"},
      {[](Json& j) { j["nics"][0]["link_layer"] = 7; }, "inventory/"},
      // Found by tests/fuzz/inventory_fuzz (tests/fuzz/regressions/inventory): a float where an
      // integer belongs was converted with undefined behaviour.
      {[](Json& j) { j["cpu"]["cores"] = 2.22222e+58; }, "inventory/cpu.cores"},
      {[](Json& j) { j["numa_nodes"][0]["memory_total_kb"] = 1.5; },
       "inventory/numa_nodes[0].memory_total_kb"},
  };
  for (const Case& c : cases) {
    Json j = sample().to_json();
    c.mutate(j);
    auto r = HostInventory::from_json(j);
    ASSERT_FALSE(r) << j.dump();
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(r.error().field(), c.field) << r.error().message();
  }
  EXPECT_FALSE(HostInventory::from_json(Json::array()));
}

TEST(CpuListTest, ParsesAndFormatsKernelRanges) {
  EXPECT_EQ(parse_cpu_list("0-3,8,10-11\n"), (std::vector<int>{0, 1, 2, 3, 8, 10, 11}));
  EXPECT_EQ(parse_cpu_list(""), std::vector<int>{});
  EXPECT_EQ(parse_cpu_list("3-1"), std::nullopt);
  EXPECT_EQ(parse_cpu_list("a"), std::nullopt);
  EXPECT_EQ(format_cpu_list({11, 0, 1, 2, 3, 8, 10}), "0-3,8,10-11");
}

TEST(PciNamesTest, KnowsRealIds) {
  EXPECT_EQ(gpu_model_name(0x2330), "H100 SXM5 80GB");
  EXPECT_EQ(gpu_model_name(0x2342), "GH200");
  EXPECT_EQ(gpu_model_name(0x0001), std::nullopt);
  EXPECT_TRUE(is_nvswitch(0x22a3));
  EXPECT_EQ(mellanox_model_name(0x1021), "ConnectX-7");
  EXPECT_EQ(mellanox_model_name(0xa2dc), "BlueField-3");
}

}  // namespace
}  // namespace fabrica::inventory
