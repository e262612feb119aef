#include "fleet/fleet.h"

#include <algorithm>

#include "auth/vdc.h"
#include "crypto/crypto.h"

namespace fabrica::fleet {
namespace {

constexpr std::string_view kJoinTokenType = "join_token";
constexpr std::string_view kCredentialType = "host_credential";

std::string host_noun(int64_t id) { return "host " + std::to_string(id); }

// Hosts written and deleted by the transaction running on this thread (see Fleet::indexed).
thread_local std::vector<Host>* t_saved_hosts = nullptr;
thread_local std::vector<int64_t>* t_deleted_hosts = nullptr;

void log_saved(const Host& host) {
  if (t_saved_hosts != nullptr) t_saved_hosts->push_back(host);
}
std::string cluster_noun(int64_t id) { return "cluster " + std::to_string(id); }

// Infrastructure objects carry no permission bits: only administrators and ACLs reach them.
ObjectHeader infra_header(int64_t id, const std::string& name, int state, int64_t now) {
  return ObjectHeader::create(id, name, 0, 0, Permissions(), state, now);
}

auth::ObjectRef host_ref(const Host& host, const int64_t* cluster) {
  return auth::ObjectRef{.type = ObjectType::kHost,
                         .id = host.header.id,
                         .uid = 0,
                         .gid = 0,
                         .clusters = std::span<const int64_t>(cluster, 1)};
}

auth::ObjectRef cluster_ref(int64_t id) {
  return auth::ObjectRef{.type = ObjectType::kCluster, .id = id, .uid = 0, .gid = 0};
}

Json header_json(const ObjectHeader& h) {
  Json j = Json::object();
  h.to_json(j);
  return j;
}

store::Record cluster_record(const Cluster& c) {
  return store::Record{.type = std::string(kClusterType),
                       .id = c.header.id,
                       .name = c.header.name,
                       .key = c.header.name,
                       .body = dump_json(c.to_api_json())};
}

Result<Cluster> cluster_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Cluster c;
  FAB_ASSIGN_OR_RETURN(c.header, ObjectHeader::from_json(body));
  return c;
}

Json monitoring_json(const Monitoring& m) {
  return Json{{"timestamp", m.timestamp ? Json(format_time(m.timestamp)) : Json(nullptr)},
              {"cpu_used_percent", m.cpu_used_percent},
              {"memory_used_kb", m.memory_used_kb},
              {"gpus", m.gpus}};
}

Error unauthenticated_token() {
  return Error(ErrorCode::kUnauthenticated, "invalid, expired or used-up join token");
}

}  // namespace

std::string_view host_state_name(HostState state) {
  switch (state) {
    case HostState::kInit:
      return "INIT";
    case HostState::kMonitored:
      return "MONITORED";
    case HostState::kError:
      return "ERROR";
    case HostState::kDisabled:
      return "DISABLED";
    case HostState::kOffline:
      return "OFFLINE";
  }
  return "UNKNOWN";
}

Json Cluster::to_api_json() const { return header_json(header); }

HostSummary summarize(const inventory::HostInventory& inv) {
  HostSummary s;
  s.cpu_threads = inv.cpu.threads;
  for (const auto& n : inv.numa_nodes) s.memory_total_kb += n.memory_total_kb;
  for (const auto& g : inv.gpus) s.gpus[g.model]++;
  return s;
}

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(HostSummary, cpu_threads, memory_total_kb, gpus)

Json Host::to_api_json() const {
  Json j = header_json(header);
  j["state_name"] = host_state_name(state());
  j["cluster_id"] = cluster_id;
  j["summary"] = summary;
  j["inventory"] = inventory ? inventory->to_json() : Json(nullptr);
  j["monitoring"] = monitoring_json(monitoring);
  j["last_seen"] = last_seen ? Json(format_time(last_seen)) : Json(nullptr);
  j["allocated_vms"] = allocated_vms;
  j["gpus_allocated"] = gpus_allocated;
  j["inventory_version"] = inventory_version;
  return j;
}

Json Host::to_summary_json() const {
  return Json{{"id", header.id},
              {"name", header.name},
              {"state", header.state},
              {"state_name", host_state_name(state())},
              {"cluster_id", cluster_id},
              {"cpu_threads", summary.cpu_threads},
              {"cpu_used_percent", monitoring.cpu_used_percent},
              {"memory_total_kb", summary.memory_total_kb},
              {"memory_used_kb", monitoring.memory_used_kb},
              {"gpus", summary.gpus},
              {"allocated_vms", allocated_vms},
              {"gpus_allocated", gpus_allocated},
              {"last_seen", last_seen ? Json(format_time(last_seen)) : Json(nullptr)}};
}

