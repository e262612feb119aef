#pragma once

#include <string>
#include <vector>

#include "core/error.h"

namespace fabrica {

// Runs `argv` (argv[0] looked up in PATH, no shell) with stdin from /dev/null and returns what
// it wrote to stdout and stderr together. kUnavailable when it cannot start; kInternal, with
// the program's output in the message, when it exits non-zero or is killed.
Result<std::string> run_process(const std::vector<std::string>& argv);

}  // namespace fabrica
