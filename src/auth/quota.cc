#include "auth/quota.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "auth/identity.h"

namespace fabrica::auth {
namespace {

constexpr int kHoldReserved = 0;
constexpr int kHoldCommitted = 1;
constexpr int64_t kMaxAmount = int64_t{1} << 53;

constexpr std::string_view kScalarKeys[] = {
    "vms", "running_vms", "vcpus", "memory_mb", "system_disk_mb", "images", "image_mb", "leases"};

std::string record_key(QuotaOwner owner, int64_t id) {
  return std::string(quota_owner_name(owner)) + ":" + std::to_string(id);
}

Json amounts_json(const Amounts& a) {
  Json j = Json::object();
  for (const auto& [k, v] : a) j[k] = v;
  return j;
}

Result<Amounts> amounts_from_json(const Json& j) {
  Amounts a;
  for (const auto& [k, v] : j.items()) a[k] = v.get<int64_t>();
  return a;
}

int64_t value_or(const Amounts& a, std::string_view key, int64_t fallback) {
  auto it = a.find(key);
  return it == a.end() ? fallback : it->second;
}

// Drops zero usage so records stay small and recount compares like with like.
void add(Amounts& usage, const std::string& key, int64_t delta) {
  int64_t v = value_or(usage, key, 0) + delta;
  if (v == 0) {
    usage.erase(key);
  } else {
    usage[key] = v;
  }
}

store::Record quota_record(const Quota& q) {
  Json body = q.to_api_json();
  return store::Record{.type = std::string(kQuotaType),
                       .id = q.record_id,
                       .name = q.owner_name,
                       .uid = q.owner == QuotaOwner::kUser ? q.owner_id : -1,
                       .gid = q.gid,
                       .state = 0,
                       .key = record_key(q.owner, q.owner_id),
                       .body = dump_json(body),
                       .version = q.version};
}

Result<Quota> quota_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Quota q;
  try {
    q.owner = body.at("owner") == "group" ? QuotaOwner::kGroup : QuotaOwner::kUser;
    q.owner_id = body.at("id").get<int64_t>();
    q.gid = body.at("gid").get<int64_t>();
    q.owner_name = body.at("name").get<std::string>();
    FAB_ASSIGN_OR_RETURN(q.global.limits, amounts_from_json(body.at("limits")));
    FAB_ASSIGN_OR_RETURN(q.global.usage, amounts_from_json(body.at("usage")));
    for (const auto& [cid, scope] : body.at("clusters").items()) {
      QuotaScope s;
      FAB_ASSIGN_OR_RETURN(s.limits, amounts_from_json(scope.at("limits")));
      FAB_ASSIGN_OR_RETURN(s.usage, amounts_from_json(scope.at("usage")));
      q.clusters[std::stoll(cid)] = std::move(s);
    }
    FAB_ASSIGN_OR_RETURN(q.user_defaults, amounts_from_json(body.at("user_defaults")));
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                "stored quota " + std::to_string(r.id) + " is malformed: " + e.what());
  }
  q.record_id = r.id;
  q.version = r.version;
  return q;
}

store::Record hold_record(const Hold& h) {
  return store::Record{.type = std::string(kHoldType),
                       .id = h.id,
                       .name = h.holder,
                       .uid = h.consumer.uid,
                       .gid = h.consumer.gid,
                       .state = h.committed ? kHoldCommitted : kHoldReserved,
                       .body = dump_json(h.to_api_json())};
}

Result<Hold> hold_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Hold h;
  try {
    h.id = r.id;
    h.consumer = Consumer{.uid = r.uid, .gid = r.gid};
    if (!body.at("cluster").is_null()) h.cluster = body.at("cluster").get<int64_t>();
    FAB_ASSIGN_OR_RETURN(h.amounts, amounts_from_json(body.at("amounts")));
    h.holder = r.name;
    h.committed = r.state == kHoldCommitted;
    h.expires_at = body.value("expires_at_unix", int64_t{0});
    h.created_at = body.value("created_at_unix", int64_t{0});
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                "stored quota hold " + std::to_string(r.id) + " is malformed: " + e.what());
  }
  return h;
}

