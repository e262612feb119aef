// Hypervisor over libvirt's C API.
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "agent/hypervisor/hypervisor.h"

namespace fabrica::hypervisor {
namespace {

Error libvirt_error(const std::string& what) {
  const char* message = virGetLastErrorMessage();
  return Error(ErrorCode::kUnavailable,
               what + ": " + (message ? message : "unknown libvirt error"));
}

bool last_error_is(int code) {
  virErrorPtr e = virGetLastError();
  return e != nullptr && e->code == code;
}

// Owns one virDomainPtr.
struct Domain {
  virDomainPtr ptr = nullptr;
  Domain() = default;
  explicit Domain(virDomainPtr p) : ptr(p) {}
  Domain(const Domain&) = delete;
  Domain& operator=(const Domain&) = delete;
  ~Domain() {
    if (ptr) virDomainFree(ptr);
  }
};

class LibvirtHypervisor final : public Hypervisor {
 public:
  explicit LibvirtHypervisor(virConnectPtr conn) : conn_(conn) {}
  ~LibvirtHypervisor() override { virConnectClose(conn_); }

  Result<void> define(const std::string& xml) override {
    Domain d(virDomainDefineXML(conn_, xml.c_str()));
    if (!d.ptr) return fail(libvirt_error("define"));
    return {};
  }

  Result<void> start(const std::string& name) override {
    return with_domain(name, "start", [&](virDomainPtr d) -> Result<void> {
      if (virDomainIsActive(d) == 1) return {};
      if (virDomainCreate(d) < 0) return fail(libvirt_error("start " + name));
      return {};
    });
  }

  Result<void> shutdown(const std::string& name) override {
    return when_active(name, "shutdown", [](virDomainPtr d) { return virDomainShutdown(d); });
  }

  Result<void> destroy(const std::string& name) override {
    return when_active(name, "destroy", [](virDomainPtr d) { return virDomainDestroy(d); });
  }

  Result<void> reboot(const std::string& name) override {
    return when_active(name, "reboot", [](virDomainPtr d) { return virDomainReboot(d, 0); });
  }

  Result<void> reset(const std::string& name) override {
    return when_active(name, "reset", [](virDomainPtr d) { return virDomainReset(d, 0); });
  }

  Result<void> suspend(const std::string& name) override {
    return with_domain(name, "suspend", [&](virDomainPtr d) -> Result<void> {
      int state = 0;
      if (virDomainGetState(d, &state, nullptr, 0) < 0) return fail(libvirt_error("state"));
      if (state == VIR_DOMAIN_PAUSED) return {};
      if (virDomainSuspend(d) < 0) return fail(libvirt_error("suspend " + name));
      return {};
    });
  }

  Result<void> resume(const std::string& name) override {
    return with_domain(name, "resume", [&](virDomainPtr d) -> Result<void> {
      int state = 0;
      if (virDomainGetState(d, &state, nullptr, 0) < 0) return fail(libvirt_error("state"));
      if (state != VIR_DOMAIN_PAUSED) return {};
      if (virDomainResume(d) < 0) return fail(libvirt_error("resume " + name));
      return {};
    });
  }

  Result<void> undefine(const std::string& name) override {
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (!d.ptr) {
      if (last_error_is(VIR_ERR_NO_DOMAIN)) return {};
      return fail(libvirt_error("look up " + name));
    }
    if (virDomainIsActive(d.ptr) == 1) {
      return fail(ErrorCode::kFailedPrecondition, name + " is running; stop it first");
    }
    // A managed-save image goes with the definition (domains boot without UEFI NVRAM).
    if (virDomainUndefineFlags(d.ptr, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE) < 0) {
      return fail(libvirt_error("undefine " + name));
    }
    return {};
  }

