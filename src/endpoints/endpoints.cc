#include "endpoints/endpoints.h"

#include <algorithm>
#include <boost/url/parse.hpp>
#include <cctype>
#include <charconv>
#include <fstream>
#include <sstream>

#include "auth/identity.h"

namespace fabrica::endpoints {
namespace {

constexpr Permissions kEndpointPermissions{0640};  // The tenant's members may use it.
constexpr size_t kMaxKey = 4096;
constexpr size_t kMaxDescription = 1024;

std::string endpoint_noun(int64_t id) { return "endpoint " + std::to_string(id); }

// Names are unique within a tenant.
std::string unique_key(int64_t gid, const std::string& name) {
  return std::to_string(gid) + "/" + name;
}

store::Record endpoint_record(const Endpoint& e) {
  Json body = e.to_api_json();
  body.erase("backend_key_set");
  body["sealed_key"] = e.sealed_key;
  for (size_t i = 0; i < e.vm_backends.size(); ++i) {
    body["vm_backends"][i]["sealed_key"] = e.vm_backends[i].sealed_key;
  }
  return store::Record{.type = std::string(kEndpointType),
                       .id = e.header.id,
                       .name = e.header.name,
                       .uid = e.header.uid,
                       .gid = e.header.gid,
                       .state = e.header.state,
                       .key = unique_key(e.header.gid, e.header.name),
                       .body = dump_json(body),
                       .version = e.version};
}

Result<Endpoint> endpoint_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Endpoint e;
  FAB_ASSIGN_OR_RETURN(e.header, ObjectHeader::from_json(body));
  try {
    e.model = body.at("model").get<std::string>();
    e.backends = body.at("backends").get<std::vector<std::string>>();
    e.sealed_key = body.at("sealed_key").get<std::string>();
    e.description = body.value("description", "");
    for (const Json& v : body.value("vm_backends", Json::array())) {
      e.vm_backends.push_back({.vm_id = v.at("vm_id").get<int64_t>(),
                               .url = v.at("url").get<std::string>(),
                               .sealed_key = v.value("sealed_key", "")});
    }
  } catch (const std::exception& ex) {
    return fail(ErrorCode::kInternal,
                "stored " + endpoint_noun(r.id) + " is malformed: " + ex.what());
  }
  e.version = r.version;
  return e;
}

Result<void> validate_model(const std::string& model) {
  if (model.empty() || model.size() > 256) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 to 256 characters", "model");
  }
  for (unsigned char c : model) {
    if (c < 0x21 || c > 0x7e) {
      return fail(ErrorCode::kInvalidArgument, "must be printable ASCII without spaces", "model");
    }
  }
  return {};
}

Result<void> validate_backends(const std::vector<std::string>& backends) {
  if (backends.empty() || backends.size() > Endpoints::kMaxBackends) {
    return fail(ErrorCode::kInvalidArgument, "must list 1 to 16 backend URLs", "backends");
  }
  for (size_t i = 0; i < backends.size(); ++i) {
    std::string field = "backends[" + std::to_string(i) + "]";
    FAB_TRY(validate_backend_url(backends[i], field));
    if (std::find(backends.begin(), backends.begin() + static_cast<std::ptrdiff_t>(i),
                  backends[i]) != backends.begin() + static_cast<std::ptrdiff_t>(i)) {
      return fail(ErrorCode::kInvalidArgument, "is listed twice", field);
    }
  }
  return {};
}

Result<void> validate_key(const std::string& key) {
  if (key.size() > kMaxKey) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 4096 bytes", "backend_key");
  }
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f) {
      return fail(ErrorCode::kInvalidArgument, "must be printable (it goes in an HTTP header)",
                  "backend_key");
    }
  }
  return {};
}

Result<void> validate_description(const std::string& description) {
  if (description.size() > kMaxDescription) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 1024 characters", "description");
  }
  return {};
}

}  // namespace

// ---- Validation ----

