#include "agent/hypervisor/domain.h"

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <pugixml.hpp>
#include <sstream>

#include "inventory/hardware.h"

namespace fabrica::hypervisor {
namespace {

Error bad(const std::string& message) {
  return Error(ErrorCode::kInvalidArgument, message, "allocation");
}

std::string hex(unsigned value, int width) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*x", width, value);
  return buf;
}

// "0000:18:00.0" -> domain, bus, slot, function. False when malformed.
bool parse_pci(const std::string& text, unsigned out[4]) {
  char tail = 0;
  return std::sscanf(text.c_str(), "%4x:%2x:%2x.%1x%c", &out[0], &out[1], &out[2], &out[3],
                     &tail) == 4;
}

void pci_address(pugi::xml_node parent, const unsigned a[4], bool with_type) {
  auto node = parent.append_child("address");
  if (with_type) node.append_attribute("type") = "pci";
  node.append_attribute("domain") = hex(a[0], 4).c_str();
  node.append_attribute("bus") = hex(a[1], 2).c_str();
  node.append_attribute("slot") = hex(a[2], 2).c_str();
  node.append_attribute("function") = hex(a[3], 1).c_str();
}

pugi::xml_node text_child(pugi::xml_node parent, const char* name, const std::string& text) {
  auto node = parent.append_child(name);
  node.text().set(text.c_str());
  return node;
}

pugi::xml_node kib(pugi::xml_node parent, const char* name, int64_t value) {
  auto node = text_child(parent, name, std::to_string(value));
  node.append_attribute("unit") = "KiB";
  return node;
}

std::string cpu_list(std::vector<int> cpus) {
  std::sort(cpus.begin(), cpus.end());
  return inventory::format_cpu_list(cpus);
}

// A PCIe root port per passed-through device, so each sits alone as on a real server board;
// returns the guest bus of the next port.
class RootPorts {
 public:
  explicit RootPorts(pugi::xml_node devices) : devices_(devices) {}
  unsigned next() {
    unsigned bus = ++count_;
    auto port = devices_.append_child("controller");
    port.append_attribute("type") = "pci";
    port.append_attribute("index") = bus;
    port.append_attribute("model") = "pcie-root-port";
    return bus;
  }

 private:
  pugi::xml_node devices_;
  unsigned count_ = 0;
};

}  // namespace

std::string domain_name(int64_t vm_id) { return "fabrica-vm-" + std::to_string(vm_id); }

std::string domain_uuid(int64_t vm_id) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "fab1ca00-0000-4000-8000-%012llx",
                static_cast<unsigned long long>(vm_id));
  return buf;
}

