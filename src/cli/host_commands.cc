#include <charconv>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <thread>

#include "cli/cli.h"
#include "inventory/hardware.h"

namespace fabrica::cli {
namespace {

// "2/8 H100 SXM5 80GB": GPUs allocated / present, by model.
std::string gpu_summary(const Json& h) {
  std::string out;
  if (!h.contains("gpus") || !h["gpus"].is_object()) return "-";
  for (auto it = h["gpus"].begin(); it != h["gpus"].end(); ++it) {
    if (!out.empty()) out += ", ";
    int used = h.contains("gpus_allocated") ? h["gpus_allocated"].value(it.key(), 0) : 0;
    out += std::to_string(used) + "/" + std::to_string(it->get<int>()) + " " + it.key();
  }
  return out.empty() ? "-" : out;
}

std::string percent(double v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.0f%%", v);
  return buf;
}

std::string gib(int64_t kb) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0fG", kb / 1048576.0);
  return buf;
}

std::vector<Column> host_columns() {
  return {field("ID", "id"),
          field("NAME", "name"),
          field("STATE", "state_name"),
          field("CLUSTER", "cluster_id"),
          Column{"CPU(used/threads)",
                 [](const Json& h) {
                   return percent(h["cpu_used_percent"].get<double>()) + " of " +
                          std::to_string(h["cpu_threads"].get<int>());
                 }},
          Column{"MEMORY(used/total)",
                 [](const Json& h) {
                   return gib(h["memory_used_kb"].get<int64_t>()) + "/" +
                          gib(h["memory_total_kb"].get<int64_t>());
                 }},
          Column{"GPUS(used/total)", gpu_summary},
          field("VMS", "allocated_vms"),
          field("LAST SEEN", "last_seen")};
}

// "fabrica host VERB HOST" posting to /hosts/ID/SUFFIX.
void add_host_action(CLI::App* host, Context& ctx, const std::string& verb,
                     const std::string& help) {
  auto target = std::make_shared<std::string>();
  auto* cmd = host->add_subcommand(verb, help);
  cmd->add_option("host", *target, "Host id or name")->required();
  cmd->callback([&ctx, target, verb] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_host(api, *target));
      FAB_ASSIGN_OR_RETURN(
          Json out, api.post("/api/v1/hosts/" + std::to_string(id) + "/" + verb, Json::object()));
      print_object(ctx, out);
      return {};
    });
  });
}

}  // namespace

namespace {

// An id, or the name of an object in `collection`'s (unpaginated) list.
Result<int64_t> resolve_in_list(client::ApiClient& api, const std::string& collection,
                                const std::string& id_or_name) {
  int64_t id = 0;
  auto [ptr, ec] = std::from_chars(id_or_name.data(), id_or_name.data() + id_or_name.size(), id);
  if (ec == std::errc() && ptr == id_or_name.data() + id_or_name.size()) return id;
  FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/" + collection));
  for (const auto& item : page["items"]) {
    if (item["name"] == id_or_name) return item["id"].get<int64_t>();
  }
  return fail(ErrorCode::kNotFound,
              collection.substr(0, collection.size() - 1) + " \"" + id_or_name + "\" not found");
}

}  // namespace

Result<int64_t> resolve_host(client::ApiClient& api, const std::string& id_or_name) {
  return resolve_in_list(api, "hosts", id_or_name);
}

Result<int64_t> resolve_cluster(client::ApiClient& api, const std::string& id_or_name) {
  return resolve_in_list(api, "clusters", id_or_name);
}

Result<Json> resolve_clusters(client::ApiClient& api, const std::vector<std::string>& given) {
  Json ids = Json::array();
  for (const auto& c : given) {
    FAB_ASSIGN_OR_RETURN(int64_t id, resolve_cluster(api, c));
    ids.push_back(id);
  }
  return ids;
}

