#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace fabrica::hypervisor {

enum class DomainState { kMissing, kRunning, kPaused, kShutoff, kCrashed, kOther };
std::string_view domain_state_name(DomainState state);

struct DomainStatus {
  DomainState state = DomainState::kMissing;
  int64_t cpu_time_ns = 0;  // Guest CPU time used so far.
  int64_t memory_kb = 0;    // Memory the domain holds now.
};

// What the agent asks of a hypervisor. Every call is idempotent, so a command repeated after a
// crash does the right thing once: starting a running domain, stopping a stopped one or
// removing a missing one succeeds without doing anything. Domains are named by their libvirt
// name ("fabrica-vm-12"). Not thread-safe: one caller at a time.
class Hypervisor {
 public:
  virtual ~Hypervisor() = default;
  // Defines the domain, or replaces the definition of one with the same name and UUID.
  virtual Result<void> define(const std::string& xml) = 0;
  virtual Result<void> start(const std::string& name) = 0;
  // Asks the guest to power off (ACPI); returns without waiting for it.
  virtual Result<void> shutdown(const std::string& name) = 0;
  // Stops the domain at once.
  virtual Result<void> destroy(const std::string& name) = 0;
  virtual Result<void> reboot(const std::string& name) = 0;
  virtual Result<void> reset(const std::string& name) = 0;
  virtual Result<void> suspend(const std::string& name) = 0;
  virtual Result<void> resume(const std::string& name) = 0;
  // Removes the definition (the domain must not be running).
  virtual Result<void> undefine(const std::string& name) = 0;
  virtual Result<DomainStatus> status(const std::string& name) = 0;
  // Names of the defined domains that Fabrica made ("fabrica-vm-*").
  virtual Result<std::vector<std::string>> list() = 0;
  // The domain's XML as libvirt holds it (with the addresses it assigned).
  virtual Result<std::string> xml(const std::string& name) = 0;
};

// A libvirt connection: "qemu:///system" on a real host, "test:///default" in tests.
Result<std::unique_ptr<Hypervisor>> open_libvirt(const std::string& uri);

}  // namespace fabrica::hypervisor
