#include "agent/profiles.h"

#include <cstdio>

namespace fabrica::agent {
namespace {

using namespace inventory;

std::string hex_id(int index, int n) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%08x-%04x-4%03x-8000-%012x",
                static_cast<unsigned>(index) * 2654435761u, static_cast<unsigned>(n),
                static_cast<unsigned>(index & 0xfff), static_cast<unsigned>(index * 16 + n));
  return buf;
}

void add_numa(HostInventory& inv, int nodes, int cores_per_node, int threads_per_core,
              int64_t memory_kb_per_node) {
  int total = nodes * cores_per_node;
  for (int n = 0; n < nodes; ++n) {
    NumaNode node{.id = n,
                  .memory_total_kb = memory_kb_per_node,
                  .memory_free_kb = memory_kb_per_node - memory_kb_per_node / 20};
    for (int t = 0; t < threads_per_core; ++t) {
      for (int c = 0; c < cores_per_node; ++c)
        node.cpus.push_back(t * total + n * cores_per_node + c);
    }
    node.hugepages = {HugePages{2048, 0, 0},
                      HugePages{1048576, memory_kb_per_node / 1048576 * 4 / 5,
                                memory_kb_per_node / 1048576 * 4 / 5}};
    inv.numa_nodes.push_back(std::move(node));
  }
}

void add_h100s(HostInventory& inv, int index, bool mig) {
  const char* buses[] = {"18", "2a", "3a", "5d", "9a", "ab", "ba", "db"};
  for (int g = 0; g < 8; ++g) {
    std::string address = std::string("0000:") + buses[g] + ":00.0";
    inv.pci_devices.push_back(PciDevice{.address = address,
                                        .vendor = kVendorNvidia,
                                        .device = 0x2330,
                                        .class_code = 0x030200,
                                        .numa_node = g < 4 ? 0 : 1,
                                        .iommu_group = 20 + g,
                                        .driver = mig ? "nvidia" : "vfio-pci"});
    Gpu gpu{.pci_address = address,
            .model = "H100 SXM5 80GB",
            .device_id = 0x2330,
            .numa_node = g < 4 ? 0 : 1,
            .iommu_group = 20 + g,
            .driver = mig ? "nvidia" : "vfio-pci",
            .product_name = "NVIDIA H100 80GB HBM3",
            .uuid = "GPU-" + hex_id(index, g),
            .memory_mib = 81559,
            .mig_mode = mig ? "Enabled" : "Disabled",
            .nvlink_domain = "nvswitch"};
    if (mig) {
      for (int s = 0; s < 7; ++s) {
        gpu.mig_instances.push_back(
            MigInstance{"1g.10gb", "MIG-" + hex_id(index, g * 8 + s), 7 + s, 0, 9984});
      }
    }
    inv.gpus.push_back(std::move(gpu));
  }
  for (int s = 0; s < 4; ++s) {
    std::string address = "0000:0" + std::to_string(5 + s) + ":00.0";
    inv.pci_devices.push_back(PciDevice{.address = address,
                                        .vendor = kVendorNvidia,
                                        .device = 0x22a3,
                                        .class_code = 0x068000,
                                        .numa_node = 0,
                                        .iommu_group = 10 + s,
                                        .driver = "nvidia"});
    inv.nvswitches.push_back(NvSwitch{address, 0x22a3, 0});
  }
  const char* nic_buses[] = {"1a", "2c", "3c", "5f", "9c", "ad", "bc", "dd"};
  for (int n = 0; n < 8; ++n) {
    std::string address = std::string("0000:") + nic_buses[n] + ":00.0";
    PciDevice pf{.address = address,
                 .vendor = kVendorMellanox,
                 .device = 0x1021,
                 .class_code = 0x020700,
                 .numa_node = n < 4 ? 0 : 1,
                 .iommu_group = 40 + n,
                 .driver = "mlx5_core",
                 .sriov_total_vfs = 16,
                 .sriov_num_vfs = 4};
    for (int v = 1; v <= 4; ++v) {
      std::string vf = std::string("0000:") + nic_buses[n] + ":00." + std::to_string(v);
      pf.virtual_functions.push_back(vf);
      inv.pci_devices.push_back(PciDevice{.address = vf,
                                          .vendor = kVendorMellanox,
                                          .device = 0x101e,
                                          .class_code = 0x020700,
                                          .numa_node = pf.numa_node,
                                          .iommu_group = 100 + n * 4 + v,
                                          .driver = "vfio-pci",
                                          .physical_function = address});
    }
    inv.pci_devices.push_back(std::move(pf));
    inv.nics.push_back(Nic{
        .name = std::string("ibp") + std::to_string(std::stoi(nic_buses[n], nullptr, 16)) + "s0",
        .rdma_device = "mlx5_" + std::to_string(n),
        .pci_address = address,
        .link_layer = LinkLayer::kInfiniBand,
        .model = "ConnectX-7",
        .mtu = 4092,
        .speed_mbps = 400000,
        .state = "4: ACTIVE",
        .numa_node = n < 4 ? 0 : 1});
  }
}

}  // namespace

Result<HostInventory> simulated_inventory(std::string_view profile, int index) {
  HostInventory inv;
  inv.hostname = std::string(profile) + "-" + std::to_string(index);
  if (profile == "hgx-h100" || profile == "mig-h100") {
    inv.cpu = Cpu{"Intel(R) Xeon(R) Platinum 8480C", "x86_64", 2, 112, 224};
    add_numa(inv, 2, 56, 2, 1056LL * 1024 * 1024);
    add_h100s(inv, index, profile == "mig-h100");
  } else if (profile == "gh200") {
    inv.cpu = Cpu{"Neoverse-V2", "aarch64", 1, 72, 72};
    add_numa(inv, 1, 72, 1, 480LL * 1024 * 1024);
    inv.numa_nodes.push_back(NumaNode{
        .id = 1, .memory_total_kb = 96LL * 1024 * 1024, .memory_free_kb = 96LL * 1024 * 1024});
    inv.pci_devices.push_back(PciDevice{.address = "0009:01:00.0",
                                        .vendor = kVendorNvidia,
                                        .device = 0x2342,
                                        .class_code = 0x030200,
                                        .numa_node = 0,
                                        .iommu_group = 9,
                                        .driver = "nvidia"});
    inv.gpus.push_back(Gpu{.pci_address = "0009:01:00.0",
                           .model = "GH200",
                           .device_id = 0x2342,
                           .numa_node = 0,
                           .iommu_group = 9,
                           .driver = "nvidia",
                           .product_name = "NVIDIA GH200 480GB",
                           .uuid = "GPU-" + hex_id(index, 0),
                           .memory_mib = 97871,
                           .mig_mode = "Disabled"});
  } else if (profile == "cpu") {
    inv.cpu = Cpu{"Intel(R) Xeon(R) Silver 4314 CPU @ 2.40GHz", "x86_64", 1, 16, 32};
    add_numa(inv, 1, 16, 2, 256LL * 1024 * 1024);
  } else {
    return fail(ErrorCode::kInvalidArgument, "profile must be hgx-h100, gh200, mig-h100 or cpu",
                "profile");
  }
  return inv;
}

}  // namespace fabrica::agent
