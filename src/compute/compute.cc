#include "compute/compute.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "auth/restricted.h"
#include "compute/internal.h"
#include "compute/lifecycle.h"
#include "core/context.h"
#include "core/operation_id.h"

namespace fabrica::compute {

namespace internal {

namespace {
constexpr Permissions kVmPermissions{0600};
constexpr Permissions kTemplatePermissions{0600};
const auth::Caller kRoot{.uid = auth::kSuperuserId, .gid = 0, .groups = {0}, .name = "scheduler"};
}  // namespace

std::string vm_noun(int64_t id) { return "VM " + std::to_string(id); }
std::string template_noun(int64_t id) { return "template " + std::to_string(id); }

// A VM or template in the API's shape, as auth::check_restricted reads it.
Json vm_shape(const sched::VmRequest& request, const GuestSpec& guest) {
  Json j = guest.to_json();
  j["request"] = request.to_json();
  return j;
}

Json header_json(const ObjectHeader& h) {
  Json j = Json::object();
  h.to_json(j);
  return j;
}

store::Record vm_record(const Vm& vm) {
  Json body = vm.to_api_json();
  body.erase("monitoring");
  body["guest"].erase("metrics");
  if (!vm.guest_token_hash.empty()) {
    body["guest_token_hash"] = vm.guest_token_hash;
    body["sealed_guest_token"] = vm.sealed_guest_token;
  }
  if (!vm.sealed_backend_key.empty()) body["sealed_backend_key"] = vm.sealed_backend_key;
  return store::Record{.type = std::string(kVmType),
                       .id = vm.header.id,
                       .name = vm.header.name,
                       .uid = vm.header.uid,
                       .gid = vm.header.gid,
                       .state = vm.header.state,
                       .body = dump_json(body),
                       .version = vm.version};
}

// MiB that a VM's own disk files may take in the system datastore: volatile disks, copies of
// images from local datastores, and overlays grown by disk-resize (counted whole).
int64_t own_disk_mb(const Json& disks) {
  int64_t mb = 0;
  for (const Json& d : disks) {
    bool copy = d.value("driver", "") == "local" && !d.value("persistent", false) &&
                d.value("type", "") != "CDROM";
    if (d.value("volatile", false) || copy || d.value("resized", false)) {
      mb += d.value("size_mb", int64_t{0});
    }
  }
  return mb;
}

// The disks as asked for, from the disks as attached (vm.disks).
Json asked_disks(const Json& attached) {
  Json disks = Json::array();
  for (const Json& d : attached) {
    if (d.contains("image_id")) {
      disks.push_back({{"image_id", d["image_id"]}});
    } else {
      disks.push_back({{"size_mb", d.value("size_mb", 0)}, {"format", d.value("format", "")}});
    }
  }
  return disks;
}

// Records written before GuestSpec existed have neither member.
Result<GuestSpec> stored_guest(const Json& body) {
  std::optional<Json> context, os, disks, nics;
  if (body.contains("context")) context = body["context"];
  if (body.contains("nics")) {
    nics = Json::array();  // A VM stores its NICs as leased: keep what was asked.
    for (const Json& n : body["nics"]) nics->push_back({{"vnet_id", n.value("vnet_id", 0)}});
  }
  if (body.contains("os")) os = body["os"];
  // A VM stores its disks as attached; what was asked is in each entry.
  if (body.contains("disks")) disks = asked_disks(body["disks"]);
  // Paths resolved from KERNEL and RAMDISK images are kept beside their image ids.
  std::string kernel, initrd;
  if (os && os->is_object()) {
    if (os->contains("kernel_image_id")) kernel = os->value("kernel", "");
    if (os->contains("initrd_image_id")) initrd = os->value("initrd", "");
    if (!kernel.empty()) os->erase("kernel");
    if (!initrd.empty()) os->erase("initrd");
  }
  FAB_ASSIGN_OR_RETURN(GuestSpec g, GuestSpec::from_json(context, os, disks, nics));
  if (!kernel.empty()) g.kernel = kernel;
  if (!initrd.empty()) g.initrd = initrd;
  return g;
}

Result<Vm> vm_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Vm vm;
  FAB_ASSIGN_OR_RETURN(vm.header, ObjectHeader::from_json(body));
  auto corrupt = [&](const std::string& what) {
    return fail(ErrorCode::kInternal, "stored " + vm_noun(r.id) + " is malformed: " + what);
  };
  if (!body.contains("request") || !body.contains("allocation")) return corrupt("fields missing");
  auto request = sched::VmRequest::from_json(body["request"]);
  if (!request) return corrupt(request.error().message());
  vm.request = std::move(*request);
  auto guest = stored_guest(body);
  if (!guest) return corrupt(guest.error().message());
  vm.guest = std::move(*guest);
  if (!body["allocation"].is_null()) {
    FAB_ASSIGN_OR_RETURN(vm.allocation, sched::Allocation::from_json(body["allocation"]));
  }
  vm.template_id =
      body["template_id"].is_number_integer() ? body["template_id"].get<int64_t>() : -1;
  vm.explanation = body.value("explanation", "");
  vm.placed_at = body.value("placed_at_unix", int64_t{0});
  if (vm.header.state == static_cast<int>(VmState::kHold) && vm.allocation) {
    vm.header.state = static_cast<int>(VmState::kAllocated);  // Written before the lifecycle.
  }
  vm.lcm = body.value("lcm_state", 0);
  vm.operation = body.value("operation", Json());
  vm.op_seq = body.value("op_seq", int64_t{0});
  vm.last_disk_id = body.value("last_disk_id", int64_t{-1});
  vm.error = body.value("error", "");
  vm.console_log = body.value("console_log", "");
  vm.history = body.value("history", Json::array());
  vm.disks = body.value("disks", Json::array());
  vm.nics = body.value("nics", Json::array());
  vm.guest_token_hash = body.value("guest_token_hash", "");
  vm.sealed_guest_token = body.value("sealed_guest_token", "");
  vm.sealed_backend_key = body.value("sealed_backend_key", "");
  vm.guest_report = body.value("guest", Json::object());
  vm.app = body.value("app", Json());
  vm.request.vm_id = vm.header.id;
  vm.request.gid = vm.header.gid;
  vm.version = r.version;
  return vm;
}

store::Record template_record(const VmTemplate& t) {
  return store::Record{.type = std::string(kTemplateType),
                       .id = t.header.id,
                       .name = t.header.name,
                       .uid = t.header.uid,
                       .gid = t.header.gid,
                       .body = dump_json(t.to_api_json()),
                       .version = t.version};
}

Result<VmTemplate> template_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  VmTemplate t;
  FAB_ASSIGN_OR_RETURN(t.header, ObjectHeader::from_json(body));
  auto request = sched::VmRequest::from_json(body.value("request", Json::object()));
  if (!request) {
    return fail(ErrorCode::kInternal,
                "stored " + template_noun(r.id) + " is malformed: " + request.error().message());
  }
  t.request = std::move(*request);
  FAB_ASSIGN_OR_RETURN(t.guest, stored_guest(body));
  t.description = body.value("description", "");
  t.version = r.version;
  return t;
}

