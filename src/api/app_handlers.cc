// Apps: administrators publish templates and images; tenants list the ones they may see and
// instantiate them (the vLLM appliance among them).
#include "api/api.h"

namespace fabrica::api {
namespace {

Result<market::NewApp> read_new_app(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  market::NewApp a;
  FAB_ASSIGN_OR_RETURN(a.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(auto kind, body.optional_string("kind"));
  FAB_ASSIGN_OR_RETURN(a.template_id, body.optional_int("template_id"));
  FAB_ASSIGN_OR_RETURN(a.image_id, body.optional_int("image_id"));
  FAB_ASSIGN_OR_RETURN(auto service, body.optional_object("service"));
  FAB_ASSIGN_OR_RETURN(auto appliance, body.optional_string("appliance"));
  FAB_ASSIGN_OR_RETURN(auto publisher, body.optional_string("publisher"));
  FAB_ASSIGN_OR_RETURN(auto version, body.optional_string("version"));
  FAB_ASSIGN_OR_RETURN(auto description, body.optional_string("description"));
  FAB_ASSIGN_OR_RETURN(auto licence, body.optional_string("licence"));
  FAB_ASSIGN_OR_RETURN(auto gpus, body.optional_object("gpus"));
  FAB_ASSIGN_OR_RETURN(auto is_public, body.optional_bool("public"));
  FAB_TRY(body.finish());
  std::string k = kind.value_or("vm_template");
  if (k == "vm_template") {
    a.kind = market::AppKind::kVmTemplate;
  } else if (k == "image") {
    a.kind = market::AppKind::kImage;
  } else if (k == "service_template") {
    a.kind = market::AppKind::kServiceTemplate;
  } else {
    return fail(ErrorCode::kInvalidArgument, "must be vm_template, image or service_template",
                "kind");
  }
  if (service) a.service = *service;
  a.appliance = appliance.value_or("");
  a.publisher = publisher.value_or("");
  a.version = version.value_or("");
  a.description = description.value_or("");
  a.licence = licence.value_or("");
  a.is_public = is_public.value_or(false);
  if (gpus) {
    FAB_ASSIGN_OR_RETURN(auto g, JsonObjectReader::wrap(*gpus, "gpus."));
    FAB_ASSIGN_OR_RETURN(auto count, g.optional_int("count"));
    FAB_ASSIGN_OR_RETURN(auto memory, g.optional_int("min_memory_mib"));
    FAB_ASSIGN_OR_RETURN(auto profiles, g.optional_array("mig_profiles"));
    FAB_TRY(g.finish());
    if (count && (*count < 0 || *count > 64)) {
      return fail(ErrorCode::kInvalidArgument, "must be 0 to 64", "gpus.count");
    }
    a.gpus.count = static_cast<int>(count.value_or(0));
    a.gpus.min_memory_mib = memory.value_or(0);
    for (const Json& p : profiles.value_or(Json::array())) {
      if (!p.is_string()) {
        return fail(ErrorCode::kInvalidArgument, "must be a list of strings", "gpus.mig_profiles");
      }
      a.gpus.mig_profiles.push_back(p.get<std::string>());
    }
  }
  return a;
}

Result<market::Instantiate> read_instantiate(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  market::Instantiate r;
  FAB_ASSIGN_OR_RETURN(r.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(r.gid, body.optional_int("gid"));
  FAB_ASSIGN_OR_RETURN(r.model_id, body.optional_int("model_id"));
  FAB_ASSIGN_OR_RETURN(auto gpus, body.optional_int("gpus"));
  FAB_ASSIGN_OR_RETURN(r.served_model_name, body.optional_string("served_model_name"));
  FAB_ASSIGN_OR_RETURN(r.max_model_len, body.optional_int("max_model_len"));
  FAB_ASSIGN_OR_RETURN(r.gpu_memory_utilization, body.optional_number("gpu_memory_utilization"));
  FAB_ASSIGN_OR_RETURN(r.dtype, body.optional_string("dtype"));
  FAB_ASSIGN_OR_RETURN(r.quantization, body.optional_string("quantization"));
  FAB_ASSIGN_OR_RETURN(r.extra_args, body.optional_string("extra_args"));
  FAB_TRY(body.finish());
  if (gpus && (*gpus < 0 || *gpus > 64)) {
    return fail(ErrorCode::kInvalidArgument, "must be 0 to 64", "gpus");
  }
  r.gpus = gpus ? static_cast<int>(*gpus) : -1;
  return r;
}

}  // namespace

void add_app_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/apps", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.apps.list(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/apps", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_new_app(ctx));
               FAB_ASSIGN_OR_RETURN(auto app, s.apps.create(ctx.who(), request));
               return json_response(201, app.to_api_json());
             });
  router.add("GET", "/api/v1/apps/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(ctx.allow_query({}));
               FAB_ASSIGN_OR_RETURN(auto app, s.apps.get(ctx.who(), id));
               return json_response(200, app.to_api_json());
             });
  router.add("DELETE", "/api/v1/apps/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.apps.remove(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add("POST", "/api/v1/apps/{id}/instantiate", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto request, read_instantiate(ctx));
               FAB_ASSIGN_OR_RETURN(auto made, s.apps.instantiate(ctx.who(), id, request));
               Json out = made.vm.to_api_json();
               out["endpoint_id"] = made.endpoint_id >= 0 ? Json(made.endpoint_id) : Json(nullptr);
               return json_response(201, out);
             });
}

}  // namespace fabrica::api
