// fabrica marketplace ... and fabrica model ...: where models come from, and Hugging Face
// imports pinned to a commit, with a progress bar.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include "cli/cli.h"

namespace fabrica::cli {
namespace {

std::string join(const Json& list, const std::string& sep) {
  std::string out;
  if (!list.is_array()) return out;
  for (const auto& item : list) {
    if (!out.empty()) out += sep;
    out += to_text(item);
  }
  return out;
}

std::vector<Column> marketplace_columns() {
  return {field("ID", "id"), field("NAME", "name"), field("KIND", "kind"), field("URL", "url"),
          field("STATE", "state_name")};
}

std::vector<Column> model_columns() {
  return {
      field("ID", "id"),
      field("NAME", "name"),
      {"SOURCE", [](const Json& m) { return to_text(m["source"].value("uri", Json(""))); }},
      {"COMMIT",
       [](const Json& m) { return to_text(m["source"].value("commit", Json(""))).substr(0, 12); }},
      {"SIZE", [](const Json& m) { return human_bytes(m.value("size", int64_t{0})); }},
      field("STATE", "state_name")};
}

// "  42% 1.2 GiB / 2.8 GiB  files 3/7  85.0 MiB/s  ETA 19 s", redrawn on a terminal.
void draw(const Json& progress, bool tty, bool last) {
  int64_t done = progress.value("bytes_done", int64_t{0});
  int64_t total = progress.value("bytes_total", int64_t{0});
  int percent = total > 0 ? static_cast<int>(done * 100 / total) : 100;
  std::string eta = progress.contains("eta_s") && progress["eta_s"].is_number()
                        ? "  ETA " + std::to_string(progress["eta_s"].get<int64_t>()) + " s"
                        : "";
  std::fprintf(stderr, "%simport %3d%% %s / %s  files %d/%d  %s/s%s   %s", tty ? "\r" : "", percent,
               human_bytes(done).c_str(), human_bytes(total).c_str(),
               progress.value("files_done", 0), progress.value("files_total", 0),
               human_bytes(progress.value("rate_bytes_per_s", int64_t{0})).c_str(), eta.c_str(),
               (last || !tty) ? "\n" : "");
}

// Polls a LOCKED model until it settles, drawing its progress.
Result<Json> wait_model(client::ApiClient& api, int64_t id, bool quiet) {
  bool tty = isatty(2);
  auto last_line = std::chrono::steady_clock::now() - std::chrono::hours(1);
  Json progress;
  while (true) {
    FAB_ASSIGN_OR_RETURN(Json model, api.get("/api/v1/models/" + std::to_string(id)));
    if (model["state_name"] != "LOCKED") {
      if (!quiet && !progress.is_null() && tty) draw(progress, tty, true);
      if (model["state_name"] == "ERROR") {
        return fail(ErrorCode::kFailedPrecondition,
                    "model " + std::to_string(id) + " is in ERROR: " + to_text(model["error"]));
      }
      return model;
    }
    if (model["progress"].is_object() && model["progress"].value("files_total", 0) > 0) {
      progress = model["progress"];
    }
    auto now = std::chrono::steady_clock::now();
    // On a terminal 5 redraws a second; in a log one line every 5 seconds.
    if (!quiet && !progress.is_null() && (tty || now - last_line > std::chrono::seconds(5))) {
      draw(progress, tty, false);
      last_line = now;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

void print_model(const Context& ctx, const Json& m) {
  if (ctx.output == Output::kJson) {
    print_object(ctx, m);
    return;
  }
  const Json& s = m["source"];
  const Json& f = m.value("model", Json::object());
  std::vector<std::pair<std::string, std::string>> fields = {
      {"ID", to_text(m["id"])},
      {"Name", to_text(m["name"])},
      {"State", to_text(m["state_name"])},
      {"Source", to_text(s.value("uri", Json("")))},
      {"Commit", to_text(s.value("commit", Json("")))},
      {"Datastore", to_text(m["datastore_id"])},
      {"Format", to_text(m["format"])},
      {"Size", human_bytes(m.value("size", int64_t{0}))},
      {"Files", std::to_string(s.value("files", Json::array()).size()) +
                    (f.contains("files_verified") ? " (verified)" : "")},
  };
  if (m["state_name"] == "ERROR") fields.push_back({"Error", to_text(m["error"])});
  if (m["progress"].is_object()) {
    const Json& p = m["progress"];
    fields.push_back({"Progress", human_bytes(p.value("bytes_done", int64_t{0})) + " / " +
                                      human_bytes(p.value("bytes_total", int64_t{0})) + ", files " +
                                      std::to_string(p.value("files_done", 0)) + "/" +
                                      std::to_string(p.value("files_total", 0))});
  }
  if (!f.empty()) {
    double params = static_cast<double>(f.value("parameters", int64_t{0}));
    char billions[32];
    if (params >= 1e9) {
      std::snprintf(billions, sizeof billions, "%.2f B", params / 1e9);
    } else {
      std::snprintf(billions, sizeof billions, "%.1f M", params / 1e6);
    }
    fields.insert(fields.end(),
                  {{"Architecture", to_text(f["architecture"])},
                   {"Parameters", billions},
                   {"Dtype", to_text(f["dtype"])},
                   {"Layers", to_text(f["layers"])},
                   {"Heads", to_text(f["heads"]) + " (KV " + to_text(f["kv_heads"]) + ")"},
                   {"Context", to_text(f["context_length"]) + " tokens"},
                   {"Weights", human_bytes(f.value("weight_bytes", int64_t{0}))},
                   {"Tensor parallel", join(f["tensor_parallel_sizes"], "/")},
                   {"Fits", join(f["fits"], ", ")}});
  }
  print_fields(fields);
}

void add_marketplace_commands(CLI::App& app, Context& ctx) {
  auto* market =
      app.add_subcommand("marketplace", "Where models come from (Hugging Face, mirrors)");
  market->require_subcommand(1);
  market->add_subcommand("list", "List marketplaces")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json items, list_all(api, "/api/v1/marketplaces?limit=1000"));
      print_list(ctx, items, marketplace_columns());
      return {};
    });
  });
  auto target = std::make_shared<std::string>();
  auto* show = market->add_subcommand("show", "Show a marketplace");
  show->add_option("marketplace", *target, "Marketplace id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "marketplaces", *target));
      FAB_ASSIGN_OR_RETURN(Json m, api.get("/api/v1/marketplaces/" + std::to_string(id)));
      print_object(ctx, m);
      return {};
    });
  });
  auto url = std::make_shared<std::string>();
  auto description = std::make_shared<std::string>();
  auto* create = market->add_subcommand(
      "create", "Create a Hugging Face marketplace, e.g. a mirror (administrators)");
  create->add_option("name", *target, "Name")->required();
  create->add_option("--url", *url, "The Hub's URL, as HF_ENDPOINT (https://hf-mirror.example)")
      ->required();
  create->add_option("--description", *description, "What it is");
  create->callback([&ctx, target, url, description] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json m,
                           api.post("/api/v1/marketplaces", Json{{"name", *target},
                                                                 {"kind", "huggingface"},
                                                                 {"url", *url},
                                                                 {"description", *description}}));
      if (ctx.output == Output::kJson) {
        print_object(ctx, m);
      } else {
        std::cout << "Marketplace " << to_text(m["id"]) << " created" << std::endl;
      }
      return {};
    });
  });
  for (bool enable : {true, false}) {
    auto* sub = market->add_subcommand(enable ? "enable" : "disable",
                                       enable ? "Let imports use a marketplace (administrators)"
                                              : "Stop imports from a marketplace (administrators)");
    sub->add_option("marketplace", *target, "Marketplace id or name")->required();
    sub->callback([&ctx, target, enable] {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "marketplaces", *target));
        FAB_TRY(api.call("PUT", "/api/v1/marketplaces/" + std::to_string(id),
                         Json{{"enabled", enable}}));
        std::cout << "Marketplace " << id << (enable ? " enabled" : " disabled") << std::endl;
        return {};
      });
    });
  }
  auto* del = market->add_subcommand("delete", "Delete a marketplace (administrators)");
  del->add_option("marketplace", *target, "Marketplace id or name")->required();
  del->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "marketplaces", *target));
      FAB_TRY(api.del("/api/v1/marketplaces/" + std::to_string(id)));
      std::cout << "Marketplace " << id << " deleted" << std::endl;
      return {};
    });
  });
}