// GPUs by model, for the host's allocation counters.
std::map<std::string, int> gpu_counts(const sched::Allocation& a, int sign) {
  std::map<std::string, int> out;
  for (const auto& g : a.gpus) out[g.model] += sign;
  return out;
}

auth::ObjectRef cluster_ref(int64_t id) {
  return auth::ObjectRef{.type = ObjectType::kCluster, .id = id, .uid = 0, .gid = 0};
}

// The per-host allocation ledger: {"vms": {"<vm id>": {"gid", "vm_group", "allocation"}}}.
Result<Ledger> read_ledger(store::Transaction& tx, int64_t host_id) {
  auto r = tx.get(kLedgerType, host_id);
  if (!r) {
    if (r.error().code() == ErrorCode::kNotFound) return Ledger{};
    return fail(r.error());
  }
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r->body));
  return Ledger{std::move(body), r->version};
}

Result<void> write_ledger(store::Transaction& tx, int64_t host_id, const Ledger& ledger) {
  store::Record record{.type = std::string(kLedgerType),
                       .id = host_id,
                       .name = "ledger",
                       .uid = host_id,
                       .body = dump_json(ledger.body),
                       .version = ledger.version};
  if (ledger.version == 0) return tx.insert(record);
  return tx.update(record).map([](int64_t) {});
}

sched::VmRequest group_request(const Json& entry) {
  sched::VmRequest r;
  r.gid = entry.value("gid", int64_t{-1});
  r.vm_group = entry.value("vm_group", "");
  return r;
}

}  // namespace internal

using namespace internal;

std::string vm_state_name(VmState state, int lcm) {
  if (state == VmState::kAllocated) return "ALLOCATED";
  return phase_name(Phase{static_cast<VmStatus>(state), static_cast<Lcm>(lcm)});
}

Json GuestSpec::to_json() const {
  Json os{{"kernel", kernel}, {"initrd", initrd}, {"cmdline", cmdline}};
  if (kernel_image >= 0) os["kernel_image_id"] = kernel_image;
  if (initrd_image >= 0) os["initrd_image_id"] = initrd_image;
  return Json{{"context", context}, {"os", std::move(os)}, {"disks", disks}, {"nics", nics}};
}

namespace {

Result<Json> read_disks(const Json& disks) {
  if (!disks.is_array() || disks.size() > kMaxDisks) {
    return fail(ErrorCode::kInvalidArgument, "must be an array of at most 16 disks", "disks");
  }
  Json out = Json::array();
  for (size_t i = 0; i < disks.size(); ++i) {
    FAB_ASSIGN_OR_RETURN(Json disk, read_disk(disks[i], "disks[" + std::to_string(i) + "]."));
    out.push_back(std::move(disk));
  }
  return out;
}

}  // namespace

Result<Json> read_disk(const Json& disk, const std::string& prefix) {
  FAB_ASSIGN_OR_RETURN(auto r, JsonObjectReader::wrap(disk, prefix));
  FAB_ASSIGN_OR_RETURN(auto image, r.optional_int("image_id"));
  FAB_ASSIGN_OR_RETURN(auto size, r.optional_int("size_mb"));
  FAB_ASSIGN_OR_RETURN(auto format, r.optional_string("format"));
  FAB_TRY(r.finish());
  if (image.has_value() == size.has_value()) {
    return fail(ErrorCode::kInvalidArgument, "give image_id or size_mb", prefix + "image_id");
  }
  if (image) {
    if (*image < 0) return fail(ErrorCode::kInvalidArgument, "must be >= 0", prefix + "image_id");
    if (format && !format->empty()) {
      return fail(ErrorCode::kInvalidArgument, "comes from the image", prefix + "format");
    }
    return Json{{"image_id", *image}};
  }
  if (*size < 1 || *size > (int64_t{1} << 30)) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 to 2^30 MiB", prefix + "size_mb");
  }
  std::string f = format.value_or("");
  if (f.empty()) f = "qcow2";
  if (f != "qcow2" && f != "raw") {
    return fail(ErrorCode::kInvalidArgument, "must be qcow2 or raw", prefix + "format");
  }
  return Json{{"size_mb", *size}, {"format", f}};
}

namespace {

constexpr size_t kMaxNics = 8;

Result<Json> read_nics(const Json& nics) {
  if (!nics.is_array() || nics.size() > kMaxNics) {
    return fail(ErrorCode::kInvalidArgument, "must be an array of at most 8 NICs", "nics");
  }
  Json out = Json::array();
  for (size_t i = 0; i < nics.size(); ++i) {
    std::string prefix = "nics[" + std::to_string(i) + "].";
    FAB_ASSIGN_OR_RETURN(auto r, JsonObjectReader::wrap(nics[i], prefix));
    FAB_ASSIGN_OR_RETURN(int64_t vnet, r.required_int("vnet_id"));
    FAB_ASSIGN_OR_RETURN(auto ip, r.optional_string("ip"));
    FAB_TRY(r.finish());
    if (vnet < 0) return fail(ErrorCode::kInvalidArgument, "must be >= 0", prefix + "vnet_id");
    if (ip && !network::parse_ipv4(*ip)) {
      return fail(ErrorCode::kInvalidArgument, "must be an IPv4 address", prefix + "ip");
    }
    Json nic{{"vnet_id", vnet}};
    if (ip) nic["ip"] = *ip;
    out.push_back(std::move(nic));
  }
  return out;
}

}  // namespace

Result<GuestSpec> GuestSpec::from_json(const std::optional<Json>& context,
                                       const std::optional<Json>& os,
                                       const std::optional<Json>& disks,
                                       const std::optional<Json>& nics) {
  GuestSpec g;
  if (context && !context->is_null()) {
    FAB_TRY(render_context_sh(*context));  // The agent renders the same; refuse here first.
    g.context = *context;
  }
  if (os && !os->is_null()) {
    FAB_ASSIGN_OR_RETURN(auto r, JsonObjectReader::wrap(*os, "os."));
    FAB_ASSIGN_OR_RETURN(auto kernel, r.optional_string("kernel"));
    FAB_ASSIGN_OR_RETURN(auto initrd, r.optional_string("initrd"));
    FAB_ASSIGN_OR_RETURN(auto cmdline, r.optional_string("cmdline"));
    FAB_ASSIGN_OR_RETURN(auto kernel_image, r.optional_int("kernel_image_id"));
    FAB_ASSIGN_OR_RETURN(auto initrd_image, r.optional_int("initrd_image_id"));
    FAB_TRY(r.finish());
    for (auto [value, field] : {std::pair{&kernel_image, "os.kernel_image_id"},
                                std::pair{&initrd_image, "os.initrd_image_id"}}) {
      if (*value && **value < 0) return fail(ErrorCode::kInvalidArgument, "must be >= 0", field);
    }
    if (kernel_image && kernel && !kernel->empty()) {
      return fail(ErrorCode::kInvalidArgument, "give kernel or kernel_image_id, not both",
                  "os.kernel_image_id");
    }
    if (initrd_image && initrd && !initrd->empty()) {
      return fail(ErrorCode::kInvalidArgument, "give initrd or initrd_image_id, not both",
                  "os.initrd_image_id");
    }
    g.kernel_image = kernel_image.value_or(-1);
    g.initrd_image = initrd_image.value_or(-1);
    for (auto [value, field] : {std::pair{&kernel, "os.kernel"}, std::pair{&initrd, "os.initrd"}}) {
      if (!*value || (*value)->empty()) continue;
      if ((*value)->front() != '/' || (*value)->size() > 4096 ||
          (*value)->find('\0') != std::string::npos) {
        return fail(ErrorCode::kInvalidArgument, "must be an absolute path on the host", field);
      }
    }
    if (cmdline && (cmdline->size() > 2048 || cmdline->find('\0') != std::string::npos)) {
      return fail(ErrorCode::kInvalidArgument, "must be at most 2048 characters", "os.cmdline");
    }
    g.kernel = kernel.value_or("");
    g.initrd = initrd.value_or("");
    g.cmdline = cmdline.value_or("");
    bool has_kernel = !g.kernel.empty() || g.kernel_image >= 0;
    if (!has_kernel && (!g.initrd.empty() || !g.cmdline.empty() || g.initrd_image >= 0)) {
      return fail(ErrorCode::kInvalidArgument, "is required with initrd or cmdline", "os.kernel");
    }
  }
  if (disks && !disks->is_null()) {
    FAB_ASSIGN_OR_RETURN(g.disks, read_disks(*disks));
  }
  if (nics && !nics->is_null()) {
    FAB_ASSIGN_OR_RETURN(g.nics, read_nics(*nics));
  }
  return g;
}