store::Record host_record(const Host& host) {
  Json body = host.to_api_json();
  body.erase("inventory");  // Stored in its own record.
  body["monitoring"]["timestamp"] = host.monitoring.timestamp;
  body["last_seen"] = host.last_seen;
  return store::Record{.type = std::string(kHostType),
                       .id = host.header.id,
                       .name = host.header.name,
                       .gid = host.cluster_id,
                       .state = host.header.state,
                       .key = host.header.name,
                       .body = dump_json(body),
                       .version = host.version};
}

Result<Host> host_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Host h;
  FAB_ASSIGN_OR_RETURN(h.header, ObjectHeader::from_json(body));
  try {
    h.cluster_id = body.at("cluster_id").get<int64_t>();
    h.summary = body.at("summary").get<HostSummary>();
    const Json& m = body.at("monitoring");
    h.monitoring.timestamp = m.at("timestamp").get<int64_t>();
    h.monitoring.cpu_used_percent = m.at("cpu_used_percent").get<double>();
    h.monitoring.memory_used_kb = m.at("memory_used_kb").get<int64_t>();
    h.monitoring.gpus = m.at("gpus");
    h.last_seen = body.at("last_seen").get<int64_t>();
    h.allocated_vms = body.at("allocated_vms").get<int>();
    h.gpus_allocated = body.value("gpus_allocated", std::map<std::string, int>{});
    h.inventory_version = body.value("inventory_version", int64_t{0});
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                "stored host " + std::to_string(r.id) + " is malformed: " + e.what());
  }
  h.version = r.version;
  return h;
}

Result<void> Fleet::bootstrap() {
  int64_t now = unix_seconds(clock_.now());
  return write([&](store::Transaction& tx) -> Result<void> {
    if (tx.get(kClusterType, kDefaultClusterId)) return {};
    return tx.insert(cluster_record(Cluster{infra_header(kDefaultClusterId, "default", 0, now)}));
  });
}

Result<Cluster> Fleet::create_cluster(const auth::Caller& caller, const std::string& name) {
  FAB_TRY(validate_name(name));
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kCluster, caller.gid));
  int64_t now = unix_seconds(clock_.now());
  return write_value<Cluster>([&](store::Transaction& tx) -> Result<Cluster> {
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kClusterType));
    id = std::max<int64_t>(id, 100);
    Cluster c{infra_header(id, name, 0, now)};
    FAB_TRY(store::insert_named(tx, cluster_record(c)));
    return c;
  });
}

Result<std::vector<Cluster>> Fleet::list_clusters(const auth::Caller& caller) {
  return store_.read_value<std::vector<Cluster>>(
      [&](store::Transaction& tx) -> Result<std::vector<Cluster>> {
        FAB_ASSIGN_OR_RETURN(auto records, tx.list(kClusterType, {.limit = 100000}));
        std::vector<Cluster> out;
        for (const auto& r : records) {
          FAB_ASSIGN_OR_RETURN(Cluster c, cluster_from_record(r));
          if (authorizer_.allows(caller, cluster_ref(c.header.id), Right::kUse)) out.push_back(c);
        }
        return out;
      });
}

Result<Cluster> Fleet::get_cluster(const auth::Caller& caller, int64_t id) {
  return store_.read_value<Cluster>([&](store::Transaction& tx) -> Result<Cluster> {
    auto r = tx.get(kClusterType, id);
    if (!r) return fail(r.error().code(), cluster_noun(id) + " not found");
    FAB_TRY(authorizer_.require(caller, cluster_ref(id), Right::kUse, cluster_noun(id)));
    return cluster_from_record(*r);
  });
}

Result<void> Fleet::delete_cluster(const auth::Caller& caller, int64_t id) {
  return write([&](store::Transaction& tx) -> Result<void> {
    auto r = tx.get(kClusterType, id);
    if (!r) return fail(r.error().code(), cluster_noun(id) + " not found");
    FAB_TRY(authorizer_.require(caller, cluster_ref(id), Right::kAdmin, cluster_noun(id)));
    if (id == kDefaultClusterId) {
      return fail(ErrorCode::kFailedPrecondition, "the default cluster cannot be deleted");
    }
    FAB_ASSIGN_OR_RETURN(int64_t hosts, tx.count(kHostType, {.gid = id}));
    if (hosts > 0) {
      return fail(ErrorCode::kFailedPrecondition,
                  cluster_noun(id) + " still holds " + std::to_string(hosts) + " hosts");
    }
    FAB_TRY(auth::vdc_forget_resource(tx, "cluster", id));
    return tx.remove(kClusterType, id);
  });
}

