// VDCs, group administrators, quotas, end-user API keys and the audit log.
#include <charconv>
#include <iostream>
#include <set>

#include "cli/cli.h"

namespace fabrica::cli {
namespace {

// VDCs by id or by name (the list is short: one per tenant).
Result<int64_t> resolve_vdc(client::ApiClient& api, const std::string& id_or_name) {
  int64_t id = 0;
  auto [ptr, ec] = std::from_chars(id_or_name.data(), id_or_name.data() + id_or_name.size(), id);
  if (ec == std::errc() && ptr == id_or_name.data() + id_or_name.size()) return id;
  FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/vdcs"));
  for (const auto& v : page["items"]) {
    if (v["name"] == id_or_name) return v["id"].get<int64_t>();
  }
  return fail(ErrorCode::kNotFound, "VDC \"" + id_or_name + "\" not found");
}

void print_vdc(const Context& ctx, const Json& v) {
  if (ctx.output == Output::kJson) return print_object(ctx, v);
  std::cout << "ID     : " << v["id"] << "\nNAME   : " << to_text(v["name"])
            << "\nGROUPS : " << to_text(v["groups"]) << "\n\nRESOURCES\n";
  print_list(ctx, v["resources"], {field("KIND", "kind"), field("ID", "id")});
  std::cout << "\nACL RULES OWNED\n";
  print_list(ctx, v["acl"], {field("ID", "id"), field("RULE", "rule")});
}

void print_quota(const Context& ctx, const Json& q) {
  if (ctx.output == Output::kJson) return print_object(ctx, q);
  std::cout << to_text(q["owner"]) << " " << to_text(q["name"]) << " (id " << q["id"] << ")\n";
  Json rows = Json::array();
  auto add_scope = [&](const std::string& scope, const Json& limits, const Json& usage) {
    std::set<std::string> keys;
    for (const auto& [k, v] : limits.items()) keys.insert(k);
    for (const auto& [k, v] : usage.items()) keys.insert(k);
    for (const auto& k : keys) {
      Json limit = limits.contains(k) ? limits[k] : Json(-1);
      std::string shown = limit == -1 ? "default" : limit == -2 ? "unlimited" : limit.dump();
      rows.push_back({{"quota", k},
                      {"scope", scope},
                      {"limit", shown},
                      {"used", usage.contains(k) ? usage[k] : Json(0)}});
    }
  };
  add_scope("all", q["limits"], q["usage"]);
  for (const auto& [cid, s] : q["clusters"].items()) {
    add_scope("cluster " + cid, s["limits"], s["usage"]);
  }
  print_list(ctx, rows,
             {field("QUOTA", "quota"), field("SCOPE", "scope"), field("LIMIT", "limit"),
              field("USED", "used")});
  if (!q["user_defaults"].empty()) {
    std::cout << "\nDEFAULTS FOR USERS\n";
    Json defaults = Json::array();
    for (const auto& [k, v] : q["user_defaults"].items()) {
      defaults.push_back({{"quota", k}, {"limit", v}});
    }
    print_list(ctx, defaults, {field("QUOTA", "quota"), field("LIMIT", "limit")});
  }
  if (!q["holds"].empty()) {
    std::cout << "\nHELD BY\n";
    print_list(ctx, q["holds"],
               {field("HOLD", "id"), field("HOLDER", "holder"), field("UID", "uid"),
                field("CLUSTER", "cluster"),
                Column{"AMOUNTS", [](const Json& h) { return h["amounts"].dump(); }},
                field("COMMITTED", "committed")});
  }
}

// "users"/"groups" and its id, from `quota show user alice`.
Result<std::string> quota_target(client::ApiClient& api, const std::string& kind,
                                 const std::string& who) {
  if (kind != "user" && kind != "group") {
    return fail(ErrorCode::kInvalidArgument, "say user or group", "kind");
  }
  std::string collection = kind + "s";
  FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, collection, who));
  return "/api/v1/" + collection + "/" + std::to_string(id) + "/quota";
}

}  // namespace