GuestSpec GuestSpec::merged(const GuestSpec& over) const {
  GuestSpec out = *this;
  for (const auto& [name, value] : over.context.items()) out.context[name] = value;
  if (!over.kernel.empty() || over.kernel_image >= 0) {
    out.kernel = over.kernel;
    out.initrd = over.initrd;
    out.cmdline = over.cmdline;
    out.kernel_image = over.kernel_image;
    out.initrd_image = over.initrd_image;
  }
  if (!over.disks.empty()) out.disks = over.disks;
  if (!over.nics.empty()) out.nics = over.nics;
  return out;
}

Json Vm::to_api_json() const {
  Json j = header_json(header);
  j["state_name"] = vm_state_name(state(), lcm);
  j["lcm_state"] = lcm;
  j["operation"] = operation;
  j["op_seq"] = op_seq;
  j["last_disk_id"] = last_disk_id;
  j["error"] = error;
  j["console_log"] = console_log;
  j["history"] = history;
  j["template_id"] = template_id >= 0 ? Json(template_id) : Json(nullptr);
  j["request"] = request.to_json();
  j.update(guest.to_json());
  j["disks"] = disks;
  j["nics"] = nics;
  j["allocation"] = allocation ? allocation->to_json() : Json(nullptr);
  j["host_id"] = allocation ? Json(allocation->host_id) : Json(nullptr);
  j["host_name"] = allocation ? Json(allocation->host_name) : Json(nullptr);
  j["explanation"] = explanation;
  j["placed_at"] = placed_at ? Json(format_time(placed_at)) : Json(nullptr);
  j["placed_at_unix"] = placed_at;
  j["monitoring"] = monitoring;
  Json g = guest_report.is_object() ? guest_report : Json::object();
  if (!g.contains("ready")) g["ready"] = false;
  if (!guest_metrics.is_null()) g["metrics"] = guest_metrics;
  j["guest"] = std::move(g);
  j["app"] = app;
  return j;
}

Json VmTemplate::to_api_json() const {
  Json j = header_json(header);
  j["description"] = description;
  j["request"] = request.to_json();
  j.update(guest.to_json());
  return j;
}

Result<Vm> Compute::load_vm(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                            Right right) {
  auto r = tx.get(kVmType, id);
  if (!r) return fail(r.error().code(), vm_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(Vm vm, vm_from_record(*r));
  FAB_TRY(authorizer_.require(caller, auth::object_ref(ObjectType::kVm, vm.header), right,
                              vm_noun(id)));
  return vm;
}

Result<VmTemplate> Compute::load_template(store::Transaction& tx, const auth::Caller& caller,
                                          int64_t id, Right right) {
  auto r = tx.get(kTemplateType, id);
  if (!r) return fail(r.error().code(), template_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(VmTemplate t, template_from_record(*r));
  FAB_TRY(authorizer_.require(caller, auth::object_ref(ObjectType::kTemplate, t.header), right,
                              template_noun(id)));
  return t;
}

Result<VmTemplate> Compute::create_template(const auth::Caller& caller,
                                            const NewTemplate& request) {
  FAB_TRY(validate_name(request.name));
  if (request.description.size() > 1024) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 1024 characters", "description");
  }
  int64_t gid = request.gid.value_or(caller.gid);
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kTemplate, gid));
  FAB_TRY(auth::check_restricted(caller, "vm", vm_shape(request.request, request.guest)));
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<VmTemplate>([&](store::Transaction& tx) -> Result<VmTemplate> {
    if (!tx.get(auth::kGroupType, gid)) {
      return fail(ErrorCode::kInvalidArgument, "group " + std::to_string(gid) + " does not exist",
                  "gid");
    }
    FAB_TRY(store::require_unique_in_group(tx, kTemplateType, gid, request.name, "a template"));
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kTemplateType));
    VmTemplate t{.header = ObjectHeader::create(id, request.name, caller.uid, gid,
                                                kTemplatePermissions, 0, now),
                 .description = request.description,
                 .request = request.request,
                 .guest = request.guest,
                 .version = 1};
    FAB_TRY(tx.insert(template_record(t)));
    return t;
  });
}

Result<VmTemplate> Compute::get_template(const auth::Caller& caller, int64_t id) {
  return store_.read_value<VmTemplate>(
      [&](store::Transaction& tx) { return load_template(tx, caller, id, Right::kUse); });
}

Result<auth::Page<VmTemplate>> Compute::list_templates(const auth::Caller& caller,
                                                       const auth::ListOptions& options) {
  store::ListQuery query{.after_id = options.after_id, .gid = options.gid, .name = options.name};
  return store_.read_value<auth::Page<VmTemplate>>([&](store::Transaction& tx) {
    return auth::visible_page<VmTemplate>(
        tx, kTemplateType, query, options.limit, template_from_record, [&](const VmTemplate& t) {
          return authorizer_.allows(caller, auth::object_ref(ObjectType::kTemplate, t.header),
                                    Right::kUse);
        });
  });
}

Result<VmTemplate> Compute::update_template(const auth::Caller& caller, int64_t id,
                                            const TemplateChange& change) {
  const auto& description = change.description;
  if (description && description->size() > 1024) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 1024 characters", "description");
  }
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<VmTemplate>([&](store::Transaction& tx) -> Result<VmTemplate> {
    FAB_ASSIGN_OR_RETURN(VmTemplate t, load_template(tx, caller, id, Right::kManage));
    Json before = vm_shape(t.request, t.guest);
    if (description) t.description = *description;
    if (change.request) t.request = *change.request;
    if (change.guest) t.guest = *change.guest;
    FAB_TRY(auth::check_restricted(caller, "vm", vm_shape(t.request, t.guest), before));
    t.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(t.version, tx.update(template_record(t)));
    return t;
  });
}

