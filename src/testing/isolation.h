#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/json.h"

namespace fabrica::testing {

// The isolation proof: builds tenants through the API, then walks the server's own route
// table and, for every route x verb x attacker, asserts the request is refused without
// leaking. It runs over any transport (HTTP against a real fabricad, or in process).

struct Reply {
  int status = 0;
  std::string body;
};
// method, target (path + query), body, Authorization header value ("" for none).
using Transport = std::function<Reply(const std::string&, const std::string&, const std::string&,
                                      const std::string&)>;

struct RouteSpec {
  std::string method;
  std::string pattern;
  std::string auth;  // "none", "bearer", "basic"
};
// Parses `fabricad --print-routes` output.
std::vector<RouteSpec> parse_route_table(const Json& routes);

// One tenant: a VDC with its group, cluster and host, a tenant administrator, a user, an
// end-user API key, quotas, and tokens. Every name it owns starts with `marker`.
struct IsolationTenant {
  std::string marker;
  std::map<std::string, int64_t> ids;        // By collection: users, groups, hosts, clusters, vdcs,
                                             // tokens, acl, apikeys.
  std::string admin_auth;                    // "Bearer ..." of its tenant administrator.
  std::string user_auth;                     // "Bearer ..." of its plain user.
  std::string apikey_auth;                   // "Bearer fak_..." of its end-user key.
  std::map<std::string, std::string> names;  // Names of its objects, by collection.
};

struct IsolationFixture {
  std::vector<IsolationTenant> tenants;
  std::string norights_auth;  // A user in no tenant's group.
  std::string expired_auth;   // A token past its expiry.
};

// Creates three tenants (and the two extra actors) through the API as `admin_auth`.
// `expire` is called once the short-lived token exists, and must make it expire (sleep, or
// advance a fake clock). Throws std::runtime_error when a set-up call fails.
IsolationFixture build_isolation_fixture(const Transport& transport, const std::string& admin_auth,
                                         const std::function<void()>& expire);

// Walks every route for every victim tenant and attacker. `digest` returns a fingerprint of
// the stored objects (audit entries excluded); it must not change. Returns one line per
// violation (empty = isolated) and counts the requests made.
std::vector<std::string> prove_isolation(const Transport& transport,
                                         const std::vector<RouteSpec>& routes,
                                         const IsolationFixture& fixture,
                                         const std::function<std::string()>& digest,
                                         size_t* requests = nullptr);

// The bodies, for every victim and every tenant actor (administrator and user) of the other
// tenants, acting on the actor's own objects (the path) so that only the body can be at fault:
// - each object a probe body names ($collection, or @collection for a name) is replaced, one at
//   a time, by the victim's and by a missing one: both must be refused alike, without naming
//   the victim beyond what the actor sent;
// - every restricted field (auth/restricted.h) is sent a host path (or host device) and must
//   be refused 403 naming it; a restricted field no probe covers is itself a violation;
// - a login name taken in the victim's tenant must read as one taken in the actor's own.
// The store must not change. `extra_bodies` adds probe bodies (tests of the proof itself).
std::vector<std::string> prove_body_isolation(
    const Transport& transport, const std::vector<RouteSpec>& routes,
    const IsolationFixture& fixture, const std::function<std::string()>& digest,
    size_t* requests = nullptr, const std::map<std::string, std::string>& extra_bodies = {});

// A fingerprint of every stored object but audit entries, read from a SQLite file (open
// read-only beside the running writer).
std::string sqlite_digest(const std::string& db_path);

}  // namespace fabrica::testing
