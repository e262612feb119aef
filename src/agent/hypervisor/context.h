#pragma once

#include <string>

#include "core/context.h"
#include "core/error.h"

namespace fabrica::hypervisor {

// Builds `iso_path` (0600) holding context.sh (see core/context.h) with xorriso: ISO 9660 with
// Joliet and Rock Ridge, volume label CONTEXT, staged in `dir`/context and removed after.
// Rebuilding replaces the old image atomically.
Result<void> build_context_iso(const std::string& dir, const std::string& iso_path,
                               const std::string& context_sh);

}  // namespace fabrica::hypervisor