Result<void> Compute::delete_template(const auth::Caller& caller, int64_t id) {
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_TRY(load_template(tx, caller, id, Right::kManage));
    return tx.remove(kTemplateType, id);
  });
}

Result<bool> Compute::owned_by_administrator(store::Transaction& tx, const ObjectHeader& h) {
  auto owner = identity_.caller_in(tx, h.uid, "");
  if (!owner) {
    // A deleted or disabled owner vouches for nothing.
    if (owner.error().code() == ErrorCode::kUnauthenticated) return false;
    return fail(owner.error());
  }
  return owner->is_superuser();
}

Result<Vm> Compute::create_vm(const auth::Caller& caller, NewVm request) {
  FAB_TRY(validate_name(request.name));
  int64_t gid = request.gid.value_or(caller.gid);
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kVm, gid));
  int64_t now = unix_seconds(clock_.now());
  auto vm = store_.write_value<Vm>([&](store::Transaction& tx) -> Result<Vm> {
    if (!tx.get(auth::kGroupType, gid)) {
      return fail(ErrorCode::kInvalidArgument, "group " + std::to_string(gid) + " does not exist",
                  "gid");
    }
    Json base;  // What the caller may keep of restricted fields: an administrator's template.
    if (request.template_id) {
      FAB_ASSIGN_OR_RETURN(VmTemplate t,
                           load_template(tx, request.template_from_app ? kRoot : caller,
                                         *request.template_id, Right::kUse));
      request.request = t.request;
      request.guest = t.guest.merged(request.guest);
      if (request.gpu_count) request.request.gpus.count = *request.gpu_count;
      FAB_ASSIGN_OR_RETURN(bool admins, owned_by_administrator(tx, t.header));
      if (admins) base = vm_shape(t.request, t.guest);
    }
    FAB_TRY(auth::check_restricted(caller, "vm", vm_shape(request.request, request.guest), base));
    for (int64_t cluster : request.request.clusters) {
      std::string noun = "cluster " + std::to_string(cluster);
      if (!tx.get(fleet::kClusterType, cluster)) {
        return fail(ErrorCode::kNotFound, noun + " not found", "clusters");
      }
      FAB_TRY(authorizer_.require(caller, cluster_ref(cluster), Right::kUse, noun));
    }
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kVmType));
    Vm vm{.header = ObjectHeader::create(id, request.name, caller.uid, gid, kVmPermissions,
                                         static_cast<int>(VmState::kPending), now),
          .template_id = request.template_id.value_or(-1),
          .request = request.request,
          .guest = request.guest,
          .explanation = "waiting for the scheduler",
          .version = 1};
    vm.request.vm_id = id;
    vm.request.gid = gid;
    vm.app = request.app;
    mint_guest_secrets(vm, request.backend_key);
    if (request.in_transaction) FAB_TRY(request.in_transaction(tx, vm));
    FAB_TRY(attach_images(tx, caller, vm));
    FAB_TRY(storage_.check_system_room(tx, own_disk_mb(vm.disks), "disks"));
    FAB_TRY(hold_quota(tx, vm));
    FAB_TRY(tx.insert(vm_record(vm)));
    return vm;
  });
  if (vm) notify();
  return vm;
}

Result<Vm> Compute::get_vm(const auth::Caller& caller, int64_t id) {
  FAB_ASSIGN_OR_RETURN(Vm vm, store_.read_value<Vm>([&](store::Transaction& tx) {
    return load_vm(tx, caller, id, Right::kUse);
  }));
  add_monitoring(vm);
  return vm;
}

void Compute::add_monitoring(Vm& vm) {
  {
    std::lock_guard lock(metrics_mutex_);
    auto m = guest_metrics_.find(vm.header.id);
    if (m != guest_metrics_.end()) vm.guest_metrics = m->second;
  }
  std::lock_guard lock(usage_mutex_);
  auto u = usage_.find(vm.header.id);
  if (u != usage_.end() && vm.allocation && vm.allocation->host_id == u->second.host_id) {
    vm.monitoring = u->second.json;
  }
}

Result<auth::Page<Vm>> Compute::list_vms(const auth::Caller& caller, const VmListOptions& options) {
  store::ListQuery query{.after_id = options.after_id, .gid = options.gid};
  if (options.state) query.state = static_cast<int>(*options.state);
  auto page = store_.read_value<auth::Page<Vm>>([&](store::Transaction& tx) {
    return auth::visible_page<Vm>(
        tx, kVmType, query, options.limit, vm_from_record, [&](const Vm& vm) {
          if (options.host_id && (!vm.allocation || vm.allocation->host_id != *options.host_id)) {
            return false;
          }
          if (options.lcm && vm.lcm != *options.lcm) return false;
          return authorizer_.allows(caller, auth::object_ref(ObjectType::kVm, vm.header),
                                    Right::kUse);
        });
  });
  if (page) {
    for (Vm& vm : page->items) add_monitoring(vm);
  }
  return page;
}

Result<void> Compute::delete_vm(const auth::Caller& caller, int64_t id) {
  std::optional<Vm> deleted;
  FAB_TRY(fleet_.write_with_hosts([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Vm vm, load_vm(tx, caller, id, Right::kManage));
    bool lives = vm.state() != VmState::kPending && vm.state() != VmState::kHold &&
                 vm.state() != VmState::kAllocated && vm.state() != VmState::kDone &&
                 vm.state() != VmState::kUndeployed;
    if (lives) {
      return fail(ErrorCode::kFailedPrecondition,
                  vm_noun(id) + " is " + vm_state_name(vm.state(), vm.lcm) +
                      " on its host; terminate it first (terminate --hard stops it at once)",
                  "state");
    }
    if (vm.state() != VmState::kDone) {
      FAB_TRY(quotas_.release_holder(tx, "vm:" + std::to_string(id)));
      FAB_TRY(detach_images(tx, vm));
    }
    if (vm.allocation) FAB_TRY(release_host(tx, vm));
    FAB_TRY(tx.remove(kVmType, id));
    deleted = std::move(vm);
    return {};
  }));
  if (deleted && deleted->allocation) {
    std::lock_guard lock(engine_mutex_);
    engine_.release(deleted->request, *deleted->allocation);
  }
  notify();
  return {};
}

void Compute::notify() {
  {
    std::lock_guard lock(wake_mutex_);
    woken_ = true;
  }
  wake_.notify_one();
}

bool Compute::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lock(wake_mutex_);
  bool woken = wake_.wait_for(lock, timeout, [&] { return woken_; });
  woken_ = false;
  return woken;
}

namespace {

sched::HostInfo host_info(const fleet::Fleet::HostBrief& h) {
  return sched::HostInfo{.id = h.id,
                         .name = h.name,
                         .cluster_id = h.cluster_id,
                         .schedulable = h.state == fleet::HostState::kMonitored,
                         .cpu_usage = h.cpu_used_percent,
                         .inventory_version = h.inventory_version};
}

}  // namespace