Result<JoinToken> Fleet::issue_token(store::Transaction& tx, int64_t cluster_id,
                                     std::optional<int64_t> host_id, int uses, int64_t creator) {
  JoinToken token;
  token.secret = "fjt_" + crypto::new_token_secret().substr(4);
  token.expires_at = unix_seconds(clock_.now()) + options_.join_token_lifetime.count();
  token.uses = uses;
  FAB_ASSIGN_OR_RETURN(token.id, tx.allocate_id(kJoinTokenType));
  Json body{{"cluster_id", cluster_id},
            {"host_id", host_id ? Json(*host_id) : Json(nullptr)},
            {"remaining", uses},
            {"expires_at", token.expires_at}};
  FAB_TRY(tx.insert(store::Record{.type = std::string(kJoinTokenType),
                                  .id = token.id,
                                  .name = "join",
                                  .uid = creator,
                                  .key = crypto::sha256_hex(token.secret),
                                  .body = dump_json(body)}));
  return token;
}

Result<Host> Fleet::load_host(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                              Right right) {
  auto r = tx.get(kHostType, id);
  if (!r) return fail(r.error().code(), host_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(Host host, host_from_record(*r));
  FAB_TRY(authorizer_.require(caller, host_ref(host, &host.cluster_id), right, host_noun(id)));
  return host;
}

Result<Host> Fleet::update_host(store::Transaction& tx, Host host) {
  host.header.updated_at = unix_seconds(clock_.now());
  FAB_ASSIGN_OR_RETURN(host.version, tx.update(host_record(host)));
  log_saved(host);
  return host;
}

template <typename Fn>
auto Fleet::indexed(Fn&& write) -> decltype(write()) {
  std::vector<Host> saved;
  std::vector<int64_t> deleted;
  t_saved_hosts = &saved;
  t_deleted_hosts = &deleted;
  auto result = write();
  t_saved_hosts = nullptr;
  t_deleted_hosts = nullptr;
  if (result) index_apply(saved, deleted);
  return result;
}

template <typename T, typename Fn>
Result<T> Fleet::write_value(Fn&& work) {
  return indexed([&] { return store_.write_value<T>(std::forward<Fn>(work)); });
}

Result<void> Fleet::write(const store::Store::Work& work) {
  return indexed([&] { return store_.write(work); });
}

void Fleet::index_apply(std::vector<Host>& saved, const std::vector<int64_t>& deleted) {
  std::lock_guard lock(index_mutex_);
  for (int64_t id : deleted) {
    deleted_.emplace(id, ++index_seq_);
    index_.erase(id);
  }
  for (Host& h : saved) {
    if (deleted_.contains(h.header.id)) continue;
    auto it = index_.find(h.header.id);
    if (it != index_.end() && it->second.host.version >= h.version) continue;
    h.inventory.reset();
    std::string rendered = dump_json(h.to_summary_json());
    index_[h.header.id] = Indexed{std::move(h), std::move(rendered), ++index_seq_};
  }
}

Result<void> Fleet::load_index() {
  {
    std::lock_guard lock(index_mutex_);
    if (index_loaded_) return {};
  }
  std::vector<Host> all;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    store::ListQuery query{.limit = 1000};
    while (true) {
      FAB_ASSIGN_OR_RETURN(auto batch, tx.list(kHostType, query));
      for (const auto& r : batch) {
        FAB_ASSIGN_OR_RETURN(Host h, host_from_record(r));
        all.push_back(std::move(h));
      }
      if (batch.size() < query.limit) return {};
      query.after_id = batch.back().id;
    }
  }));
  index_apply(all, {});
  std::lock_guard lock(index_mutex_);
  index_loaded_ = true;
  return {};
}

Result<std::pair<Host, JoinToken>> Fleet::add_host(const auth::Caller& caller,
                                                   const std::string& name, int64_t cluster_id) {
  FAB_TRY(validate_name(name));
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kHost, caller.gid));
  int64_t now = unix_seconds(clock_.now());
  return write_value<std::pair<Host, JoinToken>>(
      [&](store::Transaction& tx) -> Result<std::pair<Host, JoinToken>> {
        if (!tx.get(kClusterType, cluster_id)) {
          return fail(ErrorCode::kInvalidArgument, cluster_noun(cluster_id) + " does not exist",
                      "cluster_id");
        }
        Host host;
        FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kHostType));
        host.header = infra_header(id, name, static_cast<int>(HostState::kInit), now);
        host.cluster_id = cluster_id;
        host.version = 1;
        FAB_TRY(store::insert_named(tx, host_record(host)));
        log_saved(host);
        FAB_ASSIGN_OR_RETURN(JoinToken token, issue_token(tx, cluster_id, id, 1, caller.uid));
        return std::pair{host, token};
      });
}