// The quota of an owner, or an empty one (not yet stored: record_id -1) when it has none.
Result<Quota> load_or_empty(store::Transaction& tx, QuotaOwner owner, int64_t id) {
  auto record = tx.get_by_key(kQuotaType, record_key(owner, id));
  if (record) return quota_from_record(*record);
  if (record.error().code() != ErrorCode::kNotFound) return fail(record.error());
  Quota q;
  q.owner = owner;
  q.owner_id = id;
  auto object = tx.get(owner == QuotaOwner::kUser ? kUserType : kGroupType, id);
  if (!object) {
    if (object.error().code() == ErrorCode::kNotFound) {
      return fail(ErrorCode::kNotFound,
                  std::string(quota_owner_name(owner)) + " " + std::to_string(id) + " not found");
    }
    return fail(object.error());
  }
  q.owner_name = object->name;
  q.gid = owner == QuotaOwner::kUser ? object->gid : id;
  return q;
}

Result<void> save(store::Transaction& tx, Quota& q) {
  if (q.record_id < 0) {
    FAB_ASSIGN_OR_RETURN(q.record_id, tx.allocate_id(kQuotaType));
    q.version = 1;
    return tx.insert(quota_record(q));
  }
  FAB_ASSIGN_OR_RETURN(q.version, tx.update(quota_record(q)));
  return {};
}

std::string who(const Quota& q) {
  return std::string(quota_owner_name(q.owner)) + " " + q.owner_name;
}

// The limit that applies to `key`: a number >= 0, or nullopt for none.
std::optional<int64_t> effective_limit(const Quota& q, const Quota* group, std::string_view key) {
  int64_t v = value_or(q.global.limits, key, kQuotaDefault);
  if (v == kQuotaDefault && q.owner == QuotaOwner::kUser && group != nullptr) {
    v = value_or(group->user_defaults, key, kQuotaDefault);
  }
  if (v < 0) return std::nullopt;
  return v;
}

std::optional<int64_t> cluster_limit(const Quota& q, int64_t cluster, std::string_view key) {
  auto it = q.clusters.find(cluster);
  if (it == q.clusters.end()) return std::nullopt;
  int64_t v = value_or(it->second.limits, key, kQuotaDefault);
  if (v < 0) return std::nullopt;
  return v;
}

Result<void> check_one(const Quota& q, std::optional<int64_t> limit, const Amounts& usage,
                       const std::string& key, int64_t requested, std::string_view scope) {
  if (!limit || requested <= 0) return {};
  int64_t used = value_or(usage, key, 0);
  if (used + requested <= *limit) return {};
  return fail(ErrorCode::kQuotaExceeded,
              who(q) + ": " + describe_quota_key(key) + " quota" + std::string(scope) + " " +
                  std::to_string(*limit) + ", used " + std::to_string(used) + ", requested " +
                  std::to_string(requested),
              key);
}

// Checks `amounts` against both quotas (global and, with a cluster, cluster-scoped limits).
Result<void> check(const Quota& user, const Quota& group, std::optional<int64_t> cluster,
                   const Amounts& amounts) {
  for (const auto& [key, amount] : amounts) {
    FAB_TRY(
        check_one(user, effective_limit(user, &group, key), user.global.usage, key, amount, ""));
    FAB_TRY(check_one(group, effective_limit(group, nullptr, key), group.global.usage, key, amount,
                      ""));
    if (cluster) {
      std::string scope = " in cluster " + std::to_string(*cluster);
      auto usage_in = [&](const Quota& q) {
        auto it = q.clusters.find(*cluster);
        return it == q.clusters.end() ? Amounts{} : it->second.usage;
      };
      FAB_TRY(
          check_one(user, cluster_limit(user, *cluster, key), usage_in(user), key, amount, scope));
      FAB_TRY(check_one(group, cluster_limit(group, *cluster, key), usage_in(group), key, amount,
                        scope));
    }
  }
  return {};
}

void charge(Quota& q, std::optional<int64_t> cluster, const Amounts& amounts, int64_t sign) {
  for (const auto& [key, amount] : amounts) {
    add(q.global.usage, key, sign * amount);
    if (cluster) add(q.clusters[*cluster].usage, key, sign * amount);
  }
}

// Applies a hold's amounts (sign +1) or gives them back (-1) on both quotas, after checking
// the limits when charging.
Result<void> apply(store::Transaction& tx, const Consumer& c, std::optional<int64_t> cluster,
                   const Amounts& amounts, int64_t sign) {
  FAB_ASSIGN_OR_RETURN(Quota user, load_or_empty(tx, QuotaOwner::kUser, c.uid));
  FAB_ASSIGN_OR_RETURN(Quota group, load_or_empty(tx, QuotaOwner::kGroup, c.gid));
  if (sign > 0) FAB_TRY(check(user, group, cluster, amounts));
  charge(user, cluster, amounts, sign);
  charge(group, cluster, amounts, sign);
  FAB_TRY(save(tx, user));
  return save(tx, group);
}

