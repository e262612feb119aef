#include "agent/discovery.h"

#include <sys/wait.h>

#include <algorithm>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "agent/nvidia_smi.h"

namespace fabrica::agent {

namespace fs = std::filesystem;
using namespace inventory;

std::string SysfsSource::resolve(std::string_view path) const {
  std::string p(path);
  if (root_ == "/" || root_.empty()) return p;
  return root_ + p;
}

std::optional<std::string> SysfsSource::read_file(std::string_view path) const {
  std::ifstream in(resolve(path));
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) return std::nullopt;
  return out.str();
}

std::vector<std::string> SysfsSource::list_dir(std::string_view path) const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(resolve(path), ec)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::optional<std::string> SysfsSource::link_name(std::string_view path) const {
  std::error_code ec;
  fs::path target = fs::read_symlink(resolve(path), ec);
  if (ec) return std::nullopt;
  return target.filename().string();
}

std::optional<std::string> SysfsSource::nvidia_smi(NvidiaSmiQuery query) const {
  const char* args = query == NvidiaSmiQuery::kQueryXml ? "-q -x"
                     : query == NvidiaSmiQuery::kList   ? "-L"
                                                        : kGpuMonitoringQuery;
  if (root_ != "/" && !root_.empty()) {
    return read_file(query == NvidiaSmiQuery::kQueryXml ? "/nvidia-smi/q-x.xml"
                     : query == NvidiaSmiQuery::kList   ? "/nvidia-smi/L.txt"
                                                        : "/nvidia-smi/query-gpu.csv");
  }
  std::string command = std::string("nvidia-smi ") + args + " 2>/dev/null";
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buf[8192];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  int status = pclose(pipe);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out.empty()) return std::nullopt;
  return out;
}

bool is_pci_address(std::string_view t) {
  if (t.size() != 12 || t[4] != ':' || t[7] != ':' || t[10] != '.') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11}) {
    if (!std::isxdigit(static_cast<unsigned char>(t[i]))) return false;
  }
  return true;
}

std::optional<std::string> SysfsSource::pci_address_of(std::string_view path) const {
  std::error_code ec;
  fs::path resolved = fs::canonical(resolve(path), ec);
  if (ec) return std::nullopt;
  std::optional<std::string> found;
  for (const auto& part : resolved) {
    if (is_pci_address(part.string())) found = part.string();
  }
  return found;
}

namespace {

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

// An integer file ("0x10de\n", "3\n", "-1\n"); nullopt when absent or not a number.
std::optional<int64_t> read_int(const HardwareSource& src, const std::string& path, int base = 10) {
  auto text = src.read_file(path);
  if (!text) return std::nullopt;
  std::string t = trim(*text);
  if (base == 16 && (t.starts_with("0x") || t.starts_with("0X"))) t = t.substr(2);
  int64_t value = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), value, base);
  if (ec != std::errc() || p != t.data() + t.size() || t.empty()) return std::nullopt;
  return value;
}

std::string read_text(const HardwareSource& src, const std::string& path) {
  auto text = src.read_file(path);
  return text ? trim(*text) : std::string();
}

// "key : value" lines of /proc/cpuinfo, first occurrence of each key.
std::map<std::string, std::string> cpuinfo_fields(const std::string& text) {
  std::map<std::string, std::string> fields;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    fields.emplace(trim(line.substr(0, colon)), trim(line.substr(colon + 1)));
  }
  return fields;
}

// Arm cores by MIDR part number (Arm's Technical Reference Manuals).
std::string arm_core_name(const std::string& part) {
  static const std::map<std::string, std::string> kParts = {
      {"0xd0c", "Neoverse-N1"}, {"0xd40", "Neoverse-V1"}, {"0xd49", "Neoverse-N2"},
      {"0xd4f", "Neoverse-V2"}, {"0xd84", "Neoverse-V3"}, {"0xd8e", "Neoverse-N3"}};
  auto it = kParts.find(part);
  return it != kParts.end() ? it->second : "Arm part " + part;
}

Result<Cpu> discover_cpu(const HardwareSource& src) {
  auto cpuinfo = src.read_file("/proc/cpuinfo");
  if (!cpuinfo) return fail(ErrorCode::kUnavailable, "cannot read /proc/cpuinfo");
  auto fields = cpuinfo_fields(*cpuinfo);
  Cpu cpu;
  if (fields.contains("CPU implementer")) {
    cpu.architecture = "aarch64";
    cpu.model = arm_core_name(fields["CPU part"]);
  } else {
    cpu.architecture = "x86_64";
    cpu.model = fields["model name"];
  }
  auto online =
      parse_cpu_list(read_text(src, "/sys/devices/system/cpu/online")).value_or(std::vector<int>{});
  std::set<int64_t> packages;
  std::set<std::pair<int64_t, int64_t>> cores;
  for (int c : online) {
    std::string topo = "/sys/devices/system/cpu/cpu" + std::to_string(c) + "/topology/";
    int64_t package = read_int(src, topo + "physical_package_id").value_or(0);
    int64_t core = read_int(src, topo + "core_id").value_or(c);
    packages.insert(package);
    cores.insert({package, core});
  }
  cpu.threads = static_cast<int>(online.size());
  cpu.cores = static_cast<int>(cores.size());
  cpu.sockets = static_cast<int>(packages.size());
  return cpu;
}