Result<JoinToken> Fleet::create_fleet_token(const auth::Caller& caller, int64_t cluster_id,
                                            int count) {
  if (count < 1 || count > 100000) {
    return fail(ErrorCode::kInvalidArgument, "must be 1-100000", "count");
  }
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kHost, caller.gid));
  return write_value<JoinToken>([&](store::Transaction& tx) -> Result<JoinToken> {
    if (!tx.get(kClusterType, cluster_id)) {
      return fail(ErrorCode::kInvalidArgument, cluster_noun(cluster_id) + " does not exist",
                  "cluster_id");
    }
    return issue_token(tx, cluster_id, std::nullopt, count, caller.uid);
  });
}

Result<JoinToken> Fleet::rejoin_token(const auth::Caller& caller, int64_t host_id) {
  return write_value<JoinToken>([&](store::Transaction& tx) -> Result<JoinToken> {
    FAB_ASSIGN_OR_RETURN(Host host, load_host(tx, caller, host_id, Right::kAdmin));
    return issue_token(tx, host.cluster_id, host_id, 1, caller.uid);
  });
}

Result<auth::Page<Json>> Fleet::list_join_tokens(const auth::Caller& caller, int64_t after_id,
                                                 size_t limit) {
  FAB_TRY(authorizer_.require_superuser(caller, "list join tokens"));
  int64_t now = unix_seconds(clock_.now());
  return store_.read_value<auth::Page<Json>>(
      [&](store::Transaction& tx) -> Result<auth::Page<Json>> {
        auth::Page<Json> page;
        FAB_TRY(store::for_each(
            tx, kJoinTokenType,
            [&](const store::Record& r) -> Result<bool> {
              FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
              int64_t expires = body.value("expires_at", int64_t{0});
              if (body.value("remaining", 0) <= 0 || expires <= now) return true;  // Spent.
              if (page.items.size() == limit) {
                page.next_cursor = std::to_string(page.items.back()["id"].get<int64_t>());
                return false;
              }
              page.items.push_back(Json{{"id", r.id},
                                        {"cluster_id", body["cluster_id"]},
                                        {"host_id", body["host_id"]},
                                        {"remaining", body["remaining"]},
                                        {"expires_at", format_time(expires)},
                                        {"created_by", r.uid}});
              return true;
            },
            store::ListQuery{.after_id = after_id}));
        return page;
      });
}

Result<void> Fleet::revoke_join_token(const auth::Caller& caller, int64_t id) {
  FAB_TRY(authorizer_.require_superuser(caller, "revoke join tokens"));
  return write([&](store::Transaction& tx) -> Result<void> {
    auto record = tx.get(kJoinTokenType, id);
    if (!record)
      return fail(record.error().code(), "join token " + std::to_string(id) + " not found");
    return tx.remove(kJoinTokenType, id);
  });
}

Result<int> Fleet::prune_join_tokens() {
  int64_t now = unix_seconds(clock_.now());
  int pruned = 0;
  FAB_TRY(write([&](store::Transaction& tx) -> Result<void> {
    std::vector<int64_t> gone;
    FAB_TRY(store::for_each(tx, kJoinTokenType, [&](const store::Record& r) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
      if (body.value("remaining", 0) <= 0 || body.value("expires_at", int64_t{0}) <= now) {
        gone.push_back(r.id);
      }
      return {};
    }));
    for (int64_t id : gone) FAB_TRY(tx.remove(kJoinTokenType, id));
    pruned = static_cast<int>(gone.size());
    return {};
  }));
  return pruned;
}

template <typename Visit>
Result<std::optional<int64_t>> Fleet::visit_hosts(const auth::Caller& caller, const HostFilter& f,
                                                  Visit&& visit) {
  FAB_TRY(load_index());
  std::lock_guard lock(index_mutex_);
  size_t visited = 0;
  for (auto it = index_.upper_bound(f.after_id); it != index_.end(); ++it) {
    const auto& [id, entry] = *it;
    if (visited == f.limit) return std::optional<int64_t>(std::prev(it)->first);
    const Host& h = entry.host;
    if (f.cluster_id && h.cluster_id != *f.cluster_id) continue;
    if (!authorizer_.allows(caller, host_ref(h, &h.cluster_id), Right::kUse)) continue;
    if (f.gpu_model || f.free_gpus) {
      int matching = 0;
      int free = 0;
      for (const auto& [model, count] : h.summary.gpus) {
        if (f.gpu_model && model.find(*f.gpu_model) == std::string::npos) continue;
        matching += count;
        auto used = h.gpus_allocated.find(model);
        free += count - (used == h.gpus_allocated.end() ? 0 : used->second);
      }
      if (f.gpu_model && matching == 0) continue;
      if (f.free_gpus && free < *f.free_gpus) continue;
    }
    bool pending = false;
    {
      std::lock_guard live_lock(live_mutex_);
      auto it = live_.find(id);
      pending = it != live_.end() && it->second.last_seen >= h.last_seen;
    }
    if (!pending) {
      if (!f.state || h.state() == *f.state) {
        visit(h, &entry.summary_json);
        ++visited;
      }
      continue;
    }
    Host current = h;
    overlay(current);  // Then filter on state: the pending heartbeat may have changed it.
    if (!f.state || current.state() == *f.state) {
      visit(current, nullptr);
      ++visited;
    }
  }
  return std::optional<int64_t>();
}

