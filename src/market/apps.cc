#include "market/apps.h"

#include <algorithm>
#include <set>

#include "crypto/crypto.h"
#include "market/model_facts.h"

namespace fabrica::market {
namespace {

constexpr Permissions kPublic{0604};
constexpr Permissions kPrivate{0600};
const auth::Caller kRoot{.uid = auth::kSuperuserId, .gid = 0, .groups = {0}, .name = "apps"};

std::string app_noun(int64_t id) { return "app " + std::to_string(id); }

const std::map<AppKind, std::string_view>& kind_names() {
  static const std::map<AppKind, std::string_view> m{
      {AppKind::kVmTemplate, "vm_template"},
      {AppKind::kImage, "image"},
      {AppKind::kServiceTemplate, "service_template"}};
  return m;
}

store::Record app_record(const App& a) {
  return store::Record{.type = std::string(kAppType),
                       .id = a.header.id,
                       .name = a.header.name,
                       .uid = a.header.uid,
                       .gid = a.header.gid,
                       .state = a.header.state,
                       .key = a.header.name,
                       .body = dump_json(a.to_api_json()),
                       .version = a.version_counter};
}

Result<App> app_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  App a;
  FAB_ASSIGN_OR_RETURN(a.header, ObjectHeader::from_json(body));
  std::string kind = body.value("kind", "");
  bool known = false;
  for (const auto& [k, name] : kind_names()) {
    if (name == kind) {
      a.kind = k;
      known = true;
    }
  }
  if (!known) return fail(ErrorCode::kInternal, "stored " + app_noun(r.id) + " is malformed");
  a.template_id = body["template_id"].is_number_integer() ? body["template_id"].get<int64_t>() : -1;
  a.image_id = body["image_id"].is_number_integer() ? body["image_id"].get<int64_t>() : -1;
  a.service = body.value("service", Json());
  a.appliance = body.value("appliance", "");
  a.publisher = body.value("publisher", "");
  a.version = body.value("version", "");
  a.description = body.value("description", "");
  a.licence = body.value("licence", "");
  Json g = body.value("gpus", Json::object());
  a.gpus.count = g.value("count", 0);
  a.gpus.min_memory_mib = g.value("min_memory_mib", int64_t{0});
  a.gpus.mig_profiles = g.value("mig_profiles", std::vector<std::string>{});
  a.version_counter = r.version;
  return a;
}

// A word vLLM takes as a flag value: letters, digits, '_', '-', '.'.
Result<void> word(const std::string& value, const std::string& field) {
  if (value.empty() || value.size() > 32 ||
      !std::all_of(value.begin(), value.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '-' || c == '.';
      })) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 to 32 of A-Z a-z 0-9 _ - .", field);
  }
  return {};
}

}  // namespace

std::string_view app_kind_name(AppKind kind) { return kind_names().at(kind); }

Json App::to_api_json() const {
  Json j = Json::object();
  header.to_json(j);
  j["kind"] = app_kind_name(kind);
  j["template_id"] = template_id >= 0 ? Json(template_id) : Json(nullptr);
  j["image_id"] = image_id >= 0 ? Json(image_id) : Json(nullptr);
  j["service"] = service;
  j["appliance"] = appliance;
  j["publisher"] = publisher;
  j["version"] = version;
  j["description"] = description;
  j["licence"] = licence;
  j["gpus"] = {{"count", gpus.count},
               {"min_memory_mib", gpus.min_memory_mib},
               {"mig_profiles", gpus.mig_profiles}};
  j["public"] = is_public();
  if (appliance == "vllm") {
    j["inputs"] = Json::array({
        Json{{"name", "model_id"}, {"type", "MODEL image"}, {"required", true}},
        Json{{"name", "gpus"}, {"type", "integer"}, {"default", gpus.count}},
        Json{{"name", "served_model_name"}, {"type", "string"}, {"default", "the repository"}},
        Json{{"name", "max_model_len"}, {"type", "integer"}, {"default", "the model's"}},
        Json{{"name", "gpu_memory_utilization"}, {"type", "number"}, {"default", 0.9}},
        Json{{"name", "dtype"}, {"type", "string"}, {"default", "auto"}},
        Json{{"name", "quantization"}, {"type", "string"}, {"default", ""}},
        Json{{"name", "extra_args"}, {"type", "string"}, {"default", ""}},
    });
  }
  return j;
}

