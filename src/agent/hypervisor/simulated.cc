#include "agent/hypervisor/simulated.h"

#include <chrono>
#include <pugixml.hpp>

namespace fabrica::hypervisor {
namespace {

using Clock = std::chrono::steady_clock;

struct SimDomain {
  std::string uuid;
  std::string xml;
  int64_t memory_kb = 0;
  DomainState state = DomainState::kShutoff;
  Clock::time_point running_since{};
  int64_t cpu_ns = 0;  // Accumulated while running.
};

class SimulatedHypervisor final : public Hypervisor {
 public:
  Result<void> define(const std::string& xml) override {
    pugi::xml_document doc;
    if (!doc.load_string(xml.c_str())) {
      return fail(ErrorCode::kUnavailable, "define: the domain XML does not parse");
    }
    auto domain = doc.child("domain");
    std::string name = domain.child_value("name");
    std::string uuid = domain.child_value("uuid");
    if (name.empty()) return fail(ErrorCode::kUnavailable, "define: the domain has no name");
    std::lock_guard lock(mutex_);
    auto& d = domains_[name];
    if (!d.uuid.empty() && !uuid.empty() && d.uuid != uuid) {
      return fail(ErrorCode::kUnavailable,
                  "define: domain '" + name + "' already exists with another uuid");
    }
    if (d.xml.empty()) d.state = DomainState::kShutoff;
    d.uuid = uuid;
    d.xml = xml;
    d.memory_kb = domain.child("memory").text().as_llong();
    return {};
  }
  Result<void> start(const std::string& name) override {
    return with(name, "start", [&](SimDomain& d) {
      if (d.state == DomainState::kShutoff) run(d);
      return Result<void>{};
    });
  }
  Result<void> shutdown(const std::string& name) override { return stop(name); }
  Result<void> destroy(const std::string& name) override { return stop(name); }
  // A running guest restarts and runs on; anything else has nothing to restart.
  Result<void> reboot(const std::string&) override { return {}; }
  Result<void> reset(const std::string&) override { return {}; }
  Result<void> suspend(const std::string& name) override {
    return with(name, "suspend", [&](SimDomain& d) -> Result<void> {
      if (d.state == DomainState::kPaused) return {};
      if (d.state != DomainState::kRunning) {
        return fail(ErrorCode::kUnavailable, "suspend " + name + ": domain is not running");
      }
      pause(d);
      return {};
    });
  }
  Result<void> resume(const std::string& name) override {
    return with(name, "resume", [&](SimDomain& d) {
      if (d.state == DomainState::kPaused) run(d);
      return Result<void>{};
    });
  }
  Result<void> undefine(const std::string& name) override {
    std::lock_guard lock(mutex_);
    auto it = domains_.find(name);
    if (it == domains_.end()) return {};
    if (it->second.state == DomainState::kRunning || it->second.state == DomainState::kPaused) {
      return fail(ErrorCode::kFailedPrecondition, name + " is running; stop it first");
    }
    domains_.erase(it);
    return {};
  }
  Result<DomainStatus> status(const std::string& name) override {
    std::lock_guard lock(mutex_);
    auto it = domains_.find(name);
    if (it == domains_.end()) return DomainStatus{};
    const SimDomain& d = it->second;
    int64_t cpu = d.cpu_ns;
    if (d.state == DomainState::kRunning) cpu += elapsed_ns(d.running_since);
    return DomainStatus{.state = d.state,
                        .cpu_time_ns = cpu,
                        .memory_kb = d.state == DomainState::kShutoff ? 0 : d.memory_kb};
  }
  Result<std::vector<std::string>> list() override {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& [name, d] : domains_) {
      if (name.starts_with("fabrica-vm-")) out.push_back(name);
    }
    return out;
  }
  Result<std::string> xml(const std::string& name) override {
    std::lock_guard lock(mutex_);
    auto it = domains_.find(name);
    if (it == domains_.end()) return fail(ErrorCode::kNotFound, "no domain " + name);
    return it->second.xml;
  }

 private:
  static int64_t elapsed_ns(Clock::time_point since) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - since).count();
  }
  static void run(SimDomain& d) {
    d.state = DomainState::kRunning;
    d.running_since = Clock::now();
  }
  static void pause(SimDomain& d) {
    d.cpu_ns += elapsed_ns(d.running_since);
    d.state = DomainState::kPaused;
  }
  template <typename Fn>
  Result<void> with(const std::string& name, const std::string& verb, Fn&& fn) {
    std::lock_guard lock(mutex_);
    auto it = domains_.find(name);
    if (it == domains_.end()) {
      return fail(ErrorCode::kNotFound, "cannot " + verb + " " + name + ": no such domain");
    }
    return fn(it->second);
  }
  Result<void> stop(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto it = domains_.find(name);
    if (it == domains_.end()) return {};
    SimDomain& d = it->second;
    if (d.state == DomainState::kRunning) d.cpu_ns += elapsed_ns(d.running_since);
    d.state = DomainState::kShutoff;
    return {};
  }
  std::mutex mutex_;
  std::map<std::string, SimDomain> domains_;
};

}  // namespace

std::unique_ptr<Hypervisor> make_simulated_hypervisor() {
  return std::make_unique<SimulatedHypervisor>();
}

}  // namespace fabrica::hypervisor