Result<DomainSpec> resolve_domain(int64_t vm_id, const std::string& vm_name,
                                  const sched::VmRequest& request,
                                  const sched::Allocation& allocation,
                                  const DomainOptions& options) {
  DomainSpec s;
  s.vm_id = vm_id;
  s.name = domain_name(vm_id);
  s.uuid = domain_uuid(vm_id);
  s.title = vm_name;
  s.type = options.type;
  s.arch = options.arch;
  s.vcpus = request.vcpus;
  s.memory_kb = request.memory_mb * 1024;
  s.hugepage_kb = allocation.hugepage_kb;
  s.kernel = options.kernel;
  s.initrd = options.initrd;
  s.cmdline = options.cmdline;
  s.disks = options.disks;
  s.nics = options.nics;
  if (!options.vm_dir.empty()) {
    s.console_log = options.vm_dir + "/console.log";
    if (options.context) s.context_iso = options.vm_dir + "/context.iso";
  }
  if (allocation.numa.empty()) return fail(bad("the allocation holds no NUMA node"));
  int64_t memory = 0;
  for (const auto& n : allocation.numa) {
    s.host_nodes.push_back(n.node);
    memory += n.memory_kb;
  }
  if (memory != s.memory_kb) {
    return fail(bad("the allocation holds " + std::to_string(memory) + " KiB of memory for " +
                    std::to_string(s.memory_kb) + " KiB asked"));
  }
  bool pinned = allocation.cpu_policy != sched::CpuPolicy::kShared;
  if (pinned) {
    for (const auto& n : allocation.numa) {
      s.vcpu_pins.insert(s.vcpu_pins.end(), n.cpus.begin(), n.cpus.end());
    }
    if (static_cast<int>(s.vcpu_pins.size()) != s.vcpus) {
      return fail(bad("the allocation pins " + std::to_string(s.vcpu_pins.size()) + " CPUs for " +
                      std::to_string(s.vcpus) + " vCPUs"));
    }
    s.emulator_cpus = s.vcpu_pins;
  }
  if (allocation.numa.size() > 1) {
    int next = 0;
    size_t cells = allocation.numa.size();
    for (size_t i = 0; i < cells; ++i) {
      const auto& n = allocation.numa[i];
      // Pinned vCPUs go where their CPUs are; floating ones are spread evenly.
      int count = pinned ? static_cast<int>(n.cpus.size())
                         : s.vcpus / static_cast<int>(cells) +
                               (static_cast<int>(i) < s.vcpus % static_cast<int>(cells));
      if (count == 0) return fail(bad("NUMA node " + std::to_string(n.node) + " has no vCPU"));
      DomainSpec::Cell cell{.host_node = n.node, .memory_kb = n.memory_kb};
      for (int v = 0; v < count; ++v) cell.vcpus.push_back(next++);
      s.cells.push_back(std::move(cell));
    }
  }
  s.strict_memory = !(request.numa_policy == sched::NumaPolicy::kPreferred &&
                      s.host_nodes.size() == 1 && s.hugepage_kb == 0);
  // Sibling threads come in pairs (the scheduler fills a core's threads together).
  bool pairs = allocation.cpu_policy == sched::CpuPolicy::kThread && s.vcpus % 2 == 0;
  for (const auto& c : s.cells) pairs = pairs && c.vcpus.size() % 2 == 0;
  s.threads_per_core = pairs ? 2 : 1;
  for (const auto& g : allocation.gpus) s.pci_devices.push_back(g.pci_address);
  for (const auto& v : allocation.vfs) {
    if (v.nic < 0) s.pci_devices.push_back(v.pci_address);  // The others are NICs.
  }
  for (const auto& m : allocation.mig) {
    // An NVIDIA MIG UUID is "MIG-" + a UUID; the mediated device carries the UUID.
    s.mdevs.push_back(m.uuid.rfind("MIG-", 0) == 0 ? m.uuid.substr(4) : m.uuid);
  }
  s.large_bars = !allocation.gpus.empty() || !allocation.mig.empty();
  for (const auto& pci : s.pci_devices) {
    unsigned a[4];
    if (!parse_pci(pci, a)) return fail(bad("\"" + pci + "\" is not a PCI address"));
  }
  for (const auto& n : s.nics) {
    unsigned a[4];
    if (!n.vf_pci.empty() && !parse_pci(n.vf_pci, a)) {
      return fail(bad("\"" + n.vf_pci + "\" is not a PCI address"));
    }
  }
  return s;
}

