#include "agent/nvidia_smi.h"

#include <gtest/gtest.h>

#include "agent/discovery.h"

namespace fabrica::agent {
namespace {

TEST(NvidiaSmiTest, ParsesGpusAndMigDevicesFromXml) {
  const char* xml = R"(<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log><driver_version>550.127.05</driver_version>
<gpu id="00000000:9A:00.0"><product_name>NVIDIA H100 80GB HBM3</product_name>
<mig_mode><current_mig>N/A</current_mig></mig_mode><mig_devices>None</mig_devices>
<uuid>GPU-abc</uuid><fb_memory_usage><total>81559 MiB</total></fb_memory_usage>
<fabric><clusterUuid>c1a2b3c4-0000-0000-0000-000000000001</clusterUuid><cliqueId>32766</cliqueId></fabric>
</gpu></nvidia_smi_log>)";
  auto gpus = parse_nvidia_smi_xml(xml);
  ASSERT_TRUE(gpus) << gpus.error().message();
  ASSERT_EQ(gpus->size(), 1u);
  const SmiGpu& g = (*gpus)[0];
  EXPECT_EQ(g.pci_address, "0000:9a:00.0");
  EXPECT_EQ(g.product_name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(g.uuid, "GPU-abc");
  EXPECT_EQ(g.memory_mib, 81559);
  EXPECT_EQ(g.mig_mode, "");
  EXPECT_TRUE(g.mig_instances.empty());
  EXPECT_EQ(g.fabric, "c1a2b3c4-0000-0000-0000-000000000001/32766");
}

TEST(NvidiaSmiTest, RejectsWhatIsNotNvidiaSmiXml) {
  EXPECT_EQ(parse_nvidia_smi_xml("<html>").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(parse_nvidia_smi_xml("<other/>").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_FALSE(parse_nvidia_smi_xml(""));
}

TEST(NvidiaSmiTest, ListGivesMigProfilesAndUuidsPerGpu) {
  auto list = parse_nvidia_smi_list(
      "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-a)\n"
      "  MIG 3g.40gb     Device  0: (UUID: MIG-x)\n"
      "  MIG 1g.10gb     Device  1: (UUID: MIG-y)\n"
      "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-b)\n");
  ASSERT_EQ(list.size(), 2u);
  ASSERT_EQ(list["GPU-a"].size(), 2u);
  EXPECT_EQ(list["GPU-a"][0].profile, "3g.40gb");
  EXPECT_EQ(list["GPU-a"][1].uuid, "MIG-y");
  EXPECT_TRUE(list["GPU-b"].empty());
}

TEST(NvidiaSmiTest, ParsesGpuMonitoringCsv) {
  Json gpus = parse_gpu_monitoring(
      "GPU-a, 97, 80312, 64, 688.21, 0\n"
      "GPU-b, [N/A], 12, 40, [Not Supported], [N/A]\n"
      "garbage line\n");
  ASSERT_EQ(gpus.size(), 2u);
  EXPECT_EQ(gpus[0]["uuid"], "GPU-a");
  EXPECT_EQ(gpus[0]["utilization_percent"], 97.0);
  EXPECT_EQ(gpus[0]["memory_used_mib"], 80312.0);
  EXPECT_EQ(gpus[0]["temperature_c"], 64.0);
  EXPECT_EQ(gpus[0]["power_w"], 688.21);
  EXPECT_EQ(gpus[0]["ecc_uncorrected"], 0.0);
  EXPECT_TRUE(gpus[1]["utilization_percent"].is_null());
  EXPECT_TRUE(gpus[1]["power_w"].is_null());
  SysfsSource source(std::string(FABRICA_FIXTURES) + "/mig-h100");
  auto csv = source.nvidia_smi(NvidiaSmiQuery::kMonitor);
  ASSERT_TRUE(csv);
  Json fixture = parse_gpu_monitoring(*csv);
  ASSERT_EQ(fixture.size(), 3u);
  EXPECT_EQ(fixture[1]["temperature_c"], 32.0);
  EXPECT_TRUE(fixture[2]["ecc_uncorrected"].is_null());
}

TEST(NvidiaSmiTest, MigPartitionedH100NodeFixture) {
  SysfsSource source(std::string(FABRICA_FIXTURES) + "/mig-h100");
  auto inv = discover(source);
  ASSERT_TRUE(inv) << inv.error().message();
  ASSERT_EQ(inv->gpus.size(), 3u);
  const auto& g0 = inv->gpus[0];
  EXPECT_EQ(g0.pci_address, "0000:18:00.0");
  EXPECT_EQ(g0.uuid, "GPU-6b1e4c9a-3f0d-4e8b-9a51-2c7d8e0f1a23");
  EXPECT_EQ(g0.product_name, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(g0.memory_mib, 81559);
  EXPECT_EQ(g0.mig_mode, "Enabled");
  ASSERT_EQ(g0.mig_instances.size(), 4u);
  EXPECT_EQ(g0.mig_instances[0].profile, "3g.40gb");
  EXPECT_EQ(g0.mig_instances[0].gpu_instance_id, 2);
  EXPECT_EQ(g0.mig_instances[0].memory_mib, 40320);
  EXPECT_EQ(g0.mig_instances[1].profile, "2g.20gb");
  EXPECT_EQ(g0.mig_instances[3].profile, "1g.10gb");
  EXPECT_EQ(g0.mig_instances[3].gpu_instance_id, 10);
  EXPECT_EQ(g0.mig_instances[3].uuid, "MIG-3d9caf64-8051-5ecd-b177-4c6f5eaa0134");
  const auto& g1 = inv->gpus[1];
  ASSERT_EQ(g1.mig_instances.size(), 7u);
  for (const auto& m : g1.mig_instances) EXPECT_EQ(m.profile, "1g.10gb");
  const auto& g2 = inv->gpus[2];
  EXPECT_EQ(g2.mig_mode, "Disabled");
  EXPECT_TRUE(g2.mig_instances.empty());
  EXPECT_EQ(g2.nvlink_domain, "");  // No NVSwitch on this board.
  EXPECT_TRUE(inventory::HostInventory::from_json(inv->to_json()));
}

TEST(NvidiaSmiTest, HgxGpusShareTheNvSwitchDomain) {
  SysfsSource source(std::string(FABRICA_FIXTURES) + "/hgx-h100");
  auto inv = discover(source);
  ASSERT_TRUE(inv);
  for (const auto& g : inv->gpus) EXPECT_EQ(g.nvlink_domain, "nvswitch");
}

}  // namespace
}  // namespace fabrica::agent