Result<Amounts> validated(const Amounts& amounts) {
  for (const auto& [key, value] : amounts) {
    FAB_TRY(validate_quota_key(key, "amounts." + key));
    if (value < 0 || value > kMaxAmount) {
      return fail(ErrorCode::kInvalidArgument, "must be between 0 and 2^53", "amounts." + key);
    }
  }
  return amounts;
}

}  // namespace

std::string_view quota_owner_name(QuotaOwner owner) {
  return owner == QuotaOwner::kUser ? "user" : "group";
}

Result<void> validate_quota_key(std::string_view key, std::string_view field) {
  if (std::find(std::begin(kScalarKeys), std::end(kScalarKeys), key) != std::end(kScalarKeys)) {
    return {};
  }
  for (std::string_view prefix : {"gpu:", "mig:"}) {
    if (!key.starts_with(prefix)) continue;
    std::string_view name = key.substr(prefix.size());
    bool ok = !name.empty() && name.size() <= 64 && name.front() != ' ' && name.back() != ' ';
    for (char c : name) {
      ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_' ||
                  c == '+' || c == ' ');
    }
    if (ok) return {};
  }
  return fail(ErrorCode::kInvalidArgument,
              "unknown quota \"" + std::string(key) +
                  "\" (vms, running_vms, vcpus, memory_mb, system_disk_mb, images, image_mb, "
                  "leases, gpu:<model>, mig:<profile>)",
              std::string(field));
}

std::string describe_quota_key(std::string_view key) {
  if (key.starts_with("gpu:")) return "GPU " + std::string(key.substr(4));
  if (key.starts_with("mig:")) return "MIG " + std::string(key.substr(4));
  if (key == "vms") return "VMs";
  if (key == "running_vms") return "running VMs";
  if (key == "vcpus") return "vCPU";
  if (key == "memory_mb") return "memory MB";
  if (key == "system_disk_mb") return "system disk MB";
  if (key == "images") return "images";
  if (key == "image_mb") return "image MB";
  if (key == "leases") return "network leases";
  return std::string(key);
}

Result<Amounts> read_amounts(const Json& object, std::string_view field, int64_t min) {
  if (!object.is_object()) {
    return fail(ErrorCode::kInvalidArgument, "must be an object", std::string(field));
  }
  Amounts out;
  for (const auto& [key, value] : object.items()) {
    std::string f = std::string(field) + "." + key;
    FAB_TRY(validate_quota_key(key, f));
    if (!value.is_number_integer() || value.get<int64_t>() < min ||
        value.get<int64_t>() > kMaxAmount) {
      return fail(ErrorCode::kInvalidArgument,
                  "must be an integer >= " + std::to_string(min) + " (-1 default, -2 unlimited)",
                  f);
    }
    out[key] = value.get<int64_t>();
  }
  return out;
}

Json Quota::to_api_json() const {
  Json clusters_json = Json::object();
  for (const auto& [cid, scope] : clusters) {
    clusters_json[std::to_string(cid)] =
        Json{{"limits", amounts_json(scope.limits)}, {"usage", amounts_json(scope.usage)}};
  }
  return Json{{"owner", quota_owner_name(owner)},
              {"id", owner_id},
              {"name", owner_name},
              {"gid", gid},
              {"limits", amounts_json(global.limits)},
              {"usage", amounts_json(global.usage)},
              {"clusters", std::move(clusters_json)},
              {"user_defaults", amounts_json(user_defaults)}};
}

Json Hold::to_api_json() const {
  return Json{{"id", id},
              {"uid", consumer.uid},
              {"gid", consumer.gid},
              {"cluster", cluster ? Json(*cluster) : Json(nullptr)},
              {"amounts", amounts_json(amounts)},
              {"holder", holder},
              {"committed", committed},
              {"expires_at", expires_at ? Json(format_time(expires_at)) : Json(nullptr)},
              {"expires_at_unix", expires_at},
              {"created_at_unix", created_at}};
}