void add_host_commands(CLI::App& app, Context& ctx) {
  auto* host = app.add_subcommand("host", "Manage GPU servers");
  host->require_subcommand(1);

  auto name = std::make_shared<std::string>();
  auto cluster = std::make_shared<std::string>("default");
  auto count = std::make_shared<int>(0);
  auto* add = host->add_subcommand("add", "Register a host and print its one-time join token");
  add->add_option("name", *name, "Host name (omit with --count for a fleet token)");
  add->add_option("--cluster", *cluster, "Cluster id or name");
  add->add_option("--count", *count, "One token good for N hosts joining under their hostnames");
  add->callback([&ctx, name, cluster, count] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t cid, resolve_cluster(api, *cluster));
      Json out;
      if (*count > 0) {
        FAB_ASSIGN_OR_RETURN(out, api.post("/api/v1/hosts/join-tokens",
                                           Json{{"cluster_id", cid}, {"count", *count}}));
      } else if (!name->empty()) {
        FAB_ASSIGN_OR_RETURN(out,
                             api.post("/api/v1/hosts", Json{{"name", *name}, {"cluster_id", cid}}));
      } else {
        return fail(ErrorCode::kInvalidArgument, "give a host name or --count N", "name");
      }
      if (ctx.output == Output::kJson) {
        print_object(ctx, out);
        return {};
      }
      if (out.contains("host"))
        std::cout << "Host " << out["host"]["id"] << " (" << *name << ") added\n";
      std::cout << "Join token (shown once, " << out["uses"] << " use(s), expires "
                << to_text(out["expires_at"]) << "):\n  " << to_text(out["join_token"]) << "\n"
                << "On the server run:\n  fabrica-agent --server " << ctx.endpoint()
                << " --join-token " << to_text(out["join_token"]) << std::endl;
      return {};
    });
  });

  auto gpu_model = std::make_shared<std::string>();
  auto free_gpus = std::make_shared<int>(-1);
  auto state = std::make_shared<std::string>();
  auto* list = host->add_subcommand("list", "List hosts");
  list->add_option("--gpu-model", *gpu_model, "Only hosts with this GPU model (e.g. H100)");
  list->add_option("--free-gpus", *free_gpus, "Only hosts with at least this many such GPUs free");
  list->add_option("--state", *state, "INIT, MONITORED, ERROR, DISABLED or OFFLINE");
  list->callback([&ctx, gpu_model, free_gpus, state] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      std::string query;
      auto add_param = [&](const std::string& k, const std::string& v) {
        query += (query.empty() ? "?" : "&") + k + "=" + client::url_encode(v);
      };
      if (!gpu_model->empty()) add_param("gpu_model", *gpu_model);
      if (*free_gpus >= 0) add_param("free_gpus", std::to_string(*free_gpus));
      if (!state->empty()) add_param("state", *state);
      FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/hosts" + query));
      print_list(ctx, page["items"], host_columns());
      return {};
    });
  });

  auto waited = std::make_shared<std::vector<std::string>>();
  auto wait_state = std::make_shared<std::string>("MONITORED");
  auto wait_timeout = std::make_shared<int>(120);
  auto* wait = host->add_subcommand(
      "wait", "Wait until hosts reach a state (MONITORED: their agent has reported)");
  wait->add_option("host", *waited, "Host ids or names")->required();
  wait->add_option("--state", *wait_state, "The state to wait for (default MONITORED)");
  wait->add_option("--timeout", *wait_timeout, "Seconds to wait at most (default 120)");
  wait->callback([&ctx, waited, wait_state, wait_timeout] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(*wait_timeout);
      for (const auto& name : *waited) {
        // A host that an agent is still joining (a fleet token) appears on its own.
        std::string state = "not registered";
        int64_t id = -1;
        while (true) {
          if (id < 0) {
            auto found = resolve_host(api, name);
            if (found) id = *found;
            if (!found && found.error().code() != ErrorCode::kNotFound) return fail(found.error());
          }
          if (id >= 0) {
            FAB_ASSIGN_OR_RETURN(Json h, api.get("/api/v1/hosts/" + std::to_string(id)));
            state = to_text(h["state_name"]);
            if (state == *wait_state) break;
          }
          if (std::chrono::steady_clock::now() >= deadline) {
            return fail(ErrorCode::kUnavailable, "host " + name + " is still " + state + " after " +
                                                     std::to_string(*wait_timeout) +
                                                     " s (is its agent running?)");
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
        std::cout << "Host " << id << " (" << name << ") is " << state << std::endl;
      }
      return {};
    });
  });

  auto target = std::make_shared<std::string>();
  auto* show = host->add_subcommand("show", "Show a host with its hardware");
  show->add_option("host", *target, "Host id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_host(api, *target));
      FAB_ASSIGN_OR_RETURN(Json h, api.get("/api/v1/hosts/" + std::to_string(id)));
      if (ctx.output == Output::kJson) {
        print_object(ctx, h);
        return {};
      }
      print_fields({{"ID", to_text(h["id"])},
                    {"NAME", to_text(h["name"])},
                    {"STATE", to_text(h["state_name"])},
                    {"CLUSTER", to_text(h["cluster_id"])},
                    {"VMS", to_text(h["allocated_vms"])},
                    {"GPUS", gpu_summary([&] {
                       Json g = h["summary"].is_object() ? h["summary"] : Json::object();
                       g["gpus_allocated"] = h["gpus_allocated"];
                       return g;
                     }())},
                    {"LAST SEEN", to_text(h["last_seen"])},
                    {"CREATED", to_text(h["created_at"])}});
      if (h["inventory"].is_object()) {
        const Json& inv = h["inventory"];
        std::cout << "\nCPU: " << to_text(inv["cpu"]["model"]) << " ("
                  << to_text(inv["cpu"]["architecture"]) << "), " << inv["cpu"]["sockets"]
                  << " sockets, " << inv["cpu"]["cores"] << " cores, " << inv["cpu"]["threads"]
                  << " threads\n";
        std::string hv = inv.value("hypervisor", "");
        std::cout << "VMS: "
                  << (hv.empty() ? "inventory only (the agent runs no hypervisor)"
                                 : hv + ", domain type " + inv.value("domain_type", "-"))
                  << "\n\nNUMA NODES\n";
        print_list(ctx, inv["numa_nodes"],
                   {field("ID", "id"),
                    Column{"CPUS",
                           [](const Json& n) {
                             return inventory::format_cpu_list(n["cpus"].get<std::vector<int>>());
                           }},
                    Column{"MEMORY",
                           [](const Json& n) { return gib(n["memory_total_kb"].get<int64_t>()); }},
                    Column{"HUGEPAGES", [](const Json& n) {
                             std::string out;
                             for (const auto& p : n["hugepages"]) {
                               out += (out.empty() ? "" : " ") +
                                      std::to_string(p["size_kb"].get<int64_t>()) +
                                      "kB:" + std::to_string(p["free"].get<int64_t>()) + "/" +
                                      std::to_string(p["total"].get<int64_t>());
                             }
                             return out.empty() ? std::string("-") : out;
                           }}});
        std::cout << "\nGPUS\n";
        print_list(ctx, inv["gpus"],
                   {field("PCI", "pci_address"), field("MODEL", "model"),
                    field("MEMORY(MiB)", "memory_mib"), field("NUMA", "numa_node"),
                    field("MIG", "mig_mode"), field("NVLINK", "nvlink_domain"),
                    field("UUID", "uuid"), Column{"MIG SLICES", [](const Json& g) {
                                                    std::string out;
                                                    for (const auto& m : g["mig_instances"]) {
                                                      out += (out.empty() ? "" : ",") +
                                                             to_text(m["profile"]);
                                                    }
                                                    return out.empty() ? std::string("-") : out;
                                                  }}});
        std::cout << "\nNICS\n";
        print_list(ctx, inv["nics"],
                   {field("NAME", "name"), field("PCI", "pci_address"), field("LINK", "link_layer"),
                    field("MODEL", "model"), field("RDMA", "rdma_device"),
                    field("SPEED(Mb/s)", "speed_mbps"), field("NUMA", "numa_node"),
                    field("VF", "virtual_function")});
        Json sriov = Json::array();
        for (const auto& d : inv["pci_devices"]) {
          if (d.value("sriov_total_vfs", 0) > 0) sriov.push_back(d);
        }
        if (!sriov.empty()) {
          std::cout << "\nSR-IOV\n";
          print_list(
              ctx, sriov,
              {field("PF", "address"), field("DRIVER", "driver"),
               field("VFS(total)", "sriov_total_vfs"), field("VFS(enabled)", "sriov_num_vfs"),
               field("VF ADDRESSES", "virtual_functions")});
        }
        if (!inv["dpus"].empty()) {
          std::cout << "\nDPUS\n";
          print_list(
              ctx, inv["dpus"],
              {field("PCI", "pci_address"), field("MODEL", "model"), field("NUMA", "numa_node")});
        }
      }
      return {};
    });
  });

  auto force = std::make_shared<bool>(false);
  auto doomed = std::make_shared<std::vector<std::string>>();
  auto* del = host->add_subcommand("delete", "Delete hosts");
  del->add_option("host", *doomed, "Host ids or names")->required();
  del->add_flag("--force", *force, "Even with VMs allocated (superuser)");
  del->callback([&ctx, doomed, force] {
    for (const auto& name : *doomed) {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t id, resolve_host(api, name));
        FAB_TRY(api.del("/api/v1/hosts/" + std::to_string(id) + (*force ? "?force=true" : "")));
        std::cout << "Host " << id << " deleted" << std::endl;
        return {};
      });
    }
  });
  add_host_action(host, ctx, "enable", "Enable a host");
  add_host_action(host, ctx, "disable", "Disable a host (no new VMs)");
  add_host_action(host, ctx, "join-token", "Issue a new join token for a lost or re-imaged host");
  add_host_action(host, ctx, "rotate-credential",
                  "Give a host's agent a new credential without downtime (at its next heartbeat)");

  host->add_subcommand("tokens", "List the join tokens that can still be used")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json all, list_all(api, "/api/v1/hosts/join-tokens?limit=1000"));
      print_list(ctx, all,
                 {field("ID", "id"), field("CLUSTER", "cluster_id"), field("HOST", "host_id"),
                  field("USES LEFT", "remaining"), field("EXPIRES", "expires_at"),
                  field("BY", "created_by")});
      return {};
    });
  });
  auto token_id = std::make_shared<int64_t>(-1);
  auto* revoke = host->add_subcommand("revoke-token", "Revoke a join token (see host tokens)");
  revoke->add_option("id", *token_id, "Join token id")->required();
  revoke->callback([&ctx, token_id] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_TRY(api.del("/api/v1/hosts/join-tokens/" + std::to_string(*token_id)));
      std::cout << "Join token " << *token_id << " revoked" << std::endl;
      return {};
    });
  });
}

