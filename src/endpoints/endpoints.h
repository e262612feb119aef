#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/authorizer.h"
#include "auth/identity.h"
#include "core/clock.h"
#include "core/object.h"
#include "crypto/sealer.h"
#include "store/store.h"

namespace fabrica::endpoints {

using crypto::Sealer;

// A tenant's AI endpoint: the model name its end users call and the OpenAI-compatible
// backends (vLLM, NIM, Dynamo...) that serve it. The backend credential is sealed at rest and
// never shown again; gateways receive it through their own channel.
// A backend that registered itself: an appliance VM that reported READY through the guest API
// with the URL it serves. Its credential is the VM's own backend secret (sealed).
struct VmBackend {
  int64_t vm_id = -1;
  std::string url;
  std::string sealed_key;
};

struct Endpoint {
  ObjectHeader header;  // gid: the tenant that owns it.
  std::string model;    // "meta-llama/Llama-3.1-8B-Instruct": unique within the tenant.
  std::vector<std::string> backends;  // Base URLs: "http://vllm-0.acme.internal:8000".
  std::string sealed_key;             // "" when the backends need no credential.
  // Added and removed by fabricad as appliance VMs become READY and stop serving; shown as
  // {"vm_id", "url"}, never the credential.
  std::vector<VmBackend> vm_backends;
  std::string description;
  int64_t version = 0;

  // Never the credential; "backend_key_set" says whether there is one.
  Json to_api_json() const;
};

struct NewEndpoint {
  std::string name;
  std::optional<int64_t> gid;  // The tenant; the caller's primary group by default.
  std::string model;
  std::vector<std::string> backends;
  std::optional<std::string> backend_key;
  std::string description;
};

// Each given part replaces the endpoint's; backend_key "" removes the credential.
struct EndpointChange {
  std::optional<std::string> model;
  std::optional<std::vector<std::string>> backends;
  std::optional<std::string> backend_key;
  std::optional<std::string> description;
};

// What a gateway needs of one endpoint: where to send a tenant's requests for a model.
struct Route {
  int64_t endpoint_id = -1;
  std::string name;
  int64_t gid = -1;
  std::string model;
  std::vector<std::string> backends;  // The static ones, then the VMs' own.
  std::string backend_key;            // Opened; "" for none.
  // A VM backend's own credential (opened) and VM, by URL: they override backend_key.
  std::map<std::string, std::string> backend_keys;
  std::map<std::string, int64_t> backend_vms;
  Json to_json() const;
};

// "http://host[:port][/path]" or https; kInvalidArgument naming `field` otherwise (no user
// info, query or fragment; at most 2048 characters).
Result<void> validate_backend_url(std::string_view url, const std::string& field);

// Endpoints: tenant administrators (whoever may CREATE ENDPOINT in the group) define them;
// end users reach them only through fabrica-gateway with an API key of the same tenant.
// Thread-safe.
class Endpoints {
 public:
  static constexpr size_t kMaxBackends = 16;

  Endpoints(store::Store& store, auth::Authorizer& authorizer, const Clock& clock,
            const Sealer& sealer)
      : store_(store), authorizer_(authorizer), clock_(clock), sealer_(sealer) {}

  // kAlreadyExists (field "name" or "model") when the tenant has one of that name or model.
  Result<Endpoint> create(const auth::Caller& caller, const NewEndpoint& request);
  Result<Endpoint> get(const auth::Caller& caller, int64_t id);
  Result<auth::Page<Endpoint>> list(const auth::Caller& caller, const auth::ListOptions& options);
  Result<Endpoint> update(const auth::Caller& caller, int64_t id, const EndpointChange& change);
  Result<void> remove(const auth::Caller& caller, int64_t id);

  // Seals every stored backend credential again under the sealer's current key, in one
  // transaction; how many. For a sealing-key rotation (Sealer::rotate), never for callers.
  Result<size_t> reseal_all();
  // The same inside `tx` (a rotation that reseals other services' secrets in one transaction).
  Result<size_t> reseal_in(store::Transaction& tx);

  // For the appliance: the endpoint of tenant `gid` serving `model`, made (named after the
  // model, no static backends, owned by `caller`) when there is none. Its id.
  Result<int64_t> ensure_for_model(store::Transaction& tx, const auth::Caller& caller, int64_t gid,
                                   const std::string& model);
  // VM `vm_id` serves endpoint `endpoint_id` at `url` with the sealed credential `sealed_key`
  // (nullopt: no longer). An endpoint deleted meanwhile is fine. Inside the caller's
  // transaction, so a VM's move and its backend's removal commit together.
  Result<void> set_vm_backend(store::Transaction& tx, int64_t endpoint_id, int64_t vm_id,
                              const std::optional<std::pair<std::string, std::string>>& serving);

  // Every endpoint of every tenant with its credential opened, for gateways.
  Result<std::vector<Route>> routes();

 private:
  Result<Endpoint> load(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                        Right right);
  // The endpoint of tenant `gid` (other than `except_id`) serving `model`, if any.
  Result<std::optional<int64_t>> find_model(store::Transaction& tx, int64_t gid,
                                            const std::string& model, int64_t except_id);
  // kAlreadyExists when another endpoint of tenant `gid` serves `model`.
  Result<void> check_model_free(store::Transaction& tx, int64_t gid, const std::string& model,
                                int64_t except_id);

  store::Store& store_;
  auth::Authorizer& authorizer_;
  const Clock& clock_;
  const Sealer& sealer_;
};

inline constexpr std::string_view kEndpointType = "endpoint";

}  // namespace fabrica::endpoints
