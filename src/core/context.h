#pragma once

#include <string>
#include <string_view>

#include "core/error.h"
#include "core/json.h"

namespace fabrica {

// The OpenNebula contextualization idea: the guest finds a CD-ROM labelled CONTEXT holding
// context.sh, shell assignments of the VM's variables (hostname, SSH keys, HF_MODEL_ID,
// VLLM_PORT, tokens...). The file is data for the guest: nothing on the host runs it.
// fabricad validates a VM's context with render_context_sh; the agent writes it.

// 'it'\''s': safe inside any POSIX shell.
std::string shell_quote(std::string_view value);

// context.sh for `variables`, an object of NAME -> string, number or boolean, names sorted.
// kInvalidArgument (field "context.NAME") for a name that is not [A-Za-z_][A-Za-z0-9_]*, a value
// holding a NUL byte, or more than 256 variables / 1 MiB in all.
Result<std::string> render_context_sh(const Json& variables);

}  // namespace fabrica
