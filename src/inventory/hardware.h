#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/json.h"

namespace fabrica::inventory {

// What one server holds, as the agent discovers it and the scheduler hands it out: exact
// PCI addresses, NUMA nodes and CPUs. Plain value types shared by agent and daemon; the JSON
// form (to_json / from_json) is the wire and storage format.

struct Cpu {
  std::string model;         // "Intel(R) Xeon(R) Platinum 8480+", "Neoverse-V2"
  std::string architecture;  // "x86_64" or "aarch64"
  int sockets = 0;
  int cores = 0;    // Physical cores, all sockets.
  int threads = 0;  // Logical CPUs online.
};

struct HugePages {
  int64_t size_kb = 0;  // 2048 or 1048576
  int64_t total = 0;
  int64_t free = 0;
};

struct NumaNode {
  int id = 0;
  std::vector<int> cpus;
  int64_t memory_total_kb = 0;
  int64_t memory_free_kb = 0;
  std::vector<HugePages> hugepages;
};

struct PciDevice {
  std::string address;  // "0000:18:00.0"
  uint16_t vendor = 0;
  uint16_t device = 0;
  uint16_t subsystem_vendor = 0;
  uint16_t subsystem_device = 0;
  uint32_t class_code = 0;  // 24-bit class, e.g. 0x030200 for a 3D controller.
  int numa_node = -1;       // -1 when the platform does not say.
  int iommu_group = -1;
  std::string driver;  // Bound kernel driver, "" when none.
  int sriov_total_vfs = 0;
  int sriov_num_vfs = 0;
  std::vector<std::string> virtual_functions;  // VF addresses, for a PF.
  std::string physical_function;               // PF address, for a VF.
};

enum class GpuKind { kGpu, kNvSwitch };

// A MIG GPU instance with its compute instance, as nvidia-smi reports it.
struct MigInstance {
  std::string profile;  // "1g.10gb", "3g.40gb"
  std::string uuid;     // "MIG-..."
  int gpu_instance_id = -1;
  int compute_instance_id = -1;
  int64_t memory_mib = 0;
};

struct Gpu {
  std::string pci_address;
  std::string model;  // "H100 SXM5 80GB", from the PCI id.
  uint16_t device_id = 0;
  int numa_node = -1;
  int iommu_group = -1;
  std::string driver;
  // From nvidia-smi, when the driver is loaded on the host.
  std::string product_name;  // "NVIDIA H100 80GB HBM3"
  std::string uuid;          // "GPU-..."
  int64_t memory_mib = 0;
  std::string mig_mode;  // "Enabled", "Disabled", "" when unknown.
  std::vector<MigInstance> mig_instances;
  std::string nvlink_domain;  // GPUs sharing a domain talk over NVLink/NVSwitch; "" if none.
};

struct NvSwitch {
  std::string pci_address;
  uint16_t device_id = 0;
  int numa_node = -1;
};

enum class LinkLayer { kEthernet, kInfiniBand };

struct Nic {
  std::string name;         // Netdev name ("ens1f0np0", "ibp24s0").
  std::string rdma_device;  // RDMA device on the same function ("mlx5_0"), "" when none.
  std::string pci_address;  // "" for virtual interfaces.
  LinkLayer link_layer = LinkLayer::kEthernet;
  std::string model;  // "ConnectX-7", from the PCI id.
  std::string mac;
  int mtu = 0;
  int speed_mbps = -1;  // -1 when unknown.
  std::string state;    // "up", "down", "ACTIVE"...
  int numa_node = -1;
  bool virtual_function = false;
};

struct Dpu {
  std::string pci_address;
  std::string model;  // "BlueField-3"
  int numa_node = -1;
};

struct HostInventory {
  std::string hostname;
  Cpu cpu;
  std::vector<NumaNode> numa_nodes;
  std::vector<PciDevice> pci_devices;
  std::vector<Gpu> gpus;
  std::vector<NvSwitch> nvswitches;
  std::vector<Nic> nics;
  std::vector<Dpu> dpus;
  // What runs VMs here: "" (an inventory-only agent), "libvirt" or "simulated"; and the libvirt
  // domain type it uses ("kvm" or "qemu").
  std::string hypervisor;
  std::string domain_type;

  Json to_json() const;
  // kInvalidArgument (field = the JSON path at fault) for wrong types or impossible values.
  static Result<HostInventory> from_json(const Json& json);
};

// Names of well-known devices by PCI id, from the public PCI ID repository and NVIDIA's
// device lists; nullopt for ids this build does not know.
std::optional<std::string> gpu_model_name(uint16_t device_id);
bool is_nvswitch(uint16_t device_id);
std::optional<std::string> mellanox_model_name(uint16_t device_id);

inline constexpr uint16_t kVendorNvidia = 0x10de;
inline constexpr uint16_t kVendorMellanox = 0x15b3;

// "0-3,8,10-11" <-> {0,1,2,3,8,10,11}. parse: nullopt when malformed.
std::optional<std::vector<int>> parse_cpu_list(std::string_view text);
std::string format_cpu_list(const std::vector<int>& cpus);

}  // namespace fabrica::inventory
