#pragma once

#include <optional>
#include <string>
#include <vector>

#include "auth/authorizer.h"
#include "auth/identity.h"
#include "core/clock.h"
#include "store/store.h"

namespace fabrica::auth {

inline constexpr int kApiKeyActive = 0;
inline constexpr int kApiKeyRevoked = 1;

// An end user's key for the model gateway. It belongs to a tenant (its group), names the
// endpoints it may call, and carries its own rate limits. Only the SHA-256 of the secret is
// stored; the secret is shown once. End users never reach fabricad's API with it.
struct ApiKey {
  ObjectHeader header;  // uid: who issued it; gid: the tenant; state: active / revoked.
  std::string prefix;   // "fak_1a2b3c4d": the first characters, to recognise a key in lists.
  std::string secret_hash;
  std::vector<std::string> endpoints;  // Endpoint names ("*" = every endpoint of the tenant).
  int64_t expires_at = 0;              // Unix seconds; 0 = never.
  int64_t rpm = 0;                     // Requests per minute; 0 = no limit.
  int64_t tpm = 0;                     // Tokens per minute; 0 = no limit.
  int64_t version = 0;

  bool active(int64_t now) const {
    return header.state == kApiKeyActive && (expires_at == 0 || expires_at > now);
  }
  bool allows_endpoint(std::string_view endpoint) const;
  // Never includes the hash.
  Json to_api_json() const;
};

struct NewApiKey {
  std::string name;
  std::optional<int64_t> gid;  // The tenant; the caller's primary group by default.
  std::vector<std::string> endpoints;
  std::optional<int64_t> expires_in;  // Seconds.
  int64_t rpm = 0;
  int64_t tpm = 0;
};

struct IssuedApiKey {
  ApiKey key;
  std::string secret;  // "fak_...", shown once.
};

// API keys: tenant administrators (and whoever an ACL lets CREATE APIKEY in a group) issue
// them; the gateway authenticates with them. Thread-safe.
class ApiKeys {
 public:
  static constexpr int64_t kMaxLifetime = 5LL * 366 * 24 * 3600;

  // `endpoint_type`: the store type of the objects a key's `endpoints` name (set by the
  // daemon; empty leaves names unchecked, for tests of this layer alone).
  ApiKeys(store::Store& store, Authorizer& authorizer, const Clock& clock,
          std::string endpoint_type = "")
      : store_(store),
        authorizer_(authorizer),
        clock_(clock),
        endpoint_type_(std::move(endpoint_type)) {}

  // kNotFound (field "endpoints[i]") for a name that is not an endpoint of the key's group.

  Result<IssuedApiKey> create(const Caller& caller, const NewApiKey& request);
  Result<ApiKey> get(const Caller& caller, int64_t id);
  Result<Page<ApiKey>> list(const Caller& caller, const ListOptions& options);
  // A revoked key stays listed (for audit) and never authenticates again.
  Result<ApiKey> revoke(const Caller& caller, int64_t id);
  Result<void> remove(const Caller& caller, int64_t id);

  // The active key a secret stands for; kUnauthenticated when unknown, revoked or expired
  // (one message for all).
  Result<ApiKey> authenticate(std::string_view secret);
  // Every key that may still authenticate (not revoked, not expired), for gateways, which
  // match secrets against the hashes themselves.
  Result<std::vector<ApiKey>> active_keys();

 private:
  Result<ApiKey> load(store::Transaction& tx, const Caller& caller, int64_t id, Right right);

  store::Store& store_;
  Authorizer& authorizer_;
  const Clock& clock_;
  std::string endpoint_type_;
};

inline constexpr std::string_view kApiKeyType = "apikey";

}  // namespace fabrica::auth