Result<std::vector<Host>> Fleet::list_hosts(const auth::Caller& caller, const HostFilter& f) {
  std::vector<Host> out;
  FAB_TRY(visit_hosts(caller, f, [&](const Host& h, const std::string*) { out.push_back(h); }));
  return out;
}

Result<Fleet::HostChanges> Fleet::host_changes(uint64_t since) {
  FAB_TRY(load_index());
  HostChanges out;
  auto brief = [](const Host& h) {
    return HostBrief{.id = h.header.id,
                     .name = h.header.name,
                     .cluster_id = h.cluster_id,
                     .state = h.state(),
                     .cpu_used_percent = h.monitoring.cpu_used_percent,
                     .inventory_version = h.inventory_version};
  };
  std::lock_guard lock(index_mutex_);  // Then live_mutex_, as visit_hosts takes them.
  std::lock_guard live_lock(live_mutex_);
  out.seq = index_seq_;
  for (const auto& [id, entry] : index_) {
    auto state = entry.host.state();
    auto live = state == HostState::kMonitored || state == HostState::kDisabled ? live_.end()
                                                                                : live_.find(id);
    if (entry.seq <= since && live == live_.end()) continue;
    out.changed.push_back(brief(entry.host));
    if (live != live_.end()) {
      out.changed.back().state = HostState::kMonitored;
      out.changed.back().cpu_used_percent = live->second.monitoring.cpu_used_percent;
    }
  }
  for (const auto& [id, seq] : deleted_) {
    if (seq > since) out.removed.push_back(id);
  }
  return out;
}

Result<Fleet::HostsJson> Fleet::list_hosts_json(const auth::Caller& caller, const HostFilter& f) {
  HostsJson out{.items = "["};
  FAB_ASSIGN_OR_RETURN(out.next_cursor,
                       visit_hosts(caller, f, [&](const Host& h, const std::string* rendered) {
                         if (out.items.size() > 1) out.items += ',';
                         out.items += rendered ? *rendered : dump_json(h.to_summary_json());
                       }));
  out.items += ']';
  return out;
}

Result<Host> Fleet::get_host(const auth::Caller& caller, int64_t id) {
  FAB_ASSIGN_OR_RETURN(
      Host host, store_.read_value<Host>([&](store::Transaction& tx) -> Result<Host> {
        FAB_ASSIGN_OR_RETURN(Host h, load_host(tx, caller, id, Right::kUse));
        auto inv = tx.get(kInventoryType, id);
        if (inv) {
          FAB_ASSIGN_OR_RETURN(Json body, parse_json(inv->body));
          FAB_ASSIGN_OR_RETURN(h.inventory, inventory::HostInventory::from_json(body));
        }
        return h;
      }));
  overlay(host);
  return host;
}

Result<Host> Fleet::set_enabled(const auth::Caller& caller, int64_t id, bool enabled) {
  return write_value<Host>([&](store::Transaction& tx) -> Result<Host> {
    FAB_ASSIGN_OR_RETURN(Host host, load_host(tx, caller, id, Right::kAdmin));
    if (!enabled) {
      host.header.state = static_cast<int>(HostState::kDisabled);
    } else if (host.state() == HostState::kDisabled) {
      host.header.state =
          static_cast<int>(host.last_seen ? HostState::kMonitored : HostState::kInit);
    }
    return update_host(tx, std::move(host));
  });
}

Result<Host> Fleet::move_host(const auth::Caller& caller, int64_t id, int64_t cluster_id) {
  return write_value<Host>([&](store::Transaction& tx) -> Result<Host> {
    FAB_ASSIGN_OR_RETURN(Host host, load_host(tx, caller, id, Right::kAdmin));
    if (!tx.get(kClusterType, cluster_id)) {
      return fail(ErrorCode::kInvalidArgument, cluster_noun(cluster_id) + " does not exist",
                  "cluster_id");
    }
    FAB_TRY(authorizer_.require(caller, cluster_ref(cluster_id), Right::kAdmin,
                                cluster_noun(cluster_id)));
    host.cluster_id = cluster_id;
    return update_host(tx, std::move(host));
  });
}

