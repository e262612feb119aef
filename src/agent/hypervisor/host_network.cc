#include "agent/hypervisor/host_network.h"

#include <filesystem>
#include <functional>

#include "core/process.h"

namespace fabrica::hypervisor {
namespace {

bool link_exists(const std::string& name) {
  return std::filesystem::exists("/sys/class/net/" + name);
}

class IpLinkNetwork : public HostNetwork {
 public:
  Result<void> ensure_vlan_bridge(const std::string& phydev, int vlan_id, const std::string& bridge,
                                  int mtu) override {
    if (!link_exists(phydev)) {
      return fail(ErrorCode::kUnavailable,
                  "this host has no interface " + phydev + " for VLAN " + std::to_string(vlan_id));
    }
    std::string vlan = vlan_interface_name(phydev, vlan_id);
    if (!link_exists(vlan)) {
      FAB_TRY(run_process({"ip", "link", "add", "link", phydev, "name", vlan, "type", "vlan", "id",
                           std::to_string(vlan_id)}));
    }
    if (!link_exists(bridge)) {
      FAB_TRY(run_process({"ip", "link", "add", "name", bridge, "type", "bridge"}));
    }
    if (mtu > 0) {
      FAB_TRY(run_process({"ip", "link", "set", vlan, "mtu", std::to_string(mtu)}));
      FAB_TRY(run_process({"ip", "link", "set", bridge, "mtu", std::to_string(mtu)}));
    }
    FAB_TRY(run_process({"ip", "link", "set", vlan, "master", bridge}));
    FAB_TRY(run_process({"ip", "link", "set", vlan, "up"}));
    FAB_TRY(run_process({"ip", "link", "set", bridge, "up"}));
    return {};
  }

  Result<void> remove_vlan_bridge(const std::string& phydev, int vlan_id,
                                  const std::string& bridge) override {
    if (link_exists(bridge)) FAB_TRY(run_process({"ip", "link", "del", bridge}));
    std::string vlan = vlan_interface_name(phydev, vlan_id);
    if (link_exists(vlan)) FAB_TRY(run_process({"ip", "link", "del", vlan}));
    return {};
  }
};

}  // namespace

std::unique_ptr<HostNetwork> make_ip_link_network() { return std::make_unique<IpLinkNetwork>(); }

std::string vlan_interface_name(const std::string& phydev, int vlan_id) {
  std::string name = phydev + "." + std::to_string(vlan_id);
  if (name.size() <= 15) return name;
  char hash[9];
  std::snprintf(hash, sizeof hash, "%08zx", std::hash<std::string>{}(phydev)&0xffffffffu);
  return "v" + std::to_string(vlan_id) + "-" + std::string(hash).substr(0, 8);
}

}  // namespace fabrica::hypervisor
