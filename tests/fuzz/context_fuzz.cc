// A VM's context variables rendered into the shell file the guest sources.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/context.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto json = fabrica::parse_json(std::string_view(reinterpret_cast<const char*>(data), size));
  if (json) (void)fabrica::render_context_sh(*json);
  return 0;
}