Result<void> validate_backend_url(std::string_view url, const std::string& field) {
  auto bad = [&](const std::string& why) {
    return fail(ErrorCode::kInvalidArgument, why + ": \"https://host:port[/path]\"", field);
  };
  if (url.size() > 2048) return bad("must be at most 2048 characters");
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed) return bad("is not a URL");
  const boost::urls::url_view& u = *parsed;
  // https backends are verified by the gateway (its --backend-ca-file, else the system's CAs).
  if (u.scheme_id() != boost::urls::scheme::http && u.scheme_id() != boost::urls::scheme::https) {
    return bad("must be an https or http URL");
  }
  if (!u.has_authority() || u.encoded_host().empty()) return bad("has no host");
  if (u.has_userinfo()) return bad("must not carry credentials (use backend_key)");
  if (u.has_port()) {
    std::string_view port = u.port();
    int n = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), n);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || n < 1 ||
        n > 65535) {
      return bad("has a port outside 1-65535");
    }
  }
  if (u.has_query() || u.has_fragment()) return bad("must have no query or fragment");
  return {};
}

// ---- Endpoint ----

Json Endpoint::to_api_json() const {
  Json j = Json::object();
  header.to_json(j);
  j["model"] = model;
  j["backends"] = backends;
  j["backend_key_set"] = !sealed_key.empty();
  j["vm_backends"] = Json::array();
  for (const VmBackend& v : vm_backends) {
    j["vm_backends"].push_back({{"vm_id", v.vm_id}, {"url", v.url}});
  }
  j["description"] = description;
  return j;
}

Json Route::to_json() const {
  return Json{{"endpoint_id", endpoint_id},
              {"name", name},
              {"gid", gid},
              {"model", model},
              {"backends", backends},
              {"backend_key", backend_key},
              {"backend_keys", backend_keys},
              {"backend_vms", backend_vms}};
}

// ---- Endpoints ----

Result<Endpoint> Endpoints::load(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                                 Right right) {
  auto r = tx.get(kEndpointType, id);
  if (!r) return fail(r.error().code(), endpoint_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(Endpoint e, endpoint_from_record(*r));
  FAB_TRY(authorizer_.require(caller, auth::object_ref(ObjectType::kEndpoint, e.header), right,
                              endpoint_noun(id)));
  return e;
}

Result<std::optional<int64_t>> Endpoints::find_model(store::Transaction& tx, int64_t gid,
                                                     const std::string& model, int64_t except_id) {
  std::optional<int64_t> found;
  FAB_TRY(store::for_each(
      tx, kEndpointType,
      [&](const store::Record& r) -> Result<void> {
        if (r.id == except_id || found) return {};
        FAB_ASSIGN_OR_RETURN(Endpoint e, endpoint_from_record(r));
        if (e.model == model) found = e.header.id;
        return {};
      },
      store::ListQuery{.gid = gid}));
  return found;
}

Result<void> Endpoints::check_model_free(store::Transaction& tx, int64_t gid,
                                         const std::string& model, int64_t except_id) {
  FAB_ASSIGN_OR_RETURN(auto taken, find_model(tx, gid, model, except_id));
  if (taken) {
    return fail(ErrorCode::kAlreadyExists,
                "another endpoint of this group already serves model \"" + model + "\"", "model");
  }
  return {};
}

Result<Endpoint> Endpoints::create(const auth::Caller& caller, const NewEndpoint& request) {
  FAB_TRY(validate_name(request.name));
  FAB_TRY(validate_model(request.model));
  FAB_TRY(validate_backends(request.backends));
  if (request.backend_key) FAB_TRY(validate_key(*request.backend_key));
  FAB_TRY(validate_description(request.description));
  int64_t gid = request.gid.value_or(caller.gid);
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kEndpoint, gid));
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Endpoint>([&](store::Transaction& tx) -> Result<Endpoint> {
    // Sealed inside the transaction: a sealing-key rotation's re-seal (one write transaction)
    // comes wholly before or after it, so nothing stays sealed under a retired key.
    std::string sealed = request.backend_key && !request.backend_key->empty()
                             ? sealer_.seal(*request.backend_key)
                             : "";
    if (!tx.get(auth::kGroupType, gid)) {
      return fail(ErrorCode::kInvalidArgument, "group " + std::to_string(gid) + " does not exist",
                  "gid");
    }
    if (tx.get_by_key(kEndpointType, unique_key(gid, request.name))) {
      return fail(ErrorCode::kAlreadyExists,
                  "this group already has an endpoint named \"" + request.name + "\"", "name");
    }
    FAB_TRY(check_model_free(tx, gid, request.model, -1));
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kEndpointType));
    Endpoint e{.header = ObjectHeader::create(id, request.name, caller.uid, gid,
                                              kEndpointPermissions, 0, now),
               .model = request.model,
               .backends = request.backends,
               .sealed_key = sealed,
               .description = request.description,
               .version = 1};
    FAB_TRY(store::insert_named(tx, endpoint_record(e)));
    return e;
  });
}

