#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "auth/authorizer.h"
#include "auth/identity.h"
#include "auth/quota.h"
#include "compute/lifecycle.h"
#include "core/clock.h"
#include "crypto/sealer.h"
#include "fleet/fleet.h"
#include "network/network.h"
#include "sched/scheduler.h"
#include "storage/storage.h"
#include "store/store.h"

namespace fabrica::compute {

struct Ledger;  // A host's allocation record (compute.cc).

// A VM's STATE (the store's state column). On a host that runs VMs (its agent has a
// hypervisor) a placed VM follows the lifecycle table (lifecycle.h) with OpenNebula's codes;
// on an inventory-only host it stays ALLOCATED (Fabrica's own code 100, outside OpenNebula's
// range; records from before the lifecycle stored it as 2, which is HOLD now, and are read
// back as ALLOCATED: a held VM never has an allocation).
enum class VmState : int {
  kPending = 1,
  kHold = 2,
  kAllocated = 100,
  kActive = 3,
  kSuspended = 5,
  kDone = 6,
  kPoweroff = 8,
  kUndeployed = 9,
};
// "PENDING", "ALLOCATED", the LCM name while ACTIVE ("RUNNING", "BOOT_FAILURE"...), etc.
std::string vm_state_name(VmState state, int lcm = 0);

// What the guest gets besides its hardware: context variables, which it reads from a CD-ROM
// labelled CONTEXT (see core/context.h), direct kernel boot (paths on the host, or KERNEL and
// RAMDISK images), and disks.
struct GuestSpec {
  Json context = Json::object();  // NAME -> string, number or boolean.
  std::string kernel;
  std::string initrd;
  std::string cmdline;
  int64_t kernel_image = -1;  // A KERNEL image instead of a kernel path; -1 for none.
  int64_t initrd_image = -1;  // A RAMDISK image instead of an initrd path.
  // The disks asked for, in guest order (vda, vdb, ...): {"image_id": N} uses an image (a
  // non-persistent one through the VM's own qcow2 overlay, a persistent one directly, a CDROM
  // read-only); {"size_mb": N, "format": "qcow2"|"raw"} is a volatile disk that lives and
  // dies with the VM.
  Json disks = Json::array();
  // The NICs asked for, in guest order (eth0, eth1, ...): {"vnet_id": N, "ip"?: "10.0.0.5"}.
  // Each gets a lease at creation; its ETH<n>_* variables join the context.
  Json nics = Json::array();

  // {"context": {...}, "os": {"kernel", "initrd", "cmdline", "kernel_image_id",
  // "initrd_image_id"}, "disks": [...], "nics": [...]}.
  Json to_json() const;
  // From the optional "context", "os", "disks" and "nics" members of an API body or record;
  // kInvalidArgument naming the field ("context.TOKEN", "os.kernel", "disks[1].size_mb").
  static Result<GuestSpec> from_json(const std::optional<Json>& context,
                                     const std::optional<Json>& os,
                                     const std::optional<Json>& disks = std::nullopt,
                                     const std::optional<Json>& nics = std::nullopt);
  // `over` on top of this: its variables replace or add to these, its os fields when given.
  GuestSpec merged(const GuestSpec& over) const;
};

struct Vm {
  ObjectHeader header;  // state = VmState.
  int64_t template_id = -1;
  sched::VmRequest request;
  GuestSpec guest;
  std::optional<sched::Allocation> allocation;
  std::string explanation;  // Why it is pending, or why it went where it went.
  int64_t placed_at = 0;
  int lcm = 0;              // LCM_STATE while ACTIVE.
  Json operation;           // null, or {"id", "action", "host_id", "issued_at"}: unanswered.
  int64_t op_seq = 0;       // Operation ids are "<vm id>-<seq>".
  std::string error;        // The last failed operation's message.
  std::string console_log;  // On the host, as the agent reported it.
  // The disks as attached at creation: [{"disk_id", "target", "image_id", "image_name",
  // "type", "source", "format", "persistent", "driver"} | {"disk_id", "target", "volatile",
  // "size_mb", "format"}]. Images are held (USED) until the VM is DONE or deleted.
  Json disks = Json::array();
  int64_t last_disk_id = -1;  // The highest disk id the VM ever had; ids are never reused.
  // The NICs as leased at creation: NicLease::to_json() each (vnet, ip, mac, bridge, ...).
  // The leases are held until the VM is DONE or deleted.
  Json nics = Json::array();
  Json history = Json::array();  // [{"host_id", "host_name", "start", "end", "reason"}].
  int64_t version = 0;
  // Soft state from the agent's last report, not stored: {"cpu_percent", "memory_kb",
  // "domain_state", "seen_at"}; null before the first report since fabricad started.
  Json monitoring;
  // Not stored: a disk-saveas this move ended ({"image_id", "ok", "error"}), for settle().
  Json saveas_ended;
  // The guest API (OneGate's role). The VM's own token, "fgt_<vm id>_<secret>", goes on its
  // context CD-ROM at every deploy (FABRICA_GUEST_TOKEN); stored as its SHA-256 and sealed,
  // never shown. Empty for VMs made before the guest API.
  std::string guest_token_hash;
  std::string sealed_guest_token;
  // What the guest last reported: {"ready", "attributes", "error", "log_tail",
  // "reported_at"}. "ready" falls back to false whenever the VM leaves RUNNING.
  Json guest_report = Json::object();
  // An appliance VM: {"name", "endpoint_id", "model", "port"}: while its guest reports READY
  // with a URL on one of its own addresses it is a backend of that endpoint. Null otherwise.
  Json app;
  std::string sealed_backend_key;  // The secret its server demands (FABRICA_BACKEND_KEY).
  // Not stored: the guest's last posted metrics {"values", "at"}.
  Json guest_metrics;

