#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace fabrica::compute {

// A VM's lifecycle as one explicit table: (phase, event) -> next phase + the action to request.
// Phases keep OpenNebula's numeric STATE and LCM_STATE codes, so operators and tools that know
// OpenNebula read them unchanged. Pure: no I/O; the caller persists the new phase before it
// requests the action, so a crash between the two replays the action (actions are idempotent).

// OpenNebula's STATE.
enum class VmStatus : int {
  kInit = 0,
  kPending = 1,
  kHold = 2,
  kActive = 3,
  kSuspended = 5,
  kDone = 6,
  kPoweroff = 8,
  kUndeployed = 9,
};

// OpenNebula's LCM_STATE (meaningful while ACTIVE; kLcmInit otherwise).
enum class Lcm : int {
  kLcmInit = 0,
  kProlog = 1,
  kBoot = 2,
  kRunning = 3,
  kSaveSuspend = 6,
  kEpilog = 11,
  kShutdown = 12,
  kUnknown = 16,
  kShutdownPoweroff = 18,
  kBootUnknown = 19,
  kBootPoweroff = 20,
  kBootSuspended = 21,
  kCleanupDelete = 23,
  kHotplugSaveasPoweroff = 27,
  kShutdownUndeploy = 29,
  kEpilogUndeploy = 30,
  kBootFailure = 36,
  kPrologFailure = 39,
  kEpilogFailure = 40,
  kEpilogUndeployFailure = 42,
};

struct Phase {
  VmStatus status = VmStatus::kPending;
  Lcm lcm = Lcm::kLcmInit;
  bool operator==(const Phase&) const = default;
};
// "RUNNING", "PENDING", "BOOT_FAILURE": the LCM name while ACTIVE, else the STATE name.
std::string phase_name(Phase phase);
// The inverse, for filters: a STATE name ("POWEROFF", "ACTIVE": any LCM state) or an LCM name
// ("RUNNING": ACTIVE in that LCM state). nullopt for an unknown name.
struct PhaseFilter {
  VmStatus status;
  std::optional<Lcm> lcm;
};
std::optional<PhaseFilter> parse_phase(std::string_view name);

enum class Event {
  kPlaced,          // The scheduler gave the VM a host.
  kDone,            // The agent finished the action in flight.
  kFailed,          // The agent reports the action in flight failed.
  kShutdown,        // User: graceful (ACPI) stop, then release.
  kPoweroff,        // User: graceful stop, devices kept.
  kPoweroffHard,    // User: immediate stop, devices kept.
  kReboot,          // User: graceful reboot.
  kRebootHard,      // User: reset.
  kSuspend,         // User: pause in memory, devices kept.
  kResume,          // User: start a POWEROFF/SUSPENDED VM, or queue an UNDEPLOYED one.
  kUndeploy,        // User: graceful stop, then free the host.
  kUndeployHard,    // User: immediate stop, then free the host.
  kTerminate,       // User: graceful stop, then delete.
  kTerminateHard,   // User: immediate stop, then delete.
  kHold,            // User: keep a PENDING VM from the scheduler.
  kRelease,         // User: give a HELD VM back to the scheduler.
  kRecoverSuccess,  // Operator: the action in flight did succeed.
  kRecoverFailure,  // Operator: the action in flight did fail.
  kRecoverRetry,    // Operator: request the action in flight again.
  kRecoverDelete,   // Operator: give up on the VM; clean the host and delete it.
  kHostLost,        // Monitoring: the host went OFFLINE.
  kSeenRunning,     // Monitoring: libvirt reports the domain running.
  kSeenPoweredOff,  // Monitoring: the domain is shut off (shut down from inside the guest).
  kSeenMissing,     // Monitoring: libvirt has no such domain.
  kSaveas,          // User: copy a POWEROFF VM's disk into a new image (disk-saveas).
};
std::string_view event_name(Event event);

// What the agent is asked to do on entering a phase.
enum class Action {
  kNone,
  kDeploy,    // Write the context, define and start the domain (PROLOG + BOOT).
  kShutdown,  // ACPI shutdown, waiting for the guest.
  kDestroy,   // Immediate stop.
  kReboot,    // ACPI reboot.
  kReset,     // Hard reset.
  kSuspend,   // Pause the domain.
  kResume,    // Unpause.
  kStart,     // Start the defined domain again.
  kCleanup,   // Destroy if running, undefine, remove the VM's files on the host.
  kSaveas,    // Copy one of the stopped VM's disks to a new image's staging file.
};
std::string_view action_name(Action action);

struct Transition {
  Phase to;
  Action action = Action::kNone;
  bool releases_host = false;  // Devices, CPUs and memory go back to the scheduler.
  bool deletes = false;        // The VM record ends (DONE); its quota is released.
};

// The transition for `event` in `from`, or kFailedPrecondition naming what the VM's phase
// allows instead ("cannot suspend a VM that is POWEROFF").
Result<Transition> next(Phase from, Event event);

// Every (phase, event) the table defines, for documentation and exhaustive tests.
struct TableRow {
  Phase from;
  Event event;
  Transition transition;
};
const std::vector<TableRow>& lifecycle_table();

}  // namespace fabrica::compute