Result<Quota> Quotas::load_visible(store::Transaction& tx, const Caller& caller, QuotaOwner owner,
                                   int64_t id) {
  std::string noun = std::string(quota_owner_name(owner)) + " " + std::to_string(id);
  auto object = tx.get(owner == QuotaOwner::kUser ? kUserType : kGroupType, id);
  if (!object) return fail(object.error().code(), noun + " not found");
  ObjectRef ref;
  if (owner == QuotaOwner::kUser) {
    FAB_ASSIGN_OR_RETURN(User u, user_from_record(*object));
    ref = object_ref(ObjectType::kUser, u.header);
  } else {
    FAB_ASSIGN_OR_RETURN(Group g, group_from_record(*object));
    ref = object_ref(ObjectType::kGroup, g.header);
  }
  FAB_TRY(authorizer_.require(caller, ref, Right::kUse, noun));
  FAB_ASSIGN_OR_RETURN(Quota q, load_or_empty(tx, owner, id));
  q.gid = ref.gid;  // A user may have changed group since its quota was stored.
  q.owner_name = object->name;
  return q;
}

Result<Quota> Quotas::get(const Caller& caller, QuotaOwner owner, int64_t id) {
  return store_.read_value<Quota>(
      [&](store::Transaction& tx) { return load_visible(tx, caller, owner, id); });
}

Result<std::vector<Hold>> Quotas::holds(const Caller& caller, QuotaOwner owner, int64_t id) {
  return store_.read_value<std::vector<Hold>>(
      [&](store::Transaction& tx) -> Result<std::vector<Hold>> {
        FAB_TRY(load_visible(tx, caller, owner, id));
        store::ListQuery q{.limit = 100000};
        if (owner == QuotaOwner::kUser) {
          q.uid = id;
        } else {
          q.gid = id;
        }
        FAB_ASSIGN_OR_RETURN(auto records, tx.list(kHoldType, q));
        std::vector<Hold> out;
        for (const auto& r : records) {
          FAB_ASSIGN_OR_RETURN(Hold h, hold_from_record(r));
          out.push_back(std::move(h));
        }
        return out;
      });
}

Result<Quota> Quotas::set(const Caller& caller, QuotaOwner owner, int64_t id,
                          const QuotaUpdate& update) {
  return store_.write_value<Quota>([&](store::Transaction& tx) -> Result<Quota> {
    FAB_ASSIGN_OR_RETURN(Quota q, load_visible(tx, caller, owner, id));
    if (update.cluster) {
      auto cluster = tx.get("cluster", *update.cluster);
      if (!cluster && cluster.error().code() == ErrorCode::kNotFound) {
        return fail(ErrorCode::kNotFound,
                    "cluster " + std::to_string(*update.cluster) + " does not exist", "cluster");
      }
      FAB_TRY(cluster);
    }
    // What the group holds bounds what its administrators may hand out.
    FAB_ASSIGN_OR_RETURN(Quota group, load_or_empty(tx, QuotaOwner::kGroup, q.gid));
    bool super = caller.is_superuser();
    auto within_group = [&](const Amounts& values, std::string_view field) -> Result<void> {
      if (super) return {};
      for (const auto& [key, value] : values) {
        std::optional<int64_t> held = effective_limit(group, nullptr, key);
        if (update.cluster) {
          auto scoped = cluster_limit(group, *update.cluster, key);
          if (scoped) held = held ? std::min(*held, *scoped) : scoped;
        }
        if (!held) continue;
        int64_t granted = value;
        if (value == kQuotaDefault && owner == QuotaOwner::kUser) {
          granted = value_or(group.user_defaults, key, kQuotaUnlimited);
        }
        if (granted < 0 || granted > *held) {
          return fail(ErrorCode::kPermissionDenied,
                      "cannot grant more than " + who(group) +
                          " holds: " + describe_quota_key(key) + " quota " + std::to_string(*held) +
                          ", asked " + (granted < 0 ? "unlimited" : std::to_string(granted)),
                      std::string(field) + "." + key);
        }
      }
      return {};
    };
    if (owner == QuotaOwner::kGroup) {
      if (!update.limits.empty())
        FAB_TRY(authorizer_.require_superuser(caller, "set group quotas"));
      if (!update.user_defaults.empty() && !super && !caller.administers(id)) {
        return fail(ErrorCode::kPermissionDenied, "only an administrator of group " +
                                                      std::to_string(id) +
                                                      " may set its default user quotas");
      }
      if (update.cluster && !update.user_defaults.empty()) {
        return fail(ErrorCode::kInvalidArgument, "default user quotas are not scoped by cluster",
                    "cluster");
      }
      FAB_TRY(within_group(update.user_defaults, "user_defaults"));
      for (const auto& [key, value] : update.user_defaults) q.user_defaults[key] = value;
    } else {
      if (!update.user_defaults.empty()) {
        return fail(ErrorCode::kInvalidArgument, "only groups have default user quotas",
                    "user_defaults");
      }
      if (!super) {
        if (id == caller.uid) {
          return fail(ErrorCode::kPermissionDenied, "you cannot change your own quota");
        }
        if (!caller.administers(q.gid)) {
          return fail(ErrorCode::kPermissionDenied,
                      "only an administrator of the user's group may set its quota");
        }
      }
      FAB_TRY(within_group(update.limits, "limits"));
    }
    Amounts& limits = update.cluster ? q.clusters[*update.cluster].limits : q.global.limits;
    for (const auto& [key, value] : update.limits) {
      if (value == kQuotaDefault) {
        limits.erase(key);
      } else {
        limits[key] = value;
      }
    }
    if (update.cluster) {
      auto it = q.clusters.find(*update.cluster);
      if (it->second.limits.empty() && it->second.usage.empty()) q.clusters.erase(it);
    }
    FAB_TRY(save(tx, q));
    return q;
  });
}

