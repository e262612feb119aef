#include "agent/hypervisor/domain.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "agent/discovery.h"
#include "sched/host.h"

namespace fabrica::hypervisor {
namespace {

namespace fs = std::filesystem;

// A fixture host's inventory; kept for the whole run (a HostState refers to it).
const inventory::HostInventory& inventory_of(const std::string& fixture) {
  static std::map<std::string, inventory::HostInventory> cache;
  auto it = cache.find(fixture);
  if (it == cache.end()) {
    agent::SysfsSource source(std::string(FABRICA_FIXTURES) + "/hosts/" + fixture);
    auto inv = agent::discover(source);
    EXPECT_TRUE(inv.has_value());
    it = cache.emplace(fixture, std::move(*inv)).first;
  }
  return it->second;
}

// The request placed on `fixture` by the scheduler's own fit, as a deploy would receive it.
DomainSpec placed(const std::string& fixture, sched::VmRequest request,
                  const DomainOptions& options) {
  EXPECT_TRUE(request.validate());
  const auto& inv = inventory_of(fixture);
  sched::HostState host(sched::HostInfo{.id = 1, .name = inv.hostname}, inv);
  auto fit = host.fit(request);
  EXPECT_EQ(fit.misfit, sched::Misfit::kNone) << sched::misfit_text(fit.misfit);
  auto spec = resolve_domain(request.vm_id, "vm-" + std::to_string(request.vm_id), request,
                             fit.allocation, options);
  if (!spec) {
    ADD_FAILURE() << spec.error().message();
    return {};
  }
  return *spec;
}

std::string read(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The rendering must equal the golden file (FABRICA_UPDATE_GOLDEN=1 rewrites it) and pass
// libvirt's own schema check.
void expect_golden(const std::string& name, const std::string& xml) {
  fs::path golden = fs::path(FABRICA_FIXTURES) / "domains" / (name + ".xml");
  if (std::getenv("FABRICA_UPDATE_GOLDEN")) std::ofstream(golden) << xml;
  EXPECT_EQ(xml, read(golden)) << "rendering of " << name << " changed; if that is intended, "
                               << "rerun with FABRICA_UPDATE_GOLDEN=1 and review the diff";
  fs::path file = fs::temp_directory_path() / ("fabrica-domain-" + name + ".xml");
  std::ofstream(file) << xml;
  std::string command = "virt-xml-validate " + file.string() + " domain 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buf[512];
  while (std::fgets(buf, sizeof buf, pipe)) output += buf;
  int status = ::pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << name << " fails libvirt's schema (virt-xml-validate, package libvirt-clients):\n"
      << output;
  fs::remove(file);
}

sched::VmRequest request(int64_t id, int vcpus, int64_t memory_mb) {
  sched::VmRequest r;
  r.vm_id = id;
  r.vcpus = vcpus;
  r.memory_mb = memory_mb;
  return r;
}

TEST(DomainTest, EightH100sPinnedOnBothGpuNodesWithOneGigPages) {
  auto r = request(12, 32, 256 * 1024);
  r.cpu_policy = sched::CpuPolicy::kCore;
  r.hugepage_kb = sched::kHugepage1G;
  r.gpus = {.count = 8, .model = "H100*", .topology = sched::GpuTopology::kSameDomain};
  auto spec = placed("hgx-h100", r, {.vm_dir = "/var/lib/fabrica-agent/vms/12", .context = true});
  EXPECT_EQ(spec.name, "fabrica-vm-12");
  ASSERT_EQ(spec.vcpu_pins.size(), 32u);
  ASSERT_EQ(spec.cells.size(), 2u);
  EXPECT_EQ(spec.cells[0].vcpus.size() + spec.cells[1].vcpus.size(), 32u);
  EXPECT_EQ(spec.cells[0].memory_kb + spec.cells[1].memory_kb, 256LL * 1024 * 1024);
  EXPECT_EQ(spec.pci_devices.size(), 8u);
  std::string xml = render_domain_xml(spec);
  EXPECT_NE(xml.find("<page size=\"1048576\" unit=\"KiB\" nodeset=\"0-1\" />"), std::string::npos);
  EXPECT_NE(xml.find("<memnode cellid=\"1\" mode=\"strict\""), std::string::npos);
  expect_golden("hgx-8xh100-pinned-1g", xml);
}

TEST(DomainTest, MigSliceIsAMediatedDeviceOnFloatingVcpus) {
  auto r = request(7, 4, 16 * 1024);
  r.mig = {{.profile = "1g.10gb", .count = 1}};
  auto spec = placed("mig-h100", r, {.vm_dir = "/var/lib/fabrica-agent/vms/7"});
  EXPECT_TRUE(spec.vcpu_pins.empty());
  ASSERT_EQ(spec.mdevs.size(), 1u);
  EXPECT_EQ(spec.mdevs[0].find("MIG-"), std::string::npos);
  expect_golden("mig-1g10gb", render_domain_xml(spec));
}

TEST(DomainTest, PlainTcgVmBootsAKernelWithItsContext) {
  auto r = request(3, 2, 512);
  auto spec = placed("cpu-only", r,
                     {.type = "qemu",
                      .vm_dir = "/var/lib/fabrica-agent/vms/3",
                      .kernel = "/boot/vmlinuz",
                      .initrd = "/var/lib/fabrica-agent/vms/3/initrd.img",
                      .cmdline = "console=ttyS0 quiet",
                      .context = true});
  expect_golden("plain-tcg-kernel", render_domain_xml(spec));
}

TEST(DomainTest, DisksFromImagesOnVirtioAnIsoBesideTheContextAndBridgedNics) {
  auto r = request(4, 2, 1024);
  auto spec = placed(
      "cpu-only", r,
      {.type = "qemu",
       .vm_dir = "/var/lib/fabrica-agent/vms/4",
       .kernel = "/var/lib/fabrica/datastores/2/img-3",
       .cmdline = "console=ttyS0",
       .context = true,
       .disks = {{.path = "/var/lib/fabrica-agent/vms/4/disk.0",
                  .format = "qcow2",
                  .target = "vda"},
                 {.path = "/var/lib/fabrica/datastores/1/img-7", .format = "raw", .target = "vdb"},
                 {.path = "/var/lib/fabrica/datastores/1/img-9",
                  .format = "raw",
                  .target = "sdb",
                  .cdrom = true}},
       .nics = {{.mac = "02:00:0a:0a:00:0a", .bridge = "br-lab", .mtu = 1450},
                {.mac = "02:00:c0:a8:05:01", .bridge = "fvb3"}}});
  expect_golden("disks-from-images", render_domain_xml(spec));
}

// An Ethernet VF as a NIC (libvirt sets its MAC and VLAN) and an InfiniBand VF that the
// scheduler picked on the vnet's PF for NIC 1, passed through as it is.
TEST(DomainTest, SriovNicsAreVfsWithTheLeasesMacAndVlan) {
  auto r = request(5, 4, 4096);
  r.vfs = {{.count = 1, .pf = "ibp23s0", .nic = 1}};
  const auto& inv = inventory_of("sriov-ib-bf3");
  sched::HostState host(sched::HostInfo{.id = 1, .name = inv.hostname}, inv);
  ASSERT_TRUE(r.validate());
  auto fit = host.fit(r);
  ASSERT_EQ(fit.misfit, sched::Misfit::kNone);
  ASSERT_EQ(fit.allocation.vfs.size(), 1u);
  EXPECT_EQ(fit.allocation.vfs[0].nic, 1);
  EXPECT_EQ(fit.allocation.vfs[0].pf_name, "ibp23s0");
  auto spec = resolve_domain(
      5, "vm-5", r, fit.allocation,
      {.vm_dir = "/var/lib/fabrica-agent/vms/5",
       .nics = {{.mac = "02:00:0a:14:00:05", .vf_pci = "0000:3b:02.1", .vlan_id = 120},
                {.mac = "02:00:0a:15:00:05",
                 .vf_pci = fit.allocation.vfs[0].pci_address,
                 .infiniband = true}}});
  ASSERT_TRUE(spec) << spec.error().message();
  EXPECT_TRUE(spec->pci_devices.empty()) << "a NIC's VF is rendered once, as the NIC";
  expect_golden("sriov-nics", render_domain_xml(*spec));
}

TEST(DomainTest, ThreadPolicyPairsSiblingsInTheGuestTopology) {
  auto r = request(4, 8, 8 * 1024);
  r.cpu_policy = sched::CpuPolicy::kThread;
  r.numa_policy = sched::NumaPolicy::kStrict;
  auto spec = placed("cpu-only", r, {});
  EXPECT_EQ(spec.threads_per_core, 2);
  EXPECT_TRUE(spec.cells.empty());  // One host node: no guest NUMA cells.
  std::string xml = render_domain_xml(spec);
  EXPECT_NE(xml.find("cores=\"4\" threads=\"2\""), std::string::npos) << xml;
}

TEST(DomainTest, InfinibandVfsPassThroughEachBehindItsOwnRootPort) {
  auto r = request(9, 8, 32 * 1024);
  r.vfs = {{.fabric = "infiniband", .count = 2}};
  auto spec = placed("sriov-ib-bf3", r, {.vm_dir = "/var/lib/fabrica-agent/vms/9"});
  ASSERT_EQ(spec.pci_devices.size(), 2u);
  expect_golden("infiniband-vfs", render_domain_xml(spec));
}

TEST(DomainTest, AllocationsThatCannotBackTheRequestAreRefused) {
  auto r = request(1, 4, 1024);
  r.cpu_policy = sched::CpuPolicy::kCore;
  sched::Allocation a;
  a.cpu_policy = sched::CpuPolicy::kCore;
  a.numa = {{.node = 0, .cpus = {1, 2}, .memory_kb = 1024 * 1024}};
  auto pins = resolve_domain(1, "x", r, a, {});
  ASSERT_FALSE(pins);
  EXPECT_NE(pins.error().message().find("pins 2 CPUs for 4 vCPUs"), std::string::npos);
  a.numa[0].cpus = {1, 2, 3, 4};
  a.numa[0].memory_kb = 1;
  EXPECT_FALSE(resolve_domain(1, "x", r, a, {}));
  a.numa[0].memory_kb = 1024 * 1024;
  a.gpus = {{.pci_address = "not-pci"}};
  EXPECT_FALSE(resolve_domain(1, "x", r, a, {}));
}

TEST(DomainTest, NamesAndUuidsAreStablePerVm) {
  EXPECT_EQ(domain_name(42), "fabrica-vm-42");
  EXPECT_EQ(domain_uuid(42), domain_uuid(42));
  EXPECT_NE(domain_uuid(42), domain_uuid(43));
  EXPECT_EQ(domain_uuid(255), "fab1ca00-0000-4000-8000-0000000000ff");
}

}  // namespace
}  // namespace fabrica::hypervisor