struct ImportFlags {
  std::string source;
  std::string name;
  std::string datastore = "1";
  std::string marketplace;
  std::vector<std::string> include;
  std::vector<std::string> exclude;
  std::string token;
  std::string group;
  std::string description;
  bool no_wait = false;
};

}  // namespace

void add_model_commands(CLI::App& app, Context& ctx) {
  add_marketplace_commands(app, ctx);
  auto* model = app.add_subcommand("model", "Import and manage models (MODEL images)");
  model->require_subcommand(1);
  auto flags = std::make_shared<ImportFlags>();
  auto* import = model->add_subcommand(
      "import", "Import hf://ORG/NAME[@REVISION], pinned to its commit and verified");
  import->add_option("source", flags->source, "hf://ORG/NAME[@REVISION] (default revision main)")
      ->required();
  import->add_option("--name", flags->name, "Image name (default: NAME in lower case)");
  import->add_option("--datastore", flags->datastore, "Image datastore id or name (default 1)");
  import->add_option("--marketplace", flags->marketplace,
                     "Hugging Face marketplace id or name (default: the first enabled)");
  import->add_option("--include", flags->include,
                     "Only files matching these patterns (default: *.safetensors, *.json, "
                     "tokenizer*, ...)");
  import->add_option("--exclude", flags->exclude, "Leave out files matching these patterns");
  import->add_option("--token", flags->token,
                     "Hub token for gated or private repositories (default: $HF_TOKEN); "
                     "stored sealed");
  import->add_option("--group", flags->group, "Group that owns the model (default: yours)");
  import->add_option("--description", flags->description, "What it is for");
  import->add_flag("--no-wait", flags->no_wait, "Return once the import is accepted");
  import->callback([&ctx, flags] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
  Json body{{"source", flags->source}};
  if (!flags->name.empty()) body["name"] = flags->name;
  FAB_ASSIGN_OR_RETURN(body["datastore_id"], resolve_datastore(api, flags->datastore));
  if (!flags->marketplace.empty()) {
    FAB_ASSIGN_OR_RETURN(body["marketplace_id"],
                         resolve_id(api, "marketplaces", flags->marketplace));
  }
  if (!flags->include.empty()) body["include"] = flags->include;
  if (!flags->exclude.empty()) body["exclude"] = flags->exclude;
  std::string token = flags->token;
  if (token.empty() && std::getenv("HF_TOKEN")) token = std::getenv("HF_TOKEN");
  if (!token.empty()) body["token"] = token;
  if (!flags->group.empty()) {
    FAB_ASSIGN_OR_RETURN(body["gid"], resolve_id(api, "groups", flags->group));
  }
  if (!flags->description.empty()) body["description"] = flags->description;
  FAB_ASSIGN_OR_RETURN(Json m, api.post("/api/v1/models", body));
  int64_t id = m["id"].get<int64_t>();
  if (ctx.output == Output::kTable) {
    std::cerr << "Model " << id << " (" << to_text(m["name"])
              << "): " << to_text(m["source"]["repo"]) << " at commit "
              << to_text(m["source"]["commit"]) << ", " << m["source"]["files"].size() << " files, "
              << human_bytes(m["progress"].value("bytes_total", int64_t{0})) << std::endl;
  }
  if (!flags->no_wait) {
    FAB_ASSIGN_OR_RETURN(m, wait_model(api, id, ctx.output == Output::kJson));
  }
  if (ctx.output == Output::kJson) {
    print_object(ctx, m);
  } else {
    std::cout << "Model " << id << " " << to_text(m["state_name"]) << std::endl;
  }
  return {};
});
}  // namespace fabrica::cli
);
model->add_subcommand("list", "List the models you may use")->callback([&ctx] {
  ctx.run([&]() -> Result<void> {
    FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
    FAB_ASSIGN_OR_RETURN(Json items, list_all(api, "/api/v1/models?limit=1000"));
    print_list(ctx, items, model_columns());
    return {};
  });
});
auto target = std::make_shared<std::string>();
auto* show = model->add_subcommand("show", "Show a model: commit, files, sizing, GPUs that fit");
show->add_option("model", *target, "Model id or name")->required();
show->callback([&ctx, target] {
  ctx.run([&]() -> Result<void> {
    FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
    FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "models", *target));
    FAB_ASSIGN_OR_RETURN(Json m, api.get("/api/v1/models/" + std::to_string(id)));
    print_model(ctx, m);
    return {};
  });
});
auto* wait = model->add_subcommand("wait", "Wait for an import to finish, with progress");
wait->add_option("model", *target, "Model id or name")->required();
wait->callback([&ctx, target] {
  ctx.run([&]() -> Result<void> {
    FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
    FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "models", *target));
    FAB_ASSIGN_OR_RETURN(Json m, wait_model(api, id, ctx.output == Output::kJson));
    std::cout << "Model " << id << " " << to_text(m["state_name"]) << std::endl;
    return {};
  });
});
auto* del = model->add_subcommand(
    "delete", "Delete a model, or cancel its import (partial files stay for a retry)");
del->add_option("model", *target, "Model id or name")->required();
del->callback([&ctx, target] {
  ctx.run([&]() -> Result<void> {
    FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
    FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "models", *target));
    FAB_TRY(api.del("/api/v1/models/" + std::to_string(id)));
    std::cout << "Model " << id << " deleted" << std::endl;
    return {};
  });
});
}

}  // namespace fabrica::cli
