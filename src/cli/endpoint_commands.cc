// fabrica endpoint create|list|show|update|delete: a tenant's AI endpoints; fabrica usage
// list|totals: what their end users called.
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli/cli.h"
#include "core/object.h"

namespace fabrica::cli {
namespace {

// The backend credential from a file (one line; the newline is not part of it), so that it
// never shows in the shell's history or the process list.
Result<std::string> read_key_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return fail(ErrorCode::kInvalidArgument, "cannot read " + path, "--backend-key-file");
  std::stringstream text;
  text << in.rdbuf();
  std::string key = text.str();
  while (!key.empty() && (key.back() == '\n' || key.back() == '\r')) key.pop_back();
  if (key.empty())
    return fail(ErrorCode::kInvalidArgument, path + " is empty", "--backend-key-file");
  return key;
}

struct EndpointFlags {
  std::string target, name, model, key_file, group, description;
  std::vector<std::string> backends;
  bool clear_key = false;
};

void print_endpoint(const Context& ctx, const Json& e) {
  if (ctx.output == Output::kJson) return print_object(ctx, e);
  print_fields({{"ID", to_text(e["id"])},
                {"NAME", to_text(e["name"])},
                {"GROUP", to_text(e["gid"])},
                {"MODEL", to_text(e["model"])},
                {"BACKENDS", to_text(e["backends"])},
                {"BACKEND KEY", e.value("backend_key_set", false) ? "set (never shown)" : "none"},
                {"DESCRIPTION", to_text(e["description"])},
                {"CREATED", to_text(e["created_at"])}});
}

}  // namespace

void add_endpoint_commands(CLI::App& app, Context& ctx) {
  auto* endpoint = app.add_subcommand(
      "endpoint", "AI endpoints: the models your end users call through fabrica-gateway");
  endpoint->require_subcommand(1);
  auto f = std::make_shared<EndpointFlags>();

  auto* create = endpoint->add_subcommand("create", "Define an endpoint");
  create->add_option("name", f->name, "Endpoint name (API keys name it)")->required();
  create->add_option("--model", f->model, "The model name end users call")->required();
  create
      ->add_option("--backend", f->backends,
                   "An OpenAI-compatible backend URL (repeatable), e.g. http://vllm-0:8000")
      ->required();
  create->add_option("--backend-key-file", f->key_file,
                     "A file holding the backends' bearer token (stored sealed, never shown)");
  create->add_option("--group", f->group, "The tenant (default: your group)");
  create->add_option("--description", f->description, "What it serves");
  create->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      Json body{{"name", f->name}, {"model", f->model}, {"backends", f->backends}};
      if (!f->key_file.empty()) {
        FAB_ASSIGN_OR_RETURN(body["backend_key"], read_key_file(f->key_file));
      }
      if (!f->group.empty()) {
        FAB_ASSIGN_OR_RETURN(body["gid"], resolve_id(api, "groups", f->group));
      }
      if (!f->description.empty()) body["description"] = f->description;
      FAB_ASSIGN_OR_RETURN(Json e, api.post("/api/v1/endpoints", body));
      if (ctx.output == Output::kJson) return print_object(ctx, e), Result<void>{};
      std::cout << "Endpoint " << to_text(e["id"]) << " (" << f->name << ") serves " << f->model
                << " from " << f->backends.size() << " backend"
                << (f->backends.size() == 1 ? "" : "s") << std::endl;
      return {};
    });
  });

  endpoint->add_subcommand("list", "List the endpoints you can see")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json all, list_all(api, "/api/v1/endpoints?limit=1000"));
      print_list(ctx, all,
                 {field("ID", "id"),
                  field("NAME", "name"),
                  field("GROUP", "gid"),
                  field("MODEL", "model"),
                  {"BACKENDS", [](const Json& e) { return std::to_string(e["backends"].size()); }},
                  {"KEY", [](const Json& e) {
                     return std::string(e.value("backend_key_set", false) ? "set" : "-");
                   }}});
      return {};
    });
  });

  auto* show = endpoint->add_subcommand("show", "Show an endpoint (never its backend key)");
  show->add_option("endpoint", f->target, "Endpoint id or name")->required();
  show->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "endpoints", f->target));
      FAB_ASSIGN_OR_RETURN(Json e, api.get("/api/v1/endpoints/" + std::to_string(id)));
      print_endpoint(ctx, e);
      return {};
    });
  });

  auto* update = endpoint->add_subcommand("update", "Change an endpoint's model, backends or key");
  update->add_option("endpoint", f->target, "Endpoint id or name")->required();
  update->add_option("--model", f->model, "The model name end users call");
  update->add_option("--backend", f->backends, "Backend URLs, replacing the current ones");
  update->add_option("--backend-key-file", f->key_file, "A new backend key, from a file");
  update->add_flag("--no-backend-key", f->clear_key, "Remove the backend key");
  update->add_option("--description", f->description, "What it serves");
  update->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "endpoints", f->target));
      Json body = Json::object();
      if (!f->model.empty()) body["model"] = f->model;
      if (!f->backends.empty()) body["backends"] = f->backends;
      if (!f->key_file.empty()) {
        FAB_ASSIGN_OR_RETURN(body["backend_key"], read_key_file(f->key_file));
      }
      if (f->clear_key) body["backend_key"] = "";
      if (!f->description.empty()) body["description"] = f->description;
      if (body.empty()) {
        return fail(ErrorCode::kInvalidArgument,
                    "give --model, --backend, --backend-key-file, --no-backend-key or "
                    "--description");
      }
      FAB_ASSIGN_OR_RETURN(Json e,
                           api.call("PUT", "/api/v1/endpoints/" + std::to_string(id), body));
      print_endpoint(ctx, e);
      return {};
    });
  });

  auto* del = endpoint->add_subcommand("delete", "Delete an endpoint");
  del->add_option("endpoint", f->target, "Endpoint id or name")->required();
  del->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "endpoints", f->target));
      FAB_TRY(api.del("/api/v1/endpoints/" + std::to_string(id)));
      std::cout << "Endpoint " << id << " deleted" << std::endl;
      return {};
    });
  });
}

