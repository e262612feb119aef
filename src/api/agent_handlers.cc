#include "api/api.h"

namespace fabrica::api {
namespace {

// The credential in `Authorization: Bearer fah_...`.
Result<std::string_view> agent_credential(const Context& ctx) {
  return bearer_secret(ctx, "host credential required");
}

// The host behind `Authorization: Bearer fah_...`.
Result<int64_t> agent_host(Services& s, const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto credential, agent_credential(ctx));
  return s.fleet.authenticate_agent(credential);
}

// The body of POST /api/v1/agent/vms: {"vms": [{"vm_id", "domain", "state", "cpu_time_ns",
// "memory_kb", "last_operation"}]}.
Result<std::vector<compute::VmSighting>> read_sightings(std::string_view body) {
  constexpr size_t kMaxVms = 4096;
  FAB_ASSIGN_OR_RETURN(auto reader, JsonObjectReader::parse(body));
  FAB_ASSIGN_OR_RETURN(auto vms, reader.optional_array("vms"));
  FAB_TRY(reader.finish());
  if (!vms) return fail(ErrorCode::kInvalidArgument, "is required", "vms");
  if (vms->size() > kMaxVms) {
    return fail(ErrorCode::kInvalidArgument, "at most 4096 VMs per report", "vms");
  }
  std::vector<compute::VmSighting> seen;
  for (size_t i = 0; i < vms->size(); ++i) {
    std::string prefix = "vms[" + std::to_string(i) + "].";
    if (!(*vms)[i].is_object())
      return fail(ErrorCode::kInvalidArgument, "must be an object", prefix);
    FAB_ASSIGN_OR_RETURN(auto vm, JsonObjectReader::wrap((*vms)[i], prefix));
    compute::VmSighting s;
    FAB_ASSIGN_OR_RETURN(s.vm_id, vm.required_int("vm_id"));
    FAB_ASSIGN_OR_RETURN(auto domain, vm.optional_string("domain"));
    FAB_ASSIGN_OR_RETURN(s.state, vm.required_string("state"));
    FAB_ASSIGN_OR_RETURN(auto cpu, vm.optional_int("cpu_time_ns"));
    FAB_ASSIGN_OR_RETURN(auto memory, vm.optional_int("memory_kb"));
    FAB_ASSIGN_OR_RETURN(s.last_operation, vm.optional_string("last_operation"));
    FAB_TRY(vm.finish());
    static const std::set<std::string, std::less<>> kStates{"running", "paused",  "shutoff",
                                                            "crashed", "missing", "other"};
    if (!kStates.contains(s.state)) {
      return fail(ErrorCode::kInvalidArgument,
                  "must be running, paused, shutoff, crashed, missing or other", prefix + "state");
    }
    if (s.vm_id < 0) return fail(ErrorCode::kInvalidArgument, "must be >= 0", prefix + "vm_id");
    if (cpu.value_or(0) < 0 || memory.value_or(0) < 0) {
      return fail(ErrorCode::kInvalidArgument, "must be >= 0",
                  prefix + (cpu.value_or(0) < 0 ? "cpu_time_ns" : "memory_kb"));
    }
    if (s.last_operation && s.last_operation->size() > 64) {
      return fail(ErrorCode::kInvalidArgument, "must be at most 64 characters",
                  prefix + "last_operation");
    }
    s.cpu_time_ns = cpu.value_or(0);
    s.memory_kb = memory.value_or(0);
    seen.push_back(std::move(s));
  }
  return seen;
}

}  // namespace

