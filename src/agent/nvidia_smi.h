#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "inventory/hardware.h"

namespace fabrica::agent {

// One GPU as `nvidia-smi -q -x` describes it.
struct SmiGpu {
  std::string pci_address;  // Normalised to "0000:18:00.0".
  std::string product_name;
  std::string uuid;
  int64_t memory_mib = 0;
  std::string mig_mode;  // current_mig: "Enabled", "Disabled", "" for N/A.
  std::vector<inventory::MigInstance> mig_instances;  // Without profile and uuid (see -L).
  std::string fabric;  // "clusterUuid/cliqueId" on NVLink-fabric systems (GB200 NVL), else "".
};

// Parses `nvidia-smi -q -x`. kInvalidArgument when the text is not that XML.
Result<std::vector<SmiGpu>> parse_nvidia_smi_xml(std::string_view xml);

struct SmiMigDevice {
  std::string profile;  // "1g.10gb"
  std::string uuid;     // "MIG-..."
};
// Parses `nvidia-smi -L`: MIG devices per GPU UUID, in device order.
std::map<std::string, std::vector<SmiMigDevice>> parse_nvidia_smi_list(std::string_view text);

// Folds nvidia-smi's view into `inventory`: UUIDs, memory, product names, MIG mode and
// instances (profile names and UUIDs from -L, matched by device order), NVLink fabric.
// GPUs nvidia-smi reports but sysfs did not show are added.
void merge_nvidia_smi(inventory::HostInventory& inventory, const std::vector<SmiGpu>& gpus,
                      const std::map<std::string, std::vector<SmiMigDevice>>& mig_devices);

// The query behind GPU monitoring samples, in this column order.
inline constexpr const char* kGpuMonitoringQuery =
    "--query-gpu=uuid,utilization.gpu,memory.used,temperature.gpu,power.draw,"
    "ecc.errors.uncorrected.volatile.total --format=csv,noheader,nounits";

// Parses that CSV into one JSON object per GPU: uuid, utilization_percent, memory_used_mib,
// temperature_c, power_w, ecc_uncorrected. "[N/A]" and "[Not Supported]" become null.
Json parse_gpu_monitoring(std::string_view csv);

}  // namespace fabrica::agent
