#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "inventory/hardware.h"

namespace fabrica::agent {

enum class NvidiaSmiQuery {
  kQueryXml,  // nvidia-smi -q -x
  kList,      // nvidia-smi -L
  kMonitor,   // nvidia-smi with kGpuMonitoringQuery (CSV)
};

// Where hardware facts come from: a root holding proc/ and sys/, the live machine ("/") or a
// fixture tree in tests. Paths are absolute under that root ("/sys/bus/pci/devices").
// Implementations are read-only and thread-compatible.
class HardwareSource {
 public:
  virtual ~HardwareSource() = default;
  // The file's contents; nullopt when it is absent or unreadable.
  virtual std::optional<std::string> read_file(std::string_view path) const = 0;
  // Entry names in a directory, sorted; empty when absent.
  virtual std::vector<std::string> list_dir(std::string_view path) const = 0;
  // The last component of a symlink's target ("iommu_groups/12" -> "12"); nullopt if not a link.
  virtual std::optional<std::string> link_name(std::string_view path) const = 0;
  // The PCI function a device link leads to: the last component shaped like a PCI address
  // ("0000:18:00.0") on the link's fully resolved path, so a netdev on a virtio or auxiliary
  // device still maps to its PCI parent. nullopt when there is none.
  virtual std::optional<std::string> pci_address_of(std::string_view path) const = 0;
  // nvidia-smi's output; nullopt when nvidia-smi is absent or fails.
  virtual std::optional<std::string> nvidia_smi(NvidiaSmiQuery query) const = 0;
};

// True for "DDDD:BB:DD.F" (hex digits).
bool is_pci_address(std::string_view text);

// Reads a sysfs/procfs tree rooted at `root`.
class SysfsSource final : public HardwareSource {
 public:
  explicit SysfsSource(std::string root = "/") : root_(std::move(root)) {}
  std::optional<std::string> read_file(std::string_view path) const override;
  std::vector<std::string> list_dir(std::string_view path) const override;
  std::optional<std::string> link_name(std::string_view path) const override;
  std::optional<std::string> pci_address_of(std::string_view path) const override;
  // On the live root ("/") this runs nvidia-smi when it is on PATH; under a fixture root it
  // reads ROOT/nvidia-smi/q-x.xml, L.txt and query-gpu.csv.
  std::optional<std::string> nvidia_smi(NvidiaSmiQuery query) const override;

 private:
  std::string resolve(std::string_view path) const;
  std::string root_;
};

// Builds the inventory from what `source` shows: CPU, NUMA nodes with memory and hugepages,
// every PCI device (ids, class, NUMA node, IOMMU group, driver, SR-IOV), NVIDIA GPUs and
// NVSwitches (with nvidia-smi: UUIDs, memory, MIG instances, NVLink fabric), network interfaces
// (Ethernet/InfiniBand, RDMA devices, VFs) and BlueField DPUs. kUnavailable when the source has no
// /proc/cpuinfo at all.
Result<inventory::HostInventory> discover(const HardwareSource& source);

}  // namespace fabrica::agent