// "Node 0 MemTotal:  1056508168 kB" or "/proc/meminfo" style "MemTotal: 123 kB".
int64_t meminfo_kb(const std::string& text, std::string_view key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto pos = line.find(std::string(key) + ":");
    if (pos == std::string::npos) continue;
    std::istringstream rest(line.substr(pos + key.size() + 1));
    int64_t kb = 0;
    rest >> kb;
    return kb;
  }
  return 0;
}

std::vector<HugePages> discover_hugepages(const HardwareSource& src, const std::string& dir) {
  std::vector<HugePages> out;
  for (const auto& name : src.list_dir(dir)) {
    // "hugepages-2048kB"
    if (!name.starts_with("hugepages-") || !name.ends_with("kB")) continue;
    HugePages h;
    auto digits = name.substr(10, name.size() - 12);
    std::from_chars(digits.data(), digits.data() + digits.size(), h.size_kb);
    h.total = read_int(src, dir + "/" + name + "/nr_hugepages").value_or(0);
    h.free = read_int(src, dir + "/" + name + "/free_hugepages").value_or(0);
    out.push_back(h);
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.size_kb < b.size_kb; });
  return out;
}

std::vector<NumaNode> discover_numa(const HardwareSource& src, const Cpu& cpu) {
  std::vector<NumaNode> nodes;
  const std::string base = "/sys/devices/system/node/";
  for (const auto& name : src.list_dir(base)) {
    int id = -1;
    if (!name.starts_with("node") ||
        std::from_chars(name.data() + 4, name.data() + name.size(), id).ec != std::errc()) {
      continue;
    }
    NumaNode node{.id = id};
    node.cpus =
        parse_cpu_list(read_text(src, base + name + "/cpulist")).value_or(std::vector<int>{});
    std::string meminfo = src.read_file(base + name + "/meminfo").value_or("");
    node.memory_total_kb = meminfo_kb(meminfo, "MemTotal");
    node.memory_free_kb = meminfo_kb(meminfo, "MemFree");
    node.hugepages = discover_hugepages(src, base + name + "/hugepages");
    nodes.push_back(std::move(node));
  }
  std::sort(nodes.begin(), nodes.end(), [](auto& a, auto& b) { return a.id < b.id; });
  if (nodes.empty()) {  // A kernel without NUMA: one node holding everything.
    NumaNode node{.id = 0};
    for (int c = 0; c < cpu.threads; ++c) node.cpus.push_back(c);
    std::string meminfo = src.read_file("/proc/meminfo").value_or("");
    node.memory_total_kb = meminfo_kb(meminfo, "MemTotal");
    node.memory_free_kb = meminfo_kb(meminfo, "MemFree");
    node.hugepages = discover_hugepages(src, "/sys/kernel/mm/hugepages");
    nodes.push_back(std::move(node));
  }
  return nodes;
}

std::vector<PciDevice> discover_pci(const HardwareSource& src) {
  std::vector<PciDevice> devices;
  const std::string base = "/sys/bus/pci/devices/";
  for (const auto& address : src.list_dir(base)) {
    std::string dir = base + address + "/";
    PciDevice d{.address = address};
    d.vendor = static_cast<uint16_t>(read_int(src, dir + "vendor", 16).value_or(0));
    d.device = static_cast<uint16_t>(read_int(src, dir + "device", 16).value_or(0));
    d.subsystem_vendor =
        static_cast<uint16_t>(read_int(src, dir + "subsystem_vendor", 16).value_or(0));
    d.subsystem_device =
        static_cast<uint16_t>(read_int(src, dir + "subsystem_device", 16).value_or(0));
    d.class_code = static_cast<uint32_t>(read_int(src, dir + "class", 16).value_or(0));
    d.numa_node = static_cast<int>(read_int(src, dir + "numa_node").value_or(-1));
    if (auto group = src.link_name(dir + "iommu_group")) {
      d.iommu_group = std::atoi(group->c_str());
    }
    d.driver = src.link_name(dir + "driver").value_or("");
    d.sriov_total_vfs = static_cast<int>(read_int(src, dir + "sriov_totalvfs").value_or(0));
    d.sriov_num_vfs = static_cast<int>(read_int(src, dir + "sriov_numvfs").value_or(0));
    for (const auto& entry : src.list_dir(dir)) {
      if (!entry.starts_with("virtfn")) continue;
      if (auto vf = src.link_name(dir + entry)) d.virtual_functions.push_back(*vf);
    }
    std::sort(d.virtual_functions.begin(), d.virtual_functions.end());
    d.physical_function = src.link_name(dir + "physfn").value_or("");
    devices.push_back(std::move(d));
  }
  return devices;
}