Result<void> Fleet::delete_host(const auth::Caller& caller, int64_t id, bool force) {
  return write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Host host, load_host(tx, caller, id, Right::kAdmin));
    if (host.allocated_vms > 0) {
      if (!force) {
        return fail(ErrorCode::kFailedPrecondition,
                    host_noun(id) + " has " + std::to_string(host.allocated_vms) +
                        " VMs allocated; move them or delete with --force (superuser)");
      }
      FAB_TRY(authorizer_.require_superuser(caller, "force-delete a host with VMs"));
    }
    FAB_TRY(remove_credentials(tx, id));
    if (tx.get(kInventoryType, id)) FAB_TRY(tx.remove(kInventoryType, id));
    FAB_TRY(auth::vdc_forget_resource(tx, "host", id));
    FAB_TRY(tx.remove(kHostType, id));
    if (t_deleted_hosts != nullptr) t_deleted_hosts->push_back(id);
    std::lock_guard lock(live_mutex_);
    live_.erase(id);
    return {};
  });
}

Result<Fleet::Joined> Fleet::join(std::string_view token, const std::string& hostname,
                                  const inventory::HostInventory& inv) {
  FAB_TRY(validate_name(hostname).map_error(
      [](Error e) { return Error(e.code(), e.message(), "hostname"); }));
  int64_t now = unix_seconds(clock_.now());
  return write_value<Joined>([&](store::Transaction& tx) -> Result<Joined> {
    auto record = tx.get_by_key(kJoinTokenType, crypto::sha256_hex(token));
    if (!record) return fail(unauthenticated_token());
    FAB_ASSIGN_OR_RETURN(Json body, parse_json(record->body));
    int remaining = body.value("remaining", 0);
    if (remaining <= 0 || body.value("expires_at", int64_t{0}) <= now) {
      return fail(unauthenticated_token());
    }
    body["remaining"] = remaining - 1;
    store::Record used = *record;
    used.body = dump_json(body);
    FAB_TRY(tx.update(used));
    Host host;
    if (body["host_id"].is_number_integer()) {
      auto bound = tx.get(kHostType, body["host_id"].get<int64_t>());
      if (!bound) return fail(ErrorCode::kFailedPrecondition, "the token's host was deleted");
      FAB_ASSIGN_OR_RETURN(host, host_from_record(*bound));
    } else if (auto existing = tx.get_by_key(kHostType, hostname); existing) {
      FAB_ASSIGN_OR_RETURN(host, host_from_record(*existing));  // Re-imaged host, same name.
    } else {
      FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kHostType));
      host.header = infra_header(id, hostname, static_cast<int>(HostState::kInit), now);
      host.cluster_id = body.value("cluster_id", kDefaultClusterId);
      host.version = 1;
      FAB_TRY(tx.insert(host_record(host)));
      log_saved(host);
    }
    // One credential per host: a re-join retires the old one.
    FAB_TRY(remove_credentials(tx, host.header.id));
    Joined joined;
    FAB_ASSIGN_OR_RETURN(joined.credential, insert_credential(tx, host, Json::object()));
    inventory::HostInventory named = inv;
    named.hostname = host.header.name;
    FAB_ASSIGN_OR_RETURN(bool changed, put_inventory(tx, host.header.id, named));
    if (changed) ++host.inventory_version;
    host.summary = summarize(named);
    host.inventory = std::move(named);
    if (host.state() != HostState::kDisabled) {
      host.header.state = static_cast<int>(HostState::kMonitored);
    }
    host.last_seen = now;
    FAB_ASSIGN_OR_RETURN(joined.host, update_host(tx, std::move(host)));
    return joined;
  });
}

Result<std::string> Fleet::insert_credential(store::Transaction& tx, const Host& host, Json body) {
  std::string secret = "fah_" + crypto::new_token_secret().substr(4);
  body["host_id"] = host.header.id;
  FAB_ASSIGN_OR_RETURN(int64_t cred_id, tx.allocate_id(kCredentialType));
  FAB_TRY(tx.insert(store::Record{.type = std::string(kCredentialType),
                                  .id = cred_id,
                                  .name = host.header.name,
                                  .uid = host.header.id,
                                  .key = crypto::sha256_hex(secret),
                                  .body = dump_json(body)}));
  return secret;
}

Result<int64_t> Fleet::authenticate_agent(std::string_view credential) {
  FAB_ASSIGN_OR_RETURN(auto found, authenticate_credential(credential));
  return found.host_id;
}