Result<void> Compute::rebuild_host(int64_t id) {
  auto host = fleet_.get_host(kRoot, id);
  if (!host && host.error().code() == ErrorCode::kNotFound) {
    engine_.remove_host(id);
    known_inventory_.erase(id);
    return {};
  }
  if (!host) return fail(host.error());
  if (!host->inventory) return {};
  engine_.set_host(host_info({.id = id,
                              .name = host->header.name,
                              .cluster_id = host->cluster_id,
                              .state = host->state(),
                              .cpu_used_percent = host->monitoring.cpu_used_percent,
                              .inventory_version = host->inventory_version}),
                   *host->inventory);
  FAB_ASSIGN_OR_RETURN(Ledger ledger, store_.read_value<Ledger>([&](store::Transaction& tx) {
    return read_ledger(tx, id);
  }));
  for (const auto& [vm, entry] : ledger.body["vms"].items()) {
    auto allocation = sched::Allocation::from_json(entry.at("allocation"));
    if (allocation) (void)engine_.hold(group_request(entry), *allocation);
  }
  known_inventory_[id] = host->inventory_version;
  return {};
}

Result<std::shared_ptr<const inventory::HostInventory>> Compute::inventory_at(
    store::Transaction& tx, int64_t host_id, int64_t version) {
  auto& cached = inventories_[host_id];
  if (cached.second && cached.first == version) return cached.second;
  FAB_ASSIGN_OR_RETURN(auto record, tx.get(fleet::kInventoryType, host_id));
  FAB_ASSIGN_OR_RETURN(Json json, parse_json(record.body));
  FAB_ASSIGN_OR_RETURN(auto inventory, inventory::HostInventory::from_json(json));
  cached = {version, std::make_shared<const inventory::HostInventory>(std::move(inventory))};
  return cached.second;
}

// Applies what changed in the fleet since the last pass: only those hosts are touched, so a
// pass costs what changed, not the fleet's size.
Result<void> Compute::sync_hosts() {
  FAB_ASSIGN_OR_RETURN(auto changes, fleet_.host_changes(fleet_seq_));
  for (int64_t id : changes.removed) {
    engine_.remove_host(id);
    known_inventory_.erase(id);
    host_clusters_.erase(id);
    inventories_.erase(id);
    stale_hosts_.erase(id);
  }
  for (const auto& h : changes.changed) {
    host_clusters_[h.id] = h.cluster_id;
    auto known = known_inventory_.find(h.id);
    if (!engine_.has_host(h.id) || known == known_inventory_.end() ||
        known->second != h.inventory_version || stale_hosts_.contains(h.id)) {
      FAB_TRY(rebuild_host(h.id));
      stale_hosts_.erase(h.id);
      continue;
    }
    engine_.update_host(host_info(h));
  }
  for (int64_t id : stale_hosts_) FAB_TRY(rebuild_host(id));
  stale_hosts_.clear();
  fleet_seq_ = changes.seq;
  return {};
}

std::shared_ptr<const std::unordered_set<int64_t>> Compute::allowed_hosts(int64_t uid) {
  auto cached = allowed_cache_.find(uid);
  if (cached != allowed_cache_.end()) return cached->second;
  std::shared_ptr<const std::unordered_set<int64_t>> out;
  auto caller = identity_.caller_for(uid, "scheduler");
  if (!caller) {
    out = std::make_shared<const std::unordered_set<int64_t>>();  // Owner gone: nowhere.
  } else if (!caller->is_superuser()) {
    auto set = std::make_shared<std::unordered_set<int64_t>>();
    for (const auto& [id, cluster] : host_clusters_) {
      auth::ObjectRef ref{.type = ObjectType::kHost,
                          .id = id,
                          .uid = 0,
                          .gid = 0,
                          .clusters = std::span<const int64_t>(&cluster, 1)};
      if (authorizer_.allows(*caller, ref, Right::kUse)) set->insert(id);
    }
    out = std::move(set);
  }
  allowed_cache_[uid] = out;
  return out;
}

Result<PassReport> Compute::schedule_pass() {
  std::lock_guard lock(engine_mutex_);
  FAB_TRY(sync_hosts());
  allowed_cache_.clear();
  std::map<int64_t, Vm> vms;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    return store::for_each(
        tx, kVmType,
        [&](const store::Record& r) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(Vm vm, vm_from_record(r));
          vms.emplace(vm.header.id, std::move(vm));
          return {};
        },
        store::ListQuery{.state = static_cast<int>(VmState::kPending)});
  }));
  PassReport report{.pending = static_cast<int>(vms.size())};
  if (vms.empty()) return report;
  std::vector<sched::VmRequest> requests;
  requests.reserve(vms.size());
  for (const auto& [id, vm] : vms) {
    sched::VmRequest r = vm.request;
    r.allowed_hosts = allowed_hosts(vm.header.uid);
    r.scope = "the tenant's VDCs";
    requests.push_back(std::move(r));
  }
  auto decisions = engine_.schedule(std::move(requests));
  FAB_TRY(commit(decisions, vms, report));
  return report;
}

Result<void> Compute::commit(const std::vector<sched::Decision>& decisions,
                             const std::map<int64_t, Vm>& vms, PassReport& report) {
  int64_t now = unix_seconds(clock_.now());
  std::vector<const sched::Decision*> refused;  // Placed by the engine, refused by the store.
  std::vector<Vm> issued;  // Placed on hosts that run VMs: their first command.
  auto written = fleet_.write_with_hosts([&](store::Transaction& tx) -> Result<void> {
    refused.clear();
    issued.clear();
    std::map<int64_t, Ledger> ledgers;
    std::map<int64_t, std::unique_ptr<sched::HostState>> checks;
    for (const auto& d : decisions) {
      auto current = tx.get(kVmType, d.vm_id);
      if (!current) {
        if (d.allocation) refused.push_back(&d);
        continue;  // Deleted meanwhile.
      }
      FAB_ASSIGN_OR_RETURN(Vm vm, vm_from_record(*current));
      if (vm.state() != VmState::kPending) {
        if (d.allocation) refused.push_back(&d);
        continue;
      }
      if (d.allocation && vm.version != vms.at(d.vm_id).version) {
        // Changed since this pass read it (resized, a disk attached, held...): the placement
        // was computed for the VM as it was, so it waits for the next pass.
        refused.push_back(&d);
        continue;
      }
      if (!d.allocation) {
        if (vm.explanation == d.explanation) continue;
        vm.explanation = d.explanation;
        FAB_ASSIGN_OR_RETURN(vm.version, tx.update(vm_record(vm)));
        continue;
      }
      const sched::Allocation& a = *d.allocation;
      // The optimistic check: the host as the store has it now must still take this.
      if (!checks.contains(a.host_id)) {
        Ledger ledger;
        FAB_ASSIGN_OR_RETURN(checks[a.host_id],
                             host_check(tx, a.host_id, a.inventory_version, -1, ledger));
        if (checks[a.host_id]) ledgers[a.host_id] = std::move(ledger);
      }
      sched::HostState* check = checks[a.host_id].get();
      if (!check || !check->hold(a)) {
        refused.push_back(&d);
        continue;
      }
      ledgers[a.host_id].body["vms"][std::to_string(d.vm_id)] = Json{
          {"gid", vm.header.gid}, {"vm_group", vm.request.vm_group}, {"allocation", a.to_json()}};
      vm.allocation = a;
      vm.explanation = d.explanation;
      vm.placed_at = now;
      vm.header.updated_at = now;
      vm.history.push_back(Json{{"host_id", a.host_id},
                                {"host_name", a.host_name},
                                {"start", format_time(now)},
                                {"end", nullptr},
                                {"reason", nullptr}});
      FAB_ASSIGN_OR_RETURN(auto inventory, inventory_at(tx, a.host_id, a.inventory_version));
      if (inventory->hypervisor.empty()) {
        vm.header.state = static_cast<int>(VmState::kAllocated);  // Inventory-only host.
        FAB_ASSIGN_OR_RETURN(vm.version, tx.update(vm_record(vm)));
      } else {
        std::optional<sched::Allocation> none;
        FAB_TRY(apply(tx, vm, Event::kPlaced, now, "", none));
        issued.push_back(vm);
      }
      FAB_TRY(fleet_.count_allocation(tx, a.host_id, 1, gpu_counts(a, 1)));
    }
    for (auto& [host, ledger] : ledgers) FAB_TRY(write_ledger(tx, host, ledger));
    return {};
  });
  if (!written) {
    // Nothing was committed: give every placement of this pass back and look again.
    for (const auto& d : decisions) {
      if (!d.allocation) continue;
      engine_.release(vms.at(d.vm_id).request, *d.allocation);
      stale_hosts_.insert(d.allocation->host_id);
    }
    return fail(written.error());
  }
  for (const sched::Decision* d : refused) {
    engine_.release(vms.at(d->vm_id).request, *d->allocation);
    stale_hosts_.insert(d->allocation->host_id);
    ++report.conflicts;
  }
  for (const auto& d : decisions) report.placed += d.allocation ? 1 : 0;
  report.placed -= report.conflicts;
  for (const Vm& vm : issued) track(vm);
  return {};
}