Result<Endpoint> Endpoints::get(const auth::Caller& caller, int64_t id) {
  return store_.read_value<Endpoint>(
      [&](store::Transaction& tx) { return load(tx, caller, id, Right::kUse); });
}

Result<auth::Page<Endpoint>> Endpoints::list(const auth::Caller& caller,
                                             const auth::ListOptions& options) {
  store::ListQuery query{.after_id = options.after_id, .gid = options.gid, .name = options.name};
  return store_.read_value<auth::Page<Endpoint>>([&](store::Transaction& tx) {
    return auth::visible_page<Endpoint>(
        tx, kEndpointType, query, options.limit, endpoint_from_record, [&](const Endpoint& e) {
          return authorizer_.allows(caller, auth::object_ref(ObjectType::kEndpoint, e.header),
                                    Right::kUse);
        });
  });
}

Result<Endpoint> Endpoints::update(const auth::Caller& caller, int64_t id,
                                   const EndpointChange& change) {
  if (change.model) FAB_TRY(validate_model(*change.model));
  if (change.backends) FAB_TRY(validate_backends(*change.backends));
  if (change.backend_key) FAB_TRY(validate_key(*change.backend_key));
  if (change.description) FAB_TRY(validate_description(*change.description));
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Endpoint>([&](store::Transaction& tx) -> Result<Endpoint> {
    FAB_ASSIGN_OR_RETURN(Endpoint e, load(tx, caller, id, Right::kManage));
    std::optional<std::string> sealed;  // In the transaction, as in create().
    if (change.backend_key) {
      sealed = change.backend_key->empty() ? "" : sealer_.seal(*change.backend_key);
    }
    if (change.model && *change.model != e.model) {
      FAB_TRY(check_model_free(tx, e.header.gid, *change.model, id));
      e.model = *change.model;
    }
    if (change.backends) e.backends = *change.backends;
    if (sealed) e.sealed_key = *sealed;
    if (change.description) e.description = *change.description;
    e.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(e.version, tx.update(endpoint_record(e)));
    return e;
  });
}

Result<void> Endpoints::remove(const auth::Caller& caller, int64_t id) {
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Endpoint e, load(tx, caller, id, Right::kManage));
    return tx.remove(kEndpointType, e.header.id);
  });
}

Result<size_t> Endpoints::reseal_all() {
  return store_.write_value<size_t>(
      [&](store::Transaction& tx) -> Result<size_t> { return reseal_in(tx); });
}

Result<size_t> Endpoints::reseal_in(store::Transaction& tx) {
  std::vector<Endpoint> sealed;
  FAB_TRY(store::for_each(tx, kEndpointType, [&](const store::Record& r) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Endpoint e, endpoint_from_record(r));
    if (!e.sealed_key.empty() || !e.vm_backends.empty()) sealed.push_back(std::move(e));
    return {};
  }));
  auto reseal = [&](const Endpoint& e, std::string& key) -> Result<void> {
    if (key.empty()) return {};
    auto plain = sealer_.open(key);
    if (!plain) {
      return fail(plain.error().with_context("endpoint " + std::to_string(e.header.id)));
    }
    key = sealer_.seal(*plain);
    return {};
  };
  for (auto& e : sealed) {
    FAB_TRY(reseal(e, e.sealed_key));
    for (VmBackend& v : e.vm_backends) FAB_TRY(reseal(e, v.sealed_key));
    FAB_TRY(tx.update(endpoint_record(e)));
  }
  return sealed.size();
}

