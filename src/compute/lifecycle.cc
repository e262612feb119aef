#include "compute/lifecycle.h"

#include <algorithm>
#include <array>

namespace fabrica::compute {
namespace {

constexpr Phase active(Lcm lcm) { return Phase{VmStatus::kActive, lcm}; }
constexpr Phase steady(VmStatus status) { return Phase{status, Lcm::kLcmInit}; }

constexpr Phase kPending = steady(VmStatus::kPending);
constexpr Phase kHold = steady(VmStatus::kHold);
constexpr Phase kPoweroff = steady(VmStatus::kPoweroff);
constexpr Phase kSuspended = steady(VmStatus::kSuspended);
constexpr Phase kUndeployed = steady(VmStatus::kUndeployed);
constexpr Phase kDone = steady(VmStatus::kDone);
constexpr Phase kRunning = active(Lcm::kRunning);
constexpr Phase kUnknown = active(Lcm::kUnknown);

// A phase in which the agent is doing something: what it was asked, and where its report
// leads. recover --success / --failure / --retry follow the same rows.
struct InFlight {
  Phase phase;
  Action action;
  Phase done;
  Phase failed;
};
constexpr std::array<InFlight, 14> kInFlight{{
    {active(Lcm::kProlog), Action::kDeploy, active(Lcm::kBoot), active(Lcm::kPrologFailure)},
    {active(Lcm::kBoot), Action::kStart, kRunning, active(Lcm::kBootFailure)},
    {active(Lcm::kShutdown), Action::kShutdown, active(Lcm::kEpilog), kRunning},
    {active(Lcm::kEpilog), Action::kCleanup, kDone, active(Lcm::kEpilogFailure)},
    {active(Lcm::kShutdownPoweroff), Action::kShutdown, kPoweroff, kRunning},
    {active(Lcm::kShutdownUndeploy), Action::kShutdown, active(Lcm::kEpilogUndeploy), kRunning},
    {active(Lcm::kEpilogUndeploy), Action::kCleanup, kUndeployed,
     active(Lcm::kEpilogUndeployFailure)},
    {active(Lcm::kSaveSuspend), Action::kSuspend, kSuspended, kRunning},
    {active(Lcm::kBootSuspended), Action::kResume, kRunning, kSuspended},
    {active(Lcm::kBootPoweroff), Action::kStart, kRunning, kPoweroff},
    {active(Lcm::kBootUnknown), Action::kStart, kRunning, kUnknown},
    {active(Lcm::kCleanupDelete), Action::kCleanup, kDone, active(Lcm::kEpilogFailure)},
    // disk-saveas: whether the copy worked or not, the VM is POWEROFF again.
    {active(Lcm::kHotplugSaveasPoweroff), Action::kSaveas, kPoweroff, kPoweroff},
    // A reboot keeps the VM RUNNING; listed so that its report has a row.
    {kRunning, Action::kNone, kRunning, kRunning},
}};

// Failure phases: the in-flight phase whose action failed, to retry or to settle.
constexpr std::array<std::pair<Lcm, Lcm>, 4> kFailures{{
    {Lcm::kPrologFailure, Lcm::kProlog},
    {Lcm::kBootFailure, Lcm::kBoot},
    {Lcm::kEpilogFailure, Lcm::kEpilog},
    {Lcm::kEpilogUndeployFailure, Lcm::kEpilogUndeploy},
}};

bool hosted(Phase p) {
  return p.status == VmStatus::kActive || p.status == VmStatus::kPoweroff ||
         p.status == VmStatus::kSuspended;
}

// The transition into `to` from `from` requesting `action`, with the host released when the
// VM leaves its host for good.
Transition go(Phase from, Phase to, Action action = Action::kNone) {
  bool leaves = hosted(from) && !hosted(to);
  return Transition{.to = to, .action = action, .releases_host = leaves, .deletes = to == kDone};
}

const InFlight* in_flight(Phase p) {
  for (const auto& f : kInFlight) {
    if (f.phase == p) return &f;
  }
  return nullptr;
}

Action entry_action(Phase p) {
  const InFlight* f = in_flight(p);
  return f && f->phase != kRunning ? f->action : Action::kNone;
}

std::vector<TableRow> build() {
  std::vector<TableRow> rows;
  auto add = [&](Phase from, Event e, Phase to, Action action) {
    rows.push_back({from, e, go(from, to, action)});
  };
  auto add_entering = [&](Phase from, Event e, Phase to) { add(from, e, to, entry_action(to)); };
  const Phase shutdown = active(Lcm::kShutdown);
  const Phase shutdown_poweroff = active(Lcm::kShutdownPoweroff);
  const Phase shutdown_undeploy = active(Lcm::kShutdownUndeploy);
  const Phase epilog = active(Lcm::kEpilog);
  const Phase epilog_undeploy = active(Lcm::kEpilogUndeploy);
  const Phase cleanup_delete = active(Lcm::kCleanupDelete);

  // Waiting for a host.
  add_entering(kPending, Event::kPlaced, active(Lcm::kProlog));
  add(kPending, Event::kHold, kHold, Action::kNone);
  add(kHold, Event::kRelease, kPending, Action::kNone);
  for (Phase p : {kPending, kHold, kUndeployed}) {
    for (Event e : {Event::kTerminate, Event::kTerminateHard, Event::kShutdown}) {
      add(p, e, kDone, Action::kNone);
    }
  }
  add(kUndeployed, Event::kResume, kPending, Action::kNone);

  // RUNNING.
  add(kRunning, Event::kShutdown, shutdown, Action::kShutdown);
  add(kRunning, Event::kTerminate, shutdown, Action::kShutdown);
  add(kRunning, Event::kPoweroff, shutdown_poweroff, Action::kShutdown);
  add(kRunning, Event::kUndeploy, shutdown_undeploy, Action::kShutdown);
  add(kRunning, Event::kReboot, kRunning, Action::kReboot);
  add(kRunning, Event::kRebootHard, kRunning, Action::kReset);
  add_entering(kRunning, Event::kSuspend, active(Lcm::kSaveSuspend));
  add(kRunning, Event::kHostLost, kUnknown, Action::kNone);
  add(kRunning, Event::kSeenMissing, kUnknown, Action::kNone);
  add(kRunning, Event::kSeenPoweredOff, kPoweroff, Action::kNone);

  // A graceful stop in progress can be made hard.
  add(shutdown, Event::kTerminateHard, shutdown, Action::kDestroy);
  add(shutdown_poweroff, Event::kPoweroffHard, shutdown_poweroff, Action::kDestroy);
  add(shutdown_undeploy, Event::kUndeployHard, shutdown_undeploy, Action::kDestroy);

  // UNKNOWN: the host is gone or the domain is missing; monitoring says what it really is.
  add(kUnknown, Event::kSeenRunning, kRunning, Action::kNone);
  add(kUnknown, Event::kSeenPoweredOff, kPoweroff, Action::kNone);
  add_entering(kUnknown, Event::kResume, active(Lcm::kBootUnknown));

  // POWEROFF keeps the devices; SUSPENDED keeps the memory too.
  add_entering(kPoweroff, Event::kResume, active(Lcm::kBootPoweroff));
  add(kPoweroff, Event::kSeenRunning, kRunning, Action::kNone);
  add_entering(kPoweroff, Event::kSaveas, active(Lcm::kHotplugSaveasPoweroff));
  for (Event e : {Event::kTerminate, Event::kTerminateHard, Event::kShutdown}) {
    add_entering(kPoweroff, e, epilog);
  }
  for (Event e : {Event::kUndeploy, Event::kUndeployHard}) {
    add_entering(kPoweroff, e, epilog_undeploy);
  }
  add_entering(kSuspended, Event::kResume, active(Lcm::kBootSuspended));
  // Stopping at once works from any VM on its host, whatever the guest is doing.
  for (Phase p : {kRunning, kUnknown, kSuspended}) {
    add(p, Event::kTerminateHard, shutdown, Action::kDestroy);
    add(p, Event::kPoweroffHard, shutdown_poweroff, Action::kDestroy);
    add(p, Event::kUndeployHard, shutdown_undeploy, Action::kDestroy);
  }

  // The agent's reports, and the operator's recover for an action in flight.
  for (const auto& f : kInFlight) {
    if (f.phase == kRunning) continue;
    add_entering(f.phase, Event::kDone, f.done);
    add_entering(f.phase, Event::kRecoverSuccess, f.done);
    add(f.phase, Event::kFailed, f.failed, Action::kNone);
    add(f.phase, Event::kRecoverFailure, f.failed, Action::kNone);
    add(f.phase, Event::kRecoverRetry, f.phase, f.action);
  }
  add(kRunning, Event::kDone, kRunning, Action::kNone);    // A reboot finished.
  add(kRunning, Event::kFailed, kRunning, Action::kNone);  // A reboot failed; still running.
  for (auto [failure, phase] : kFailures) {
    const InFlight* f = in_flight(active(phase));
    add(active(failure), Event::kRecoverRetry, f->phase, f->action);
    add_entering(active(failure), Event::kRecoverSuccess, f->done);
    for (Event e : {Event::kTerminate, Event::kTerminateHard, Event::kShutdown}) {
      add_entering(active(failure), e, epilog);
    }
  }
  // recover --delete: from anything on a host, clean it and end the VM.
  for (Phase p : {kRunning, kUnknown, kPoweroff, kSuspended}) {
    add_entering(p, Event::kRecoverDelete, cleanup_delete);
  }
  for (const auto& f : kInFlight) {
    if (f.phase != kRunning && f.phase != cleanup_delete) {
      add_entering(f.phase, Event::kRecoverDelete, cleanup_delete);
    }
  }
  for (auto [failure, phase] : kFailures) {
    add_entering(active(failure), Event::kRecoverDelete, cleanup_delete);
  }
  return rows;
}

constexpr std::array<std::pair<VmStatus, std::string_view>, 8> kStatusNames{{
    {VmStatus::kInit, "INIT"},
    {VmStatus::kPending, "PENDING"},
    {VmStatus::kHold, "HOLD"},
    {VmStatus::kActive, "ACTIVE"},
    {VmStatus::kSuspended, "SUSPENDED"},
    {VmStatus::kDone, "DONE"},
    {VmStatus::kPoweroff, "POWEROFF"},
    {VmStatus::kUndeployed, "UNDEPLOYED"},
}};

constexpr std::array<std::pair<Lcm, std::string_view>, 20> kLcmNames{{
    {Lcm::kLcmInit, "LCM_INIT"},
    {Lcm::kProlog, "PROLOG"},
    {Lcm::kBoot, "BOOT"},
    {Lcm::kRunning, "RUNNING"},
    {Lcm::kSaveSuspend, "SAVE_SUSPEND"},
    {Lcm::kEpilog, "EPILOG"},
    {Lcm::kShutdown, "SHUTDOWN"},
    {Lcm::kUnknown, "UNKNOWN"},
    {Lcm::kShutdownPoweroff, "SHUTDOWN_POWEROFF"},
    {Lcm::kBootUnknown, "BOOT_UNKNOWN"},
    {Lcm::kBootPoweroff, "BOOT_POWEROFF"},
    {Lcm::kBootSuspended, "BOOT_SUSPENDED"},
    {Lcm::kCleanupDelete, "CLEANUP_DELETE"},
    {Lcm::kHotplugSaveasPoweroff, "HOTPLUG_SAVEAS_POWEROFF"},
    {Lcm::kShutdownUndeploy, "SHUTDOWN_UNDEPLOY"},
    {Lcm::kEpilogUndeploy, "EPILOG_UNDEPLOY"},
    {Lcm::kBootFailure, "BOOT_FAILURE"},
    {Lcm::kPrologFailure, "PROLOG_FAILURE"},
    {Lcm::kEpilogFailure, "EPILOG_FAILURE"},
    {Lcm::kEpilogUndeployFailure, "EPILOG_UNDEPLOY_FAILURE"},
}};

constexpr std::array<std::string_view, 25> kEventNames{"placed",
                                                       "done",
                                                       "failed",
                                                       "shutdown",
                                                       "poweroff",
                                                       "poweroff --hard",
                                                       "reboot",
                                                       "reboot --hard",
                                                       "suspend",
                                                       "resume",
                                                       "undeploy",
                                                       "undeploy --hard",
                                                       "terminate",
                                                       "terminate --hard",
                                                       "hold",
                                                       "release",
                                                       "recover --success",
                                                       "recover --failure",
                                                       "recover --retry",
                                                       "recover --delete",
                                                       "host lost",
                                                       "seen running",
                                                       "seen powered off",
                                                       "seen missing",
                                                       "disk-saveas"};

constexpr std::array<std::string_view, 11> kActionNames{"none",   "deploy",  "shutdown", "destroy",
                                                        "reboot", "reset",   "suspend",  "resume",
                                                        "start",  "cleanup", "saveas"};

}  // namespace

std::string phase_name(Phase phase) {
  if (phase.status == VmStatus::kActive) {
    for (auto [lcm, name] : kLcmNames) {
      if (lcm == phase.lcm) return std::string(name);
    }
    return "LCM_" + std::to_string(static_cast<int>(phase.lcm));
  }
  for (auto [status, name] : kStatusNames) {
    if (status == phase.status) return std::string(name);
  }
  return "STATE_" + std::to_string(static_cast<int>(phase.status));
}

std::optional<PhaseFilter> parse_phase(std::string_view name) {
  for (auto [status, text] : kStatusNames) {
    if (text == name) return PhaseFilter{status, std::nullopt};
  }
  for (auto [lcm, text] : kLcmNames) {
    if (text == name && lcm != Lcm::kLcmInit) return PhaseFilter{VmStatus::kActive, lcm};
  }
  return std::nullopt;
}

std::string_view event_name(Event event) { return kEventNames.at(static_cast<size_t>(event)); }

std::string_view action_name(Action action) { return kActionNames.at(static_cast<size_t>(action)); }

const std::vector<TableRow>& lifecycle_table() {
  static const std::vector<TableRow> table = build();
  return table;
}

bool user_event(Event event) {
  switch (event) {
    case Event::kPlaced:
    case Event::kDone:
    case Event::kFailed:
    case Event::kHostLost:
    case Event::kSeenRunning:
    case Event::kSeenPoweredOff:
    case Event::kSeenMissing:
      return false;
    default:
      return true;
  }
}

Result<Transition> next(Phase from, Event event) {
  std::string allowed;
  for (const auto& row : lifecycle_table()) {
    if (row.from != from) continue;
    if (row.event == event) return row.transition;
    if (!user_event(row.event)) continue;
    allowed += (allowed.empty() ? "" : ", ") + std::string(event_name(row.event));
  }
  // A phase with an operation in flight ends by itself: say so before the few actions that
  // cut it short.
  const InFlight* busy = in_flight(from);
  std::string pending = busy && from != kRunning
                            ? " (its " + std::string(action_name(busy->action)) +
                                  " is in progress: wait for it, e.g. with --wait)"
                            : "";
  return fail(ErrorCode::kFailedPrecondition,
              "cannot " + std::string(event_name(event)) + " a VM that is " + phase_name(from) +
                  pending + (allowed.empty() ? "" : "; it allows: " + allowed),
              "state");
}

}  // namespace fabrica::compute