  Result<DomainStatus> status(const std::string& name) override {
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (!d.ptr) {
      if (last_error_is(VIR_ERR_NO_DOMAIN)) return DomainStatus{};
      return fail(libvirt_error("look up " + name));
    }
    virDomainInfo info;
    if (virDomainGetInfo(d.ptr, &info) < 0) return fail(libvirt_error("info " + name));
    DomainStatus s;
    switch (info.state) {
      case VIR_DOMAIN_RUNNING:
      case VIR_DOMAIN_BLOCKED:
        s.state = DomainState::kRunning;
        break;
      case VIR_DOMAIN_PAUSED:
      case VIR_DOMAIN_PMSUSPENDED:
        s.state = DomainState::kPaused;
        break;
      case VIR_DOMAIN_SHUTOFF:
        s.state = DomainState::kShutoff;
        break;
      case VIR_DOMAIN_CRASHED:
        s.state = DomainState::kCrashed;
        break;
      default:
        s.state = DomainState::kOther;
        break;
    }
    s.cpu_time_ns = static_cast<int64_t>(info.cpuTime);
    s.memory_kb = static_cast<int64_t>(info.memory);
    return s;
  }

  Result<std::vector<std::string>> list() override {
    virDomainPtr* domains = nullptr;
    int n = virConnectListAllDomains(conn_, &domains, 0);
    if (n < 0) return fail(libvirt_error("list domains"));
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      const char* name = virDomainGetName(domains[i]);
      if (name && std::string_view(name).starts_with("fabrica-vm-")) out.emplace_back(name);
      virDomainFree(domains[i]);
    }
    free(domains);
    return out;
  }

  Result<std::string> xml(const std::string& name) override {
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (!d.ptr) return fail(ErrorCode::kNotFound, "no domain " + name);
    char* text = virDomainGetXMLDesc(d.ptr, 0);
    if (!text) return fail(libvirt_error("xml " + name));
    std::string out(text);
    free(text);
    return out;
  }

 private:
  template <typename Fn>
  Result<void> with_domain(const std::string& name, const std::string& verb, Fn&& fn) {
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (!d.ptr) {
      if (last_error_is(VIR_ERR_NO_DOMAIN)) {
        return fail(ErrorCode::kNotFound, "cannot " + verb + " " + name + ": no such domain");
      }
      return fail(libvirt_error("look up " + name));
    }
    return fn(d.ptr);
  }

  // Runs `call` on a running domain; a domain that is not running (or not there) needs
  // nothing.
  template <typename Call>
  Result<void> when_active(const std::string& name, const std::string& verb, Call&& call) {
    Domain d(virDomainLookupByName(conn_, name.c_str()));
    if (!d.ptr) {
      if (last_error_is(VIR_ERR_NO_DOMAIN)) return {};
      return fail(libvirt_error("look up " + name));
    }
    if (virDomainIsActive(d.ptr) != 1) return {};
    if (call(d.ptr) < 0) return fail(libvirt_error(verb + " " + name));
    return {};
  }

  virConnectPtr conn_;
};

// libvirt prints errors to stderr by default; they come back to callers as Errors instead.
void quiet(void*, virErrorPtr) {}

}  // namespace

std::string_view domain_state_name(DomainState state) {
  switch (state) {
    case DomainState::kMissing:
      return "missing";
    case DomainState::kRunning:
      return "running";
    case DomainState::kPaused:
      return "paused";
    case DomainState::kShutoff:
      return "shutoff";
    case DomainState::kCrashed:
      return "crashed";
    case DomainState::kOther:
      break;
  }
  return "other";
}

Result<std::unique_ptr<Hypervisor>> open_libvirt(const std::string& uri) {
  virSetErrorFunc(nullptr, quiet);
  virConnectPtr conn = virConnectOpen(uri.c_str());
  if (!conn) return fail(libvirt_error("cannot connect to " + uri));
  return std::unique_ptr<Hypervisor>(std::make_unique<LibvirtHypervisor>(conn));
}

}  // namespace fabrica::hypervisor
