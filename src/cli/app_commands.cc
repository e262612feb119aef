// fabrica app ...: apps published from templates and images, and instantiating them (the
// vLLM appliance serving a MODEL image behind the tenant's endpoint).
#include <iostream>

#include "cli/cli.h"

namespace fabrica::cli {
namespace {

std::vector<Column> app_columns() {
  return {field("ID", "id"),           field("NAME", "name"),
          field("KIND", "kind"),       field("APPLIANCE", "appliance"),
          field("VERSION", "version"), field("PUBLISHER", "publisher")};
}

struct AppFlags {
  std::string name, kind = "vm_template", template_ref, image_ref, appliance, publisher, version,
                    description, licence;
  int gpus = 0;
  int64_t gpu_memory_mib = 0;
  std::vector<std::string> mig_profiles;
  bool is_public = false;
};

struct InstantiateFlags {
  std::string app, name, model, group, served_name, dtype, quantization, extra_args;
  int gpus = -1;
  int64_t max_model_len = 0;
  double gpu_memory_utilization = 0;
};

}  // namespace

void add_app_commands(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("app", "Apps: published templates and appliances (vllm)");
  cmd->require_subcommand(1);
  cmd->add_subcommand("list", "List the apps you may use")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json items, list_all(api, "/api/v1/apps?limit=1000"));
      print_list(ctx, items, app_columns());
      return {};
    });
  });
  auto target = std::make_shared<std::string>();
  auto* show = cmd->add_subcommand("show", "Show an app and its inputs");
  show->add_option("app", *target, "App id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "apps", *target));
      FAB_ASSIGN_OR_RETURN(Json a, api.get("/api/v1/apps/" + std::to_string(id)));
      print_object(ctx, a);
      return {};
    });
  });
  auto flags = std::make_shared<AppFlags>();
  auto* create = cmd->add_subcommand("create", "Publish a template or an image as an app");
  create->add_option("name", flags->name, "App name")->required();
  create->add_option("--kind", flags->kind, "vm_template (default) or image")
      ->check(CLI::IsMember({"vm_template", "image"}));
  create->add_option("--template", flags->template_ref, "VM template id or name (vm_template)");
  create->add_option("--image", flags->image_ref, "Image id or name (image)");
  create->add_option("--appliance", flags->appliance,
                     "vllm: instantiate serves a MODEL image behind an endpoint");
  create->add_option("--publisher", flags->publisher, "Who publishes it");
  create->add_option("--version", flags->version, "Its version");
  create->add_option("--description", flags->description, "What it is");
  create->add_option("--licence", flags->licence, "Its licence");
  create->add_option("--gpus", flags->gpus, "GPUs it needs (0-64)")->check(CLI::Range(0, 64));
  create->add_option("--gpu-memory-mib", flags->gpu_memory_mib, "Least memory per GPU (MiB)");
  create->add_option("--mig-profiles", flags->mig_profiles, "MIG profiles it runs on");
  create->add_flag("--public", flags->is_public,
                   "Every tenant sees it (default: those whose VDC lists it, vdc addapp)");
  create->callback([&ctx, flags] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      Json body{{"name", flags->name},
                {"kind", flags->kind},
                {"publisher", flags->publisher},
                {"version", flags->version},
                {"description", flags->description},
                {"licence", flags->licence},
                {"public", flags->is_public},
                {"gpus",
                 {{"count", flags->gpus},
                  {"min_memory_mib", flags->gpu_memory_mib},
                  {"mig_profiles", flags->mig_profiles}}}};
      if (!flags->appliance.empty()) body["appliance"] = flags->appliance;
      if (!flags->template_ref.empty()) {
        FAB_ASSIGN_OR_RETURN(body["template_id"],
                             resolve_id(api, "templates", flags->template_ref));
      }
      if (!flags->image_ref.empty()) {
        FAB_ASSIGN_OR_RETURN(body["image_id"], resolve_id(api, "images", flags->image_ref));
      }
      FAB_ASSIGN_OR_RETURN(Json a, api.post("/api/v1/apps", body));
      print_object(ctx, a);
      return {};
    });
  });
  auto* del = cmd->add_subcommand("delete", "Withdraw an app (its VMs stay)");
  del->add_option("app", *target, "App id or name")->required();
  del->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "apps", *target));
      FAB_TRY(api.del("/api/v1/apps/" + std::to_string(id)).map([](auto&&) {}));
      if (ctx.output == Output::kTable) std::cout << "App " << id << " deleted" << std::endl;
      return {};
    });
  });
  auto in = std::make_shared<InstantiateFlags>();
  auto* inst = cmd->add_subcommand(
      "instantiate", "Make a VM from an app; vllm: serve a model behind your endpoint");
  inst->add_option("app", in->app, "App id or name")->required();
  inst->add_option("--name", in->name, "VM name")->required();
  inst->add_option("--model", in->model, "MODEL image id or name (vllm)");
  inst->add_option("--gpus", in->gpus, "GPUs for the VM (vllm: tensor parallelism up to this)")
      ->check(CLI::Range(0, 64));
  inst->add_option("--served-model-name", in->served_name,
                   "Model name end users call (default: the repository, Qwen/Qwen3-0.6B)");
  inst->add_option("--max-model-len", in->max_model_len, "vLLM --max-model-len");
  inst->add_option("--gpu-memory-utilization", in->gpu_memory_utilization,
                   "vLLM --gpu-memory-utilization (0-1]");
  inst->add_option("--dtype", in->dtype, "vLLM --dtype");
  inst->add_option("--quantization", in->quantization, "vLLM --quantization");
  inst->add_option("--extra-args", in->extra_args, "More vLLM arguments");
  inst->add_option("--group", in->group, "Group that owns the VM (default: yours)");
  inst->callback([&ctx, in] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "apps", in->app));
      Json body{{"name", in->name}};
      if (!in->model.empty()) {
        FAB_ASSIGN_OR_RETURN(body["model_id"], resolve_id(api, "models", in->model));
      }
      if (in->gpus >= 0) body["gpus"] = in->gpus;
      if (!in->served_name.empty()) body["served_model_name"] = in->served_name;
      if (in->max_model_len > 0) body["max_model_len"] = in->max_model_len;
      if (in->gpu_memory_utilization > 0) {
        body["gpu_memory_utilization"] = in->gpu_memory_utilization;
      }
      if (!in->dtype.empty()) body["dtype"] = in->dtype;
      if (!in->quantization.empty()) body["quantization"] = in->quantization;
      if (!in->extra_args.empty()) body["extra_args"] = in->extra_args;
      if (!in->group.empty()) {
        FAB_ASSIGN_OR_RETURN(body["gid"], resolve_id(api, "groups", in->group));
      }
      FAB_ASSIGN_OR_RETURN(Json vm,
                           api.post("/api/v1/apps/" + std::to_string(id) + "/instantiate", body));
      if (ctx.output == Output::kJson) {
        print_object(ctx, vm);
      } else {
        std::cout << "VM " << to_text(vm["id"]) << " (" << to_text(vm["name"]) << ") "
                  << to_text(vm["state_name"]);
        if (vm["endpoint_id"].is_number()) {
          std::cout << ", backend of endpoint " << to_text(vm["endpoint_id"]) << " ("
                    << to_text(vm["app"]["model"]) << ") once its guest reports READY";
        }
        std::cout << std::endl;
      }
      return {};
    });
  });
}

}  // namespace fabrica::cli