void add_vdc_commands(CLI::App& app, Context& ctx) {
  auto* vdc = app.add_subcommand("vdc", "Manage Virtual Data Centers (administrators)");
  vdc->require_subcommand(1);
  vdc->add_subcommand("list", "List VDCs")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/vdcs"));
      print_list(
          ctx, page["items"],
          {field("ID", "id"), field("NAME", "name"), field("GROUPS", "groups"),
           Column{"RESOURCES",
                  [](const Json& v) {
                    std::string out;
                    for (const auto& r : v["resources"]) {
                      out += (out.empty() ? "" : ",") + r["kind"].get<std::string>() + ":" +
                             r["id"].dump();
                    }
                    return out.empty() ? std::string("-") : out;
                  }},
           Column{"RULES", [](const Json& v) { return std::to_string(v["rules"].size()); }}});
      return {};
    });
  });
  auto target = std::make_shared<std::string>();
  auto* show = vdc->add_subcommand("show", "Show a VDC and the ACL rules it owns");
  show->add_option("vdc", *target, "VDC id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vdc(api, *target));
      FAB_ASSIGN_OR_RETURN(Json v, api.get("/api/v1/vdcs/" + std::to_string(id)));
      print_vdc(ctx, v);
      return {};
    });
  });
  auto* create = vdc->add_subcommand("create", "Create a VDC");
  create->add_option("name", *target, "VDC name")->required();
  create->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json v, api.post("/api/v1/vdcs", Json{{"name", *target}}));
      if (ctx.output == Output::kJson) return print_object(ctx, v), Result<void>{};
      std::cout << "ID: " << v["id"] << std::endl;
      return {};
    });
  });
  auto* del = vdc->add_subcommand("delete", "Delete a VDC and the access it gave");
  del->add_option("vdc", *target, "VDC id or name")->required();
  del->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vdc(api, *target));
      FAB_TRY(api.del("/api/v1/vdcs/" + std::to_string(id)));
      std::cout << "VDC " << id << " deleted" << std::endl;
      return {};
    });
  });
  auto member = std::make_shared<std::string>();
  for (bool add : {true, false}) {
    auto* cmd = vdc->add_subcommand(
        add ? "addgroup" : "delgroup",
        add ? "Give a group the VDC's resources" : "Take the VDC's resources from a group");
    cmd->add_option("vdc", *target, "VDC id or name")->required();
    cmd->add_option("group", *member, "Group id or name")->required();
    cmd->callback([&ctx, target, member, add] {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vdc(api, *target));
        FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", *member));
        std::string base = "/api/v1/vdcs/" + std::to_string(id) + "/groups";
        FAB_ASSIGN_OR_RETURN(Json v, add ? api.post(base, Json{{"gid", gid}})
                                         : api.del(base + "/" + std::to_string(gid)));
        print_vdc(ctx, v);
        return {};
      });
    });
  }
  for (std::string kind : {"cluster", "host", "datastore", "vnet", "marketplace", "app"}) {
    for (bool add : {true, false}) {
      auto* cmd = vdc->add_subcommand(
          (add ? "add" : "del") + kind,
          (add ? "Add a " : "Remove a ") + kind + (add ? " to the VDC" : " from the VDC"));
      cmd->add_option("vdc", *target, "VDC id or name")->required();
      cmd->add_option(kind, *member, kind + " id or name")->required();
      cmd->callback([&ctx, target, member, kind, add] {
        ctx.run([&]() -> Result<void> {
          FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
          FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vdc(api, *target));
          int64_t rid = -1;
          if (kind == "cluster") {
            FAB_ASSIGN_OR_RETURN(rid, resolve_cluster(api, *member));
          } else if (kind == "host") {
            FAB_ASSIGN_OR_RETURN(rid, resolve_host(api, *member));
          } else if (kind == "datastore") {
            FAB_ASSIGN_OR_RETURN(rid, resolve_datastore(api, *member));
          } else if (kind == "marketplace") {
            FAB_ASSIGN_OR_RETURN(rid, resolve_id(api, "marketplaces", *member));
          } else if (kind == "app") {
            FAB_ASSIGN_OR_RETURN(rid, resolve_id(api, "apps", *member));
          } else {
            FAB_ASSIGN_OR_RETURN(rid, resolve_vnet(api, *member));
          }
          std::string base = "/api/v1/vdcs/" + std::to_string(id) + "/resources";
          FAB_ASSIGN_OR_RETURN(Json v,
                               add ? api.post(base, Json{{"kind", kind}, {"id", rid}})
                                   : api.del(base + "/" + kind + "/" + std::to_string(rid)));
          print_vdc(ctx, v);
          return {};
        });
      });
    }
  }
}

