#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "api/http.h"
#include "api/router.h"
#include "auth/apikeys.h"
#include "auth/audit.h"
#include "auth/identity.h"
#include "auth/quota.h"
#include "auth/sessions.h"
#include "auth/vdc.h"
#include "compute/compute.h"
#include "crypto/sealer.h"
#include "endpoints/endpoints.h"
#include "fleet/fleet.h"
#include "market/apps.h"
#include "market/marketplace.h"
#include "market/models.h"
#include "storage/storage.h"
#include "store/store.h"
#include "usage/usage.h"

namespace fabrica::api {

// The domain services the API exposes; owned by the daemon.
struct Services {
  store::Store& store;
  auth::Authorizer& authorizer;
  auth::Identity& identity;
  auth::Sessions& sessions;
  fleet::Fleet& fleet;
  auth::Vdcs& vdcs;
  auth::Quotas& quotas;
  auth::ApiKeys& apikeys;
  auth::AuditLog& audit;
  compute::Compute& compute;
  storage::Storage& storage;
  network::Network& network;
  endpoints::Endpoints& endpoints;
  usage::Usage& usage;
  market::Marketplaces& marketplaces;
  market::Models& models;
  market::Apps& apps;
  std::string version;
  // SHA-256 of the SubjectPublicKeyInfo of fabricad's CA (--tls-ca), appended to join tokens
  // ("fjt_...@sha256:<hex>") so a new host trusts the right control plane before it sends
  // anything. Empty: tokens carry no pin.
  std::string ca_pin = {};
  // The keys stored secrets are sealed under, and what seals every one of them again in one
  // transaction (for POST /api/v1/system/sealing-key/rotate). Null: no rotation.
  crypto::Sealer* sealer = nullptr;
  std::function<Result<size_t>()> reseal_secrets = {};
};

// The REST API: routes every request to its handler after authentication and turns every
// failure into the one JSON error body. Holds no state of its own beyond the route table.
// Thread-safe.
class Api {
 public:
  explicit Api(Services services);

  // Never throws; every outcome is a response.
  HttpResponse handle(const HttpRequest& request);
  // For a server that streams bodies: given a request's head, a sink for the body of a
  // streaming route (authenticated and authorized, audited when it finishes), a response to
  // send at once (the body unread), or nullopt for an ordinary route.
  std::optional<std::variant<HttpResponse, std::unique_ptr<BodySink>>> open_stream(
      const HttpRequest& head);
  std::vector<RouteInfo> routes() const { return router_.routes(); }
  // While draining, /readyz answers 503 so load balancers stop sending traffic.
  void set_draining() { draining_ = true; }
  bool draining() const { return draining_; }
  Services& services() { return services_; }
  // For tests that prove the isolation check catches an unguarded route.
  Router& router() { return router_; }

 private:
  // What handle() needs to audit a request.
  struct Outcome {
    const RouteInfo* route = nullptr;
    int64_t uid = -1;
    std::string user;
  };
  Result<HttpResponse> dispatch(const HttpRequest& request, Outcome& outcome);
  void audit(const HttpRequest& request, const Outcome& outcome, const HttpResponse& response);
  Result<auth::Caller> authenticate(const HttpRequest& request);

  Services services_;
  Router router_;
  std::atomic<bool> draining_{false};
};

// Route families, one file each.
void add_system_routes(Router& router, Api& api);
void add_token_routes(Router& router, Services& services);
void add_user_routes(Router& router, Services& services);
void add_group_routes(Router& router, Services& services);
void add_acl_routes(Router& router, Services& services);
void add_fleet_routes(Router& router, Services& services);
void add_agent_routes(Router& router, Services& services);
void add_vdc_routes(Router& router, Services& services);
void add_quota_routes(Router& router, Services& services);
void add_apikey_routes(Router& router, Services& services);
void add_endpoint_routes(Router& router, Services& services);
void add_gateway_routes(Router& router, Services& services);
void add_usage_routes(Router& router, Services& services);
void add_audit_routes(Router& router, Services& services);
void add_compute_routes(Router& router, Services& services);
void add_storage_routes(Router& router, Services& services);
void add_network_routes(Router& router, Services& services);
void add_market_routes(Router& router, Services& services);
void add_guest_routes(Router& router, Services& services);
void add_app_routes(Router& router, Services& services);

// The secret of `Authorization: Bearer <secret>` on routes that authenticate it themselves
// (agents, guests); kUnauthenticated with `missing` when there is none.
Result<std::string_view> bearer_secret(const Context& ctx, std::string_view missing);
// Shared by list handlers: reads limit/cursor (and the given filters) from the query.
Result<auth::ListOptions> list_options(const Context& ctx);
// {"items": [...], "next_cursor": "..." | null}
template <typename T>
HttpResponse page_response(const auth::Page<T>& page) {
  Json items = Json::array();
  for (const auto& item : page.items) items.push_back(item.to_api_json());
  return json_response(
      200, Json{{"items", std::move(items)},
                {"next_cursor", page.next_cursor ? Json(*page.next_cursor) : Json(nullptr)}});
}
struct BasicCredentials {
  std::string user;
  std::string password;
};
// The user and password of an Authorization: Basic header; kUnauthenticated when absent.
Result<BasicCredentials> basic_credentials(const HttpRequest& request);

// Reads a body holding exactly one integer field, >= 0.
Result<int64_t> read_int_body(const Context& ctx, std::string_view field);
// Reads {"permissions": "640"}.
Result<Permissions> read_chmod_body(const Context& ctx);

}  // namespace fabrica::api
