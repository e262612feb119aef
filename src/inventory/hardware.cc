#include "inventory/hardware.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <set>
#include <stdexcept>

namespace fabrica::inventory {

// Not NLOHMANN_JSON_SERIALIZE_ENUM: that maps unknown values to the first enumerator silently.
void to_json(Json& j, LinkLayer layer) {
  j = layer == LinkLayer::kInfiniBand ? "infiniband" : "ethernet";
}
void from_json(const Json& j, LinkLayer& layer) {
  if (j == "ethernet") {
    layer = LinkLayer::kEthernet;
  } else if (j == "infiniband") {
    layer = LinkLayer::kInfiniBand;
  } else {
    throw std::invalid_argument("link_layer must be \"ethernet\" or \"infiniband\"");
  }
}
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Cpu, model, architecture, sockets, cores, threads)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(HugePages, size_kb, total, free)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(NumaNode, id, cpus, memory_total_kb, memory_free_kb,
                                                hugepages)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(PciDevice, address, vendor, device,
                                                subsystem_vendor, subsystem_device, class_code,
                                                numa_node, iommu_group, driver, sriov_total_vfs,
                                                sriov_num_vfs, virtual_functions, physical_function)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(MigInstance, profile, uuid, gpu_instance_id,
                                                compute_instance_id, memory_mib)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Gpu, pci_address, model, device_id, numa_node,
                                                iommu_group, driver, product_name, uuid, memory_mib,
                                                mig_mode, mig_instances, nvlink_domain)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(NvSwitch, pci_address, device_id, numa_node)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Nic, name, rdma_device, pci_address, link_layer,
                                                model, mac, mtu, speed_mbps, state, numa_node,
                                                virtual_function)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(Dpu, pci_address, model, numa_node)

namespace {

struct DeviceName {
  uint16_t id;
  const char* name;
};

// NVIDIA data-center GPUs (pci.ids, NVIDIA gpu-admin-tools).
constexpr DeviceName kNvidiaGpus[] = {
    {0x20b0, "A100 SXM4 40GB"},
    {0x20b2, "A100 SXM4 80GB"},
    {0x20b5, "A100 PCIe 80GB"},
    {0x20f1, "A100 PCIe 40GB"},
    {0x2324, "H800"},
    {0x2330, "H100 SXM5 80GB"},
    {0x2331, "H100 PCIe"},
    {0x2335, "H200"},
    {0x233b, "H200"},
    {0x2339, "H100"},
    {0x2342, "GH200"},
    {0x2343, "GH200"},
    {0x26b5, "L40"},
    {0x26b9, "L40S"},
    {0x27b8, "L4"},
};
// NVSwitch: A100 generation (pci.ids 1af1) and H100 generation (NVLink 4, 22a3).
constexpr uint16_t kNvSwitches[] = {0x1af1, 0x22a3};
// Mellanox / NVIDIA networking (pci.ids).
constexpr DeviceName kMellanox[] = {
    {0x101b, "ConnectX-6"},    {0x101c, "ConnectX-6 VF"},
    {0x101d, "ConnectX-6 Dx"}, {0x101e, "ConnectX VF"},
    {0x101f, "ConnectX-6 Lx"}, {0x1021, "ConnectX-7"},
    {0x1023, "ConnectX-8"},    {0xa2d6, "BlueField-2"},
    {0xa2dc, "BlueField-3"},   {0xc2d5, "BlueField-3 management"},
};

template <size_t N>
std::optional<std::string> lookup(const DeviceName (&table)[N], uint16_t id) {
  for (const auto& d : table) {
    if (d.id == id) return std::string(d.name);
  }
  return std::nullopt;
}

Error invalid(std::string message, std::string field) {
  return Error(ErrorCode::kInvalidArgument, std::move(message), "inventory/" + field);
}

Result<void> validate(const HostInventory& inv) {
  if (inv.hostname.empty() || inv.hostname.size() > 253) {
    return fail(invalid("hostname must be 1-253 characters", "hostname"));
  }
  const Cpu& c = inv.cpu;
  if (c.sockets < 0 || c.cores < 0 || c.threads < 0 || c.threads > 65536 || c.cores > c.threads ||
      c.sockets > c.cores) {
    return fail(invalid("impossible CPU counts", "cpu"));
  }
  std::set<int> ids;
  for (const auto& n : inv.numa_nodes) {
    if (n.id < 0 || n.id > 1023 || !ids.insert(n.id).second) {
      return fail(invalid("NUMA node ids must be unique and 0-1023", "numa_nodes"));
    }
    if (n.memory_total_kb < 0 || n.memory_free_kb < 0 || n.memory_free_kb > n.memory_total_kb) {
      return fail(
          invalid("impossible memory figures on node " + std::to_string(n.id), "numa_nodes"));
    }
    for (const auto& h : n.hugepages) {
      if (h.size_kb <= 0 || h.total < 0 || h.free < 0 || h.free > h.total) {
        return fail(invalid("impossible hugepage counts", "numa_nodes"));
      }
    }
  }
  std::set<std::string> addresses;
  for (const auto& d : inv.pci_devices) {
    if (d.address.empty() || !addresses.insert(d.address).second) {
      return fail(invalid("PCI addresses must be present and unique", "pci_devices"));
    }
    if (d.sriov_num_vfs < 0 || d.sriov_num_vfs > d.sriov_total_vfs) {
      return fail(invalid("impossible SR-IOV counts on " + d.address, "pci_devices"));
    }
  }
  return {};
}

}  // namespace

