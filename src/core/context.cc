#include "core/context.h"

namespace fabrica {
namespace {

constexpr size_t kMaxVariables = 256;
constexpr size_t kMaxBytes = 1 << 20;

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  auto alpha = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  if (!alpha(name[0])) return false;
  for (char c : name) {
    if (!alpha(c) && !(c >= '0' && c <= '9')) return false;
  }
  return true;
}

}  // namespace

std::string shell_quote(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

Result<std::string> render_context_sh(const Json& variables) {
  if (!variables.is_object()) {
    return fail(ErrorCode::kInvalidArgument, "must be an object of NAME: value", "context");
  }
  if (variables.size() > kMaxVariables) {
    return fail(ErrorCode::kInvalidArgument, "at most 256 variables", "context");
  }
  std::string out = "# Context variables, written by Fabrica. Source it: . /mnt/context.sh\n";
  for (const auto& [name, value] : variables.items()) {  // nlohmann keeps keys sorted.
    std::string field = "context." + name;
    if (!valid_name(name)) {
      return fail(ErrorCode::kInvalidArgument, "must match [A-Za-z_][A-Za-z0-9_]*", field);
    }
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
    } else if (value.is_number() || value.is_boolean()) {
      text = value.dump();
    } else {
      return fail(ErrorCode::kInvalidArgument, "must be a string, number or boolean", field);
    }
    if (text.find('\0') != std::string::npos) {
      return fail(ErrorCode::kInvalidArgument, "must not hold a NUL byte", field);
    }
    out += name + "=" + shell_quote(text) + "\n";
    if (out.size() > kMaxBytes) {
      return fail(ErrorCode::kInvalidArgument, "the context is larger than 1 MiB", "context");
    }
  }
  return out;
}

}  // namespace fabrica
