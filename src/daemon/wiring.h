#pragma once

#include <string>

#include "api/api.h"
#include "auth/apikeys.h"
#include "auth/audit.h"
#include "auth/identity.h"
#include "auth/quota.h"
#include "auth/sessions.h"
#include "auth/vdc.h"
#include "endpoints/endpoints.h"
#include "fleet/fleet.h"
#include "market/apps.h"
#include "market/marketplace.h"
#include "market/models.h"
#include "network/network.h"
#include "storage/storage.h"
#include "store/store.h"
#include "usage/usage.h"

namespace fabrica {

// The services of one fabricad over one store, wired as the API needs them. fabricad builds
// one over its SQLite file; in-process tests build one over a temporary store.
struct Wiring {
  Wiring(store::Store& store, const Clock& clock, std::string version,
         fleet::FleetOptions fleet_options = {}, storage::StorageOptions storage_options = {},
         crypto::Sealer sealer = crypto::Sealer::random(),
         auth::LoginLimiter::Limits login_limits = {}, market::ModelsOptions models_options = {})
      : store(store),
        sealer(std::move(sealer)),
        filesystem(storage::make_posix_filesystem()),
        authorizer(store),
        identity(store, authorizer, clock),
        limiter(clock, login_limits),
        sessions(store, identity, clock, limiter),
        fleet(store, authorizer, clock, fleet_options),
        vdcs(store, authorizer, clock),
        quotas(store, authorizer, clock),
        apikeys(store, authorizer, clock, std::string(::fabrica::endpoints::kEndpointType)),
        audit(store, clock),
        storage(store, authorizer, quotas, *filesystem, clock, std::move(storage_options)),
        network(store, authorizer, clock),
        compute(store, authorizer, identity, quotas, fleet, storage, network, clock),
        endpoints(store, authorizer, clock, this->sealer),
        usage(store, authorizer),
        marketplaces(store, authorizer, clock),
        models(storage, marketplaces, authorizer, this->sealer, clock, std::move(models_options)),
        apps(store, authorizer, clock, compute, storage, endpoints),
        api(api::Services{.store = store,
                          .authorizer = authorizer,
                          .identity = identity,
                          .sessions = sessions,
                          .fleet = fleet,
                          .vdcs = vdcs,
                          .quotas = quotas,
                          .apikeys = apikeys,
                          .audit = audit,
                          .compute = compute,
                          .storage = storage,
                          .network = network,
                          .endpoints = endpoints,
                          .usage = usage,
                          .marketplaces = marketplaces,
                          .models = models,
                          .apps = apps,
                          .version = std::move(version),
                          .sealer = &this->sealer,
                          .reseal_secrets = [this] { return reseal_secrets(); }}) {
    // Guests reach the guest API through their host's agent (a link-local relay) unless the
    // daemon is told otherwise (--guest-api-url).
    compute.set_guest_api(this->sealer, kDefaultGuestApiUrl);
    // An appliance VM that reports READY becomes a backend of its endpoint, in the same
    // transaction; it stops being one in the transaction that moves it out of RUNNING.
    compute.set_backend_hook(
        [this](store::Transaction& tx, const compute::Vm& vm,
               const std::optional<std::pair<std::string, std::string>>& serving) {
          return endpoints.set_vm_backend(tx, vm.app.value("endpoint_id", int64_t{-1}),
                                          vm.header.id, serving);
        });
  }
  static constexpr const char* kDefaultGuestApiUrl = "http://169.254.169.254";
  // Seals every stored secret again under the sealer's current key (a key rotation's step).
  // Endpoints' backend keys and model imports' Hub tokens, in one transaction.
  Result<size_t> reseal_secrets() {
    return store.write_value<size_t>([&](store::Transaction& tx) -> Result<size_t> {
      FAB_ASSIGN_OR_RETURN(size_t keys, endpoints.reseal_in(tx));
      FAB_ASSIGN_OR_RETURN(size_t vms, compute.reseal_in(tx));
      FAB_ASSIGN_OR_RETURN(
          size_t tokens,
          storage.reseal_tokens(tx, [&](const std::string& sealed) -> Result<std::string> {
            FAB_ASSIGN_OR_RETURN(std::string plain, sealer.open(sealed));
            return sealer.seal(plain);
          }));
      return keys + vms + tokens;
    });
  }
  store::Store& store;
  // Seals backend credentials at rest; fabricad keeps its key beside the database.
  crypto::Sealer sealer;
  std::unique_ptr<storage::Filesystem> filesystem;
  auth::Authorizer authorizer;
  auth::Identity identity;
  auth::LoginLimiter limiter;
  auth::Sessions sessions;
  fleet::Fleet fleet;
  auth::Vdcs vdcs;
  auth::Quotas quotas;
  auth::ApiKeys apikeys;
  auth::AuditLog audit;
  storage::Storage storage;
  network::Network network;
  compute::Compute compute;
  endpoints::Endpoints endpoints;
  usage::Usage usage;
  market::Marketplaces marketplaces;
  market::Models models;
  market::Apps apps;
  api::Api api;
};

}  // namespace fabrica