Result<Hold> Quotas::reserve(store::Transaction& tx, Consumer consumer,
                             std::optional<int64_t> cluster, const Amounts& amounts,
                             std::string holder, std::optional<int64_t> expires_at) {
  FAB_ASSIGN_OR_RETURN(Amounts checked, validated(amounts));
  FAB_TRY(apply(tx, consumer, cluster, checked, +1));
  Hold h;
  FAB_ASSIGN_OR_RETURN(h.id, tx.allocate_id(kHoldType));
  h.consumer = consumer;
  h.cluster = cluster;
  h.amounts = std::move(checked);
  h.holder = std::move(holder);
  h.expires_at = expires_at.value_or(0);
  h.created_at = unix_seconds(clock_.now());
  FAB_TRY(tx.insert(hold_record(h)));
  return h;
}

Result<Hold> Quotas::commit(store::Transaction& tx, int64_t hold_id,
                            std::optional<Amounts> actual) {
  auto record = tx.get(kHoldType, hold_id);
  if (!record)
    return fail(record.error().code(), "quota hold " + std::to_string(hold_id) + " not found");
  FAB_ASSIGN_OR_RETURN(Hold h, hold_from_record(*record));
  if (actual) {
    FAB_ASSIGN_OR_RETURN(Amounts wanted, validated(*actual));
    Amounts more, less;
    for (const auto& [key, v] : wanted) {
      int64_t d = v - value_or(h.amounts, key, 0);
      if (d > 0) more[key] = d;
      if (d < 0) less[key] = -d;
    }
    for (const auto& [key, v] : h.amounts) {
      if (!wanted.contains(key) && v > 0) less[key] = v;
    }
    FAB_TRY(apply(tx, h.consumer, h.cluster, less, -1));
    FAB_TRY(apply(tx, h.consumer, h.cluster, more, +1));
    h.amounts.clear();
    for (const auto& [key, v] : wanted) {
      if (v > 0) h.amounts[key] = v;
    }
  }
  h.committed = true;
  h.expires_at = 0;
  store::Record updated = hold_record(h);
  updated.version = record->version;
  FAB_TRY(tx.update(updated));
  return h;
}

Result<void> Quotas::release(store::Transaction& tx, int64_t hold_id) {
  auto record = tx.get(kHoldType, hold_id);
  if (!record)
    return fail(record.error().code(), "quota hold " + std::to_string(hold_id) + " not found");
  FAB_ASSIGN_OR_RETURN(Hold h, hold_from_record(*record));
  FAB_TRY(apply(tx, h.consumer, h.cluster, h.amounts, -1));
  return tx.remove(kHoldType, hold_id);
}

Result<int> Quotas::release_holder(store::Transaction& tx, std::string_view holder) {
  FAB_ASSIGN_OR_RETURN(auto records,
                       tx.list(kHoldType, {.limit = 100000, .name = std::string(holder)}));
  for (const auto& r : records) FAB_TRY(release(tx, r.id));
  return static_cast<int>(records.size());
}

Result<int> Quotas::expire() {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<int>([&](store::Transaction& tx) -> Result<int> {
    FAB_ASSIGN_OR_RETURN(auto records,
                         tx.list(kHoldType, {.limit = 100000, .state = kHoldReserved}));
    int released = 0;
    for (const auto& r : records) {
      FAB_ASSIGN_OR_RETURN(Hold h, hold_from_record(r));
      if (h.expires_at == 0 || h.expires_at > now) continue;
      FAB_TRY(release(tx, h.id));
      ++released;
    }
    return released;
  });
}

