#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace fabrica {

// The id of a VM's n-th operation on the agent channel: "<vm id>-<n>". fabricad issues it,
// the agent journals and reports by it.
inline std::string operation_id(int64_t vm_id, int64_t seq) {
  return std::to_string(vm_id) + "-" + std::to_string(seq);
}

// The VM an operation id belongs to; nullopt for any other shape.
inline std::optional<int64_t> operation_vm(std::string_view id) {
  auto dash = id.find('-');
  if (dash == std::string_view::npos || dash == 0) return std::nullopt;
  int64_t vm = -1;
  auto [end, ec] = std::from_chars(id.data(), id.data() + dash, vm);
  if (ec != std::errc() || end != id.data() + dash || vm < 0) return std::nullopt;
  return vm;
}

}  // namespace fabrica
