#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "client/http_client.h"
#include "core/error.h"
#include "core/json.h"

namespace fabrica::cli {

// ~/.config/fabrica/config.json (mode 0600): where the server is and the login token.
struct Config {
  std::string endpoint = "http://127.0.0.1:8470";
  std::string token;
  std::string user;
  std::string ca_file;  // CA certificates (PEM) an https endpoint is verified with.
};
std::string config_path();
Config load_config();
Result<void> save_config(const Config& config);

enum class Output { kTable, kJson };

// State shared by every command: flags, config, and the outcome to exit with.
struct Context {
  Output output = Output::kTable;
  std::string endpoint_flag;
  std::string ca_file_flag;
  Config config;
  int exit_code = 0;
  bool hint_login = true;  // An Unauthenticated error suggests `fabrica login`.

  // Endpoint: --endpoint, then FABRICA_ENDPOINT, then the config file.
  std::string endpoint() const;
  // Token: FABRICA_TOKEN, then the config file.
  std::string token() const;
  // CA file: --ca-file, then FABRICA_CA_FILE, then the config file (empty: the system's).
  std::string ca_file() const;
  Result<client::ApiClient> api();
  // Runs `action`; on failure prints "Error: message" to stderr and sets exit_code 1.
  void run(const std::function<Result<void>()>& action);
};

struct Column {
  std::string title;
  std::function<std::string(const Json&)> value;
};
// A column showing the JSON field `key` as text.
Column field(std::string title, std::string key);
// Prints `items` as an aligned table, or as JSON with -o json.
void print_list(const Context& ctx, const Json& items, const std::vector<Column>& columns);
// 1610612736 -> "1.5 GiB".
std::string human_bytes(int64_t bytes);
// Prints one object as "KEY : value" lines (headings capitalised, sizes in human units,
// nested objects indented below their key), or as JSON with -o json.
void print_object(const Context& ctx, const Json& object);
std::string to_text(const Json& value);

// Resolves a user or group given by id or by name ("alice") to its id.
Result<int64_t> resolve_id(client::ApiClient& api, std::string_view collection,
                           const std::string& id_or_name);
// "KEY : value" lines in the order given, keys padded to one width.
void print_fields(const std::vector<std::pair<std::string, std::string>>& fields);
// Follows next_cursor from `target` (which already holds a '?') and returns up to `limit` items.
Result<Json> list_all(client::ApiClient& api, const std::string& target, size_t limit = SIZE_MAX);
// Reads a password: the given flag value, else FABRICA_PASSWORD, else a prompt without echo.
Result<std::string> read_password(const std::optional<std::string>& flag, const char* prompt);

// "128G", "512M", "1T" or plain MiB, as MiB; kInvalidArgument naming `flag`.
Result<int64_t> parse_megabytes(const std::string& text, const std::string& flag);

// "30d", "12h", "90m", "3600s" or plain seconds.
Result<int64_t> parse_duration(const std::string& text);

void add_session_commands(CLI::App& app, Context& ctx);
void add_vdc_commands(CLI::App& app, Context& ctx);
void add_quota_commands(CLI::App& app, Context& ctx);
void add_apikey_commands(CLI::App& app, Context& ctx);
void add_endpoint_commands(CLI::App& app, Context& ctx);
void add_system_commands(CLI::App& app, Context& ctx);
void add_usage_commands(CLI::App& app, Context& ctx);
void add_audit_commands(CLI::App& app, Context& ctx);
void add_user_commands(CLI::App& app, Context& ctx);
void add_group_commands(CLI::App& app, Context& ctx);
void add_acl_commands(CLI::App& app, Context& ctx);
void add_permission_commands(CLI::App& app, Context& ctx);
void add_host_commands(CLI::App& app, Context& ctx);
void add_cluster_commands(CLI::App& app, Context& ctx);
void add_template_commands(CLI::App& app, Context& ctx);
void add_vm_commands(CLI::App& app, Context& ctx);
void add_datastore_commands(CLI::App& app, Context& ctx);
void add_image_commands(CLI::App& app, Context& ctx);
void add_vnet_commands(CLI::App& app, Context& ctx);
void add_model_commands(CLI::App& app, Context& ctx);
void add_app_commands(CLI::App& app, Context& ctx);
// The same for collections listed whole, without ?name= (datastores, vnets).
// The id of the one item in `items` (of `collection`, e.g. "templates") named `name`:
// kNotFound when none, kInvalidArgument listing the ids when several (in different groups).
Result<int64_t> one_named(std::string_view collection, const std::string& name, const Json& items);
Result<int64_t> resolve_listed(client::ApiClient& api, std::string_view collection,
                               const std::string& id_or_name);
inline Result<int64_t> resolve_vnet(client::ApiClient& api, const std::string& id_or_name) {
  return resolve_listed(api, "vnets", id_or_name);
}
inline Result<int64_t> resolve_datastore(client::ApiClient& api, const std::string& id_or_name) {
  return resolve_listed(api, "datastores", id_or_name);
}
Result<int64_t> resolve_host(client::ApiClient& api, const std::string& id_or_name);
Result<int64_t> resolve_cluster(client::ApiClient& api, const std::string& id_or_name);
// Each cluster given by id or name, as a JSON array of ids.
Result<Json> resolve_clusters(client::ApiClient& api, const std::vector<std::string>& given);

}  // namespace fabrica::cli
