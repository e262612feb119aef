#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/error.h"
#include "sched/model.h"

namespace fabrica::hypervisor {

// A disk as the guest sees it: a file on the host (an image, the VM's overlay on one, or a
// volatile disk) on virtio (vdX) or, for CD-ROMs, virtio-scsi (sdX).
struct DiskSpec {
  std::string path;
  std::string format = "qcow2";  // qcow2 or raw.
  std::string target;            // vda, vdb, ... or sdb, sdc, ... (sda is the context CD-ROM).
  bool cdrom = false;            // Read-only CD-ROM.
  bool readonly = false;         // A read-only virtio disk (a MODEL image's volume).
  bool operator==(const DiskSpec&) const = default;
};

// A NIC with the MAC of its lease: on a Linux bridge (virtio), or an SR-IOV VF passed through
// (libvirt sets the MAC and the VLAN on the VF before the guest gets it).
struct NicSpec {
  std::string mac;
  std::string bridge;
  int mtu = 0;         // 0: the bridge's.
  std::string vf_pci;  // "0000:3b:02.1": an SR-IOV VF instead of a bridge.
  int vlan_id = -1;    // On the VF; -1: untagged.
  // An InfiniBand VF: passed through as it is (an IB port has GUIDs, not a MAC or VLANs).
  bool infiniband = false;
  bool operator==(const NicSpec&) const = default;
};

// Everything a libvirt domain needs, resolved to exact host resources: which host CPU each vCPU
// runs on, which host NUMA node backs each guest NUMA cell, which PCI functions and mediated
// devices pass through. Built from a scheduler Allocation by resolve_domain().
struct DomainSpec {
  int64_t vm_id = -1;
  std::string name;          // libvirt domain name: "fabrica-vm-<id>".
  std::string uuid;          // Stable per VM id, so a repeated deploy finds the same domain.
  std::string title;         // The VM's name, for people reading `virsh list --title`.
  std::string type = "kvm";  // kvm, or qemu (TCG) where /dev/kvm is missing.
  std::string arch = "x86_64";
  int vcpus = 1;
  int64_t memory_kb = 0;
  std::vector<int> vcpu_pins;      // Host CPU per vCPU; empty for floating (shared) vCPUs.
  std::vector<int> emulator_cpus;  // Where QEMU's own threads run; empty: anywhere.
  int threads_per_core = 1;        // Guest topology: 2 when vCPUs are pinned to sibling threads.
  struct Cell {
    int host_node = -1;
    std::vector<int> vcpus;  // Guest vCPU indexes in this cell.
    int64_t memory_kb = 0;
  };
  std::vector<Cell> cells;      // Guest NUMA cells, one per host node used (none for one node).
  std::vector<int> host_nodes;  // Host NUMA nodes the memory comes from.
  bool strict_memory = true;    // numatune mode strict, else preferred (one node only).
  int64_t hugepage_kb = 0;      // 0: ordinary memory.
  std::vector<std::string> pci_devices;  // "0000:18:00.0": GPUs, then VFs that serve no NIC.
  std::vector<std::string> mdevs;        // Mediated device UUIDs (MIG / vGPU instances).
  bool large_bars = false;               // GPUs: expose the host's physical address width.
  std::string kernel;                    // Direct kernel boot, paths on the host.
  std::string initrd;
  std::string cmdline;
  std::string context_iso;  // Read-only CD-ROM labelled CONTEXT; empty: none.
  std::string console_log;  // Serial console output, appended on the host.
  std::vector<DiskSpec> disks;
  std::vector<NicSpec> nics;
};

struct DomainOptions {
  std::string type = "kvm";
  std::string arch = "x86_64";
  std::string vm_dir;  // The VM's directory on the host: console.log, context.iso.
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  bool context = false;  // Attach vm_dir/context.iso.
  std::vector<DiskSpec> disks;
  std::vector<NicSpec> nics;
};

// "fabrica-vm-12" and its UUID, the same for every deploy of VM 12.
std::string domain_name(int64_t vm_id);
std::string domain_uuid(int64_t vm_id);

// Turns a placed VM into a DomainSpec. kInvalidArgument when the allocation cannot back the
// request (pinned CPUs that do not match the vCPU count, memory that does not add up).
Result<DomainSpec> resolve_domain(int64_t vm_id, const std::string& vm_name,
                                  const sched::VmRequest& request,
                                  const sched::Allocation& allocation,
                                  const DomainOptions& options);

// libvirt domain XML for `spec`: q35 (x86_64) or virt (aarch64), host-passthrough CPU with a
// matching topology and NUMA cells, vcpupin/emulatorpin, strict numatune per cell, hugepages,
// each PCI function behind its own PCIe root port, mdevs, direct kernel boot, the context
// CD-ROM and a serial console logged to a file. Pure: the same spec gives the same bytes.
std::string render_domain_xml(const DomainSpec& spec);

}  // namespace fabrica::hypervisor