Result<int64_t> Endpoints::ensure_for_model(store::Transaction& tx, const auth::Caller& caller,
                                            int64_t gid, const std::string& model) {
  FAB_TRY(validate_model(model));
  FAB_ASSIGN_OR_RETURN(auto found, find_model(tx, gid, model, -1));
  if (found) {
    FAB_TRY(load(tx, caller, *found, Right::kManage));
    return *found;
  }
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kEndpoint, gid));
  // Named after the model: "Qwen/Qwen3-0.6B" -> "Qwen-Qwen3-0.6B".
  std::string name;
  for (char c : model)
    name +=
        (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '-';
  if (name.size() > 128) name.resize(128);
  FAB_TRY(validate_name(name));
  if (tx.get_by_key(kEndpointType, unique_key(gid, name))) {
    return fail(ErrorCode::kAlreadyExists,
                "this group has an endpoint named \"" + name +
                    "\" for another model; rename it or give --served-model-name",
                "served_model_name");
  }
  FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kEndpointType));
  int64_t now = unix_seconds(clock_.now());
  Endpoint e{
      .header = ObjectHeader::create(id, name, caller.uid, gid, kEndpointPermissions, 0, now),
      .model = model,
      .description = "serves the appliance VMs of model " + model,
      .version = 1};
  FAB_TRY(store::insert_named(tx, endpoint_record(e)));
  return id;
}

Result<void> Endpoints::set_vm_backend(
    store::Transaction& tx, int64_t endpoint_id, int64_t vm_id,
    const std::optional<std::pair<std::string, std::string>>& serving) {
  auto r = tx.get(kEndpointType, endpoint_id);
  if (!r) return r.error().code() == ErrorCode::kNotFound ? Result<void>{} : fail(r.error());
  FAB_ASSIGN_OR_RETURN(Endpoint e, endpoint_from_record(*r));
  size_t before = e.vm_backends.size();
  std::erase_if(e.vm_backends, [&](const VmBackend& v) { return v.vm_id == vm_id; });
  if (!serving && before == e.vm_backends.size()) return {};
  if (serving) {
    if (e.backends.size() + e.vm_backends.size() >= 256) {
      return fail(ErrorCode::kResourceExhausted,
                  "endpoint " + std::to_string(endpoint_id) + " has 256 backends already");
    }
    e.vm_backends.push_back({.vm_id = vm_id, .url = serving->first, .sealed_key = serving->second});
  }
  e.header.updated_at = unix_seconds(clock_.now());
  FAB_ASSIGN_OR_RETURN(e.version, tx.update(endpoint_record(e)));
  return {};
}

Result<std::vector<Route>> Endpoints::routes() {
  std::vector<Endpoint> all;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    return store::for_each(tx, kEndpointType, [&](const store::Record& r) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(Endpoint e, endpoint_from_record(r));
      all.push_back(std::move(e));
      return {};
    });
  }));
  std::vector<Route> out;
  for (const auto& e : all) {
    Route route{.endpoint_id = e.header.id,
                .name = e.header.name,
                .gid = e.header.gid,
                .model = e.model,
                .backends = e.backends};
    if (!e.sealed_key.empty()) {
      FAB_ASSIGN_OR_RETURN(route.backend_key, sealer_.open(e.sealed_key));
    }
    for (const VmBackend& v : e.vm_backends) {
      if (std::find(route.backends.begin(), route.backends.end(), v.url) != route.backends.end()) {
        continue;  // A static backend of the same URL keeps its own credential.
      }
      route.backends.push_back(v.url);
      route.backend_vms[v.url] = v.vm_id;
      if (!v.sealed_key.empty()) {
        FAB_ASSIGN_OR_RETURN(route.backend_keys[v.url], sealer_.open(v.sealed_key));
      }
    }
    out.push_back(std::move(route));
  }
  return out;
}

}  // namespace fabrica::endpoints
