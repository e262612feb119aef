#include "auth/vdc.h"

#include <algorithm>

namespace fabrica::auth {
namespace {

// Datastores and virtual networks arrive with the storage and network services; until
// then a VDC records their ids unchecked, and the rules are ready for them.
constexpr VdcResourceKind kKinds[] = {
    {"cluster", ObjectType::kCluster, "cluster"},
    {"host", ObjectType::kHost, "host"},
    {"datastore", ObjectType::kDatastore, "datastore"},
    {"vnet", ObjectType::kNet, "vnet"},
    {"marketplace", ObjectType::kMarketplace, "marketplace"},
    {"app", ObjectType::kMarketplaceApp, "app"},
};

std::string vdc_noun(int64_t id) { return "VDC " + std::to_string(id); }
std::string owner_tag(int64_t id) { return "vdc:" + std::to_string(id); }

store::Record vdc_record(const Vdc& v) {
  return store::Record{.type = std::string(kVdcType),
                       .id = v.header.id,
                       .name = v.header.name,
                       .uid = v.header.uid,
                       .gid = v.header.gid,
                       .state = v.header.state,
                       .key = v.header.name,
                       .body = dump_json(v.to_api_json()),
                       .version = v.version};
}

Result<Vdc> vdc_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Vdc v;
  FAB_ASSIGN_OR_RETURN(v.header, ObjectHeader::from_json(body));
  FAB_ASSIGN_OR_RETURN(v.attributes,
                       AttributeTree::from_json(body.value("template", Json::object())));
  try {
    v.groups = body.at("groups").get<std::vector<int64_t>>();
    v.rules = body.at("rules").get<std::vector<int64_t>>();
    for (const auto& res : body.at("resources")) {
      v.resources.push_back({res.at("kind").get<std::string>(), res.at("id").get<int64_t>()});
    }
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                "stored VDC " + std::to_string(r.id) + " is malformed: " + e.what());
  }
  v.version = r.version;
  return v;
}

template <typename Visit>
Result<void> each_vdc(store::Transaction& tx, Visit&& visit) {
  return store::for_each(tx, kVdcType, [&](const store::Record& r) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Vdc v, vdc_from_record(r));
    return visit(v);
  });
}

// Regenerates the VDC's rules and saves it, in one transaction.
Result<void> save(store::Transaction& tx, Vdc& v) {
  FAB_ASSIGN_OR_RETURN(v.rules,
                       sync_owned_rules(tx, owner_tag(v.header.id), v.rules, vdc_rule_texts(v)));
  FAB_ASSIGN_OR_RETURN(v.version, tx.update(vdc_record(v)));
  return {};
}

bool visible(const Caller& caller, const Vdc& v) {
  if (caller.is_superuser()) return true;
  return std::any_of(v.groups.begin(), v.groups.end(), [&](int64_t g) {
    return std::find(caller.groups.begin(), caller.groups.end(), g) != caller.groups.end();
  });
}

}  // namespace

std::span<const VdcResourceKind> vdc_resource_kinds() { return kKinds; }

const VdcResourceKind* vdc_resource_kind(std::string_view name) {
  for (const auto& k : kKinds) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

Json Vdc::to_api_json() const {
  Json j = Json::object();
  header.to_json(j);
  j["groups"] = groups;
  Json res = Json::array();
  for (const auto& r : resources) res.push_back(Json{{"kind", r.kind}, {"id", r.id}});
  j["resources"] = std::move(res);
  j["rules"] = rules;
  j["template"] = attributes.to_json();
  return j;
}

std::vector<std::string> vdc_rule_texts(const Vdc& vdc) {
  std::vector<std::string> texts;
  for (int64_t gid : vdc.groups) {
    std::string who = "@" + std::to_string(gid) + " ";
    for (const auto& r : vdc.resources) {
      std::string id = std::to_string(r.id);
      if (r.kind == "cluster") {
        texts.push_back(who + "CLUSTER/#" + id + " USE");
        texts.push_back(who + "HOST/%" + id + " USE");
        texts.push_back(who + "NET+DATASTORE/%" + id + " USE");
      } else if (r.kind == "host") {
        texts.push_back(who + "HOST/#" + id + " USE");
      } else if (r.kind == "datastore") {
        texts.push_back(who + "DATASTORE/#" + id + " USE");
      } else if (r.kind == "vnet") {
        texts.push_back(who + "NET/#" + id + " USE");
      } else if (r.kind == "marketplace") {
        texts.push_back(who + "MARKETPLACE/#" + id + " USE");
      } else if (r.kind == "app") {
        texts.push_back(who + "MARKETPLACEAPP/#" + id + " USE");
      }
    }
  }
  return texts;
}

Result<Vdc> Vdcs::create(const Caller& caller, const std::string& name,
                         const AttributeTree& attrs) {
  FAB_TRY(validate_name(name));
  FAB_TRY(authorizer_.require_superuser(caller, "create VDCs"));
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Vdc>([&](store::Transaction& tx) -> Result<Vdc> {
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kVdcType));
    Vdc v;
    v.header = ObjectHeader::create(id, name, caller.uid, kAdminGroupId, Permissions(0600), 0, now);
    v.attributes = attrs;
    v.version = 1;
    FAB_TRY(store::insert_named(tx, vdc_record(v)));
    return v;
  });
}