  VmState state() const { return static_cast<VmState>(header.state); }
  Json to_api_json() const;
};

// One disk as asked for in an API body ({"image_id"} or {"size_mb", "format"}), checked;
// kInvalidArgument naming "<prefix><field>".
Result<Json> read_disk(const Json& disk, const std::string& prefix = "");

struct VmTemplate {
  ObjectHeader header;
  std::string description;
  sched::VmRequest request;
  GuestSpec guest;
  int64_t version = 0;
  Json to_api_json() const;
};

struct NewVm {
  std::string name;
  std::optional<int64_t> gid;  // The caller's primary group by default.
  std::optional<int64_t> template_id;
  sched::VmRequest request;
  GuestSpec guest;  // With a template: merged over the template's.
  // For apps (market::Apps): the template is the app's, used on the app's authority (its USE
  // right was checked on the app); the caller's own rights still hold for everything else.
  bool template_from_app = false;
  // Replaces the template's GPU count (an app instantiated with --gpus).
  std::optional<int> gpu_count;
  // For appliances (market::Apps): Vm::app, and the backend secret to seal for it.
  Json app;
  std::string backend_key;
  // Runs inside the creating transaction once the VM has its id (the appliance's endpoint).
  std::function<Result<void>(store::Transaction&, Vm&)> in_transaction;
};

// What a guest reports through the guest API; each given part replaces the stored one.
struct GuestReport {
  std::optional<bool> ready;
  std::optional<Json> attributes;  // NAME -> string, at most 64, values up to 4 KiB.
  std::optional<std::string> error;
  std::optional<std::string> log_tail;  // Up to 16 KiB.
};

struct NewTemplate {
  std::string name;
  std::optional<int64_t> gid;
  std::string description;
  sched::VmRequest request;
  GuestSpec guest;
};

struct VmListOptions {
  size_t limit = 100;
  int64_t after_id = -1;
  std::optional<VmState> state;
  std::optional<int> lcm;  // With state kActive: only this LCM_STATE ("RUNNING" = 3).
  std::optional<int64_t> gid;
  std::optional<int64_t> host_id;
};

// One domain in an agent's report of its VMs (POST /api/v1/agent/vms).
struct VmSighting {
  int64_t vm_id = 0;
  std::string state;  // running, paused, shutoff, crashed, other (hypervisor::DomainState).
  // The VM's last operation the agent finished, read before the state; nullopt: unknown.
  std::optional<std::string> last_operation;
  int64_t cpu_time_ns = 0;
  int64_t memory_kb = 0;
};

struct PassReport {
  int pending = 0;
  int placed = 0;
  int conflicts = 0;  // Placements the store refused (another writer got there first).
};

// VM templates, VM requests and the scheduler's integration: creating a VM checks rights,
// the requested clusters and quotas and leaves it PENDING in one transaction; schedule_pass()
// places pending VMs with the engine and commits each allocation with an optimistic check
// against the host's allocation ledger (a store record per host), so concurrent passes and
// API calls can never give one device twice; deleting a VM frees its devices and quota in
// the same transaction. Thread-safe.
class Compute {
 public:
  Compute(store::Store& store, auth::Authorizer& authorizer, auth::Identity& identity,
          auth::Quotas& quotas, fleet::Fleet& fleet, storage::Storage& storage,
          network::Network& network, const Clock& clock)
      : store_(store),
        authorizer_(authorizer),
        identity_(identity),
        quotas_(quotas),
        fleet_(fleet),
        storage_(storage),
        network_(network),
        clock_(clock) {}