void add_quota_commands(CLI::App& app, Context& ctx) {
  auto* quota = app.add_subcommand("quota", "Show and set quotas of users and groups");
  quota->require_subcommand(1);
  auto kind = std::make_shared<std::string>();
  auto who = std::make_shared<std::string>();
  auto* show = quota->add_subcommand("show", "Limits, usage and what holds it");
  show->add_option("kind", *kind, "user or group")->required();
  show->add_option("name", *who, "User or group id or name")->required();
  show->callback([&ctx, kind, who] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(std::string target, quota_target(api, *kind, *who));
      FAB_ASSIGN_OR_RETURN(Json q, api.get(target));
      print_quota(ctx, q);
      return {};
    });
  });
  auto values = std::make_shared<std::vector<std::string>>();
  auto cluster = std::make_shared<std::string>();
  auto defaults = std::make_shared<bool>(false);
  auto* set = quota->add_subcommand(
      "set",
      "Set limits: KEY=VALUE... (vms, running_vms, vcpus, memory_mb, system_disk_mb, "
      "gpu:<model>, mig:<profile>, images, image_mb, leases; -1 default, -2 unlimited)");
  set->add_option("kind", *kind, "user or group")->required();
  set->add_option("name", *who, "User or group id or name")->required();
  set->add_option("limits", *values, "e.g. gpu:H100=16 mig:1g.10gb=14 vms=20")->required();
  set->add_option("--cluster", *cluster, "Scope the limits to this cluster (id or name)");
  set->add_flag("--defaults", *defaults, "Set the group's defaults for its users");
  set->callback([&ctx, kind, who, values, cluster, defaults] {
    ctx.run([&]() -> Result<void> {
      Json limits = Json::object();
      for (const auto& v : *values) {
        size_t eq = v.rfind('=');
        int64_t n = 0;
        if (eq == std::string::npos ||
            std::from_chars(v.data() + eq + 1, v.data() + v.size(), n).ptr != v.data() + v.size()) {
          return fail(ErrorCode::kInvalidArgument, "expected KEY=NUMBER, got \"" + v + "\"",
                      "limits");
        }
        limits[v.substr(0, eq)] = n;
      }
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(std::string target, quota_target(api, *kind, *who));
      Json body{{*defaults ? "user_defaults" : "limits", limits}};
      if (!cluster->empty()) {
        FAB_ASSIGN_OR_RETURN(body["cluster"], resolve_cluster(api, *cluster));
      }
      FAB_ASSIGN_OR_RETURN(Json q, api.call("PUT", target, body));
      print_quota(ctx, q);
      return {};
    });
  });
  auto fix = std::make_shared<bool>(false);
  auto* recount = quota->add_subcommand(
      "recount", "Recompute every usage from what holds it and report differences");
  recount->add_flag("--fix", *fix, "Correct the differences found");
  recount->callback([&ctx, fix] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json r, api.post("/api/v1/quotas/recount", Json{{"fix", *fix}}));
      if (ctx.output == Output::kJson) return print_object(ctx, r), Result<void>{};
      if (r["drift"].empty()) {
        std::cout << "Usage matches a recount: no drift" << std::endl;
        return {};
      }
      print_list(ctx, r["drift"],
                 {field("OWNER", "owner"), field("ID", "id"), field("CLUSTER", "cluster"),
                  field("QUOTA", "key"), field("STORED", "stored"), field("COUNTED", "counted")});
      if (!*fix) ctx.exit_code = 1;
      return {};
    });
  });
}

