#include "cli/cli.h"

#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>

namespace fabrica::cli {

namespace fs = std::filesystem;

std::string config_path() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg) {
    return std::string(xdg) + "/fabrica/config.json";
  }
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.config/fabrica/config.json";
}

Config load_config() {
  Config config;
  std::ifstream in(config_path());
  if (!in) return config;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto json = parse_json(text);
  if (!json || !json->is_object()) return config;
  config.endpoint = json->value("endpoint", config.endpoint);
  config.token = json->value("token", "");
  config.user = json->value("user", "");
  config.ca_file = json->value("ca_file", "");
  return config;
}

Result<void> save_config(const Config& config) {
  fs::path path = config_path();
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  fs::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return fail(ErrorCode::kInternal, "cannot write " + tmp.string());
    ::chmod(tmp.c_str(), 0600);
    Json saved{{"endpoint", config.endpoint}, {"token", config.token}, {"user", config.user}};
    if (!config.ca_file.empty()) saved["ca_file"] = config.ca_file;
    out << dump_json(saved) << "\n";
  }
  fs::rename(tmp, path, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot write " + path.string() + ": " + ec.message());
  return {};
}

std::string Context::endpoint() const {
  if (!endpoint_flag.empty()) return endpoint_flag;
  if (const char* env = std::getenv("FABRICA_ENDPOINT"); env && *env) return env;
  return config.endpoint;
}

std::string Context::token() const {
  if (const char* env = std::getenv("FABRICA_TOKEN"); env && *env) return env;
  return config.token;
}

std::string Context::ca_file() const {
  if (!ca_file_flag.empty()) return ca_file_flag;
  if (const char* env = std::getenv("FABRICA_CA_FILE"); env && *env) return env;
  return config.ca_file;
}

Result<client::ApiClient> Context::api() {
  FAB_ASSIGN_OR_RETURN(auto http, client::HttpClient::create(endpoint(), {.ca_file = ca_file()}));
  return client::ApiClient(std::move(http), token());
}

void Context::run(const std::function<Result<void>()>& action) {
  auto result = action();
  if (result) return;
  const Error& e = result.error();
  std::cerr << "Error: " << e.message();
  if (!e.field().empty()) std::cerr << " (field: " << e.field() << ")";
  std::cerr << " [" << error_code_name(e.code()) << "]" << std::endl;
  if (e.code() == ErrorCode::kUnauthenticated && hint_login) {
    std::cerr << "Hint: run `fabrica login` (endpoint " << endpoint() << ")" << std::endl;
  }
  exit_code = 1;
}

std::string to_text(const Json& value) {
  if (value.is_string()) return value.get<std::string>().empty() ? "-" : value.get<std::string>();
  if (value.is_null()) return "-";
  if (value.is_array()) {
    std::string out;
    for (const auto& v : value) out += (out.empty() ? "" : ",") + to_text(v);
    return out.empty() ? "-" : out;
  }
  return value.dump();
}

Column field(std::string title, std::string key) {
  return Column{std::move(title), [key](const Json& j) {
                  return j.contains(key) ? to_text(j[key]) : std::string("-");
                }};
}

void print_list(const Context& ctx, const Json& items, const std::vector<Column>& columns) {
  if (ctx.output == Output::kJson) {
    std::cout << items.dump(2) << std::endl;
    return;
  }
  std::vector<std::vector<std::string>> rows;
  std::vector<size_t> width;
  for (const auto& c : columns) width.push_back(c.title.size());
  for (const auto& item : items) {
    std::vector<std::string> row;
    for (size_t i = 0; i < columns.size(); ++i) {
      row.push_back(columns[i].value(item));
      width[i] = std::max(width[i], row.back().size());
    }
    rows.push_back(std::move(row));
  }
  auto print_row = [&](const std::vector<std::string>& cells) {
    std::string line;
    for (size_t i = 0; i < cells.size(); ++i) {
      std::string cell = cells[i];
      if (i + 1 < cells.size()) cell.resize(width[i] + 2, ' ');
      line += cell;
    }
    std::cout << line << "\n";
  };
  std::vector<std::string> titles;
  for (const auto& c : columns) titles.push_back(c.title);
  print_row(titles);
  for (const auto& row : rows) print_row(row);
  std::cout.flush();
}

namespace {

// "memory_mb" -> "MEMORY MB" as a heading; the unit suffixes go where the value shows them.
std::string heading(std::string key) {
  for (std::string_view unit : {"_mb", "_kb", "_bytes"}) {
    if (key.ends_with(unit)) key.resize(key.size() - unit.size());
  }
  for (char& c : key) c = c == '_' ? ' ' : static_cast<char>(std::toupper(c));
  return key;
}

// 1536 with key "memory_mb" -> "1.5 GiB": sizes in human units by the key's suffix.
std::string field_text(const std::string& key, const Json& value) {
  int64_t scale = key.ends_with("_mb")      ? (1 << 20)
                  : key.ends_with("_kb")    ? 1024
                  : key.ends_with("_bytes") ? 1
                                            : 0;
  if (scale == 0 || !value.is_number_integer() || value.get<int64_t>() < 0) return to_text(value);
  return human_bytes(value.get<int64_t>() * scale);
}

void print_fields_of(const Json& object, const std::string& indent) {
  size_t width = 0;
  for (auto it = object.begin(); it != object.end(); ++it) {
    width = std::max(width, heading(it.key()).size());
  }
  for (auto it = object.begin(); it != object.end(); ++it) {
    std::string key = heading(it.key());
    key.resize(width, ' ');
    if (it->is_object() && !it->empty()) {
      std::cout << indent << key << " :\n";
      print_fields_of(*it, indent + "  ");
      continue;
    }
    std::string value;
    if (it->is_array()) {
      bool scalars = std::all_of(it->begin(), it->end(),
                                 [](const Json& v) { return !v.is_object() && !v.is_array(); });
      if (it->empty()) {
        value = "-";
      } else if (scalars) {
        for (const Json& v : *it) value += (value.empty() ? "" : ", ") + to_text(v);
      } else {
        value = std::to_string(it->size()) + " (-o json lists them)";
      }
    } else {
      value = it->is_object() ? "-" : field_text(it.key(), *it);
    }
    std::cout << indent << key << " : " << value << "\n";
  }
}

}  // namespace