Result<Fleet::AgentCredential> Fleet::authenticate_credential(std::string_view credential) {
  std::string hash = crypto::sha256_hex(credential);
  {
    std::lock_guard lock(credentials_mutex_);
    if (auto it = credentials_.find(hash); it != credentials_.end()) return it->second;
  }
  uint64_t epoch = credential_epoch_.load();
  auto unknown = [] {
    return Error(ErrorCode::kUnauthenticated, "unknown or revoked host credential");
  };
  auto record = store_.read_value<store::Record>(
      [&](store::Transaction& tx) { return tx.get_by_key(kCredentialType, hash); });
  if (!record) {
    if (record.error().code() == ErrorCode::kNotFound) return fail(unknown());
    return fail(record.error());
  }
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(record->body));
  if (body.contains("replaces")) {
    // The first use of a rotated credential: the agent has saved it, so the one it replaces
    // goes (and with it the rotation request).
    FAB_ASSIGN_OR_RETURN(*record, store_.write_value<store::Record>(
                                      [&](store::Transaction& tx) -> Result<store::Record> {
                                        auto now = tx.get_by_key(kCredentialType, hash);
                                        if (!now) return fail(unknown());
                                        FAB_ASSIGN_OR_RETURN(Json b, parse_json(now->body));
                                        if (!b.contains("replaces")) return *now;
                                        int64_t old = b["replaces"].get<int64_t>();
                                        if (tx.get(kCredentialType, old)) {
                                          FAB_TRY(tx.remove(kCredentialType, old));
                                        }
                                        b.erase("replaces");
                                        now->body = dump_json(b);
                                        FAB_ASSIGN_OR_RETURN(now->version, tx.update(*now));
                                        forget_credentials();
                                        epoch = credential_epoch_.load();
                                        return *now;
                                      }));
    FAB_ASSIGN_OR_RETURN(body, parse_json(record->body));
  }
  AgentCredential found{.host_id = record->uid, .rotate = body.value("rotate", false)};
  std::lock_guard lock(credentials_mutex_);
  if (credential_epoch_.load() == epoch) {
    if (credentials_.size() >= 200000) credentials_.clear();
    credentials_[hash] = found;
  }
  return found;
}

Result<void> Fleet::request_credential_rotation(const auth::Caller& caller, int64_t host_id) {
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Host host, load_host(tx, caller, host_id, Right::kAdmin));
    FAB_ASSIGN_OR_RETURN(auto creds,
                         tx.list(kCredentialType, {.limit = 100000, .uid = host.header.id}));
    if (creds.empty()) {
      return fail(ErrorCode::kFailedPrecondition,
                  "host " + std::to_string(host_id) + " has not joined: it has no credential");
    }
    for (auto c : creds) {
      FAB_ASSIGN_OR_RETURN(Json body, parse_json(c.body));
      body["rotate"] = true;
      c.body = dump_json(body);
      FAB_TRY(tx.update(c));
    }
    forget_credentials();
    return {};
  });
}

Result<std::string> Fleet::rotate_credential(std::string_view credential) {
  std::string hash = crypto::sha256_hex(credential);
  return store_.write_value<std::string>([&](store::Transaction& tx) -> Result<std::string> {
    auto current = tx.get_by_key(kCredentialType, hash);
    if (!current) {
      if (current.error().code() == ErrorCode::kNotFound) {
        return fail(ErrorCode::kUnauthenticated, "unknown or revoked host credential");
      }
      return fail(current.error());
    }
    FAB_ASSIGN_OR_RETURN(Json body, parse_json(current->body));
    if (body.contains("replaces")) {
      return fail(ErrorCode::kFailedPrecondition,
                  "this credential was just issued; use it once before rotating it");
    }
    auto stored = tx.get(kHostType, current->uid);
    if (!stored) return fail(ErrorCode::kUnauthenticated, "unknown or revoked host credential");
    FAB_ASSIGN_OR_RETURN(Host host, host_from_record(*stored));
    // Earlier rotations whose answer never reached the agent: their credentials go.
    FAB_ASSIGN_OR_RETURN(auto creds,
                         tx.list(kCredentialType, {.limit = 100000, .uid = host.header.id}));
    for (const auto& c : creds) {
      if (c.id != current->id) FAB_TRY(tx.remove(kCredentialType, c.id));
    }
    forget_credentials();
    return insert_credential(tx, host, Json{{"replaces", current->id}});
  });
}

void Fleet::forget_credentials() {
  std::lock_guard lock(credentials_mutex_);
  credential_epoch_++;
  credentials_.clear();
}

Result<void> Fleet::remove_credentials(store::Transaction& tx, int64_t host_id) {
  FAB_ASSIGN_OR_RETURN(auto old, tx.list(kCredentialType, {.limit = 100000, .uid = host_id}));
  for (const auto& c : old) FAB_TRY(tx.remove(kCredentialType, c.id));
  // Before the commit, so no lookup can cache a credential this transaction removes.
  if (!old.empty()) forget_credentials();
  return {};
}