void add_agent_routes(Router& router, Services& s) {
  // The join token travels in the body: the agent has no credential yet.
  router.add("POST", "/api/v1/agent/join", AuthMode::kNone,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(std::string token, body.required_string("token"));
               FAB_ASSIGN_OR_RETURN(std::string hostname, body.required_string("hostname"));
               FAB_ASSIGN_OR_RETURN(auto inv_json, body.optional_object("inventory"));
               FAB_TRY(body.finish());
               if (!inv_json) return fail(ErrorCode::kInvalidArgument, "is required", "inventory");
               FAB_ASSIGN_OR_RETURN(auto inv, inventory::HostInventory::from_json(*inv_json));
               FAB_ASSIGN_OR_RETURN(auto joined, s.fleet.join(token, hostname, inv));
               return json_response(201, Json{{"host_id", joined.host.header.id},
                                              {"name", joined.host.header.name},
                                              {"credential", joined.credential},
                                              {"heartbeat_interval_seconds",
                                               s.fleet.options().heartbeat_interval.count()}});
             });
  router.add(
      "PUT", "/api/v1/agent/inventory", AuthMode::kNone,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_ASSIGN_OR_RETURN(int64_t host, agent_host(s, ctx));
        FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
        FAB_ASSIGN_OR_RETURN(auto inv_json, body.optional_object("inventory"));
        FAB_TRY(body.finish());
        if (!inv_json) return fail(ErrorCode::kInvalidArgument, "is required", "inventory");
        FAB_ASSIGN_OR_RETURN(auto inv, inventory::HostInventory::from_json(*inv_json));
        FAB_TRY(s.fleet.report_inventory(host, inv));
        return HttpResponse{.status = 204, .content_type = ""};
      },
      Audit::kNever);
  router.add(
      "POST", "/api/v1/agent/heartbeat", AuthMode::kNone,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_ASSIGN_OR_RETURN(auto credential, agent_credential(ctx));
        FAB_ASSIGN_OR_RETURN(auto agent, s.fleet.authenticate_credential(credential));
        int64_t host = agent.host_id;
        FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
        fleet::Monitoring m;
        FAB_ASSIGN_OR_RETURN(auto cpu, body.optional_int("cpu_used_permille"));
        FAB_ASSIGN_OR_RETURN(auto mem, body.optional_int("memory_used_kb"));
        FAB_ASSIGN_OR_RETURN(auto gpus, body.optional_array("gpus"));
        FAB_TRY(body.finish());
        if (cpu && (*cpu < 0 || *cpu > 1000)) {
          return fail(ErrorCode::kInvalidArgument, "must be 0-1000", "cpu_used_permille");
        }
        if (mem && *mem < 0)
          return fail(ErrorCode::kInvalidArgument, "must be >= 0", "memory_used_kb");
        if (gpus && gpus->size() > 256) {
          return fail(ErrorCode::kInvalidArgument, "at most 256 GPUs", "gpus");
        }
        for (const Json& g : gpus.value_or(Json::array())) {
          if (!g.is_object() || g.size() > 16) {
            return fail(ErrorCode::kInvalidArgument,
                        "each GPU sample is an object of at most 16 fields", "gpus");
          }
        }
        m.cpu_used_percent = cpu.value_or(0) / 10.0;
        m.memory_used_kb = mem.value_or(0);
        if (gpus) m.gpus = *gpus;
        FAB_TRY(s.fleet.heartbeat(host, m));
        return json_response(
            200, Json{{"heartbeat_interval_seconds", s.fleet.options().heartbeat_interval.count()},
                      {"commands", Json::array()},
                      {"rotate_credential", agent.rotate}});
      },
      Audit::kNever);
  // A new credential for the calling host; the old one works until the new one is used.
  router.add("POST", "/api/v1/agent/credential", AuthMode::kNone,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto credential, agent_credential(ctx));
               FAB_TRY(ctx.no_body_fields());
               FAB_ASSIGN_OR_RETURN(auto host, s.fleet.authenticate_agent(credential));
               FAB_ASSIGN_OR_RETURN(std::string fresh, s.fleet.rotate_credential(credential));
               return json_response(201, Json{{"host_id", host}, {"credential", fresh}});
             });
  // The commands waiting for this host. Answered at once: a handler must not hold a server
  // thread (each serves many connections), so agents poll.
  router.add(
      "GET", "/api/v1/agent/commands", AuthMode::kNone,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_ASSIGN_OR_RETURN(int64_t host, agent_host(s, ctx));
        FAB_TRY(ctx.allow_query({}));
        FAB_ASSIGN_OR_RETURN(Json commands, s.compute.agent_commands(host));
        return json_response(200, Json{{"commands", commands}});
      },
      Audit::kNever);
  // Monitoring: the state of every Fabrica domain on the host.
  router.add(
      "POST", "/api/v1/agent/vms", AuthMode::kNone,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_ASSIGN_OR_RETURN(int64_t host, agent_host(s, ctx));
        FAB_ASSIGN_OR_RETURN(auto seen, read_sightings(ctx.request.body));
        FAB_ASSIGN_OR_RETURN(int moved, s.compute.observe(host, seen));
        return json_response(200, Json{{"moved", moved}});
      },
      Audit::kNever);
  router.add(
      "POST", "/api/v1/agent/operations", AuthMode::kNone,
      [&s](const Context& ctx) -> Result<HttpResponse> {
        FAB_ASSIGN_OR_RETURN(int64_t host, agent_host(s, ctx));
        FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
        FAB_ASSIGN_OR_RETURN(std::string id, body.required_string("id"));
        FAB_ASSIGN_OR_RETURN(auto ok, body.optional_bool("ok"));
        FAB_ASSIGN_OR_RETURN(auto error, body.optional_string("error"));
        FAB_ASSIGN_OR_RETURN(auto console_log, body.optional_string("console_log"));
        FAB_TRY(body.finish());
        if (!ok) return fail(ErrorCode::kInvalidArgument, "is required", "ok");
        FAB_TRY(s.compute.operation_result(host, id, *ok, error.value_or(""),
                                           console_log.value_or("")));
        return HttpResponse{.status = 204, .content_type = ""};
      },
      Audit::kNever);
}

}  // namespace fabrica::api
