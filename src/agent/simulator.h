#pragma once

#include <atomic>
#include <chrono>
#include <string>

#include "agent/profiles.h"
#include "core/error.h"
#include "inventory/hardware.h"

namespace fabrica::agent {

struct SimulationOptions {
  std::string server;
  std::string join_token;  // Must be good for `hosts` joins ("@sha256:<pin>" is checked).
  std::string ca_file;     // CA certificates to trust for https (empty: the system's).
  std::string profile = "hgx-h100";
  int hosts = 1;
  int threads = 4;
  std::string name_prefix = "sim";
  int rounds = 0;  // Heartbeat rounds before returning; 0 runs until stopped.
  std::chrono::milliseconds interval{0};  // 0: the interval the server asks for.
  // Hosts that run VMs on a simulated hypervisor: they carry out fabricad's commands (until
  // stopped, whatever `rounds` says) instead of only reporting inventory.
  bool hypervisor = false;
  std::string vm_root = "/tmp/fabrica-sim-vms";
};

struct SimulationReport {
  int joined = 0;
  double join_seconds = 0;
  int64_t heartbeats = 0;
  int64_t failures = 0;
  double heartbeat_seconds = 0;
};

// N hollow hosts in one process (Kubernetes' kubemark idea): each joins with the real
// protocol and its own credential, then heartbeats. Hosts are spread over `threads`, each
// with its own connection. Returns when `stop` turns true or after `rounds` rounds.
Result<SimulationReport> simulate(const SimulationOptions& options, const std::atomic<bool>& stop);

}  // namespace fabrica::agent
