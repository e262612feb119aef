#pragma once

#include <map>
#include <memory>
#include <mutex>

#include "agent/hypervisor/hypervisor.h"

namespace fabrica::hypervisor {

// A hypervisor in memory for the simulated fleet (`fabrica-agent --simulate`): domains are
// parsed, kept and moved through the same states, with the same idempotence and the same
// refusals as libvirt's (the conformance test runs both), but nothing boots. Thread-safe.
std::unique_ptr<Hypervisor> make_simulated_hypervisor();

}  // namespace fabrica::hypervisor
