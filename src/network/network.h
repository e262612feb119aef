#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "auth/authorizer.h"
#include "auth/identity.h"
#include "core/clock.h"
#include "core/object.h"
#include "store/store.h"

namespace fabrica::network {

// How a VM's NIC reaches the fabric. bridge: an existing Linux bridge on every host. vlan: the
// agent makes <phydev>.<vlan_id> and a bridge on it when a VM needs them and removes them when
// the last one goes. sriov: a VF of <phydev> passed through, with the lease's MAC (and VLAN)
// set on the VF.
enum class VnetMode { kBridge, kVlan, kSriov };
std::string_view vnet_mode_name(VnetMode mode);

// An address range (OpenNebula's AR): `size` consecutive leases. IP4: IPv4 addresses from
// `ip`; IP6: IPv6 addresses from `ip6`; IP4_6: both; ETHER: MAC addresses only. MACs run
// from `mac` (default 02:00 followed by the IPv4 address, as OpenNebula makes them).
struct AddressRange {
  int ar_id = 0;
  std::string type = "IP4";  // IP4, IP6, IP4_6, ETHER.
  std::string ip;            // First IPv4 address.
  std::string ip6;           // First IPv6 address.
  std::string mac;           // First MAC address.
  int64_t size = 0;
  Json to_json() const;
};

// One lease: which VM NIC (or a hold) has the address at `index` of range `ar_id`.
struct Lease {
  int ar_id = 0;
  int64_t index = 0;
  int64_t vm_id = -1;  // -1: held by hand (`vnet hold`).
  int nic_id = 0;
};

struct Vnet {
  ObjectHeader header;
  VnetMode mode = VnetMode::kBridge;
  std::string bridge;  // bridge: the existing bridge; vlan: made by the agent (default fvb<id>).
  std::string phydev;  // vlan, sriov: the parent interface.
  int vlan_id = -1;    // vlan: required; sriov: optional (set on the VF).
  int mtu = 0;         // 0: the bridge's.
  std::vector<int64_t> clusters;
  int prefix_length = 24;  // IPv4 netmask as a prefix.
  int prefix6_length = 64;
  std::string gateway;
  std::string gateway6;
  std::vector<std::string> dns;
  std::vector<AddressRange> ranges;
  std::vector<Lease> leases;
  int next_ar_id = 0;
  int64_t version = 0;

  int64_t size() const;  // All ranges.
  // With each lease's addresses unless `with_leases` is false (then "leases" is empty).
  Json to_api_json(bool with_leases = true) const;
};

struct NewVnet {
  std::string name;
  VnetMode mode = VnetMode::kBridge;
  std::string bridge;
  std::string phydev;
  int vlan_id = -1;
  int mtu = 0;
  std::vector<int64_t> clusters = {0};
  int prefix_length = 24;
  int prefix6_length = 64;
  std::string gateway;
  std::string gateway6;
  std::vector<std::string> dns;
  std::vector<AddressRange> ranges;
};

// What a VM's NIC gets: its addresses and everything the host and the guest need.
struct NicLease {
  int64_t vnet_id = -1;
  std::string vnet_name;
  int nic_id = 0;
  int ar_id = 0;
  std::string ip, ip6, mac;
  int prefix_length = 24;
  int prefix6_length = 64;
  std::string gateway, gateway6;
  std::vector<std::string> dns;
  int mtu = 0;
  VnetMode mode = VnetMode::kBridge;
  std::string bridge, phydev;
  int vlan_id = -1;
  std::vector<int64_t> clusters;
  Json to_json() const;  // For the VM record and the agent's command.
  // The guest's context variables for this NIC, OpenNebula's names: ETH<n>_IP, _MAC, _MASK,
  // _PREFIX, _GATEWAY, _DNS, _MTU, _IP6, _IP6_PREFIX, _GATEWAY6.
  Json context() const;
};

// "10.0.0.1" and back; nullopt when malformed.
std::optional<uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(uint32_t address);

// Virtual networks and their leases: the domain service behind /vnets. Leases live in the
// vnet's record, so taking one is a read-modify-write of one record in the VM's transaction:
// two VMs can never get the same address. Vnets are infrastructure (administrators create
// them); tenants use them through VDCs (NET by id or through a cluster). Thread-safe.
class Network {
 public:
  Network(store::Store& store, auth::Authorizer& authorizer, const Clock& clock)
      : store_(store), authorizer_(authorizer), clock_(clock) {}

  Result<Vnet> create(const auth::Caller& caller, const NewVnet& request);
  Result<Vnet> get(const auth::Caller& caller, int64_t id);
  Result<std::vector<Vnet>> list(const auth::Caller& caller);
  // kFailedPrecondition while VMs hold leases.
  Result<void> remove(const auth::Caller& caller, int64_t id);
  // Adds a range; kInvalidArgument when it overlaps another or is malformed.
  Result<Vnet> add_range(const auth::Caller& caller, int64_t id, AddressRange range);
  // kFailedPrecondition while any of its leases is taken.
  Result<Vnet> remove_range(const auth::Caller& caller, int64_t id, int ar_id);
  // Keeps an address out of use (MANAGE), or gives a held one back.
  Result<Vnet> hold(const auth::Caller& caller, int64_t id, const std::string& ip);
  Result<Vnet> release(const auth::Caller& caller, int64_t id, const std::string& ip);

  // In the VM's transaction: a lease on vnet `id` for NIC `nic_id` of VM `vm_id`; `ip` asks
  // for a given address. kNotFound (on `field`) unless `caller` may USE the vnet;
  // kFailedPrecondition when every address is taken or the one asked for is.
  Result<NicLease> lease(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                         int64_t vm_id, int nic_id, const std::optional<std::string>& ip,
                         const std::string& field);
  // Gives back every lease of VM `vm_id` on vnet `id`.
  Result<void> release_vm(store::Transaction& tx, int64_t id, int64_t vm_id);

 private:
  Result<Vnet> load(store::Transaction& tx, const auth::Caller& caller, int64_t id, Right right);
  template <typename Fn>
  Result<Vnet> mutate(const auth::Caller& caller, int64_t id, Right right, Fn&& change);

  store::Store& store_;
  auth::Authorizer& authorizer_;
  const Clock& clock_;
};

inline constexpr std::string_view kVnetType = "vnet";

}  // namespace fabrica::network