std::string human_bytes(int64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0 || v >= 100 || v == static_cast<double>(static_cast<int64_t>(v))) {
    std::snprintf(buf, sizeof buf, "%.0f %s", v, kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  }
  return buf;
}

void print_object(const Context& ctx, const Json& object) {
  if (ctx.output == Output::kJson) {
    std::cout << object.dump(2) << std::endl;
    return;
  }
  print_fields_of(object, "");
  std::cout.flush();
}

Result<int64_t> parse_megabytes(const std::string& text, const std::string& flag) {
  std::string_view digits = text;
  int64_t scale = 1;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'M':
      case 'm':
        digits.remove_suffix(1);
        break;
      case 'G':
      case 'g':
        scale = 1024;
        digits.remove_suffix(1);
        break;
      case 'T':
      case 't':
        scale = 1024 * 1024;
        digits.remove_suffix(1);
        break;
      default:
        break;
    }
  }
  int64_t n = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size() || n < 1 ||
      n > (int64_t{1} << 40) / scale) {
    return fail(ErrorCode::kInvalidArgument,
                "\"" + text + "\" is not a size such as 128G, 512M or 1T", flag);
  }
  return n * scale;
}

Result<int64_t> resolve_listed(client::ApiClient& api, std::string_view collection,
                               const std::string& id_or_name) {
  int64_t id = 0;
  auto [ptr, ec] = std::from_chars(id_or_name.data(), id_or_name.data() + id_or_name.size(), id);
  if (ec == std::errc() && ptr == id_or_name.data() + id_or_name.size()) return id;
  FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/" + std::string(collection)));
  Json named = Json::array();
  for (const Json& item : page["items"]) {
    if (item["name"] == id_or_name) named.push_back(item);
  }
  return one_named(collection, id_or_name, named);
}

Result<int64_t> one_named(std::string_view collection, const std::string& name, const Json& items) {
  std::string noun(collection);
  noun.pop_back();
  if (items.empty()) return fail(ErrorCode::kNotFound, noun + " \"" + name + "\" not found", noun);
  if (items.size() == 1) return items[0]["id"].get<int64_t>();
  // Names are unique within a group: several in sight are in different groups.
  std::string ids;
  for (const Json& item : items) {
    ids += (ids.empty() ? "" : ", ") + std::to_string(item["id"].get<int64_t>()) + " (group " +
           to_text(item["gid"]) + ")";
  }
  return fail(ErrorCode::kInvalidArgument,
              std::to_string(items.size()) + " " + std::string(collection) + " are named \"" +
                  name + "\": " + ids + "; give the id",
              noun);
}

Result<int64_t> resolve_id(client::ApiClient& api, std::string_view collection,
                           const std::string& id_or_name) {
  int64_t id = 0;
  auto [ptr, ec] = std::from_chars(id_or_name.data(), id_or_name.data() + id_or_name.size(), id);
  if (ec == std::errc() && ptr == id_or_name.data() + id_or_name.size()) return id;
  FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/" + std::string(collection) +
                                          "?name=" + client::url_encode(id_or_name)));
  return one_named(collection, id_or_name, page["items"]);
}

void print_fields(const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t width = 0;
  for (const auto& [key, value] : fields) width = std::max(width, key.size());
  for (const auto& [key, value] : fields) {
    std::cout << key << std::string(width - key.size(), ' ') << " : " << value << "\n";
  }
}

Result<Json> list_all(client::ApiClient& api, const std::string& target, size_t limit) {
  Json all = Json::array();
  std::string cursor;
  while (all.size() < limit) {
    FAB_ASSIGN_OR_RETURN(Json page, api.get(target + cursor));
    for (auto& item : page["items"]) {
      if (all.size() < limit) all.push_back(std::move(item));
    }
    if (page["next_cursor"].is_null()) break;
    cursor = "&cursor=" + page["next_cursor"].get<std::string>();
  }
  return all;
}

Result<std::string> read_password(const std::optional<std::string>& flag, const char* prompt) {
  if (flag) return *flag;
  if (const char* env = std::getenv("FABRICA_PASSWORD"); env && *env) return std::string(env);
  std::string password;
  if (!::isatty(STDIN_FILENO)) {
    if (!std::getline(std::cin, password)) {
      return fail(ErrorCode::kInvalidArgument,
                  "no password given: pass --password, set FABRICA_PASSWORD, or write it on "
                  "standard input",
                  "password");
    }
    return password;
  }
  std::cerr << prompt << std::flush;
  termios old{};
  ::tcgetattr(STDIN_FILENO, &old);
  termios quiet = old;
  quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  std::getline(std::cin, password);
  ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
  std::cerr << std::endl;
  return password;
}

}  // namespace fabrica::cli