  Result<VmTemplate> create_template(const auth::Caller& caller, const NewTemplate& request);
  Result<VmTemplate> get_template(const auth::Caller& caller, int64_t id);
  Result<auth::Page<VmTemplate>> list_templates(const auth::Caller& caller,
                                                const auth::ListOptions& options);
  // Each given part replaces the template's.
  struct TemplateChange {
    std::optional<std::string> description;
    std::optional<sched::VmRequest> request;
    std::optional<GuestSpec> guest;
  };
  Result<VmTemplate> update_template(const auth::Caller& caller, int64_t id,
                                     const TemplateChange& change);
  Result<void> delete_template(const auth::Caller& caller, int64_t id);

  // kQuotaExceeded naming the quota; kNotFound for a cluster the caller may not use.
  Result<Vm> create_vm(const auth::Caller& caller, NewVm request);
  Result<Vm> get_vm(const auth::Caller& caller, int64_t id);
  Result<auth::Page<Vm>> list_vms(const auth::Caller& caller, const VmListOptions& options);
  // Frees the VM's devices and quota at once.
  Result<void> delete_vm(const auth::Caller& caller, int64_t id);

  // The agent channel. Commands for `host_id`'s agent that it has not answered. A command
  // stays until its answer arrives (re-sent after any restart; the agent runs each operation
  // id once).
  Result<Json> agent_commands(int64_t host_id);
  // The agent's answer to operation `op_id`: the VM moves on through the lifecycle table in
  // one transaction with the next command it needs. An answer for an operation that is no
  // longer in flight (a repeat) changes nothing.
  Result<void> operation_result(int64_t host_id, const std::string& op_id, bool ok,
                                const std::string& error, const std::string& console_log);
  // A user's action on a VM placed on a host that runs VMs: kFailedPrecondition naming what
  // its state allows.
  Result<Vm> act(const auth::Caller& caller, int64_t id, Event event);

  // Changes a stopped VM's vCPUs and memory (OpenNebula's resize): POWEROFF (re-fitted on its
  // host beside the host's other VMs, kFailedPrecondition if it does not fit there; the new
  // shape applies at the next resume), UNDEPLOYED, PENDING or HOLD (the scheduler places the
  // new shape). Quotas move in the same transaction (kQuotaExceeded).
  struct Resize {
    std::optional<int> vcpus;
    std::optional<int64_t> memory_mb;
  };
  Result<Vm> resize(const auth::Caller& caller, int64_t id, const Resize& resize);

  // A stopped VM's disks (POWEROFF, UNDEPLOYED, PENDING or HOLD; kFailedPrecondition
  // otherwise). On a POWEROFF VM the change applies at its next resume, when the agent
  // defines the domain again. attach_disk takes a disk as GuestSpec::disks has them; an image
  // must be in a datastore the VM's host (or, unplaced, one of its clusters) mounts.
  Result<Vm> attach_disk(const auth::Caller& caller, int64_t id, const Json& disk);
  // The image goes back (unless another of the VM's disks uses it); the VM's own copy of it
  // on the host is removed at the next resume.
  Result<Vm> detach_disk(const auth::Caller& caller, int64_t id, int64_t disk_id);
  // Grows a volatile disk or a non-persistent image's disk (the VM's own overlay or copy) to
  // `size_mb`; disks never shrink.
  Result<Vm> resize_disk(const auth::Caller& caller, int64_t id, int64_t disk_id, int64_t size_mb);
  // Copies a POWEROFF VM's disk into a new qcow2 image (OS for an OS disk, else DATABLOCK):
  // the image is LOCKED and the VM in HOTPLUG_SAVEAS_POWEROFF while its host writes it; then
  // the VM is POWEROFF again and the image READY once verified, or ERROR.
  struct SaveAs {
    int64_t disk_id = 0;
    std::string name;
    std::optional<int64_t> datastore_id;  // Default: the disk's image's datastore, else 1.
  };
  struct Saved {
    Vm vm;
    storage::Image image;
  };
  Result<Saved> saveas_disk(const auth::Caller& caller, int64_t id, const SaveAs& request);

  // Monitoring. The report of every Fabrica domain on `host_id` (a VM of the host's that is
  // not in it has no domain). A VM moves by what the hypervisor saw (running, shut off from
  // inside the guest, missing) only while no operation is in flight for it and the report
  // was read after its last operation finished; the rest of the lifecycle table decides.
  // CPU and memory use are kept in memory for get_vm. Returns how many VMs moved.
  Result<int> observe(int64_t host_id, const std::vector<VmSighting>& seen);
  // The host went OFFLINE: its RUNNING VMs become UNKNOWN until its agent reports them again.
  // Returns how many.
  Result<int> host_lost(int64_t host_id);

