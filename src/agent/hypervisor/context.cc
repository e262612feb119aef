#include "agent/hypervisor/context.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "core/process.h"

namespace fabrica::hypervisor {

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
