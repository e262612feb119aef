#include <algorithm>
#include <iostream>

#include "cli/cli.h"

namespace fabrica::cli {
namespace {

std::vector<Column> user_columns() {
  return {field("ID", "id"),
          field("NAME", "name"),
          field("GID", "gid"),
          field("GROUPS", "groups"),
          Column{"ENABLED", [](const Json& u) { return u.value("enabled", false) ? "yes" : "no"; }},
          field("PERMISSIONS", "permissions"),
          field("CREATED", "created_at")};
}

// Registers "fabrica user VERB ID" posting `body_of()` to /users/ID/SUFFIX.
void add_user_action(CLI::App* user, Context& ctx, const std::string& verb, const std::string& help,
                     const std::string& suffix,
                     std::function<Result<Json>(client::ApiClient&)> body_of,
                     std::shared_ptr<std::string> target) {
  auto* cmd = user->add_subcommand(verb, help);
  cmd->add_option("user", *target, "User id or name")->required();
  cmd->callback([&ctx, target, suffix, body_of] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "users", *target));
      FAB_ASSIGN_OR_RETURN(Json body, body_of(api));
      FAB_ASSIGN_OR_RETURN(Json out,
                           api.post("/api/v1/users/" + std::to_string(id) + "/" + suffix, body));
      if (!out.is_null())
        print_object(ctx, out);
      else
        std::cout << "OK" << std::endl;
      return {};
    });
  });
}

}  // namespace

void add_user_commands(CLI::App& app, Context& ctx) {
  auto* user = app.add_subcommand("user", "Manage users");
  user->require_subcommand(1);

  auto filter_group = std::make_shared<std::string>();
  auto limit = std::make_shared<int>(1000);
  auto* list = user->add_subcommand("list", "List the users you may see");
  list->add_option("--group", *filter_group, "Only users whose primary group is this");
  list->add_option("--limit", *limit, "At most this many");
  list->callback([&ctx, filter_group, limit] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      std::string query = "/api/v1/users?limit=" + std::to_string(std::clamp(*limit, 1, 1000));
      if (!filter_group->empty()) {
        FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", *filter_group));
        query += "&gid=" + std::to_string(gid);
      }
      FAB_ASSIGN_OR_RETURN(Json all,
                           list_all(api, query, static_cast<size_t>(std::max(*limit, 0))));
      print_list(ctx, all, user_columns());
      return {};
    });
  });

  auto target = std::make_shared<std::string>();
  auto* show = user->add_subcommand("show", "Show one user");
  show->add_option("user", *target, "User id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "users", *target));
      FAB_ASSIGN_OR_RETURN(Json u, api.get("/api/v1/users/" + std::to_string(id)));
      print_object(ctx, u);
      return {};
    });
  });

  auto name = std::make_shared<std::string>();
  auto password = std::make_shared<std::optional<std::string>>();
  auto group = std::make_shared<std::string>();
  auto groups = std::make_shared<std::vector<std::string>>();
  auto disabled = std::make_shared<bool>(false);
  auto* create = user->add_subcommand("create", "Create a user");
  create->add_option("name", *name, "User name")->required();
  create->add_option("--password", *password, "Password (else FABRICA_PASSWORD or a prompt)");
  create->add_option("--group", *group, "Primary group id or name (default: users)");
  create->add_option("--groups", *groups, "Secondary groups")->delimiter(',');
  create->add_flag("--disabled", *disabled, "Create the user disabled");
  create->callback([&ctx, name, password, group, groups, disabled] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(std::string secret, read_password(*password, "New user's password: "));
      Json body{{"name", *name}, {"password", secret}, {"enabled", !*disabled}};
      if (!group->empty()) {
        FAB_ASSIGN_OR_RETURN(body["gid"], resolve_id(api, "groups", *group));
      }
      Json secondary = Json::array();
      for (const auto& g : *groups) {
        FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", g));
        secondary.push_back(gid);
      }
      if (!secondary.empty()) body["groups"] = secondary;
      FAB_ASSIGN_OR_RETURN(Json u, api.post("/api/v1/users", body));
      if (ctx.output == Output::kJson)
        print_object(ctx, u);
      else
        std::cout << "ID: " << u["id"] << std::endl;
      return {};
    });
  });

  auto* del = user->add_subcommand("delete", "Delete a user (and revoke their tokens)");
  del->add_option("user", *target, "User id or name")->required();
  del->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "users", *target));
      FAB_TRY(api.del("/api/v1/users/" + std::to_string(id)));
      std::cout << "User " << id << " deleted" << std::endl;
      return {};
    });
  });

  auto passwd_target = std::make_shared<std::string>();
  add_user_action(
      user, ctx, "passwd", "Set a user's password", "password",
      [password](client::ApiClient&) -> Result<Json> {
        FAB_ASSIGN_OR_RETURN(std::string secret, read_password(*password, "New password: "));
        return Json{{"password", secret}};
      },
      passwd_target);
  user->get_subcommand("passwd")->add_option("--password", *password, "New password");

  auto chgrp_target = std::make_shared<std::string>();
  auto new_group = std::make_shared<std::string>();
  add_user_action(
      user, ctx, "chgrp", "Change a user's primary group", "chgrp",
      [new_group](client::ApiClient& api) -> Result<Json> {
        FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", *new_group));
        return Json{{"gid", gid}};
      },
      chgrp_target);
  user->get_subcommand("chgrp")->add_option("group", *new_group, "Group id or name")->required();

  auto addgroup_target = std::make_shared<std::string>();
  add_user_action(
      user, ctx, "addgroup", "Add a secondary group", "groups",
      [new_group](client::ApiClient& api) -> Result<Json> {
        FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", *new_group));
        return Json{{"gid", gid}};
      },
      addgroup_target);
  user->get_subcommand("addgroup")->add_option("group", *new_group, "Group id or name")->required();

  for (const char* verb : {"enable", "disable"}) {
    add_user_action(
        user, ctx, verb, std::string(verb) + " a user", verb,
        [](client::ApiClient&) -> Result<Json> { return Json::object(); },
        std::make_shared<std::string>());
  }
}

}  // namespace fabrica::cli