Result<std::vector<QuotaDrift>> Quotas::recount(const Caller& caller, bool fix) {
  FAB_TRY(authorizer_.require_superuser(caller, "recount quotas"));
  auto work = [&](store::Transaction& tx) -> Result<std::vector<QuotaDrift>> {
    // Usage as the holds say it is, per quota record key.
    std::map<std::string, Quota> counted;
    FAB_TRY(store::for_each(tx, kHoldType, [&](const store::Record& r) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(Hold h, hold_from_record(r));
      for (auto [owner, id] : {std::pair{QuotaOwner::kUser, h.consumer.uid},
                               std::pair{QuotaOwner::kGroup, h.consumer.gid}}) {
        Quota& q = counted[record_key(owner, id)];
        q.owner = owner;
        q.owner_id = id;
        charge(q, h.cluster, h.amounts, +1);
      }
      return {};
    }));
    std::map<std::string, Quota> stored;
    FAB_TRY(store::for_each(tx, kQuotaType, [&](const store::Record& r) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(Quota q, quota_from_record(r));
      stored[record_key(q.owner, q.owner_id)] = std::move(q);
      return {};
    }));
    std::vector<QuotaDrift> drifts;
    auto compare = [&](QuotaOwner owner, int64_t id, std::optional<int64_t> cluster,
                       const Amounts& have, const Amounts& want) {
      std::set<std::string> keys;
      for (const auto& [k, v] : have) keys.insert(k);
      for (const auto& [k, v] : want) keys.insert(k);
      for (const auto& k : keys) {
        int64_t a = value_or(have, k, 0), b = value_or(want, k, 0);
        if (a != b) drifts.push_back({owner, id, cluster, k, a, b});
      }
    };
    std::set<std::string> all;
    for (const auto& [k, q] : counted) all.insert(k);
    for (const auto& [k, q] : stored) all.insert(k);
    for (const auto& key : all) {
      const Quota* have = stored.contains(key) ? &stored[key] : nullptr;
      const Quota* want = counted.contains(key) ? &counted[key] : nullptr;
      const Quota& any = have ? *have : *want;
      size_t before = drifts.size();
      compare(any.owner, any.owner_id, std::nullopt, have ? have->global.usage : Amounts{},
              want ? want->global.usage : Amounts{});
      std::set<int64_t> clusters;
      if (have)
        for (const auto& [c, s] : have->clusters) clusters.insert(c);
      if (want)
        for (const auto& [c, s] : want->clusters) clusters.insert(c);
      for (int64_t c : clusters) {
        auto usage = [&](const Quota* q) {
          if (!q || !q->clusters.contains(c)) return Amounts{};
          return q->clusters.at(c).usage;
        };
        compare(any.owner, any.owner_id, c, usage(have), usage(want));
      }
      if (!fix || drifts.size() == before) continue;
      FAB_ASSIGN_OR_RETURN(Quota q, load_or_empty(tx, any.owner, any.owner_id));
      q.global.usage = want ? want->global.usage : Amounts{};
      for (auto& [c, s] : q.clusters) s.usage.clear();
      if (want)
        for (const auto& [c, s] : want->clusters) q.clusters[c].usage = s.usage;
      FAB_TRY(save(tx, q));
    }
    return drifts;
  };
  if (fix) return store_.write_value<std::vector<QuotaDrift>>(work);
  return store_.read_value<std::vector<QuotaDrift>>(work);
}

Result<void> require_no_quota_use(store::Transaction& tx, QuotaOwner owner, int64_t id) {
  store::ListQuery q{.limit = 1};
  if (owner == QuotaOwner::kUser) {
    q.uid = id;
  } else {
    q.gid = id;
  }
  FAB_ASSIGN_OR_RETURN(auto holds, tx.list(kHoldType, q));
  if (holds.empty()) return {};
  return fail(ErrorCode::kFailedPrecondition, std::string(quota_owner_name(owner)) + " " +
                                                  std::to_string(id) + " still holds resources (" +
                                                  holds.front().name + "); release them first");
}

Result<void> remove_quota(store::Transaction& tx, QuotaOwner owner, int64_t id) {
  auto record = tx.get_by_key(kQuotaType, record_key(owner, id));
  if (!record) {
    if (record.error().code() == ErrorCode::kNotFound) return {};
    return fail(record.error());
  }
  return tx.remove(kQuotaType, record->id);
}

}  // namespace fabrica::auth