std::optional<std::string> gpu_model_name(uint16_t device_id) {
  return lookup(kNvidiaGpus, device_id);
}

bool is_nvswitch(uint16_t device_id) {
  return std::find(std::begin(kNvSwitches), std::end(kNvSwitches), device_id) !=
         std::end(kNvSwitches);
}

std::optional<std::string> mellanox_model_name(uint16_t device_id) {
  return lookup(kMellanox, device_id);
}

std::optional<std::vector<int>> parse_cpu_list(std::string_view text) {
  std::vector<int> out;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  if (text.empty()) return out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    std::string_view part = text.substr(start, comma - start);
    size_t dash = part.find('-');
    int lo = 0, hi = 0;
    auto parse = [](std::string_view s, int& v) {
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      return ec == std::errc() && p == s.data() + s.size() && v >= 0 && v < 65536;
    };
    if (dash == std::string_view::npos) {
      if (!parse(part, lo)) return std::nullopt;
      hi = lo;
    } else if (!parse(part.substr(0, dash), lo) || !parse(part.substr(dash + 1), hi) || hi < lo) {
      return std::nullopt;
    }
    for (int c = lo; c <= hi; ++c) out.push_back(c);
    start = comma + 1;
  }
  return out;
}

std::string format_cpu_list(const std::vector<int>& cpus) {
  std::vector<int> sorted = cpus;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(sorted[i]);
    if (j > i) out += "-" + std::to_string(sorted[j]);
    i = j + 1;
  }
  return out;
}

Json HostInventory::to_json() const {
  return Json{{"hostname", hostname},
              {"cpu", cpu},
              {"numa_nodes", numa_nodes},
              {"pci_devices", pci_devices},
              {"gpus", gpus},
              {"nvswitches", nvswitches},
              {"nics", nics},
              {"dpus", dpus},
              {"hypervisor", hypervisor},
              {"domain_type", domain_type}};
}

namespace {

// Every number of an inventory is an integer; a float (2.2e58 where a count belongs) would be
// converted with undefined behaviour. Answers the path of the first one.
std::optional<std::string> first_float(const Json& j, const std::string& path) {
  if (j.is_number_float()) return path.empty() ? std::string("(document)") : path;
  if (j.is_object()) {
    for (const auto& [key, value] : j.items()) {
      if (auto found = first_float(value, path.empty() ? key : path + "." + key)) return found;
    }
  } else if (j.is_array()) {
    for (size_t i = 0; i < j.size(); ++i) {
      if (auto found = first_float(j[i], path + "[" + std::to_string(i) + "]")) return found;
    }
  }
  return std::nullopt;
}

}  // namespace

Result<HostInventory> HostInventory::from_json(const Json& json) {
  if (!json.is_object()) return fail(invalid("must be an object", ""));
  if (auto path = first_float(json, "")) return fail(invalid("must be an integer", *path));
  HostInventory inv;
  try {
    inv.hostname = json.value("hostname", "");
    inv.cpu = json.value("cpu", Cpu{});
    inv.numa_nodes = json.value("numa_nodes", std::vector<NumaNode>{});
    inv.pci_devices = json.value("pci_devices", std::vector<PciDevice>{});
    inv.gpus = json.value("gpus", std::vector<Gpu>{});
    inv.nvswitches = json.value("nvswitches", std::vector<NvSwitch>{});
    inv.nics = json.value("nics", std::vector<Nic>{});
    inv.dpus = json.value("dpus", std::vector<Dpu>{});
    inv.hypervisor = json.value("hypervisor", "");
    inv.domain_type = json.value("domain_type", "");
  } catch (const std::exception& e) {
    return fail(invalid(std::string("malformed inventory: ") + e.what(), ""));
  }
  FAB_TRY(validate(inv));
  if (inv.hypervisor != "" && inv.hypervisor != "libvirt" && inv.hypervisor != "simulated") {
    return fail(invalid("must be libvirt or simulated", "hypervisor"));
  }
  if (inv.domain_type != "" && inv.domain_type != "kvm" && inv.domain_type != "qemu") {
    return fail(invalid("must be kvm or qemu", "domain_type"));
  }
  return inv;
}

}  // namespace fabrica::inventory
