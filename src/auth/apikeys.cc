#include "auth/apikeys.h"

#include <algorithm>

#include "crypto/crypto.h"

namespace fabrica::auth {
namespace {

constexpr Permissions kApiKeyPermissions{0600};
constexpr size_t kMaxEndpoints = 256;

std::string key_noun(int64_t id) { return "API key " + std::to_string(id); }

store::Record apikey_record(const ApiKey& k) {
  Json body = k.to_api_json();
  body["secret_hash"] = k.secret_hash;
  body["expires_at_unix"] = k.expires_at;
  return store::Record{.type = std::string(kApiKeyType),
                       .id = k.header.id,
                       .name = k.header.name,
                       .uid = k.header.uid,
                       .gid = k.header.gid,
                       .state = k.header.state,
                       .key = k.secret_hash,
                       .body = dump_json(body),
                       .version = k.version};
}

Result<ApiKey> apikey_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  ApiKey k;
  FAB_ASSIGN_OR_RETURN(k.header, ObjectHeader::from_json(body));
  try {
    k.prefix = body.at("prefix").get<std::string>();
    k.secret_hash = body.at("secret_hash").get<std::string>();
    k.endpoints = body.at("endpoints").get<std::vector<std::string>>();
    k.expires_at = body.at("expires_at_unix").get<int64_t>();
    k.rpm = body.at("rpm").get<int64_t>();
    k.tpm = body.at("tpm").get<int64_t>();
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal,
                "stored API key " + std::to_string(r.id) + " is malformed: " + e.what());
  }
  k.version = r.version;
  return k;
}

}  // namespace

bool ApiKey::allows_endpoint(std::string_view endpoint) const {
  return std::any_of(endpoints.begin(), endpoints.end(),
                     [&](const std::string& e) { return e == "*" || e == endpoint; });
}

Json ApiKey::to_api_json() const {
  Json j = Json::object();
  header.to_json(j);
  j["prefix"] = prefix;
  j["endpoints"] = endpoints;
  j["expires_at"] = expires_at ? Json(format_time(expires_at)) : Json(nullptr);
  j["rpm"] = rpm;
  j["tpm"] = tpm;
  j["revoked"] = header.state == kApiKeyRevoked;
  return j;
}

Result<ApiKey> ApiKeys::load(store::Transaction& tx, const Caller& caller, int64_t id,
                             Right right) {
  auto r = tx.get(kApiKeyType, id);
  if (!r) return fail(r.error().code(), key_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(ApiKey k, apikey_from_record(*r));
  FAB_TRY(
      authorizer_.require(caller, object_ref(ObjectType::kApiKey, k.header), right, key_noun(id)));
  return k;
}

Result<IssuedApiKey> ApiKeys::create(const Caller& caller, const NewApiKey& request) {
  FAB_TRY(validate_name(request.name));
  if (request.endpoints.empty() || request.endpoints.size() > kMaxEndpoints) {
    return fail(ErrorCode::kInvalidArgument, "must name 1 to 256 endpoints (or \"*\")",
                "endpoints");
  }
  for (const auto& e : request.endpoints) {
    if (e != "*") {
      FAB_TRY(validate_name(e).map_error(
          [](Error err) { return Error(err.code(), err.message(), "endpoints"); }));
    }
  }
  if (request.rpm < 0 || request.tpm < 0) {
    return fail(ErrorCode::kInvalidArgument, "must be >= 0 (0 = no limit)",
                request.rpm < 0 ? "rpm" : "tpm");
  }
  if (request.expires_in && (*request.expires_in <= 0 || *request.expires_in > kMaxLifetime)) {
    return fail(ErrorCode::kInvalidArgument, "must be between 1 second and 5 years", "expires_in");
  }
  int64_t gid = request.gid.value_or(caller.gid);
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kApiKey, gid));
  int64_t now = unix_seconds(clock_.now());
  IssuedApiKey issued;
  issued.secret = "fak_" + crypto::new_token_secret().substr(4);
  return store_.write_value<IssuedApiKey>([&](store::Transaction& tx) -> Result<IssuedApiKey> {
    if (!tx.get(kGroupType, gid)) {
      return fail(ErrorCode::kInvalidArgument, "group " + std::to_string(gid) + " does not exist",
                  "gid");
    }
    for (size_t i = 0; i < request.endpoints.size() && !endpoint_type_.empty(); ++i) {
      const std::string& name = request.endpoints[i];
      if (name == "*") continue;
      FAB_ASSIGN_OR_RETURN(auto found,
                           tx.list(endpoint_type_, {.limit = 1, .gid = gid, .name = name}));
      if (found.empty()) {
        return fail(ErrorCode::kNotFound,
                    "endpoint \"" + name + "\" not found in group " + std::to_string(gid),
                    "endpoints[" + std::to_string(i) + "]");
      }
    }
    FAB_TRY(store::require_unique_in_group(tx, kApiKeyType, gid, request.name, "an API key"));
    ApiKey& k = issued.key;
    FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kApiKeyType));
    k.header = ObjectHeader::create(id, request.name, caller.uid, gid, kApiKeyPermissions,
                                    kApiKeyActive, now);
    k.prefix = issued.secret.substr(0, 12);
    k.secret_hash = crypto::sha256_hex(issued.secret);
    k.endpoints = request.endpoints;
    k.expires_at = request.expires_in ? now + *request.expires_in : 0;
    k.rpm = request.rpm;
    k.tpm = request.tpm;
    k.version = 1;
    FAB_TRY(tx.insert(apikey_record(k)));
    return issued;
  });
}