const PciDevice* find_pci(const std::vector<PciDevice>& devices, const std::string& address) {
  for (const auto& d : devices) {
    if (d.address == address) return &d;
  }
  return nullptr;
}

// "400 Gb/sec (4X NDR)" -> 400000 Mb/s.
int ib_rate_mbps(const std::string& rate) {
  double gbps = std::atof(rate.c_str());
  return gbps > 0 ? static_cast<int>(gbps * 1000) : -1;
}

std::vector<Nic> discover_nics(const HardwareSource& src, const std::vector<PciDevice>& pci) {
  // RDMA devices by PCI function, with their port 1 link layer, state and rate.
  struct Rdma {
    std::string name, link_layer, state, rate;
  };
  std::map<std::string, Rdma> rdma;
  for (const auto& name : src.list_dir("/sys/class/infiniband/")) {
    std::string dir = "/sys/class/infiniband/" + name + "/";
    auto address = src.pci_address_of(dir + "device");
    if (!address) continue;
    rdma[*address] =
        Rdma{name, read_text(src, dir + "ports/1/link_layer"),
             read_text(src, dir + "ports/1/state"), read_text(src, dir + "ports/1/rate")};
  }
  std::vector<Nic> nics;
  for (const auto& name : src.list_dir("/sys/class/net/")) {
    std::string dir = "/sys/class/net/" + name + "/";
    auto address = src.pci_address_of(dir + "device");
    if (!address) continue;  // lo, bridges, veths: nothing to hand out.
    Nic nic{.name = name, .pci_address = *address};
    nic.mac = read_text(src, dir + "address");
    nic.mtu = static_cast<int>(read_int(src, dir + "mtu").value_or(0));
    nic.speed_mbps = static_cast<int>(read_int(src, dir + "speed").value_or(-1));
    nic.state = read_text(src, dir + "operstate");
    bool infiniband = read_int(src, dir + "type").value_or(1) == 32;  // ARPHRD_INFINIBAND
    if (auto it = rdma.find(*address); it != rdma.end()) {
      nic.rdma_device = it->second.name;
      infiniband = infiniband || it->second.link_layer == "InfiniBand";
      if (infiniband) {
        nic.state = it->second.state;
        nic.speed_mbps = ib_rate_mbps(it->second.rate);
      }
    }
    nic.link_layer = infiniband ? LinkLayer::kInfiniBand : LinkLayer::kEthernet;
    if (const PciDevice* d = find_pci(pci, *address)) {
      nic.numa_node = d->numa_node;
      nic.virtual_function = !d->physical_function.empty();
      if (d->vendor == kVendorMellanox) nic.model = mellanox_model_name(d->device).value_or("");
    }
    nics.push_back(std::move(nic));
  }
  return nics;
}

void classify_accelerators(HostInventory& inv) {
  for (const auto& d : inv.pci_devices) {
    if (d.vendor == kVendorNvidia && is_nvswitch(d.device)) {
      inv.nvswitches.push_back(NvSwitch{d.address, d.device, d.numa_node});
    } else if (d.vendor == kVendorNvidia && (d.class_code >> 16) == 0x03) {
      inv.gpus.push_back(Gpu{.pci_address = d.address,
                             .model = gpu_model_name(d.device).value_or("NVIDIA GPU"),
                             .device_id = d.device,
                             .numa_node = d.numa_node,
                             .iommu_group = d.iommu_group,
                             .driver = d.driver});
    } else if (d.vendor == kVendorMellanox && d.address.ends_with(".0") &&
               (d.device == 0xa2dc || d.device == 0xa2d6)) {
      // One DPU per card: its first integrated ConnectX function.
      inv.dpus.push_back(
          Dpu{d.address, d.device == 0xa2dc ? "BlueField-3" : "BlueField-2", d.numa_node});
    }
  }
}

}  // namespace

Result<HostInventory> discover(const HardwareSource& source) {
  HostInventory inv;
  inv.hostname = read_text(source, "/proc/sys/kernel/hostname");
  FAB_ASSIGN_OR_RETURN(inv.cpu, discover_cpu(source));
  inv.numa_nodes = discover_numa(source, inv.cpu);
  inv.pci_devices = discover_pci(source);
  inv.nics = discover_nics(source, inv.pci_devices);
  classify_accelerators(inv);
  if (auto xml = source.nvidia_smi(NvidiaSmiQuery::kQueryXml)) {
    FAB_ASSIGN_OR_RETURN(auto gpus, parse_nvidia_smi_xml(*xml));
    auto list = source.nvidia_smi(NvidiaSmiQuery::kList).value_or("");
    merge_nvidia_smi(inv, gpus, parse_nvidia_smi_list(list));
  }
  // GPUs on an NVSwitch baseboard share one NVLink domain unless a fabric named another.
  if (!inv.nvswitches.empty()) {
    for (auto& gpu : inv.gpus) {
      if (gpu.nvlink_domain.empty()) gpu.nvlink_domain = "nvswitch";
    }
  }
  return inv;
}

}  // namespace fabrica::agent