  // ---- The guest API (guest.cc) ----
  // Tokens need the sealer; `url` is FABRICA_GUEST_URL in every context (the link-local
  // relay the agents run, or an address of fabricad the guests can reach).
  void set_guest_api(const crypto::Sealer& sealer, std::string url);
  // Called in the transaction of every change of an appliance VM's serving: `serving` with
  // the URL its guest reported and its sealed backend secret, or nullopt when it stops (NOT
  // READY, leaving RUNNING, deleted) -- always before its devices are freed.
  using BackendHook = std::function<Result<void>(
      store::Transaction&, const Vm&, const std::optional<std::pair<std::string, std::string>>&)>;
  void set_backend_hook(BackendHook hook) { backend_hook_ = std::move(hook); }
  // The VM behind a guest token: kUnauthenticated alike for a malformed, unknown or wrong
  // token and for a VM that is DONE or deleted.
  Result<Vm> guest_self(std::string_view token);
  // kFailedPrecondition for ready=true unless the VM is RUNNING; an appliance's "url"
  // attribute must be http://<one of its own addresses>:<port>.
  Result<Vm> guest_report(std::string_view token, const GuestReport& report);
  // Up to 64 NAME -> number, kept in memory and shown with the VM.
  Result<Vm> guest_metrics(std::string_view token, const Json& values);
  // Seals every VM's guest token and backend secret again (sealing-key rotation).
  Result<size_t> reseal_in(store::Transaction& tx);

  // One scheduler pass over every pending VM. Run by one thread at a time (the daemon's
  // scheduler loop); API calls wake it through notify().
  Result<PassReport> schedule_pass();
  void notify();
  // Blocks until notify() or `timeout`; returns whether notified.
  bool wait(std::chrono::milliseconds timeout);

 private:
  Result<Vm> load_vm(store::Transaction& tx, const auth::Caller& caller, int64_t id, Right right);
  // Loads the VM for MANAGE, checks that it is stopped (see attach_disk) and writes it after
  // `change`, its guest's disks following vm.disks.
  Result<Vm> change_disks(const auth::Caller& caller, int64_t id, const std::string& verb,
                          const std::function<Result<void>(store::Transaction&, Vm&)>& change);
  // One disk for vm.disks: `asked` as read_disk() gives it, with id `disk_id` and the first
  // free target; an image is taken for the VM and `clusters` narrowed to where its datastore
  // is seen.
  Result<Json> attach_one(store::Transaction& tx, const auth::Caller& caller, const Vm& vm,
                          const Json& asked, int64_t disk_id, const std::string& field,
                          std::optional<std::set<int64_t>>& clusters);
  Result<VmTemplate> load_template(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                                   Right right);
  Result<void> sync_hosts();
  Result<void> rebuild_host(int64_t id);
  // Host `host_id`'s inventory as of inventory version `version`, parsed once per version.
  Result<std::shared_ptr<const inventory::HostInventory>> inventory_at(store::Transaction& tx,
                                                                       int64_t host_id,
                                                                       int64_t version);
  std::shared_ptr<const std::unordered_set<int64_t>> allowed_hosts(int64_t uid);
  Result<void> commit(const std::vector<sched::Decision>& decisions,
                      const std::map<int64_t, Vm>& vms, PassReport& report);
  // Moves `vm` by `event` (lifecycle table), freeing its host or quota as the table says and
  // queueing the next operation; writes it. `released` gets the allocation given back.
  // `args` go with the action issued (kept when the same action is retried).
  Result<void> apply(store::Transaction& tx, Vm& vm, Event event, int64_t now,
                     const std::string& error, std::optional<sched::Allocation>& released,
                     const Json& args = nullptr);
  // Removes the VM's entry from its host's ledger and counters.
  Result<void> release_host(store::Transaction& tx, const Vm& vm);
  void issue(Vm& vm, Action action, int64_t now);
  Json command_for(const Vm& vm) const;
  // The command index follows committed VMs.
  void track(const Vm& vm);
  void queue_command(const Vm& vm);  // commands_mutex_ held.
  // After a committed move: the command index, the engine's hold, the scheduler.
  void settle(const Vm& vm, const std::optional<sched::Allocation>& released);
  Result<void> load_commands();
  // Takes the images the VM's guest names (disks, kernel, initrd) and resolves them into
  // vm.disks and the kernel/initrd paths; keeps the VM to clusters whose hosts see every
  // image's datastore.
  Result<void> attach_images(store::Transaction& tx, const auth::Caller& caller, Vm& vm);
  // Gives back every image and lease the VM holds.
  Result<void> detach_images(store::Transaction& tx, const Vm& vm);
  // Leases an address for each NIC the guest asks for into vm.nics and adds their context
  // variables; `clusters` narrows to where every vnet is seen, as in attach_images.
  Result<void> lease_nics(store::Transaction& tx, const auth::Caller& caller, Vm& vm,
                          std::optional<std::set<int64_t>>& clusters);
  // The quota hold "vm:<id>" for the VM's request, charged to its owner and group.
  Result<void> hold_quota(store::Transaction& tx, const Vm& vm);
  // Whether the owner of a template is an infrastructure administrator, whose restricted
  // fields (auth/restricted.h) the template's users may keep but not change.
  Result<bool> owned_by_administrator(store::Transaction& tx, const ObjectHeader& header);
  // Host `host_id` as the store has it now, with the allocations of its ledger held except
  // `except_vm`'s; null when the host is not MONITORED or its inventory is not `version`
  // (nullopt: the host's current one). `ledger` gets the ledger read.
  Result<std::unique_ptr<sched::HostState>> host_check(store::Transaction& tx, int64_t host_id,
                                                       std::optional<int64_t> version,
                                                       int64_t except_vm, Ledger& ledger);
  // The VMs the host's ledger holds.
  Result<std::vector<int64_t>> host_vms(store::Transaction& tx, int64_t host_id);
  // Moves each VM by its event in one transaction, if the check still passes for it.
  Result<int> apply_events(const std::map<int64_t, Event>& events,
                           const std::function<bool(const Vm&)>& still);
  void add_monitoring(Vm& vm);
  // Mints the VM's guest token (when the guest API is set up) and seals its backend secret.
  void mint_guest_secrets(Vm& vm, const std::string& backend_key);
  // The VM's appliance backend follows its phase and report: registered while RUNNING and
  // READY with a URL, removed otherwise. `was_serving`: what the stored VM was.
  Result<void> sync_backend(store::Transaction& tx, Vm& vm, bool was_serving);
  static bool serving(const Vm& vm);
  Result<Vm> load_guest(store::Transaction& tx, std::string_view token);
  // The context the agent writes: the VM's own plus the guest API's variables.
  Json deploy_context(const Vm& vm) const;

