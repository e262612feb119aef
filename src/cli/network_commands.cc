// fabrica vnet ...: virtual networks, their address ranges and leases.
#include <iostream>

#include "cli/cli.h"

namespace fabrica::cli {

namespace {

struct RangeFlags {
  std::string type, ip, ip6, mac;
  int64_t size = 0;
  void add(CLI::App* cmd, bool required) {
    cmd->add_option("--type", type, "IP4, IP6, IP4_6 or ETHER (from the addresses when left out)");
    cmd->add_option("--ip", ip, "First IPv4 address");
    cmd->add_option("--ip6", ip6, "First IPv6 address");
    cmd->add_option("--mac", mac, "First MAC address (default 02:00 + the IPv4 address)");
    auto* s = cmd->add_option("--size", size, "How many addresses");
    if (required) s->required();
  }
  Json json() const {
    Json r{{"size", size}};
    if (!type.empty()) r["type"] = type;
    if (!ip.empty()) r["ip"] = ip;
    if (!ip6.empty()) r["ip6"] = ip6;
    if (!mac.empty()) r["mac"] = mac;
    return r;
  }
};

void print_vnet(const Context& ctx, const Json& v) {
  if (ctx.output == Output::kJson) {
    print_object(ctx, v);
    return;
  }
  Json shown = v;
  shown.erase("ranges");
  shown.erase("leases");
  print_object(ctx, shown);
  std::cout << "\nADDRESS RANGES\n";
  print_list(ctx, v["ranges"],
             {field("AR", "ar_id"), field("TYPE", "type"), field("IP", "ip"), field("IP6", "ip6"),
              field("MAC", "mac"), field("SIZE", "size"), field("USED", "used")});
  std::cout << "\nLEASES\n";
  print_list(ctx, v["leases"],
             {field("AR", "ar_id"),
              field("IP", "ip"),
              field("MAC", "mac"),
              {"VM",
               [](const Json& l) {
                 return l["vm_id"].get<int64_t>() < 0 ? std::string("held")
                                                      : std::to_string(l["vm_id"].get<int64_t>());
               }},
              field("NIC", "nic_id")});
}

}  // namespace

void add_vnet_commands(CLI::App& app, Context& ctx) {
  auto* vnet = app.add_subcommand("vnet", "Manage virtual networks and their leases");
  vnet->require_subcommand(1);
  struct Flags {
    std::string name, mode = "bridge", bridge, phydev, gateway, gateway6, target, ip;
    int vlan_id = -1, mtu = 0, prefix = 24, ar_id = -1;
    std::vector<std::string> clusters;
    std::vector<std::string> dns;
    RangeFlags range;
  };
  auto f = std::make_shared<Flags>();
  auto* create = vnet->add_subcommand("create", "Create a virtual network (administrators)");
  create->add_option("name", f->name, "Vnet name")->required();
  create->add_option("--mode", f->mode, "bridge, vlan or sriov")
      ->check(CLI::IsMember({"bridge", "vlan", "sriov"}));
  create->add_option("--bridge", f->bridge, "Linux bridge (bridge: existing; vlan: made)");
  create->add_option("--phydev", f->phydev, "Parent interface (vlan, sriov)");
  create->add_option("--vlan-id", f->vlan_id, "802.1Q VLAN id (vlan; sriov: set on the VF)");
  create->add_option("--mtu", f->mtu, "MTU the guests get");
  create->add_option("--cluster", f->clusters,
                     "Cluster whose hosts reach it, id or name (repeatable)");
  create->add_option("--prefix", f->prefix, "IPv4 prefix length (default 24)");
  create->add_option("--gateway", f->gateway, "IPv4 gateway");
  create->add_option("--gateway6", f->gateway6, "IPv6 gateway");
  create->add_option("--dns", f->dns, "DNS server (repeatable)");
  f->range.add(create, false);
  create->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      Json body{{"name", f->name}, {"mode", f->mode}, {"prefix_length", f->prefix}};
      if (!f->bridge.empty()) body["bridge"] = f->bridge;
      if (!f->phydev.empty()) body["phydev"] = f->phydev;
      if (f->vlan_id >= 0) body["vlan_id"] = f->vlan_id;
      if (f->mtu > 0) body["mtu"] = f->mtu;
      if (!f->clusters.empty()) {
        FAB_ASSIGN_OR_RETURN(body["clusters"], resolve_clusters(api, f->clusters));
      }
      if (!f->gateway.empty()) body["gateway"] = f->gateway;
      if (!f->gateway6.empty()) body["gateway6"] = f->gateway6;
      if (!f->dns.empty()) body["dns"] = f->dns;
      if (f->range.size > 0) body["ranges"] = Json::array({f->range.json()});
      FAB_ASSIGN_OR_RETURN(Json v, api.post("/api/v1/vnets", body));
      if (ctx.output == Output::kJson) {
        print_object(ctx, v);
      } else {
        std::cout << "ID: " << v["id"] << std::endl;
      }
      return {};
    });
  });
  vnet->add_subcommand("list", "List the vnets you may use")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/vnets"));
      print_list(ctx, page["items"],
                 {field("ID", "id"), field("NAME", "name"), field("MODE", "mode"),
                  field("BRIDGE", "bridge"), field("VLAN", "vlan_id"),
                  field("CLUSTERS", "clusters"), field("SIZE", "size"), field("USED", "used")});
      return {};
    });
  });
  auto* show = vnet->add_subcommand("show", "Show a vnet, its ranges and leases");
  show->add_option("vnet", f->target, "Vnet id or name")->required();
  show->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vnet(api, f->target));
      FAB_ASSIGN_OR_RETURN(Json v, api.get("/api/v1/vnets/" + std::to_string(id)));
      print_vnet(ctx, v);
      return {};
    });
  });
  auto* del = vnet->add_subcommand("delete", "Delete a vnet no VM uses");
  del->add_option("vnet", f->target, "Vnet id or name")->required();
  del->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vnet(api, f->target));
      FAB_TRY(api.del("/api/v1/vnets/" + std::to_string(id)));
      std::cout << "Vnet " << id << " deleted" << std::endl;
      return {};
    });
  });
  auto* addar = vnet->add_subcommand("addar", "Add an address range");
  addar->add_option("vnet", f->target, "Vnet id or name")->required();
  f->range.add(addar, true);
  addar->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vnet(api, f->target));
      FAB_ASSIGN_OR_RETURN(
          Json v, api.post("/api/v1/vnets/" + std::to_string(id) + "/ranges", f->range.json()));
      print_vnet(ctx, v);
      return {};
    });
  });
  auto* rmar = vnet->add_subcommand("rmar", "Remove an address range without leases");
  rmar->add_option("vnet", f->target, "Vnet id or name")->required();
  rmar->add_option("ar_id", f->ar_id, "Address range id")->required();
  rmar->callback([&ctx, f] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vnet(api, f->target));
      FAB_ASSIGN_OR_RETURN(Json v, api.del("/api/v1/vnets/" + std::to_string(id) + "/ranges/" +
                                           std::to_string(f->ar_id)));
      print_vnet(ctx, v);
      return {};
    });
  });
  for (const char* verb : {"hold", "release"}) {
    auto* cmd =
        vnet->add_subcommand(verb, std::string(verb) == "hold" ? "Keep an address out of use"
                                                               : "Give a held address back");
    cmd->add_option("vnet", f->target, "Vnet id or name")->required();
    cmd->add_option("ip", f->ip, "The address")->required();
    cmd->callback([&ctx, f, path = std::string(verb)] {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t id, resolve_vnet(api, f->target));
        FAB_ASSIGN_OR_RETURN(Json v, api.post("/api/v1/vnets/" + std::to_string(id) + "/" + path,
                                              Json{{"ip", f->ip}}));
        print_vnet(ctx, v);
        return {};
      });
    });
  }
}

}  // namespace fabrica::cli