void add_apikey_commands(CLI::App& app, Context& ctx) {
  auto* key = app.add_subcommand("apikey", "Manage end-user API keys for the model gateway");
  key->require_subcommand(1);
  Column expires{"EXPIRES", [](const Json& k) { return to_text(k["expires_at"]); }};
  key->add_subcommand("list", "List API keys")->callback([&ctx, expires] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json all, list_all(api, "/api/v1/apikeys?limit=1000"));
      print_list(ctx, all,
                 {field("ID", "id"), field("NAME", "name"), field("PREFIX", "prefix"),
                  field("GROUP", "gid"), field("ENDPOINTS", "endpoints"), field("RPM", "rpm"),
                  field("TPM", "tpm"), expires, field("REVOKED", "revoked")});
      return {};
    });
  });
  auto name = std::make_shared<std::string>();
  auto endpoints = std::make_shared<std::vector<std::string>>();
  auto rpm = std::make_shared<int64_t>(0);
  auto tpm = std::make_shared<int64_t>(0);
  auto lifetime = std::make_shared<std::string>();
  auto group = std::make_shared<std::string>();
  auto* create = key->add_subcommand("create", "Issue a key (its secret is shown once)");
  create->add_option("name", *name, "Key name")->required();
  create->add_option("--endpoints", *endpoints, "Endpoint names it may call (* = all)")
      ->delimiter(',')
      ->required();
  create->add_option("--rpm", *rpm, "Requests per minute (0 = no limit)");
  create->add_option("--tpm", *tpm, "Tokens per minute (0 = no limit)");
  create->add_option("--expires", *lifetime, "Lifetime, e.g. 30d (default: never)");
  create->add_option("--group", *group, "The tenant (default: your group)");
  create->callback([&ctx, name, endpoints, rpm, tpm, lifetime, group] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      Json body{{"name", *name}, {"endpoints", *endpoints}, {"rpm", *rpm}, {"tpm", *tpm}};
      if (!lifetime->empty()) {
        FAB_ASSIGN_OR_RETURN(int64_t seconds, parse_duration(*lifetime));
        body["expires_in"] = seconds;
      }
      if (!group->empty()) {
        FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", *group));
        body["gid"] = gid;
      }
      FAB_ASSIGN_OR_RETURN(Json k, api.post("/api/v1/apikeys", body));
      if (ctx.output == Output::kJson) return print_object(ctx, k), Result<void>{};
      std::cout << "API key " << k["id"] << " (shown once; store it now):\n  "
                << k["key"].get<std::string>() << "\n"
                << "The model gateways accept it within about a second (they fetch keys from "
                   "fabricad every second)."
                << std::endl;
      return {};
    });
  });
  auto id = std::make_shared<std::string>();
  auto* show = key->add_subcommand("show", "Show a key (never its secret)");
  show->add_option("key", *id, "Key id or name")->required();
  show->callback([&ctx, id] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t key_id, resolve_id(api, "apikeys", *id));
      FAB_ASSIGN_OR_RETURN(Json k, api.get("/api/v1/apikeys/" + std::to_string(key_id)));
      print_object(ctx, k);
      return {};
    });
  });
  auto* revoke = key->add_subcommand("revoke", "Revoke a key; it stays listed");
  revoke->add_option("key", *id, "Key id or name")->required();
  revoke->callback([&ctx, id] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t key_id, resolve_id(api, "apikeys", *id));
      FAB_ASSIGN_OR_RETURN(Json k, api.post("/api/v1/apikeys/" + std::to_string(key_id) + "/revoke",
                                            Json::object()));
      if (ctx.output == Output::kJson) return print_object(ctx, k), Result<void>{};
      std::cout << "API key " << key_id << " revoked" << std::endl;
      return {};
    });
  });
  auto* del = key->add_subcommand("delete", "Delete a key");
  del->add_option("key", *id, "Key id or name")->required();
  del->callback([&ctx, id] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t key_id, resolve_id(api, "apikeys", *id));
      FAB_TRY(api.del("/api/v1/apikeys/" + std::to_string(key_id)));
      std::cout << "API key " << key_id << " deleted" << std::endl;
      return {};
    });
  });
}

void add_audit_commands(CLI::App& app, Context& ctx) {
  auto* audit = app.add_subcommand("audit", "Read the audit log (administrators)");
  audit->require_subcommand(1);
  auto user = std::make_shared<std::string>();
  auto outcome = std::make_shared<std::string>();
  auto action = std::make_shared<std::string>();
  auto since = std::make_shared<std::string>();
  auto limit = std::make_shared<size_t>(50);
  auto* list = audit->add_subcommand("list", "Newest entries first");
  list->add_option("--user", *user, "Only this user (id or name)");
  list->add_option("--outcome", *outcome, "success, denied or failed");
  list->add_option("--action", *action, "Exact route, e.g. \"POST /api/v1/auth/tokens\"");
  list->add_option("--since", *since, "RFC 3339 time, e.g. 2026-11-24T00:00:00Z");
  list->add_option("--limit", *limit, "How many (default 50)");
  list->callback([&ctx, user, outcome, action, since, limit] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      std::string target = "/api/v1/audit?limit=" + std::to_string(std::min<size_t>(*limit, 1000));
      if (!user->empty()) {
        FAB_ASSIGN_OR_RETURN(int64_t uid, resolve_id(api, "users", *user));
        target += "&uid=" + std::to_string(uid);
      }
      if (!outcome->empty()) target += "&outcome=" + client::url_encode(*outcome);
      if (!action->empty()) target += "&action=" + client::url_encode(*action);
      if (!since->empty()) target += "&since=" + client::url_encode(*since);
      FAB_ASSIGN_OR_RETURN(Json page, api.get(target));
      print_list(ctx, page["items"],
                 {field("TIME", "time"), field("USER", "user"), field("FROM", "address"),
                  field("ACTION", "action"), field("TARGET", "target"), field("STATUS", "status"),
                  field("OUTCOME", "outcome")});
      return {};
    });
  });
}

}  // namespace fabrica::cli
