#include "agent/hypervisor/context.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "core/process.h"

namespace fabrica::hypervisor {
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

Result<void> build_context_iso(const std::string& dir, const std::string& iso_path,
                               const std::string& context_sh) {
  namespace fs = std::filesystem;
  fs::path root = fs::path(dir) / "context";
  std::error_code ec;
  fs::remove_all(root, ec);
  fs::create_directories(root, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot create " + root.string() + ": " + ec.message());
  ::chmod(root.c_str(), 0700);
  fs::path file = root / "context.sh";
  {
    std::ofstream out(file, std::ios::trunc);
    if (!out) return fail(ErrorCode::kInternal, "cannot write " + file.string());
    ::chmod(file.c_str(), 0600);
    out << context_sh;
    if (!out.flush()) return fail(ErrorCode::kInternal, "cannot write " + file.string());
  }
  std::string tmp = iso_path + ".tmp";
  fs::remove(tmp, ec);
  FAB_TRY(run_process({"xorriso", "-as", "mkisofs", "-quiet", "-V", "CONTEXT", "-J", "-R", "-o",
                       tmp, root.string()}));
  fs::remove_all(root, ec);  // The image is the only copy kept.
  ::chmod(tmp.c_str(), 0600);
  fs::rename(tmp, iso_path, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot write " + iso_path + ": " + ec.message());
  return {};
}

}  // namespace fabrica::hypervisor