Result<App> Apps::load(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                       Right right) {
  auto r = tx.get(kAppType, id);
  if (!r) return fail(r.error().code(), app_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(App a, app_from_record(*r));
  FAB_TRY(authorizer_.require(caller, auth::object_ref(ObjectType::kMarketplaceApp, a.header),
                              right, app_noun(id)));
  return a;
}

Result<App> Apps::create(const auth::Caller& caller, const NewApp& request) {
  FAB_TRY(authorizer_.require_superuser(caller, "publish apps"));
  FAB_TRY(validate_name(request.name));
  FAB_TRY(validate_text(request.publisher, 256, "publisher"));
  FAB_TRY(validate_text(request.version, 64, "version"));
  FAB_TRY(validate_text(request.description, 1024, "description"));
  FAB_TRY(validate_text(request.licence, 256, "licence"));
  if (request.gpus.count < 0 || request.gpus.count > 64) {
    return fail(ErrorCode::kInvalidArgument, "must be 0 to 64", "gpus.count");
  }
  if (request.gpus.min_memory_mib < 0) {
    return fail(ErrorCode::kInvalidArgument, "must be >= 0", "gpus.min_memory_mib");
  }
  if (request.gpus.mig_profiles.size() > 16) {
    return fail(ErrorCode::kInvalidArgument, "at most 16", "gpus.mig_profiles");
  }
  for (const auto& p : request.gpus.mig_profiles) FAB_TRY(word(p, "gpus.mig_profiles"));
  if (!request.appliance.empty() && request.appliance != "vllm") {
    return fail(ErrorCode::kInvalidArgument, "must be vllm or empty", "appliance");
  }
  switch (request.kind) {
    case AppKind::kVmTemplate:
      if (!request.template_id) {
        return fail(ErrorCode::kInvalidArgument, "is required for a vm_template app",
                    "template_id");
      }
      FAB_TRY(compute_.get_template(caller, *request.template_id).map([](auto&&) {}));
      break;
    case AppKind::kImage:
      if (!request.image_id) {
        return fail(ErrorCode::kInvalidArgument, "is required for an image app", "image_id");
      }
      FAB_TRY(storage_.get_image(caller, *request.image_id).map([](auto&&) {}));
      if (!request.appliance.empty()) {
        return fail(ErrorCode::kInvalidArgument, "only vm_template apps are appliances",
                    "appliance");
      }
      break;
    case AppKind::kServiceTemplate:
      if (!request.service.is_object() || !request.service.contains("roles") ||
          !request.service["roles"].is_array() || request.service.dump().size() > 65536) {
        return fail(ErrorCode::kInvalidArgument,
                    "a service_template app needs {\"roles\": [...]} (at most 64 KiB)", "service");
      }
      if (!request.appliance.empty()) {
        return fail(ErrorCode::kInvalidArgument, "only vm_template apps are appliances",
                    "appliance");
      }
      break;
  }
  return store_.write_value<App>([&](store::Transaction& tx) -> Result<App> {
    FAB_ASSIGN_OR_RETURN(auto same,
                         tx.list(kAppType, store::ListQuery{.limit = 1, .name = request.name}));
    if (!same.empty()) {
      return fail(ErrorCode::kAlreadyExists, "an app named " + request.name + " exists", "name");
    }
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kAppType));
    int64_t now = unix_seconds(clock_.now());
    App a{.header = ObjectHeader::create(id, request.name, caller.uid, 0,
                                         request.is_public ? kPublic : kPrivate, 0, now),
          .kind = request.kind,
          .template_id = request.template_id.value_or(-1),
          .image_id = request.image_id.value_or(-1),
          .service = request.service,
          .appliance = request.appliance,
          .publisher = request.publisher,
          .version = request.version,
          .description = request.description,
          .licence = request.licence,
          .gpus = request.gpus,
          .version_counter = 1};
    FAB_TRY(tx.insert(app_record(a)));
    return a;
  });
}

Result<App> Apps::get(const auth::Caller& caller, int64_t id) {
  return store_.read_value<App>(
      [&](store::Transaction& tx) { return load(tx, caller, id, Right::kUse); });
}

Result<auth::Page<App>> Apps::list(const auth::Caller& caller, const auth::ListOptions& options) {
  store::ListQuery query{.after_id = options.after_id, .name = options.name};
  return store_.read_value<auth::Page<App>>([&](store::Transaction& tx) {
    return auth::visible_page<App>(
        tx, kAppType, query, options.limit, app_from_record, [&](const App& a) {
          return authorizer_.allows(caller, auth::object_ref(ObjectType::kMarketplaceApp, a.header),
                                    Right::kUse);
        });
  });
}

Result<void> Apps::remove(const auth::Caller& caller, int64_t id) {
  FAB_TRY(authorizer_.require_superuser(caller, "delete apps"));
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    auto r = tx.get(kAppType, id);
    if (!r) return fail(r.error().code(), app_noun(id) + " not found");
    return tx.remove(kAppType, id);
  });
}

