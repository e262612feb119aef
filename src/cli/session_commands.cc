#include <filesystem>
#include <iostream>

#include "cli/cli.h"
#include "core/version.h"

namespace fabrica::cli {

Result<int64_t> parse_duration(const std::string& text) {
  if (text.empty()) return fail(ErrorCode::kInvalidArgument, "empty duration", "expires");
  int64_t unit = 1;
  std::string digits = text;
  switch (text.back()) {
    case 'd':
      unit = 86400;
      digits.pop_back();
      break;
    case 'h':
      unit = 3600;
      digits.pop_back();
      break;
    case 'm':
      unit = 60;
      digits.pop_back();
      break;
    case 's':
      digits.pop_back();
      break;
    default:
      break;
  }
  try {
    size_t used = 0;
    int64_t n = std::stoll(digits, &used);
    if (used != digits.size() || n <= 0) throw std::invalid_argument(text);
    return n * unit;
  } catch (const std::exception&) {
    return fail(ErrorCode::kInvalidArgument, "durations look like 30d, 12h, 90m or 3600s",
                "expires");
  }
}

namespace {

std::vector<Column> token_columns() {
  return {field("ID", "id"),
          field("NAME", "name"),
          field("UID", "uid"),
          field("CREATED", "created_at"),
          field("EXPIRES", "expires_at"),
          Column{"STATUS", [](const Json& t) {
                   return std::string(t.value("revoked", false) ? "revoked" : "active") +
                          (t.value("current", false) ? " (this session)" : "");
                 }}};
}

}  // namespace

void add_session_commands(CLI::App& app, Context& ctx) {
  auto* login = app.add_subcommand("login", "Log in and store a token in the config file");
  auto user = std::make_shared<std::string>();
  auto password = std::make_shared<std::optional<std::string>>();
  auto expires = std::make_shared<std::string>("30d");
  login->add_option("-u,--user", *user, "User name (default: the last one, else admin)");
  login->add_option("--password", *password, "Password (else FABRICA_PASSWORD or a prompt)");
  login->add_option("--expires", *expires, "Token lifetime, e.g. 30d, 12h");
  login->callback([&ctx, user, password, expires] {
    ctx.hint_login = false;  // A refused login needs no advice to log in.
    ctx.run([&]() -> Result<void> {
      std::string name = !user->empty()             ? *user
                         : !ctx.config.user.empty() ? ctx.config.user
                                                    : "admin";
      FAB_ASSIGN_OR_RETURN(int64_t lifetime, parse_duration(*expires));
      FAB_ASSIGN_OR_RETURN(std::string secret, read_password(*password, "Password: "));
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(
          Json token, api.login(name, secret, Json{{"name", "cli"}, {"expires_in", lifetime}}));
      // The token this one replaces in the config file is revoked, not left valid for weeks.
      if (!ctx.config.token.empty() && ctx.config.endpoint == ctx.endpoint()) {
        FAB_ASSIGN_OR_RETURN(
            auto http, client::HttpClient::create(ctx.endpoint(), {.ca_file = ctx.ca_file()}));
        client::ApiClient previous(std::move(http), ctx.config.token);
        if (auto me = previous.get("/api/v1/auth/whoami"); me && (*me)["token_id"].is_number()) {
          (void)previous.del("/api/v1/auth/tokens/" +
                             std::to_string((*me)["token_id"].get<int64_t>()));
        }
      }
      ctx.config.endpoint = ctx.endpoint();
      ctx.config.ca_file = ctx.ca_file();
      if (!ctx.config.ca_file.empty()) {
        std::error_code ec;
        auto absolute = std::filesystem::absolute(ctx.config.ca_file, ec);
        if (!ec) ctx.config.ca_file = absolute.string();
      }
      ctx.config.token = token["token"].get<std::string>();
      ctx.config.user = name;
      FAB_TRY(save_config(ctx.config));
      std::cout << "Logged in to " << ctx.config.endpoint << " as " << name << " (token "
                << token["id"] << ", expires " << to_text(token["expires_at"]) << ")" << std::endl;
      return {};
    });
  });

  app.add_subcommand("logout", "Revoke the stored token and forget it")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      auto me = api.get("/api/v1/auth/whoami");
      if (me)
        FAB_TRY(api.del("/api/v1/auth/tokens/" + std::to_string((*me)["token_id"].get<int64_t>())));
      ctx.config.token.clear();
      FAB_TRY(save_config(ctx.config));
      std::cout << "Logged out" << std::endl;
      return {};
    });
  });

  app.add_subcommand("whoami", "Show who the stored token logs in as")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json me, api.get("/api/v1/auth/whoami"));
      print_object(ctx, me);
      return {};
    });
  });

  app.add_subcommand("version", "Show this client's and the server's versions")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json v, api.get("/api/v1/version"));
      v["client"] = kVersion;
      print_object(ctx, v);
      return {};
    });
  });

  auto* token = app.add_subcommand("token", "Manage your API tokens");
  token->require_subcommand(1);
  auto uid = std::make_shared<std::optional<int64_t>>();
  auto* list = token->add_subcommand("list", "List tokens");
  list->add_option("--uid", *uid, "Another user's tokens (administrators)");
  list->callback([&ctx, uid] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      std::string target = "/api/v1/auth/tokens";
      if (*uid) target += "?uid=" + std::to_string(**uid);
      FAB_ASSIGN_OR_RETURN(Json page, api.get(target));
      print_list(ctx, page["items"], token_columns());
      return {};
    });
  });
  auto* create = token->add_subcommand("create", "Create a token (asks for your password)");
  auto name = std::make_shared<std::string>("token");
  create->add_option("--name", *name, "Token name");
  create->add_option("--expires", *expires, "Lifetime, e.g. 30d, 12h");
  create->add_option("--password", *password, "Password (else FABRICA_PASSWORD or a prompt)");
  create->callback([&ctx, name, expires, password] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(int64_t lifetime, parse_duration(*expires));
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json me, api.get("/api/v1/auth/whoami"));
      FAB_ASSIGN_OR_RETURN(std::string secret, read_password(*password, "Password: "));
      FAB_ASSIGN_OR_RETURN(Json t, api.login(me["name"].get<std::string>(), secret,
                                             Json{{"name", *name}, {"expires_in", lifetime}}));
      if (ctx.output == Output::kJson) {
        print_object(ctx, t);
      } else {
        std::cout << "Token " << t["id"] << " (shown once): " << to_text(t["token"]) << std::endl;
      }
      return {};
    });
  });
  auto id = std::make_shared<int64_t>(-1);
  auto* revoke = token->add_subcommand("revoke", "Revoke a token");
  revoke->add_option("id", *id, "Token id")->required();
  revoke->callback([&ctx, id] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json t, api.del("/api/v1/auth/tokens/" + std::to_string(*id)));
      if (ctx.output == Output::kJson)
        print_object(ctx, t);
      else
        std::cout << "Token " << *id << " revoked" << std::endl;
      return {};
    });
  });
}

}  // namespace fabrica::cli