Result<ApiKey> ApiKeys::get(const Caller& caller, int64_t id) {
  return store_.read_value<ApiKey>(
      [&](store::Transaction& tx) { return load(tx, caller, id, Right::kUse); });
}

Result<Page<ApiKey>> ApiKeys::list(const Caller& caller, const ListOptions& options) {
  store::ListQuery query{.after_id = options.after_id, .gid = options.gid, .name = options.name};
  return store_.read_value<Page<ApiKey>>([&](store::Transaction& tx) {
    return visible_page<ApiKey>(
        tx, kApiKeyType, query, options.limit, apikey_from_record, [&](const ApiKey& k) {
          return authorizer_.allows(caller, object_ref(ObjectType::kApiKey, k.header), Right::kUse);
        });
  });
}

Result<ApiKey> ApiKeys::revoke(const Caller& caller, int64_t id) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<ApiKey>([&](store::Transaction& tx) -> Result<ApiKey> {
    FAB_ASSIGN_OR_RETURN(ApiKey k, load(tx, caller, id, Right::kManage));
    if (k.header.state == kApiKeyRevoked) return k;
    k.header.state = kApiKeyRevoked;
    k.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(k.version, tx.update(apikey_record(k)));
    return k;
  });
}

Result<void> ApiKeys::remove(const Caller& caller, int64_t id) {
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_TRY(load(tx, caller, id, Right::kManage));
    return tx.remove(kApiKeyType, id);
  });
}

Result<ApiKey> ApiKeys::authenticate(std::string_view secret) {
  auto invalid = [] { return fail(ErrorCode::kUnauthenticated, "invalid API key"); };
  if (!secret.starts_with("fak_")) return invalid();
  int64_t now = unix_seconds(clock_.now());
  auto key = store_.read_value<ApiKey>([&](store::Transaction& tx) -> Result<ApiKey> {
    FAB_ASSIGN_OR_RETURN(auto r, tx.get_by_key(kApiKeyType, crypto::sha256_hex(secret)));
    return apikey_from_record(r);
  });
  if (!key) {
    if (key.error().code() == ErrorCode::kNotFound) return invalid();
    return fail(key.error());
  }
  if (!key->active(now)) return invalid();
  return key;
}

Result<std::vector<ApiKey>> ApiKeys::active_keys() {
  int64_t now = unix_seconds(clock_.now());
  std::vector<ApiKey> out;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    return store::for_each(
        tx, kApiKeyType,
        [&](const store::Record& r) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(ApiKey k, apikey_from_record(r));
          if (k.active(now)) out.push_back(std::move(k));
          return {};
        },
        store::ListQuery{.state = kApiKeyActive});
  }));
  return out;
}

}  // namespace fabrica::auth