Result<Vdc> Vdcs::get(const Caller& caller, int64_t id) {
  return store_.read_value<Vdc>([&](store::Transaction& tx) -> Result<Vdc> {
    auto r = tx.get(kVdcType, id);
    if (!r) return fail(r.error().code(), vdc_noun(id) + " not found");
    FAB_ASSIGN_OR_RETURN(Vdc v, vdc_from_record(*r));
    if (!visible(caller, v)) return fail(ErrorCode::kNotFound, vdc_noun(id) + " not found");
    return v;
  });
}

Result<std::vector<Vdc>> Vdcs::list(const Caller& caller) {
  return store_.read_value<std::vector<Vdc>>(
      [&](store::Transaction& tx) -> Result<std::vector<Vdc>> {
        std::vector<Vdc> out;
        FAB_TRY(each_vdc(tx, [&](Vdc& v) -> Result<void> {
          if (visible(caller, v)) out.push_back(std::move(v));
          return {};
        }));
        return out;
      });
}

template <typename Fn>
Result<Vdc> Vdcs::mutate(const Caller& caller, int64_t id, Fn&& change) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Vdc>([&](store::Transaction& tx) -> Result<Vdc> {
    auto r = tx.get(kVdcType, id);
    if (!r) return fail(r.error().code(), vdc_noun(id) + " not found");
    FAB_ASSIGN_OR_RETURN(Vdc v, vdc_from_record(*r));
    if (!visible(caller, v)) return fail(ErrorCode::kNotFound, vdc_noun(id) + " not found");
    FAB_TRY(authorizer_.require_superuser(caller, "change VDCs"));
    FAB_TRY(change(tx, v));
    v.header.updated_at = now;
    FAB_TRY(save(tx, v));
    return v;
  });
}

Result<void> Vdcs::remove(const Caller& caller, int64_t id) {
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    auto r = tx.get(kVdcType, id);
    if (!r) return fail(r.error().code(), vdc_noun(id) + " not found");
    FAB_ASSIGN_OR_RETURN(Vdc v, vdc_from_record(*r));
    if (!visible(caller, v)) return fail(ErrorCode::kNotFound, vdc_noun(id) + " not found");
    FAB_TRY(authorizer_.require_superuser(caller, "change VDCs"));
    FAB_TRY(sync_owned_rules(tx, owner_tag(id), v.rules, {}));
    return tx.remove(kVdcType, id);
  });
}

Result<Vdc> Vdcs::add_group(const Caller& caller, int64_t id, int64_t gid) {
  return mutate(caller, id, [&](store::Transaction& tx, Vdc& v) -> Result<void> {
    if (!tx.get(kGroupType, gid)) {
      return fail(ErrorCode::kInvalidArgument, "group " + std::to_string(gid) + " does not exist",
                  "gid");
    }
    if (gid == kAdminGroupId) {
      return fail(ErrorCode::kInvalidArgument, "the admins group already sees everything", "gid");
    }
    if (std::find(v.groups.begin(), v.groups.end(), gid) == v.groups.end()) v.groups.push_back(gid);
    return {};
  });
}

Result<Vdc> Vdcs::remove_group(const Caller& caller, int64_t id, int64_t gid) {
  return mutate(caller, id, [&](store::Transaction&, Vdc& v) -> Result<void> {
    if (std::erase(v.groups, gid) == 0) {
      return fail(ErrorCode::kNotFound,
                  "group " + std::to_string(gid) + " is not in " + vdc_noun(v.header.id), "gid");
    }
    return {};
  });
}

Result<Vdc> Vdcs::add_resource(const Caller& caller, int64_t id, const VdcResource& resource) {
  const VdcResourceKind* kind = vdc_resource_kind(resource.kind);
  if (kind == nullptr) {
    return fail(ErrorCode::kInvalidArgument,
                "must be cluster, host, datastore, vnet or marketplace", "kind");
  }
  if (resource.id < 0) return fail(ErrorCode::kInvalidArgument, "must be >= 0", "id");
  return mutate(caller, id, [&](store::Transaction& tx, Vdc& v) -> Result<void> {
    if (!kind->record_type.empty() && !tx.get(kind->record_type, resource.id)) {
      return fail(ErrorCode::kInvalidArgument,
                  resource.kind + " " + std::to_string(resource.id) + " does not exist", "id");
    }
    if (std::find(v.resources.begin(), v.resources.end(), resource) == v.resources.end()) {
      v.resources.push_back(resource);
    }
    return {};
  });
}

Result<Vdc> Vdcs::remove_resource(const Caller& caller, int64_t id, const VdcResource& resource) {
  return mutate(caller, id, [&](store::Transaction&, Vdc& v) -> Result<void> {
    if (std::erase(v.resources, resource) == 0) {
      return fail(
          ErrorCode::kNotFound,
          resource.kind + " " + std::to_string(resource.id) + " is not in " + vdc_noun(v.header.id),
          "id");
    }
    return {};
  });
}

Result<std::vector<int64_t>> vdcs_with_group(store::Transaction& tx, int64_t gid) {
  std::vector<int64_t> out;
  FAB_TRY(each_vdc(tx, [&](Vdc& v) -> Result<void> {
    if (std::find(v.groups.begin(), v.groups.end(), gid) != v.groups.end()) {
      out.push_back(v.header.id);
    }
    return {};
  }));
  return out;
}

Result<void> vdc_forget_resource(store::Transaction& tx, std::string_view kind, int64_t id) {
  return each_vdc(tx, [&](Vdc& v) -> Result<void> {
    VdcResource gone{std::string(kind), id};
    if (std::erase(v.resources, gone) == 0) return {};
    return save(tx, v);
  });
}

}  // namespace fabrica::auth
