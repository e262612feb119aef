// fabrica-agent: runs on each GPU server. Today: `discover`, the operator's first check of
// what the agent sees on this machine or in a fixture tree.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <iostream>

#include "agent/discovery.h"
#include "agent/runner.h"
#include "agent/simulator.h"

using namespace fabrica;
using namespace fabrica::inventory;

namespace {

std::string hex4(uint16_t v) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04x", v);
  return buf;
}

void print_table(const HostInventory& inv) {
  std::printf("HOST      %s\n", inv.hostname.c_str());
  std::printf("CPU       %s (%s), %d sockets, %d cores, %d threads\n", inv.cpu.model.c_str(),
              inv.cpu.architecture.c_str(), inv.cpu.sockets, inv.cpu.cores, inv.cpu.threads);
  std::printf("\nNUMA  CPUS                 MEMORY(GiB)  FREE(GiB)  HUGEPAGES\n");
  for (const auto& n : inv.numa_nodes) {
    std::string huge;
    for (const auto& h : n.hugepages) {
      if (!huge.empty()) huge += " ";
      huge += std::to_string(h.size_kb >= 1048576 ? h.size_kb / 1048576 : h.size_kb / 1024) +
              (h.size_kb >= 1048576 ? "G:" : "M:") + std::to_string(h.free) + "/" +
              std::to_string(h.total);
    }
    std::printf("%-5d %-20s %11.1f  %9.1f  %s\n", n.id, format_cpu_list(n.cpus).c_str(),
                n.memory_total_kb / 1048576.0, n.memory_free_kb / 1048576.0,
                huge.empty() ? "-" : huge.c_str());
  }
  if (!inv.gpus.empty()) {
    std::printf(
        "\nGPU  PCI           MODEL            MEM(MiB)  NUMA  IOMMU  DRIVER    MIG       NVLINK   "
        " UUID\n");
    for (size_t i = 0; i < inv.gpus.size(); ++i) {
      const auto& g = inv.gpus[i];
      std::printf("%-4zu %-13s %-16s %-9lld %-5d %-6d %-9s %-9s %-9s %s\n", i,
                  g.pci_address.c_str(), g.model.c_str(), static_cast<long long>(g.memory_mib),
                  g.numa_node, g.iommu_group, g.driver.empty() ? "-" : g.driver.c_str(),
                  g.mig_mode.empty() ? "-" : g.mig_mode.c_str(),
                  g.nvlink_domain.empty() ? "-" : g.nvlink_domain.c_str(),
                  g.uuid.empty() ? "-" : g.uuid.c_str());
      for (const auto& m : g.mig_instances) {
        std::printf("     MIG %-8s GI %-3d CI %-3d %6lld MiB  %s\n", m.profile.c_str(),
                    m.gpu_instance_id, m.compute_instance_id, static_cast<long long>(m.memory_mib),
                    m.uuid.c_str());
      }
    }
  }
  if (!inv.nvswitches.empty()) {
    std::printf("\nNVSWITCH  PCI           DEVICE\n");
    for (const auto& s : inv.nvswitches) {
      std::printf("          %-13s 10de:%s\n", s.pci_address.c_str(), hex4(s.device_id).c_str());
    }
  }
  if (!inv.nics.empty()) {
    std::printf(
        "\nNIC              PCI           LINK        MODEL        RDMA     SPEED(Mb/s)  NUMA  "
        "VF\n");
    for (const auto& n : inv.nics) {
      std::printf("%-16s %-13s %-11s %-12s %-8s %-12d %-5d %s\n", n.name.c_str(),
                  n.pci_address.c_str(),
                  n.link_layer == LinkLayer::kInfiniBand ? "infiniband" : "ethernet",
                  n.model.empty() ? "-" : n.model.c_str(),
                  n.rdma_device.empty() ? "-" : n.rdma_device.c_str(), n.speed_mbps, n.numa_node,
                  n.virtual_function ? "yes" : "no");
    }
  }
  for (const auto& d : inv.dpus) {
    std::printf("\nDPU       %s %s (NUMA %d)\n", d.pci_address.c_str(), d.model.c_str(),
                d.numa_node);
  }
  int sriov = 0;
  for (const auto& d : inv.pci_devices) sriov += d.sriov_total_vfs > 0;
  std::printf("\nPCI devices: %zu (%d SR-IOV capable)\n", inv.pci_devices.size(), sriov);
}

}  // namespace

std::atomic<bool> g_stop{false};