Result<std::unique_ptr<sched::HostState>> Compute::host_check(store::Transaction& tx,
                                                              int64_t host_id,
                                                              std::optional<int64_t> version,
                                                              int64_t except_vm, Ledger& ledger) {
  auto host_record = tx.get(fleet::kHostType, host_id);
  if (!host_record) return std::unique_ptr<sched::HostState>();
  FAB_ASSIGN_OR_RETURN(fleet::Host host, fleet::host_from_record(*host_record));
  if (host.state() != fleet::HostState::kMonitored ||
      host.inventory_version != version.value_or(host.inventory_version)) {
    return std::unique_ptr<sched::HostState>();
  }
  FAB_ASSIGN_OR_RETURN(auto inventory, inventory_at(tx, host_id, host.inventory_version));
  auto check = std::make_unique<sched::HostState>(
      sched::HostInfo{.id = host_id,
                      .name = host.header.name,
                      .cluster_id = host.cluster_id,
                      .inventory_version = host.inventory_version},
      *inventory);
  FAB_ASSIGN_OR_RETURN(ledger, read_ledger(tx, host_id));
  for (const auto& [id, entry] : ledger.body["vms"].items()) {
    if (id == std::to_string(except_vm)) continue;
    auto held = sched::Allocation::from_json(entry.at("allocation"));
    if (held) (void)check->hold(*held);
  }
  return check;
}

Result<void> Compute::hold_quota(store::Transaction& tx, const Vm& vm) {
  auth::Amounts amounts;
  for (const auto& [key, n] : vm.request.quota_amounts()) amounts[key] += n;
  if (!vm.nics.empty()) amounts["leases"] += static_cast<int64_t>(vm.nics.size());
  FAB_ASSIGN_OR_RETURN(
      auto hold, quotas_.reserve(tx, auth::Consumer{vm.header.uid, vm.header.gid}, std::nullopt,
                                 amounts, "vm:" + std::to_string(vm.header.id)));
  FAB_TRY(quotas_.commit(tx, hold.id));
  return {};
}

Result<Vm> Compute::resize(const auth::Caller& caller, int64_t id, const Resize& resize) {
  int64_t now = unix_seconds(clock_.now());
  Vm vm, before;
  FAB_TRY(fleet_.write_with_hosts([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(vm, load_vm(tx, caller, id, Right::kManage));
    before = vm;
    VmState s = vm.state();
    if (s != VmState::kPoweroff && s != VmState::kUndeployed && s != VmState::kPending &&
        s != VmState::kHold) {
      return fail(ErrorCode::kFailedPrecondition,
                  "cannot resize a VM that is " + vm_state_name(s, vm.lcm) +
                      "; poweroff or undeploy it first (resize applies to POWEROFF, UNDEPLOYED, "
                      "PENDING or HOLD VMs)",
                  "state");
    }
    sched::VmRequest request = vm.request;
    if (resize.vcpus) request.vcpus = *resize.vcpus;
    if (resize.memory_mb) request.memory_mb = *resize.memory_mb;
    FAB_TRY(request.validate());
    FAB_TRY(auth::check_restricted(caller, "vm", vm_shape(request, vm.guest),
                                   vm_shape(vm.request, vm.guest)));
    FAB_TRY(quotas_.release_holder(tx, "vm:" + std::to_string(id)));
    vm.request = request;
    FAB_TRY(hold_quota(tx, vm));
    if (s == VmState::kPoweroff && vm.allocation) {
      // Re-fitted where it is: the host's other VMs keep what they hold.
      int64_t host = vm.allocation->host_id;
      Ledger ledger;
      FAB_ASSIGN_OR_RETURN(auto check, host_check(tx, host, std::nullopt, id, ledger));
      if (!check) {
        return fail(ErrorCode::kFailedPrecondition,
                    "host " + vm.allocation->host_name + " is not MONITORED; resize it later",
                    "state");
      }
      auto fit = check->fit(request);
      if (fit.misfit != sched::Misfit::kNone) {
        return fail(ErrorCode::kFailedPrecondition,
                    "host " + vm.allocation->host_name + " cannot fit " +
                        std::to_string(request.vcpus) + " vCPUs and " +
                        std::to_string(request.memory_mb) + " MB beside its other VMs (" +
                        std::string(sched::misfit_text(fit.misfit)) +
                        "); undeploy the VM to resize it for another host",
                    "vcpus");
      }
      fit.allocation.vm_id = id;
      ledger.body["vms"][std::to_string(id)]["allocation"] = fit.allocation.to_json();
      FAB_TRY(write_ledger(tx, host, ledger));
      vm.allocation = fit.allocation;
    }
    vm.request = request;
    vm.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(vm.version, tx.update(vm_record(vm)));
    return {};
  }));
  if (vm.allocation) {
    std::lock_guard lock(engine_mutex_);
    engine_.release(before.request, *before.allocation);
    (void)engine_.hold(vm.request, *vm.allocation);
    stale_hosts_.insert(vm.allocation->host_id);  // And reads the host's ledger again.
  }
  notify();
  return vm;
}

// ---- The lifecycle on hosts that run VMs ----

Result<void> Compute::release_host(store::Transaction& tx, const Vm& vm) {
  int64_t host = vm.allocation->host_id;
  FAB_ASSIGN_OR_RETURN(Ledger ledger, read_ledger(tx, host));
  if (ledger.version == 0) return {};
  ledger.body["vms"].erase(std::to_string(vm.header.id));
  FAB_TRY(write_ledger(tx, host, ledger));
  auto counted = fleet_.count_allocation(tx, host, -1, gpu_counts(*vm.allocation, -1));
  if (!counted && counted.error().code() != ErrorCode::kNotFound) return counted;
  return {};
}

