#include <iostream>

#include "cli/cli.h"

namespace fabrica::cli {

void add_group_commands(CLI::App& app, Context& ctx) {
  auto* group = app.add_subcommand("group", "Manage groups");
  group->require_subcommand(1);

  group->add_subcommand("list", "List the groups you may see")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json all, list_all(api, "/api/v1/groups?limit=1000"));
      print_list(ctx, all,
                 {field("ID", "id"), field("NAME", "name"), field("OWNER", "uid"),
                  field("PERMISSIONS", "permissions"), field("CREATED", "created_at")});
      return {};
    });
  });

  auto target = std::make_shared<std::string>();
  auto* show = group->add_subcommand("show", "Show a group and its users");
  show->add_option("group", *target, "Group id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "groups", *target));
      FAB_ASSIGN_OR_RETURN(Json g, api.get("/api/v1/groups/" + std::to_string(id)));
      print_object(ctx, g);
      return {};
    });
  });

  auto name = std::make_shared<std::string>();
  auto* create = group->add_subcommand("create", "Create a group");
  create->add_option("name", *name, "Group name")->required();
  create->callback([&ctx, name] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json g, api.post("/api/v1/groups", Json{{"name", *name}}));
      if (ctx.output == Output::kJson)
        print_object(ctx, g);
      else
        std::cout << "ID: " << g["id"] << std::endl;
      return {};
    });
  });

  auto* del = group->add_subcommand("delete", "Delete an empty group");
  del->add_option("group", *target, "Group id or name")->required();
  del->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, "groups", *target));
      FAB_TRY(api.del("/api/v1/groups/" + std::to_string(id)));
      std::cout << "Group " << id << " deleted" << std::endl;
      return {};
    });
  });

  auto member = std::make_shared<std::string>();
  for (bool add : {true, false}) {
    auto* cmd = group->add_subcommand(
        add ? "addadmin" : "deladmin",
        add ? "Make a member the group's tenant administrator (administrators)"
            : "Remove a tenant administrator (administrators)");
    cmd->add_option("group", *target, "Group id or name")->required();
    cmd->add_option("user", *member, "User id or name")->required();
    cmd->callback([&ctx, target, member, add] {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t gid, resolve_id(api, "groups", *target));
        FAB_ASSIGN_OR_RETURN(int64_t uid, resolve_id(api, "users", *member));
        std::string base = "/api/v1/groups/" + std::to_string(gid) + "/admins";
        FAB_ASSIGN_OR_RETURN(Json g, add ? api.post(base, Json{{"uid", uid}})
                                         : api.del(base + "/" + std::to_string(uid)));
        if (ctx.output == Output::kJson) return print_object(ctx, g), Result<void>{};
        std::cout << "Group " << gid << " administrators: " << to_text(g["admins"]) << std::endl;
        return {};
      });
    });
  }
}

void add_acl_commands(CLI::App& app, Context& ctx) {
  auto* acl = app.add_subcommand("acl", "Manage ACL rules (administrators)");
  acl->require_subcommand(1);
  acl->add_subcommand("list", "List ACL rules")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/acl"));
      print_list(ctx, page["items"],
                 {field("ID", "id"), field("RULE", "rule"), field("USER", "user"),
                  field("RESOURCE", "resource"), field("RIGHTS", "rights"), field("ZONE", "zone"),
                  field("OWNERS", "owners")});
      return {};
    });
  });
  auto rule = std::make_shared<std::string>();
  auto* create =
      acl->add_subcommand("create", "Create a rule, e.g. \"@100 VM+IMAGE/* USE+MANAGE\"");
  create->add_option("rule", *rule, "USER RESOURCES/ID RIGHTS [ZONE]")->required();
  create->callback([&ctx, rule] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json r, api.post("/api/v1/acl", Json{{"rule", *rule}}));
      if (ctx.output == Output::kJson)
        print_object(ctx, r);
      else
        std::cout << "ID: " << r["id"] << " (" << to_text(r["rule"]) << ")" << std::endl;
      return {};
    });
  });
  auto id = std::make_shared<int64_t>(-1);
  auto* del = acl->add_subcommand("delete", "Delete a rule");
  del->add_option("id", *id, "Rule id")->required();
  del->callback([&ctx, id] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_TRY(api.del("/api/v1/acl/" + std::to_string(*id)));
      std::cout << "ACL rule " << *id << " deleted" << std::endl;
      return {};
    });
  });
}

void add_permission_commands(CLI::App& app, Context& ctx) {
  auto type = std::make_shared<std::string>();
  auto target = std::make_shared<std::string>();
  auto value = std::make_shared<std::string>();
  auto collection = [](const std::string& t) -> Result<std::string> {
    if (t == "user" || t == "users") return std::string("users");
    if (t == "group" || t == "groups") return std::string("groups");
    return fail(ErrorCode::kInvalidArgument, "object type must be user or group", "type");
  };
  auto* chmod =
      app.add_subcommand("chmod", "Set an object's permissions, e.g. chmod group 100 640");
  chmod->add_option("type", *type, "user or group")->required();
  chmod->add_option("object", *target, "Id or name")->required();
  chmod->add_option("permissions", *value, "Octal UMA digits for owner, group, other")->required();
  chmod->callback([&ctx, type, target, value, collection] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(std::string c, collection(*type));
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, c, *target));
      FAB_ASSIGN_OR_RETURN(Json out, api.post("/api/v1/" + c + "/" + std::to_string(id) + "/chmod",
                                              Json{{"permissions", *value}}));
      print_object(ctx, out);
      return {};
    });
  });
  auto* chown = app.add_subcommand("chown", "Change an object's owner, e.g. chown group 100 alice");
  chown->add_option("type", *type, "group")->required();
  chown->add_option("object", *target, "Id or name")->required();
  chown->add_option("owner", *value, "New owner: user id or name")->required();
  chown->callback([&ctx, type, target, value, collection] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(std::string c, collection(*type));
      if (c == "users") {
        return fail(ErrorCode::kInvalidArgument, "a user always owns itself; use user chgrp",
                    "type");
      }
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_id(api, c, *target));
      FAB_ASSIGN_OR_RETURN(int64_t uid, resolve_id(api, "users", *value));
      FAB_ASSIGN_OR_RETURN(Json out, api.post("/api/v1/" + c + "/" + std::to_string(id) + "/chown",
                                              Json{{"uid", uid}}));
      print_object(ctx, out);
      return {};
    });
  });
}

}  // namespace fabrica::cli