int main(int argc, char** argv) {
  CLI::App app{"fabrica-agent: the Fabrica host agent"};
  app.require_subcommand(0, 1);
  agent::RunnerOptions run;
  std::string root = "/";
  app.add_option("--server", run.server, "fabricad URL, e.g. https://10.0.0.1:8470");
  app.add_option("--join-token", run.join_token, "One-time join token (fabrica host add)");
  app.add_option("--state-dir", run.state_dir, "Where the host credential is kept (0600)");
  app.add_option("--ca-file", run.ca_file,
                 "CA certificates (PEM) to trust for https (default: STATE_DIR/ca.pem as a pinned "
                 "join token saved it, else the system's)");
  app.add_option("--hostname", run.hostname, "Name to join under (default: this host's name)");
  app.add_option("--sysfs-root", root, "Root holding proc/ and sys/ (a fixture tree)");
  app.add_option("--libvirt", run.libvirt_uri,
                 "Run VMs through this libvirt URI, e.g. qemu:///system (default: inventory only)");
  app.add_option("--domain-type", run.domain_type,
                 "kvm, qemu (TCG) or auto: kvm where /dev/kvm opens and the CPU has VT-x/AMD-V")
      ->check(CLI::IsMember({"auto", "kvm", "qemu"}));
  bool no_relay = false;
  app.add_flag("--no-guest-relay", no_relay,
               "Do not relay the guest API to the VMs' bridges at 169.254.169.254 (guests then "
               "need a route to fabricad's --guest-api-url)");
  agent::SimulationOptions sim;
  int simulate = 0;
  int64_t sim_interval_ms = 0;
  app.add_option("--simulate", simulate, "Run N simulated hosts in this process (scale tests)");
  app.add_option("--profile", sim.profile, "Simulated hardware: hgx-h100, gh200, mig-h100, cpu");
  app.add_option("--sim-threads", sim.threads, "Connections driving the simulated hosts");
  app.add_option("--sim-prefix", sim.name_prefix, "Name prefix of simulated hosts");
  app.add_option("--rounds", sim.rounds, "Heartbeat rounds, then print a report and exit");
  app.add_flag("--sim-hypervisor", sim.hypervisor,
               "Simulated hosts run VMs on a simulated hypervisor (until stopped)");
  app.add_option("--vm-root", sim.vm_root, "Where simulated hosts keep VM files");
  app.add_option("--interval-ms", sim_interval_ms, "Heartbeat interval (default: the server's)");
  auto* discover = app.add_subcommand("discover", "Print the hardware this agent sees");
  std::string output = "table";
  discover->add_option("--sysfs-root", root, "Root holding proc/ and sys/ (a fixture tree)");
  discover->add_option("-o,--output", output, "table or json")
      ->check(CLI::IsMember({"table", "json"}));
  CLI11_PARSE(app, argc, argv);
  run.guest_relay = !no_relay;

  agent::SysfsSource source(root);
  if (discover->parsed() || (run.server.empty() && simulate == 0)) {
    auto inv = agent::discover(source);
    if (!inv) {
      std::cerr << "Error: " << inv.error().message() << std::endl;
      return 1;
    }
    if (output == "json") {
      std::cout << inv->to_json().dump(2) << std::endl;
    } else {
      print_table(*inv);
    }
    return 0;
  }
  std::signal(SIGTERM, [](int) { g_stop = true; });
  std::signal(SIGINT, [](int) { g_stop = true; });
  if (simulate > 0) {
    sim.server = run.server;
    sim.join_token = run.join_token;
    sim.ca_file = run.ca_file;
    sim.hosts = simulate;
    sim.interval = std::chrono::milliseconds(sim_interval_ms);
    auto report = agent::simulate(sim, g_stop);
    if (!report) {
      std::cerr << "Error: " << report.error().message() << std::endl;
      return 1;
    }
    std::printf("simulated hosts joined: %d in %.2f s (%.0f joins/s)\n", report->joined,
                report->join_seconds, report->joined / std::max(report->join_seconds, 1e-9));
    std::printf("heartbeats: %lld in %.2f s (%.0f reports/s), failures: %lld\n",
                static_cast<long long>(report->heartbeats), report->heartbeat_seconds,
                report->heartbeats / std::max(report->heartbeat_seconds, 1e-9),
                static_cast<long long>(report->failures));
    return report->failures == 0 ? 0 : 1;
  }
  auto result = agent::AgentRunner(run, source).run(g_stop);
  if (!result) {
    std::cerr << "Error: " << result.error().message() << std::endl;
    return 1;
  }
  return 0;
}