void Compute::issue(Vm& vm, Action action, int64_t now) {
  ++vm.op_seq;
  vm.operation = Json{{"id", operation_id(vm.header.id, vm.op_seq)},
                      {"action", action_name(action)},
                      {"host_id", vm.allocation ? vm.allocation->host_id : -1},
                      {"issued_at", format_time(now)}};
}

Json Compute::command_for(const Vm& vm) const {
  Json command{{"id", vm.operation["id"]},
               {"vm_id", vm.header.id},
               {"action", vm.operation["action"]},
               {"vm",
                {{"name", vm.header.name},
                 {"request", vm.request.to_json()},
                 {"allocation", vm.allocation ? vm.allocation->to_json() : Json()},
                 {"context", deploy_context(vm)},
                 {"disks", vm.disks},
                 {"nics", vm.nics},
                 {"os",
                  {{"kernel", vm.guest.kernel},
                   {"initrd", vm.guest.initrd},
                   {"cmdline", vm.guest.cmdline}}}}}};
  if (vm.operation.contains("args")) command["args"] = vm.operation["args"];
  return command;
}

Result<void> Compute::apply(store::Transaction& tx, Vm& vm, Event event, int64_t now,
                            const std::string& error, std::optional<sched::Allocation>& released,
                            const Json& args) {
  Phase from{static_cast<VmStatus>(vm.header.state), static_cast<Lcm>(vm.lcm)};
  FAB_ASSIGN_OR_RETURN(Transition t, next(from, event));
  const Json previous = vm.operation;
  // An appliance stops serving the moment it leaves RUNNING: its backend goes in this
  // transaction, before the host (and its GPUs) are released below.
  bool was_serving = serving(vm);
  // A reboot starts the guest over: it reports READY again once its server is back.
  if (t.to != Phase{VmStatus::kActive, Lcm::kRunning} || event == Event::kReboot ||
      event == Event::kRebootHard) {
    if (vm.guest_report.value("ready", false)) vm.guest_report["ready"] = false;
    FAB_TRY(sync_backend(tx, vm, was_serving));
  }
  if (t.releases_host && vm.allocation) {
    FAB_TRY(release_host(tx, vm));
    released = vm.allocation;
    if (!vm.history.empty() && vm.history.back()["end"].is_null()) {
      vm.history.back()["end"] = format_time(now);
      vm.history.back()["reason"] = std::string(event_name(event));
    }
    vm.allocation.reset();
  }
  if (t.deletes) {
    FAB_TRY(quotas_.release_holder(tx, "vm:" + std::to_string(vm.header.id)));
    FAB_TRY(detach_images(tx, vm));
  }
  vm.header.state = static_cast<int>(t.to.status);
  vm.lcm = t.to.status == VmStatus::kActive ? static_cast<int>(t.to.lcm) : 0;
  if (event == Event::kFailed) vm.error = error;
  if (event == Event::kDone) vm.error.clear();
  if (t.to.status == VmStatus::kPending) vm.explanation = "waiting for the scheduler";
  vm.operation = nullptr;
  if (t.action != Action::kNone) {
    issue(vm, t.action, now);
    bool retried = previous.is_object() && previous.value("action", "") == action_name(t.action);
    if (!args.is_null()) {
      vm.operation["args"] = args;
    } else if (retried && previous.contains("args")) {
      vm.operation["args"] = previous["args"];
    }
  }
  if (previous.is_object() && previous.value("action", "") == action_name(Action::kSaveas) &&
      t.to != Phase{VmStatus::kActive, Lcm::kHotplugSaveasPoweroff}) {
    vm.saveas_ended = {{"image_id", previous["args"].value("image_id", int64_t{-1})},
                       {"ok", event == Event::kDone || event == Event::kRecoverSuccess},
                       {"error", error}};
  }
  vm.header.updated_at = now;
  FAB_ASSIGN_OR_RETURN(vm.version, tx.update(vm_record(vm)));
  return {};
}

void Compute::track(const Vm& vm) {
  std::lock_guard lock(commands_mutex_);
  if (!commands_loaded_) return;  // load_commands() will read it from the store.
  auto previous = command_hosts_.find(vm.header.id);
  if (previous != command_hosts_.end()) {
    commands_[previous->second].erase(vm.header.id);
    command_hosts_.erase(previous);
  }
  if (vm.operation.is_object()) queue_command(vm);
}

void Compute::queue_command(const Vm& vm) {
  int64_t host = vm.operation["host_id"].get<int64_t>();
  commands_[host][vm.header.id] = command_for(vm);
  command_hosts_[vm.header.id] = host;
}

void Compute::settle(const Vm& vm, const std::optional<sched::Allocation>& released) {
  track(vm);
  if (vm.state() != VmState::kActive || vm.lcm != static_cast<int>(Lcm::kRunning)) {
    std::lock_guard lock(metrics_mutex_);  // A guest's metrics last while it runs.
    guest_metrics_.erase(vm.header.id);
  }
  if (vm.saveas_ended.is_object()) {
    // The image's outcome; an image deleted meanwhile is fine.
    (void)storage_.finish_saveas(vm.saveas_ended["image_id"].get<int64_t>(),
                                 vm.saveas_ended["ok"].get<bool>(),
                                 vm.saveas_ended["error"].get<std::string>());
  }
  if (released) {
    std::lock_guard lock(engine_mutex_);
    engine_.release(vm.request, *released);
  }
  notify();
}

Result<void> Compute::load_commands() {
  {
    std::lock_guard lock(commands_mutex_);
    if (commands_loaded_) return {};
  }
  std::vector<Vm> found;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    return store::for_each(tx, kVmType, [&](const store::Record& r) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(Vm vm, vm_from_record(r));
      if (vm.operation.is_object()) found.push_back(std::move(vm));
      return {};
    });
  }));
  std::lock_guard lock(commands_mutex_);
  if (commands_loaded_) return {};
  commands_loaded_ = true;
  for (const Vm& vm : found) queue_command(vm);
  return {};
}

Result<Json> Compute::agent_commands(int64_t host_id) {
  FAB_TRY(load_commands());
  std::lock_guard lock(commands_mutex_);
  Json out = Json::array();
  auto queue = commands_.find(host_id);
  if (queue == commands_.end()) return out;
  for (const auto& [vm, command] : queue->second) out.push_back(command);
  return out;
}

Result<void> Compute::operation_result(int64_t host_id, const std::string& op_id, bool ok,
                                       const std::string& error, const std::string& console_log) {
  auto op_vm = operation_vm(op_id);
  if (!op_vm) return fail(ErrorCode::kInvalidArgument, "must look like \"<vm>-<n>\"", "id");
  int64_t vm_id = *op_vm;
  if (error.size() > 4096) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 4096 characters", "error");
  }
  int64_t now = unix_seconds(clock_.now());
  std::optional<Vm> moved;
  std::optional<sched::Allocation> released;
  FAB_TRY(fleet_.write_with_hosts([&](store::Transaction& tx) -> Result<void> {
    moved.reset();
    released.reset();
    auto record = tx.get(kVmType, vm_id);
    if (!record) return {};  // Deleted meanwhile: nothing waits for this answer.
    FAB_ASSIGN_OR_RETURN(Vm vm, vm_from_record(*record));
    // Only the host the operation went to answers it, and only once.
    if (!vm.operation.is_object() || vm.operation["id"] != op_id ||
        vm.operation["host_id"] != host_id) {
      return {};
    }
    if (!console_log.empty()) vm.console_log = console_log;
    FAB_TRY(apply(tx, vm, ok ? Event::kDone : Event::kFailed, now, error, released));
    moved = std::move(vm);
    return {};
  }));
  if (moved) settle(*moved, released);
  return {};
}