std::string render_domain_xml(const DomainSpec& s) {
  bool x86 = s.arch == "x86_64";
  pugi::xml_document doc;
  auto domain = doc.append_child("domain");
  domain.append_attribute("type") = s.type.c_str();
  text_child(domain, "name", s.name);
  text_child(domain, "uuid", s.uuid);
  text_child(domain, "title", s.title);
  auto meta = domain.append_child("metadata").append_child("fabrica:vm");
  meta.append_attribute("xmlns:fabrica") = "https://fabrica.dev/xmlns/libvirt/vm/1";
  meta.append_attribute("id") = s.vm_id;
  kib(domain, "memory", s.memory_kb);
  kib(domain, "currentMemory", s.memory_kb);
  if (s.hugepage_kb > 0) {
    auto backing = domain.append_child("memoryBacking");
    auto page = backing.append_child("hugepages").append_child("page");
    page.append_attribute("size") = s.hugepage_kb;
    page.append_attribute("unit") = "KiB";
    if (!s.cells.empty()) {
      std::vector<int> cells(s.cells.size());
      std::iota(cells.begin(), cells.end(), 0);
      page.append_attribute("nodeset") = cpu_list(cells).c_str();
    }
  }
  auto vcpu = text_child(domain, "vcpu", std::to_string(s.vcpus));
  vcpu.append_attribute("placement") = "static";
  if (!s.vcpu_pins.empty()) {
    auto tune = domain.append_child("cputune");
    for (size_t v = 0; v < s.vcpu_pins.size(); ++v) {
      auto pin = tune.append_child("vcpupin");
      pin.append_attribute("vcpu") = static_cast<unsigned>(v);
      pin.append_attribute("cpuset") = std::to_string(s.vcpu_pins[v]).c_str();
    }
    tune.append_child("emulatorpin").append_attribute("cpuset") = cpu_list(s.emulator_cpus).c_str();
  }
  auto numatune = domain.append_child("numatune");
  auto memory = numatune.append_child("memory");
  memory.append_attribute("mode") = s.strict_memory ? "strict" : "preferred";
  memory.append_attribute("nodeset") = cpu_list(s.host_nodes).c_str();
  for (size_t i = 0; i < s.cells.size(); ++i) {
    auto node = numatune.append_child("memnode");
    node.append_attribute("cellid") = static_cast<unsigned>(i);
    node.append_attribute("mode") = "strict";
    node.append_attribute("nodeset") = std::to_string(s.cells[i].host_node).c_str();
  }
  auto os = domain.append_child("os");
  auto type = text_child(os, "type", "hvm");
  type.append_attribute("arch") = s.arch.c_str();
  type.append_attribute("machine") = x86 ? "q35" : "virt";
  if (!s.kernel.empty()) text_child(os, "kernel", s.kernel);
  if (!s.initrd.empty()) text_child(os, "initrd", s.initrd);
  if (!s.cmdline.empty()) text_child(os, "cmdline", s.cmdline);
  auto features = domain.append_child("features");
  features.append_child("acpi");
  if (x86) features.append_child("apic");
  auto cpu = domain.append_child("cpu");
  cpu.append_attribute("mode") = s.type == "kvm" ? "host-passthrough" : "maximum";
  cpu.append_attribute("check") = "none";
  auto topology = cpu.append_child("topology");
  topology.append_attribute("sockets") = 1;
  topology.append_attribute("dies") = 1;
  topology.append_attribute("cores") = s.vcpus / s.threads_per_core;
  topology.append_attribute("threads") = s.threads_per_core;
  if (s.large_bars && s.type == "kvm") {
    // GPUs map tens of GiB of BARs: the guest needs the host's physical address width.
    cpu.append_child("maxphysaddr").append_attribute("mode") = "passthrough";
  }
  if (!s.cells.empty()) {
    auto numa = cpu.append_child("numa");
    for (size_t i = 0; i < s.cells.size(); ++i) {
      auto cell = numa.append_child("cell");
      cell.append_attribute("id") = static_cast<unsigned>(i);
      cell.append_attribute("cpus") = cpu_list(s.cells[i].vcpus).c_str();
      cell.append_attribute("memory") = s.cells[i].memory_kb;
      cell.append_attribute("unit") = "KiB";
    }
  }
  text_child(domain, "on_poweroff", "destroy");
  text_child(domain, "on_reboot", "restart");
  text_child(domain, "on_crash", "destroy");
  auto devices = domain.append_child("devices");
  auto root = devices.append_child("controller");
  root.append_attribute("type") = "pci";
  root.append_attribute("index") = 0;
  root.append_attribute("model") = "pcie-root";
  auto add_disk = [&](const std::string& path, const std::string& format,
                      const std::string& target_dev, bool cdrom, bool readonly = false) {
    auto disk = devices.append_child("disk");
    disk.append_attribute("type") = "file";
    disk.append_attribute("device") = cdrom ? "cdrom" : "disk";
    auto driver = disk.append_child("driver");
    driver.append_attribute("name") = "qemu";
    driver.append_attribute("type") = format.c_str();
    disk.append_child("source").append_attribute("file") = path.c_str();
    auto target = disk.append_child("target");
    target.append_attribute("dev") = target_dev.c_str();
    target.append_attribute("bus") = cdrom ? "scsi" : "virtio";
    if (cdrom || readonly) disk.append_child("readonly");
  };
  for (const auto& d : s.disks) {
    if (!d.cdrom) add_disk(d.path, d.format, d.target, false, d.readonly);
  }
  bool scsi_disks =
      std::any_of(s.disks.begin(), s.disks.end(), [](const DiskSpec& d) { return d.cdrom; });
  if (!s.context_iso.empty() || scsi_disks) {
    // virtio-scsi rather than the machine's SATA: cloud guest kernels carry virtio drivers,
    // not always AHCI (Debian's cloud kernel has none).
    auto scsi = devices.append_child("controller");
    scsi.append_attribute("type") = "scsi";
    scsi.append_attribute("index") = 0;
    scsi.append_attribute("model") = "virtio-scsi";
    if (!s.context_iso.empty()) add_disk(s.context_iso, "raw", "sda", true);
    for (const auto& d : s.disks) {
      if (d.cdrom) add_disk(d.path, "raw", d.target, true);
    }
  }
  for (const auto& n : s.nics) {
    if (!n.vf_pci.empty()) continue;  // On a root port, below.
    auto nic = devices.append_child("interface");
    nic.append_attribute("type") = "bridge";
    nic.append_child("mac").append_attribute("address") = n.mac.c_str();
    nic.append_child("source").append_attribute("bridge") = n.bridge.c_str();
    nic.append_child("model").append_attribute("type") = "virtio";
    if (n.mtu > 0) nic.append_child("mtu").append_attribute("size") = n.mtu;
  }
  RootPorts ports(devices);
  for (const auto& n : s.nics) {
    if (n.vf_pci.empty()) continue;
    unsigned host[4];
    parse_pci(n.vf_pci, host);  // Checked by resolve_domain.
    unsigned guest[4] = {0, ports.next(), 0, 0};
    if (n.infiniband) {
      auto dev = devices.append_child("hostdev");
      dev.append_attribute("mode") = "subsystem";
      dev.append_attribute("type") = "pci";
      dev.append_attribute("managed") = "yes";
      pci_address(dev.append_child("source"), host, false);
      pci_address(dev, guest, true);
      continue;
    }
    auto nic = devices.append_child("interface");
    nic.append_attribute("type") = "hostdev";
    nic.append_attribute("managed") = "yes";
    nic.append_child("mac").append_attribute("address") = n.mac.c_str();
    pci_address(nic.append_child("source"), host, true);
    if (n.vlan_id >= 0) {
      nic.append_child("vlan").append_child("tag").append_attribute("id") = n.vlan_id;
    }
    pci_address(nic, guest, true);
  }
  for (const auto& pci : s.pci_devices) {
    unsigned host[4];
    parse_pci(pci, host);  // Checked by resolve_domain.
    unsigned guest[4] = {0, ports.next(), 0, 0};
    auto dev = devices.append_child("hostdev");
    dev.append_attribute("mode") = "subsystem";
    dev.append_attribute("type") = "pci";
    dev.append_attribute("managed") = "yes";
    pci_address(dev.append_child("source"), host, false);
    pci_address(dev, guest, true);
  }
  for (const auto& uuid : s.mdevs) {
    unsigned guest[4] = {0, ports.next(), 0, 0};
    auto dev = devices.append_child("hostdev");
    dev.append_attribute("mode") = "subsystem";
    dev.append_attribute("type") = "mdev";
    dev.append_attribute("model") = "vfio-pci";
    dev.append_attribute("display") = "off";
    dev.append_child("source").append_child("address").append_attribute("uuid") = uuid.c_str();
    pci_address(dev, guest, true);
  }
  auto serial = devices.append_child("serial");
  serial.append_attribute("type") = "pty";
  if (!s.console_log.empty()) {
    auto log = serial.append_child("log");
    log.append_attribute("file") = s.console_log.c_str();
    log.append_attribute("append") = "on";
  }
  serial.append_child("target").append_attribute("port") = 0;
  auto console = devices.append_child("console");
  console.append_attribute("type") = "pty";
  auto console_target = console.append_child("target");
  console_target.append_attribute("type") = "serial";
  console_target.append_attribute("port") = 0;
  // A balloon would hand pinned, passed-through or hugepage memory back: never wanted here.
  devices.append_child("memballoon").append_attribute("model") = "none";
  std::ostringstream out;
  doc.save(out, "  ", pugi::format_indent | pugi::format_no_declaration);
  return out.str();
}

}  // namespace fabrica::hypervisor
