// Inventory documents as agents send them, and VM requests as tenants send them.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "inventory/hardware.h"
#include "sched/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto json = fabrica::parse_json(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!json) return 0;
  if (auto inv = fabrica::inventory::HostInventory::from_json(*json)) (void)inv->to_json();
  if (auto request = fabrica::sched::VmRequest::from_json(*json, "request.")) {
    (void)request->to_json();
  }
  return 0;
}