namespace {

// The query shared by `usage list` and `usage totals`.
struct UsageFlags {
  std::string group;
  std::string endpoint;
  std::string since;  // A duration back from now: 24h, 7d.
  size_t limit = 50;
};

Result<std::string> usage_query(client::ApiClient& api, const UsageFlags& f) {
  std::string q;
  if (!f.group.empty()) {
    FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", f.group));
    q += "&gid=" + std::to_string(gid);
  }
  if (!f.endpoint.empty()) {
    FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "endpoints", f.endpoint));
    q += "&endpoint_id=" + std::to_string(id);
  }
  if (!f.since.empty()) {
    FAB_ASSIGN_OR_RETURN(int64_t seconds, parse_duration(f.since));
    q += "&since=" + std::to_string(std::time(nullptr) - seconds);
  }
  return q;
}

}  // namespace

void add_usage_commands(CLI::App& app, Context& ctx) {
  auto* usage = app.add_subcommand("usage", "Metered model-gateway requests (tokens, latency)");
  usage->require_subcommand(1);
  auto f = std::make_shared<UsageFlags>();
  auto flags = [f](CLI::App* cmd) {
    cmd->add_option("--group", f->group, "Only this tenant (id or name)");
    cmd->add_option("--endpoint", f->endpoint, "Only this endpoint (id or name)");
    cmd->add_option("--since", f->since, "Only the last ..., e.g. 24h or 7d");
  };
  auto* list = usage->add_subcommand("list", "Usage records, oldest first");
  flags(list);
  list->add_option("--limit", f->limit, "How many (default 50, at most 1000)");
  list->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(std::string q, usage_query(api, *f));
      FAB_ASSIGN_OR_RETURN(
          Json page,
          api.get("/api/v1/usage?limit=" + std::to_string(std::min<size_t>(f->limit, 1000)) + q));
      Column when{"TIME",
                  [](const Json& r) { return format_time(r["time_ms"].get<int64_t>() / 1000); }};
      Column ms{"MS", [](const Json& r) {
                  return std::to_string(static_cast<int64_t>(r["latency_ms"].get<double>()));
                }};
      print_list(ctx, page["items"],
                 {when, field("GROUP", "gid"), field("KEY", "apikey_id"),
                  field("ENDPOINT", "endpoint"), field("KIND", "kind"), field("STATUS", "status"),
                  field("IN", "input_tokens"), field("OUT", "output_tokens"), ms});
      return {};
    });
  });
  auto* totals = usage->add_subcommand("totals", "Requests and tokens per tenant and endpoint");
  flags(totals);
  totals->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(std::string q, usage_query(api, *f));
      FAB_ASSIGN_OR_RETURN(Json t,
                           api.get("/api/v1/usage/totals" + (q.empty() ? "" : "?" + q.substr(1))));
      print_list(ctx, t["items"],
                 {field("GROUP", "gid"), field("ENDPOINT", "endpoint"), field("MODEL", "model"),
                  field("REQUESTS", "requests"), field("ERRORS", "errors"),
                  field("INPUT", "input_tokens"), field("OUTPUT", "output_tokens")});
      return {};
    });
  });
}

}  // namespace fabrica::cli