void add_cluster_commands(CLI::App& app, Context& ctx) {
  auto* cluster = app.add_subcommand("cluster", "Manage clusters");
  cluster->require_subcommand(1);
  auto name = std::make_shared<std::string>();
  auto* create = cluster->add_subcommand("create", "Create a cluster");
  create->add_option("name", *name, "Cluster name")->required();
  create->callback([&ctx, name] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json c, api.post("/api/v1/clusters", Json{{"name", *name}}));
      if (ctx.output == Output::kJson)
        print_object(ctx, c);
      else
        std::cout << "ID: " << c["id"] << std::endl;
      return {};
    });
  });
  cluster->add_subcommand("list", "List clusters")->callback([&ctx] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(Json page, api.get("/api/v1/clusters"));
      print_list(ctx, page["items"],
                 {field("ID", "id"), field("NAME", "name"), field("CREATED", "created_at")});
      return {};
    });
  });
  auto target = std::make_shared<std::string>();
  auto* show = cluster->add_subcommand("show", "Show a cluster and its hosts");
  show->add_option("cluster", *target, "Cluster id or name")->required();
  show->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_cluster(api, *target));
      FAB_ASSIGN_OR_RETURN(Json c, api.get("/api/v1/clusters/" + std::to_string(id)));
      print_object(ctx, c);
      return {};
    });
  });
  auto* del = cluster->add_subcommand("delete", "Delete an empty cluster");
  del->add_option("cluster", *target, "Cluster id or name")->required();
  del->callback([&ctx, target] {
    ctx.run([&]() -> Result<void> {
      FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
      FAB_ASSIGN_OR_RETURN(int64_t id, resolve_cluster(api, *target));
      FAB_TRY(api.del("/api/v1/clusters/" + std::to_string(id)));
      std::cout << "Cluster " << id << " deleted" << std::endl;
      return {};
    });
  });
  auto host = std::make_shared<std::string>();
  for (bool add : {true, false}) {
    auto* cmd = cluster->add_subcommand(
        add ? "addhost" : "delhost",
        add ? "Move a host into a cluster" : "Move a host back to the default cluster");
    cmd->add_option("cluster", *target, "Cluster id or name")->required();
    cmd->add_option("host", *host, "Host id or name")->required();
    cmd->callback([&ctx, target, host, add] {
      ctx.run([&]() -> Result<void> {
        FAB_ASSIGN_OR_RETURN(auto api, ctx.api());
        FAB_ASSIGN_OR_RETURN(int64_t cid, resolve_cluster(api, *target));
        FAB_ASSIGN_OR_RETURN(int64_t hid, resolve_host(api, *host));
        std::string base = "/api/v1/clusters/" + std::to_string(cid) + "/hosts";
        FAB_ASSIGN_OR_RETURN(Json out, add ? api.post(base, Json{{"host_id", hid}})
                                           : api.del(base + "/" + std::to_string(hid)));
        print_object(ctx, out);
        return {};
      });
    });
  }
}

}  // namespace fabrica::cli
