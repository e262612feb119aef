#pragma once

#include <memory>
#include <string>

#include "core/error.h"

namespace fabrica::hypervisor {

// The host's side of VLAN networks: a bridge on an 802.1Q interface of a parent device, made
// when a VM needs it and removed when the last one goes. Thread-safe.
class HostNetwork {
 public:
  virtual ~HostNetwork() = default;
  // Makes <phydev>.<vlan_id> (802.1Q) and `bridge` on it, both up, with `mtu` when > 0.
  // Anything already there is kept. kUnavailable when `phydev` is missing.
  virtual Result<void> ensure_vlan_bridge(const std::string& phydev, int vlan_id,
                                          const std::string& bridge, int mtu) = 0;
  // Removes `bridge` and <phydev>.<vlan_id>; absent is fine.
  virtual Result<void> remove_vlan_bridge(const std::string& phydev, int vlan_id,
                                          const std::string& bridge) = 0;
};

// `ip link` on this host.
std::unique_ptr<HostNetwork> make_ip_link_network();

// "eth1.120"; a parent name too long for it gets a shortened one ("v120-<hash>"), as Linux
// interface names hold 15 characters.
std::string vlan_interface_name(const std::string& phydev, int vlan_id);

}  // namespace fabrica::hypervisor
