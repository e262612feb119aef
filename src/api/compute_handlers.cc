#include <charconv>

#include "api/api.h"

namespace fabrica::api {
namespace {

Result<compute::NewTemplate> read_new_template(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  compute::NewTemplate t;
  FAB_ASSIGN_OR_RETURN(t.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(t.gid, body.optional_int("gid"));
  FAB_ASSIGN_OR_RETURN(auto description, body.optional_string("description"));
  FAB_ASSIGN_OR_RETURN(auto request, body.optional_object("request"));
  FAB_ASSIGN_OR_RETURN(auto context, body.optional_object("context"));
  FAB_ASSIGN_OR_RETURN(auto os, body.optional_object("os"));
  FAB_ASSIGN_OR_RETURN(auto disks, body.optional_array("disks"));
  FAB_ASSIGN_OR_RETURN(auto nics, body.optional_array("nics"));
  FAB_TRY(body.finish());
  FAB_ASSIGN_OR_RETURN(t.guest, compute::GuestSpec::from_json(context, os, disks, nics));
  t.description = description.value_or("");
  FAB_ASSIGN_OR_RETURN(t.request,
                       sched::VmRequest::from_json(request.value_or(Json::object()), "request."));
  return t;
}

Result<compute::NewVm> read_new_vm(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  compute::NewVm vm;
  FAB_ASSIGN_OR_RETURN(vm.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(vm.gid, body.optional_int("gid"));
  FAB_ASSIGN_OR_RETURN(vm.template_id, body.optional_int("template_id"));
  FAB_ASSIGN_OR_RETURN(auto request, body.optional_object("request"));
  FAB_ASSIGN_OR_RETURN(auto context, body.optional_object("context"));
  FAB_ASSIGN_OR_RETURN(auto os, body.optional_object("os"));
  FAB_ASSIGN_OR_RETURN(auto disks, body.optional_array("disks"));
  FAB_ASSIGN_OR_RETURN(auto nics, body.optional_array("nics"));
  FAB_TRY(body.finish());
  FAB_ASSIGN_OR_RETURN(vm.guest, compute::GuestSpec::from_json(context, os, disks, nics));
  if (vm.template_id && request) {
    return fail(ErrorCode::kInvalidArgument, "give template_id or request, not both", "request");
  }
  FAB_ASSIGN_OR_RETURN(vm.request,
                       sched::VmRequest::from_json(request.value_or(Json::object()), "request."));
  return vm;
}

Result<compute::VmListOptions> vm_list_options(const Context& ctx) {
  FAB_TRY(ctx.allow_query({"limit", "cursor", "state", "gid", "host"}));
  FAB_ASSIGN_OR_RETURN(auto base, list_options(ctx));
  compute::VmListOptions o{.limit = base.limit, .after_id = base.after_id, .gid = base.gid};
  if (auto state = ctx.query("state")) {
    // A STATE name, or an LCM_STATE name meaning ACTIVE in that LCM state.
    if (*state == "ALLOCATED") {
      o.state = compute::VmState::kAllocated;
    } else if (auto phase = compute::parse_phase(*state)) {
      o.state = static_cast<compute::VmState>(phase->status);
      if (phase->lcm) o.lcm = static_cast<int>(*phase->lcm);
    }
    if (!o.state) {
      return fail(ErrorCode::kInvalidArgument,
                  "must be a state (PENDING, HOLD, ALLOCATED, ACTIVE, POWEROFF, SUSPENDED, "
                  "UNDEPLOYED, DONE) or an LCM state such as RUNNING",
                  "state");
    }
  }
  if (auto host = ctx.query("host")) {
    int64_t id = -1;
    auto [end, ec] = std::from_chars(host->data(), host->data() + host->size(), id);
    if (ec != std::errc() || end != host->data() + host->size() || id < 0) {
      return fail(ErrorCode::kInvalidArgument, "must be a host id", "host");
    }
    o.host_id = id;
  }
  return o;
}

// "poweroff" + hard -> kPoweroffHard; "recover" + how -> kRecover*.
Result<compute::Event> action_event(const std::string& action, bool hard,
                                    const std::optional<std::string>& how) {
  using compute::Event;
  struct Verb {
    std::string_view name;
    Event soft;
    std::optional<Event> hard;
  };
  static constexpr Verb kVerbs[] = {
      {"shutdown", Event::kShutdown, Event::kTerminateHard},
      {"terminate", Event::kTerminate, Event::kTerminateHard},
      {"poweroff", Event::kPoweroff, Event::kPoweroffHard},
      {"reboot", Event::kReboot, Event::kRebootHard},
      {"undeploy", Event::kUndeploy, Event::kUndeployHard},
      {"suspend", Event::kSuspend, std::nullopt},
      {"resume", Event::kResume, std::nullopt},
      {"hold", Event::kHold, std::nullopt},
      {"release", Event::kRelease, std::nullopt},
  };
  if (action == "recover") {
    if (how == "success") return Event::kRecoverSuccess;
    if (how == "failure") return Event::kRecoverFailure;
    if (how == "retry") return Event::kRecoverRetry;
    if (how == "delete") return Event::kRecoverDelete;
    return fail(ErrorCode::kInvalidArgument, "must be success, failure, retry or delete", "how");
  }
  if (how) return fail(ErrorCode::kInvalidArgument, "applies to recover only", "how");
  for (const auto& v : kVerbs) {
    if (v.name != action) continue;
    if (!hard) return v.soft;
    if (!v.hard) return fail(ErrorCode::kInvalidArgument, "has no --hard variant", "hard");
    return *v.hard;
  }
  return fail(ErrorCode::kInvalidArgument,
              "must be shutdown, terminate, poweroff, reboot, undeploy, suspend, resume, hold, "
              "release or recover",
              "action");
}

}  // namespace

void add_compute_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/templates", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name", "gid"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.compute.list_templates(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/templates", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_new_template(ctx));
               FAB_ASSIGN_OR_RETURN(auto t, s.compute.create_template(ctx.who(), request));
               return json_response(201, t.to_api_json());
             });
  router.add("GET", "/api/v1/templates/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto t, s.compute.get_template(ctx.who(), id));
               return json_response(200, t.to_api_json());
             });
  router.add("PUT", "/api/v1/templates/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               compute::Compute::TemplateChange change;
               FAB_ASSIGN_OR_RETURN(change.description, body.optional_string("description"));
               FAB_ASSIGN_OR_RETURN(auto request_json, body.optional_object("request"));
               FAB_ASSIGN_OR_RETURN(auto context, body.optional_object("context"));
               FAB_ASSIGN_OR_RETURN(auto os, body.optional_object("os"));
               FAB_ASSIGN_OR_RETURN(auto disks, body.optional_array("disks"));
               FAB_ASSIGN_OR_RETURN(auto nics, body.optional_array("nics"));
               FAB_TRY(body.finish());
               if (request_json) {
                 FAB_ASSIGN_OR_RETURN(change.request,
                                      sched::VmRequest::from_json(*request_json, "request."));
               }
               if (context || os || disks || nics) {
                 FAB_ASSIGN_OR_RETURN(change.guest,
                                      compute::GuestSpec::from_json(context, os, disks, nics));
               }
               FAB_ASSIGN_OR_RETURN(auto t, s.compute.update_template(ctx.who(), id, change));
               return json_response(200, t.to_api_json());
             });
  router.add("DELETE", "/api/v1/templates/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.compute.delete_template(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add("POST", "/api/v1/templates/{id}/instantiate", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               compute::NewVm vm{.template_id = id};
               FAB_ASSIGN_OR_RETURN(vm.name, body.required_string("name"));
               FAB_ASSIGN_OR_RETURN(vm.gid, body.optional_int("gid"));
               FAB_ASSIGN_OR_RETURN(auto context, body.optional_object("context"));
               FAB_ASSIGN_OR_RETURN(auto os, body.optional_object("os"));
               FAB_ASSIGN_OR_RETURN(auto disks, body.optional_array("disks"));
               FAB_ASSIGN_OR_RETURN(auto nics, body.optional_array("nics"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(vm.guest,
                                    compute::GuestSpec::from_json(context, os, disks, nics));
               FAB_ASSIGN_OR_RETURN(auto created, s.compute.create_vm(ctx.who(), std::move(vm)));
               return json_response(201, created.to_api_json());
             });
  router.add("GET", "/api/v1/vms", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto options, vm_list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.compute.list_vms(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/vms", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_new_vm(ctx));
               FAB_ASSIGN_OR_RETURN(auto vm, s.compute.create_vm(ctx.who(), std::move(request)));
               return json_response(201, vm.to_api_json());
             });
  router.add("GET", "/api/v1/vms/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto vm, s.compute.get_vm(ctx.who(), id));
               return json_response(200, vm.to_api_json());
             });
  router.add(
      "GET", "/api/v1/vms/{id}/explain", AuthMode::kBearer,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
        FAB_ASSIGN_OR_RETURN(auto vm, s.compute.get_vm(ctx.who(), id));
        return json_response(
            200, Json{{"id", vm.header.id},
                      {"state_name", compute::vm_state_name(vm.state(), vm.lcm)},
                      {"host_name", vm.allocation ? Json(vm.allocation->host_name) : Json(nullptr)},
                      {"explanation", vm.explanation}});
      });
  router.add("POST", "/api/v1/vms/{id}/actions", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(std::string action, body.required_string("action"));
               FAB_ASSIGN_OR_RETURN(auto hard, body.optional_bool("hard"));
               FAB_ASSIGN_OR_RETURN(auto how, body.optional_string("how"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(compute::Event event,
                                    action_event(action, hard.value_or(false), how));
               FAB_ASSIGN_OR_RETURN(auto vm, s.compute.act(ctx.who(), id, event));
               return json_response(202, vm.to_api_json());
             });
  router.add("POST", "/api/v1/vms/{id}/resize", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(auto vcpus, body.optional_int("vcpus"));
               FAB_ASSIGN_OR_RETURN(auto memory, body.optional_int("memory_mb"));
               FAB_TRY(body.finish());
               if (!vcpus && !memory) {
                 return fail(ErrorCode::kInvalidArgument, "give vcpus, memory_mb or both", "vcpus");
               }
               if (vcpus && (*vcpus < 1 || *vcpus > 4096)) {
                 return fail(ErrorCode::kInvalidArgument, "must be 1-4096", "vcpus");
               }
               if (memory && (*memory < 1 || *memory > (int64_t{1} << 32))) {
                 return fail(ErrorCode::kInvalidArgument, "must be 1 MB to 4 PB", "memory_mb");
               }
               compute::Compute::Resize resize{.memory_mb = memory};
               if (vcpus) resize.vcpus = static_cast<int>(*vcpus);
               FAB_ASSIGN_OR_RETURN(auto vm, s.compute.resize(ctx.who(), id, resize));
               return json_response(200, vm.to_api_json());
             });
  // Disks of a stopped VM.
  router.add("POST", "/api/v1/vms/{id}/disks", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(Json body, parse_json(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(auto vm, s.compute.attach_disk(ctx.who(), id, body));
               return json_response(200, vm.to_api_json());
             });
  router.add("DELETE", "/api/v1/vms/{id}/disks/{disk_id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t disk, ctx.id_param(1, "disk_id"));
               FAB_ASSIGN_OR_RETURN(auto vm, s.compute.detach_disk(ctx.who(), id, disk));
               return json_response(200, vm.to_api_json());
             });
  router.add("POST", "/api/v1/vms/{id}/disks/{disk_id}/resize", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t disk, ctx.id_param(1, "disk_id"));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(int64_t size, body.required_int("size_mb"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(auto vm, s.compute.resize_disk(ctx.who(), id, disk, size));
               return json_response(200, vm.to_api_json());
             });
  router.add("POST", "/api/v1/vms/{id}/disks/{disk_id}/saveas", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               compute::Compute::SaveAs request;
               FAB_ASSIGN_OR_RETURN(request.disk_id, ctx.id_param(1, "disk_id"));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(request.name, body.required_string("name"));
               FAB_ASSIGN_OR_RETURN(request.datastore_id, body.optional_int("datastore_id"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(auto saved, s.compute.saveas_disk(ctx.who(), id, request));
               return json_response(
                   202, Json{{"vm", saved.vm.to_api_json()}, {"image", saved.image.to_api_json()}});
             });
  router.add("DELETE", "/api/v1/vms/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.compute.delete_vm(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
}

}  // namespace fabrica::api