  store::Store& store_;
  auth::Authorizer& authorizer_;
  auth::Identity& identity_;
  auth::Quotas& quotas_;
  fleet::Fleet& fleet_;
  storage::Storage& storage_;
  network::Network& network_;
  const Clock& clock_;

  std::mutex engine_mutex_;  // Guards everything below.
  sched::Scheduler engine_;
  std::map<int64_t, int64_t> known_inventory_;  // Host id -> inventory version in the engine.
  std::set<int64_t> stale_hosts_;               // Rebuild from the store next pass.
  std::map<int64_t, std::shared_ptr<const std::unordered_set<int64_t>>> allowed_cache_;
  std::map<int64_t, int64_t> host_clusters_;  // Host -> cluster, as of the last sync.
  std::map<int64_t, std::pair<int64_t, std::shared_ptr<const inventory::HostInventory>>>
      inventories_;         // Host id -> (inventory version, inventory), for commit checks.
  uint64_t fleet_seq_ = 0;  // Fleet::host_changes up to here are applied.

  std::mutex commands_mutex_;  // Guards the command index.
  bool commands_loaded_ = false;
  std::map<int64_t, std::map<int64_t, Json>> commands_;  // Host -> VM -> its command.
  std::map<int64_t, int64_t> command_hosts_;             // VM -> the host its command waits on.

  std::mutex usage_mutex_;  // Guards usage_.
  struct Usage {
    int64_t host_id = 0;
    int64_t cpu_time_ns = 0;
    std::chrono::steady_clock::time_point at;
    Json json;
  };
  std::map<int64_t, Usage> usage_;  // VM id -> its last report.

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  bool woken_ = false;

  const crypto::Sealer* sealer_ = nullptr;
  std::string guest_url_;
  BackendHook backend_hook_;
  std::mutex metrics_mutex_;
  std::map<int64_t, Json> guest_metrics_;  // VM id -> {"values", "at"}.
};

inline constexpr std::string_view kVmType = "vm";
inline constexpr std::string_view kTemplateType = "vm_template";
inline constexpr std::string_view kLedgerType = "host_alloc";

}  // namespace fabrica::compute
