#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace fabrica {

// Replaces `path` with `content`, mode 0600, so that a reader or a restart after a crash sees
// the old file or the new one, never a mix: writes PATH.tmp, fsyncs it, renames it over PATH,
// and (with `sync_directory`) fsyncs the directory so the rename itself survives a power cut.
// kInternal naming the path on failure; the temporary file is removed.
Result<void> write_file_atomically(const std::string& path, std::string_view content,
                                   bool sync_directory = true);

}  // namespace fabrica
