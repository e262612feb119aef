// ACL rule syntax ("@100 VM+IMAGE/* USE+MANAGE #0"): whatever parses prints back to a rule that
// parses to the same rule.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "auth/acl.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto rule = fabrica::auth::AclRule::parse(text);
  if (!rule) return 0;
  std::string printed = rule->to_string();
  auto again = fabrica::auth::AclRule::parse(printed);
  if (!again || again->to_string() != printed) std::abort();
  return 0;
}