Result<Vm> Compute::act(const auth::Caller& caller, int64_t id, Event event) {
  int64_t now = unix_seconds(clock_.now());
  std::optional<sched::Allocation> released;
  Vm vm;
  FAB_TRY(fleet_.write_with_hosts([&](store::Transaction& tx) -> Result<void> {
    released.reset();
    FAB_ASSIGN_OR_RETURN(vm, load_vm(tx, caller, id, Right::kManage));
    if (vm.state() == VmState::kAllocated) {
      return fail(ErrorCode::kFailedPrecondition,
                  vm_noun(id) + " is on a host without a hypervisor; only delete applies", "state");
    }
    return apply(tx, vm, event, now, "", released);
  }));
  settle(vm, released);
  return vm;
}

// ---- Monitoring ----

Result<std::vector<int64_t>> Compute::host_vms(store::Transaction& tx, int64_t host_id) {
  FAB_ASSIGN_OR_RETURN(Ledger ledger, read_ledger(tx, host_id));
  std::vector<int64_t> ids;
  if (!ledger.body.contains("vms")) return ids;
  for (const auto& [key, entry] : ledger.body["vms"].items()) {
    int64_t id = 0;
    auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), id);
    if (ec == std::errc() && end == key.data() + key.size()) ids.push_back(id);
  }
  return ids;
}

Result<int> Compute::apply_events(const std::map<int64_t, Event>& events,
                                  const std::function<bool(const Vm&)>& still) {
  if (events.empty()) return 0;
  int64_t now = unix_seconds(clock_.now());
  std::vector<Vm> moved;
  std::vector<std::optional<sched::Allocation>> released;
  FAB_TRY(fleet_.write_with_hosts([&](store::Transaction& tx) -> Result<void> {
    moved.clear();
    released.clear();
    for (auto [id, event] : events) {
      auto record = tx.get(kVmType, id);
      if (!record) continue;
      FAB_ASSIGN_OR_RETURN(Vm vm, vm_from_record(*record));
      Phase from{static_cast<VmStatus>(vm.header.state), static_cast<Lcm>(vm.lcm)};
      if (!still(vm) || !next(from, event)) continue;
      std::optional<sched::Allocation> freed;
      FAB_TRY(apply(tx, vm, event, now, "", freed));
      moved.push_back(std::move(vm));
      released.push_back(std::move(freed));
    }
    return {};
  }));
  for (size_t i = 0; i < moved.size(); ++i) settle(moved[i], released[i]);
  return static_cast<int>(moved.size());
}

Result<int> Compute::observe(int64_t host_id, const std::vector<VmSighting>& seen) {
  using VmsById = std::map<int64_t, Vm>;
  FAB_ASSIGN_OR_RETURN(VmsById mine,
                       store_.read_value<VmsById>([&](store::Transaction& tx) -> Result<VmsById> {
                         FAB_ASSIGN_OR_RETURN(auto ids, host_vms(tx, host_id));
                         VmsById vms;
                         for (int64_t id : ids) {
                           auto record = tx.get(kVmType, id);
                           if (!record) continue;
                           FAB_ASSIGN_OR_RETURN(vms[id], vm_from_record(*record));
                         }
                         return vms;
                       }));
  std::map<int64_t, const VmSighting*> by_vm;
  for (const VmSighting& s : seen) by_vm[s.vm_id] = &s;
  // Usage, for the VMs that really are this host's.
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(usage_mutex_);
    for (auto& [id, vm] : mine) {
      auto s = by_vm.find(id);
      if (s == by_vm.end()) {
        usage_.erase(id);
        continue;
      }
      Usage& u = usage_[id];
      double cpu = 0;
      if (u.host_id == host_id && u.at != std::chrono::steady_clock::time_point{}) {
        double wall_ns = std::chrono::duration<double, std::nano>(now - u.at).count();
        int vcpus = std::max(1, vm.request.vcpus);
        if (wall_ns > 0 && s->second->cpu_time_ns >= u.cpu_time_ns) {
          cpu =
              100.0 * static_cast<double>(s->second->cpu_time_ns - u.cpu_time_ns) / wall_ns / vcpus;
        }
      }
      u.host_id = host_id;
      u.cpu_time_ns = s->second->cpu_time_ns;
      u.at = now;
      u.json = Json{{"cpu_percent", std::round(std::min(cpu, 100.0) * 10) / 10},
                    {"memory_kb", s->second->memory_kb},
                    {"domain_state", s->second->state},
                    {"seen_at", format_time(unix_seconds(clock_.now()))}};
    }
  }
  // What the hypervisor saw, as lifecycle events.
  auto event_for = [&](const Vm& vm) -> std::optional<Event> {
    if (vm.operation.is_object() || !vm.allocation || vm.allocation->host_id != host_id) {
      return std::nullopt;  // An operation is in flight, or the VM is not here.
    }
    auto s = by_vm.find(vm.header.id);
    if (s == by_vm.end()) return Event::kSeenMissing;
    const VmSighting& sighting = *s->second;
    std::string current = operation_id(vm.header.id, vm.op_seq);
    if (sighting.last_operation && *sighting.last_operation != current) {
      return std::nullopt;  // Read before the VM's last operation finished: stale.
    }
    if (sighting.state == "running") return Event::kSeenRunning;
    if (sighting.state == "shutoff" || sighting.state == "crashed") return Event::kSeenPoweredOff;
    return std::nullopt;
  };
  std::map<int64_t, Event> events;
  for (const auto& [id, vm] : mine) {
    auto event = event_for(vm);
    Phase from{static_cast<VmStatus>(vm.header.state), static_cast<Lcm>(vm.lcm)};
    if (event && next(from, *event)) events[id] = *event;
  }
  return apply_events(events, [&](const Vm& vm) {
    auto event = event_for(vm);
    return event && *event == events.at(vm.header.id);
  });
}

Result<int> Compute::host_lost(int64_t host_id) {
  FAB_ASSIGN_OR_RETURN(auto ids,
                       store_.read_value<std::vector<int64_t>>(
                           [&](store::Transaction& tx) { return host_vms(tx, host_id); }));
  std::map<int64_t, Event> events;
  for (int64_t id : ids) events[id] = Event::kHostLost;
  {
    std::lock_guard lock(usage_mutex_);
    for (int64_t id : ids) usage_.erase(id);
  }
  return apply_events(events, [&](const Vm& vm) {
    return !vm.operation.is_object() && vm.allocation && vm.allocation->host_id == host_id;
  });
}

}  // namespace fabrica::compute
