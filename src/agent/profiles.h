#pragma once

#include <string_view>

#include "core/error.h"
#include "inventory/hardware.h"

namespace fabrica::agent {

// Synthetic but realistic inventory for simulated host `index` of a profile:
// "hgx-h100" (8x H100 SXM5, 4 NVSwitch, 8x ConnectX-7 NDR with 4 VFs each), "gh200"
// (Neoverse-V2 + GH200), "mig-h100" (8x H100 in MIG mode, 7x 1g.10gb each) or "cpu".
// kInvalidArgument otherwise. Shared by the simulator, the scheduler's tests and benchmarks.
Result<inventory::HostInventory> simulated_inventory(std::string_view profile, int index);

}  // namespace fabrica::agent