Result<bool> Fleet::put_inventory(store::Transaction& tx, int64_t host_id,
                                  const inventory::HostInventory& inv) {
  inventory::HostInventory named = inv;
  store::Record record{.type = std::string(kInventoryType),
                       .id = host_id,
                       .name = "inventory",
                       .uid = host_id,
                       .body = dump_json(named.to_json())};
  auto existing = tx.get(kInventoryType, host_id);
  if (existing) {
    if (existing->body == record.body) return false;  // Same hardware: nothing to reschedule.
    record.version = existing->version;
    return tx.update(record).map([](int64_t) { return true; });
  }
  return tx.insert(record).map([] { return true; });
}

Result<void> Fleet::count_allocation(store::Transaction& tx, int64_t host_id, int vms,
                                     const std::map<std::string, int>& gpus) {
  FAB_ASSIGN_OR_RETURN(auto record, tx.get(kHostType, host_id));
  FAB_ASSIGN_OR_RETURN(Host host, host_from_record(record));
  host.allocated_vms = std::max(0, host.allocated_vms + vms);
  for (const auto& [model, n] : gpus) {
    int& count = host.gpus_allocated[model];
    count = std::max(0, count + n);
    if (count == 0) host.gpus_allocated.erase(model);
  }
  return update_host(tx, std::move(host)).map([](const Host&) {});
}

Result<Host> Fleet::report_inventory(int64_t host_id, const inventory::HostInventory& inv) {
  return write_value<Host>([&](store::Transaction& tx) -> Result<Host> {
    FAB_ASSIGN_OR_RETURN(auto record, tx.get(kHostType, host_id));
    FAB_ASSIGN_OR_RETURN(Host host, host_from_record(record));
    inventory::HostInventory named = inv;
    named.hostname = host.header.name;
    FAB_ASSIGN_OR_RETURN(bool changed, put_inventory(tx, host_id, named));
    if (changed) ++host.inventory_version;
    host.summary = summarize(named);
    return update_host(tx, std::move(host));
  });
}

Result<void> Fleet::heartbeat(int64_t host_id, const Monitoring& monitoring) {
  int64_t now = unix_seconds(clock_.now());
  std::lock_guard lock(live_mutex_);
  Live& live = live_[host_id];
  live.last_seen = now;
  live.monitoring = monitoring;
  live.monitoring.timestamp = now;
  return {};
}

void Fleet::overlay(Host& host) {
  std::lock_guard lock(live_mutex_);
  auto it = live_.find(host.header.id);
  if (it == live_.end() || it->second.last_seen < host.last_seen) return;
  host.last_seen = it->second.last_seen;
  host.monitoring = it->second.monitoring;
  if (host.state() != HostState::kDisabled)
    host.header.state = static_cast<int>(HostState::kMonitored);
}

Result<void> Fleet::flush() {
  std::unordered_map<int64_t, Live> pending;
  {
    std::lock_guard lock(live_mutex_);
    pending.swap(live_);
  }
  if (pending.empty()) return {};
  auto written = write([&](store::Transaction& tx) -> Result<void> {
    for (const auto& [id, live] : pending) {
      auto record = tx.get(kHostType, id);
      if (!record) {
        if (record.error().code() == ErrorCode::kNotFound) continue;  // Deleted meanwhile.
        return fail(record.error());
      }
      FAB_ASSIGN_OR_RETURN(Host host, host_from_record(*record));
      host.last_seen = live.last_seen;
      host.monitoring = live.monitoring;
      if (host.state() != HostState::kDisabled) {
        host.header.state = static_cast<int>(HostState::kMonitored);
      }
      FAB_TRY(update_host(tx, std::move(host)));
    }
    return {};
  });
  if (!written) {  // Keep what was not written, unless a newer heartbeat came meanwhile.
    std::lock_guard lock(live_mutex_);
    for (auto& [id, live] : pending) live_.try_emplace(id, std::move(live));
  }
  return written;
}

Result<std::vector<int64_t>> Fleet::sweep_offline() {
  FAB_TRY(flush());
  int64_t cutoff = unix_seconds(clock_.now()) - options_.offline_after.count();
  return write_value<std::vector<int64_t>>(
      [&](store::Transaction& tx) -> Result<std::vector<int64_t>> {
        std::vector<int64_t> marked;
        store::ListQuery query{.limit = 1000, .state = static_cast<int>(HostState::kMonitored)};
        std::vector<Host> silent;
        while (true) {
          FAB_ASSIGN_OR_RETURN(auto batch, tx.list(kHostType, query));
          for (const auto& r : batch) {
            FAB_ASSIGN_OR_RETURN(Host h, host_from_record(r));
            if (h.last_seen <= cutoff) silent.push_back(std::move(h));
          }
          if (batch.size() < query.limit) break;
          query.after_id = batch.back().id;
        }
        for (Host& h : silent) {
          marked.push_back(h.header.id);
          h.header.state = static_cast<int>(HostState::kOffline);
          FAB_TRY(update_host(tx, std::move(h)));
        }
        return marked;
      });
}

}  // namespace fabrica::fleet
