#pragma once

// Helpers shared by the files of the compute library (compute.cc, disks.cc, guest.cc); not
// part of its interface.
#include <map>
#include <string>

#include "compute/compute.h"

namespace fabrica::compute {

// A host's allocation record: {"vms": {"<vm id>": {"gid", "vm_group", "allocation"}}}.
struct Ledger {
  Json body = Json{{"vms", Json::object()}};
  int64_t version = 0;  // 0: not stored yet.
};

namespace internal {

inline constexpr size_t kMaxDisks = 16;  // Per VM.

std::string vm_noun(int64_t id);
std::string template_noun(int64_t id);
// A VM or template in the API's shape, as auth::check_restricted reads it.
Json vm_shape(const sched::VmRequest& request, const GuestSpec& guest);
Json header_json(const ObjectHeader& h);
// The VM's record: its API form plus what the API never shows (sealed secrets).
store::Record vm_record(const Vm& vm);
Result<Vm> vm_from_record(const store::Record& r);
// MiB that a VM's own disk files may take in the system datastore.
int64_t own_disk_mb(const Json& disks);
// The disks as asked for, from the disks as attached (vm.disks).
Json asked_disks(const Json& attached);
Result<GuestSpec> stored_guest(const Json& body);
store::Record template_record(const VmTemplate& t);
Result<VmTemplate> template_from_record(const store::Record& r);
// GPUs by model, for the host's allocation counters.
std::map<std::string, int> gpu_counts(const sched::Allocation& a, int sign);
auth::ObjectRef cluster_ref(int64_t id);
Result<Ledger> read_ledger(store::Transaction& tx, int64_t host_id);
Result<void> write_ledger(store::Transaction& tx, int64_t host_id, const Ledger& ledger);
sched::VmRequest group_request(const Json& entry);

}  // namespace internal
}  // namespace fabrica::compute