Result<Instantiated> Apps::instantiate(const auth::Caller& caller, int64_t id,
                                       const Instantiate& request) {
  FAB_ASSIGN_OR_RETURN(App app, get(caller, id));
  // The group first: the VM and (for an appliance) the endpoint are made in it.
  int64_t gid = request.gid.value_or(caller.gid);
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kVm, gid));
  if (app.kind != AppKind::kVmTemplate) {
    return fail(ErrorCode::kFailedPrecondition, app_noun(id) + " is an " +
                                                    std::string(app_kind_name(app.kind)) +
                                                    " app; only vm_template apps make VMs");
  }
  FAB_ASSIGN_OR_RETURN(compute::VmTemplate t, compute_.get_template(kRoot, app.template_id));
  compute::NewVm vm{.name = request.name,
                    .gid = request.gid,
                    .template_id = app.template_id,
                    .template_from_app = true};
  if (request.gpus > 64) return fail(ErrorCode::kInvalidArgument, "must be 0 to 64", "gpus");
  if (request.gpus >= 0) vm.gpu_count = request.gpus;
  int gpus = vm.gpu_count.value_or(t.request.gpus.count);
  if (app.appliance != "vllm") {
    if (request.model_id || request.served_model_name || request.max_model_len ||
        request.gpu_memory_utilization || request.dtype || request.quantization ||
        request.extra_args) {
      return fail(ErrorCode::kInvalidArgument, app_noun(id) + " takes no appliance inputs");
    }
    FAB_ASSIGN_OR_RETURN(compute::Vm made, compute_.create_vm(caller, std::move(vm)));
    return Instantiated{.vm = std::move(made)};
  }

  // The vLLM appliance.
  if (!request.model_id) return fail(ErrorCode::kInvalidArgument, "is required", "model_id");
  auto model = storage_.get_image(caller, *request.model_id);
  if (!model) return fail(model.error().code(), model.error().message(), "model_id");
  if (model->type != storage::ImageType::kModel || (model->state() != storage::ImageState::kReady &&
                                                    model->state() != storage::ImageState::kUsed)) {
    return fail(ErrorCode::kFailedPrecondition,
                "image " + std::to_string(*request.model_id) + " is not a READY MODEL image",
                "model_id");
  }
  std::string served = request.served_model_name.value_or(
      model->model.value("repo", std::string(model->header.name)));
  if (served.empty() || served.size() > 256 ||
      !std::all_of(served.begin(), served.end(),
                   [](unsigned char c) { return c > 0x20 && c < 0x7f && c != '\'' && c != '"'; })) {
    return fail(ErrorCode::kInvalidArgument,
                "must be 1 to 256 printable characters without spaces or quotes",
                "served_model_name");
  }
  if (request.max_model_len &&
      (*request.max_model_len < 1 || *request.max_model_len > 10'000'000)) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 to 10000000", "max_model_len");
  }
  if (request.gpu_memory_utilization &&
      !(*request.gpu_memory_utilization > 0 && *request.gpu_memory_utilization <= 1)) {
    return fail(ErrorCode::kInvalidArgument, "must be above 0 and at most 1",
                "gpu_memory_utilization");
  }
  if (request.dtype) {
    static const std::set<std::string> kDtypes{"auto",     "half",  "float16",
                                               "bfloat16", "float", "float32"};
    if (!kDtypes.contains(*request.dtype)) {
      return fail(ErrorCode::kInvalidArgument,
                  "must be auto, half, float16, bfloat16, float or float32", "dtype");
    }
  }
  if (request.quantization) FAB_TRY(word(*request.quantization, "quantization"));
  if (request.extra_args) FAB_TRY(validate_text(*request.extra_args, 1024, "extra_args"));

  std::string sizes;
  for (const Json& n : model->model.value("tensor_parallel_sizes", Json::array())) {
    if (n.is_number_integer()) sizes += (sizes.empty() ? "" : " ") + std::to_string(n.get<int>());
  }
  if (sizes.empty()) sizes = "1";
  Json context = Json::object();  // Over the template's own variables.
  context["FABRICA_APP"] = "vllm";
  context["VLLM_SERVED_MODEL_NAME"] = served;
  context["VLLM_TP_SIZES"] = sizes;
  context["VLLM_PORT"] = 8000;
  context["FABRICA_GPUS"] = gpus;
  if (request.max_model_len) context["VLLM_MAX_MODEL_LEN"] = *request.max_model_len;
  if (request.gpu_memory_utilization) {
    context["VLLM_GPU_MEMORY_UTILIZATION"] = *request.gpu_memory_utilization;
  }
  if (request.dtype) context["VLLM_DTYPE"] = *request.dtype;
  if (request.quantization) context["VLLM_QUANTIZATION"] = *request.quantization;
  if (request.extra_args) context["VLLM_EXTRA_ARGS"] = *request.extra_args;
  vm.guest.context = std::move(context);
  vm.guest.disks = t.guest.disks;  // The template's disks, then the model's volume.
  vm.guest.disks.push_back({{"image_id", *request.model_id}});
  vm.app = {{"name", app.header.name},
            {"app_id", app.header.id},
            {"model", served},
            {"model_id", *request.model_id},
            {"port", 8000}};
  vm.backend_key = "fbk_" + crypto::random_hex(32);
  int64_t endpoint_id = -1;
  vm.in_transaction = [&](store::Transaction& tx, compute::Vm& made) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(endpoint_id, endpoints_.ensure_for_model(tx, caller, gid, served));
    made.app["endpoint_id"] = endpoint_id;
    return {};
  };
  FAB_ASSIGN_OR_RETURN(compute::Vm made, compute_.create_vm(caller, std::move(vm)));
  return Instantiated{.vm = std::move(made), .endpoint_id = endpoint_id};
}

}  // namespace fabrica::market
