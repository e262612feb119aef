#include "testing/isolation.h"

#include <sqlite3.h>

#include <cctype>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "auth/crypto.h"

namespace fabrica::testing {
namespace {

constexpr int64_t kGhostBase = 900000;

// Which fixture collection a {placeholder} stands for, by the literal segment before it.
const std::map<std::string, std::string>& collections() {
  static const std::map<std::string, std::string> m = {
      {"users", "users"},
      {"admins", "users"},
      {"groups", "groups"},
      {"hosts", "hosts"},
      {"clusters", "clusters"},
      {"vdcs", "vdcs"},
      {"tokens", "tokens"},
      {"acl", "acl"},
      {"apikeys", "apikeys"},
      {"templates", "templates"},
      {"vms", "vms"},
      {"images", "images"},
      {"datastores", "datastores"},
      {"vnets", "vnets"},
      {"ranges", "ranges"},
      {"disks", "disks"},
      {"endpoints", "endpoints"},
  };
  return m;
}

// A valid body for every route that takes one, naming the victim's objects as $collection.
// A new route that takes a body must be added here, or the proof fails for it.
const std::map<std::string, std::string>& probe_bodies() {
  static const std::map<std::string, std::string> m = {
      {"POST /api/v1/auth/tokens", R"({"name":"probe"})"},
      {"POST /api/v1/users", R"({"name":"probe-user","password":"probe-password","gid":$groups})"},
      {"POST /api/v1/users/{id}/password", R"({"password":"hijacked-password"})"},
      {"POST /api/v1/users/{id}/chgrp", R"({"gid":$groups})"},
      {"POST /api/v1/users/{id}/groups", R"({"gid":$groups})"},
      {"POST /api/v1/users/{id}/enable", "{}"},
      {"POST /api/v1/users/{id}/disable", "{}"},
      {"POST /api/v1/users/{id}/chmod", R"({"permissions":"777"})"},
      {"PUT /api/v1/users/{id}/quota", R"({"limits":{"gpu:H100":1000}})"},
      {"POST /api/v1/groups", R"({"name":"probe-group"})"},
      {"POST /api/v1/groups/{id}/chmod", R"({"permissions":"777"})"},
      {"POST /api/v1/groups/{id}/chown", R"({"uid":$users})"},
      {"POST /api/v1/groups/{id}/admins", R"({"uid":$users})"},
      {"PUT /api/v1/groups/{id}/quota",
       R"({"limits":{"gpu:H100":1000},"user_defaults":{"vms":100}})"},
      {"POST /api/v1/quotas/recount", R"({"fix":true})"},
      {"POST /api/v1/acl", R"({"rule":"@$groups HOST+CLUSTER/* USE+MANAGE+ADMIN"})"},
      {"POST /api/v1/clusters", R"({"name":"probe-cluster"})"},
      {"POST /api/v1/clusters/{id}/hosts", R"({"host_id":$hosts})"},
      {"POST /api/v1/hosts", R"({"name":"probe-host","cluster_id":$clusters})"},
      {"POST /api/v1/hosts/join-tokens", R"({"cluster_id":$clusters,"count":1})"},
      {"POST /api/v1/hosts/{id}/enable", "{}"},
      {"POST /api/v1/hosts/{id}/disable", "{}"},
      {"POST /api/v1/hosts/{id}/join-token", "{}"},
      {"POST /api/v1/agent/join", R"({"token":"fjt_probe","hostname":"probe-host"})"},
      {"PUT /api/v1/agent/inventory", R"({"inventory":{}})"},
      {"POST /api/v1/agent/heartbeat", "{}"},
      {"POST /api/v1/agent/operations", R"({"id":"1-1","ok":true})"},
      {"POST /api/v1/agent/vms", R"({"vms":[{"vm_id":1,"state":"shutoff"}]})"},
      {"POST /api/v1/vdcs", R"({"name":"probe-vdc"})"},
      {"POST /api/v1/vdcs/{id}/groups", R"({"gid":$groups})"},
      {"POST /api/v1/vdcs/{id}/resources", R"({"kind":"cluster","id":$clusters})"},
      {"POST /api/v1/apikeys", R"({"name":"probe-key","gid":$groups,"endpoints":["*"]})"},
      {"POST /api/v1/apikeys/{id}/revoke", "{}"},
      {"POST /api/v1/endpoints",
       R"({"name":"probe-endpoint","gid":$groups,"model":"probe-model","backends":["http://probe:1"]})"},
      {"PUT /api/v1/endpoints/{id}",
       R"({"backends":["http://hijacked:1"],"backend_key":"stolen"})"},
      {"POST /api/v1/templates", R"({"name":"probe-template","gid":$groups})"},
      {"PUT /api/v1/templates/{id}", R"({"description":"hijacked"})"},
      {"POST /api/v1/templates/{id}/instantiate", R"({"name":"probe-vm","gid":$groups})"},
      {"POST /api/v1/vms", R"({"name":"probe-vm","gid":$groups})"},
      {"POST /api/v1/vms/{id}/actions", R"({"action":"hold"})"},
      {"POST /api/v1/vms/{id}/resize", R"({"vcpus":1})"},
      {"POST /api/v1/vms/{id}/disks", R"({"image_id":$images})"},
      {"POST /api/v1/vms/{id}/disks/{disk_id}/resize", R"({"size_mb":4096})"},
      {"POST /api/v1/vms/{id}/disks/{disk_id}/saveas",
       R"({"name":"probe-saveas","datastore_id":$datastores})"},
      {"POST /api/v1/datastores", R"({"name":"probe-ds","clusters":[$clusters]})"},
      {"POST /api/v1/images",
       R"({"name":"probe-image","gid":$groups,"datastore_id":$datastores,"blank_mb":1})"},
      {"PUT /api/v1/images/{id}/upload", "probe bytes"},
      {"POST /api/v1/images/{id}/clone", R"({"name":"probe-clone","datastore_id":$datastores})"},
      {"POST /api/v1/images/{id}/chmod", R"({"permissions":"666"})"},
      {"POST /api/v1/images/{id}/persistent", R"({"persistent":true})"},
      {"POST /api/v1/images/{id}/enable", "{}"},
      {"POST /api/v1/images/{id}/disable", "{}"},
      {"POST /api/v1/vnets", R"({"name":"probe-vnet","bridge":"br0","clusters":[$clusters]})"},
      {"POST /api/v1/vnets/{id}/ranges", R"({"type":"IP4","ip":"10.99.0.1","size":4})"},
      {"POST /api/v1/vnets/{id}/hold", R"({"ip":"10.77.0.3"})"},
      {"POST /api/v1/vnets/{id}/release", R"({"ip":"10.77.0.2"})"},
      {"POST /api/v1/gateway/usage",
       R"({"records":[{"id":"probe-1","time_ms":1,"gid":$groups,"uid":$users,"apikey_id":$apikeys,"endpoint_id":$endpoints,"endpoint":"probe","model":"m","backend":"","kind":"chat","status":200,"input_tokens":1000000,"output_tokens":0,"latency_ms":1,"gateway":"probe"}]})"},
  };
  return m;
}

// Filters that name the victim's objects on list routes.
const std::map<std::string, std::string>& probe_queries() {
  static const std::map<std::string, std::string> m = {
      {"GET /api/v1/users", "?gid=$groups"},      {"GET /api/v1/apikeys", "?gid=$groups"},
      {"GET /api/v1/auth/tokens", "?uid=$users"}, {"GET /api/v1/hosts", "?cluster_id=$clusters"},
      {"GET /api/v1/audit", "?uid=$users"},       {"GET /api/v1/vms", "?gid=$groups"},
      {"GET /api/v1/templates", "?gid=$groups"},  {"GET /api/v1/images", "?gid=$groups"},
      {"GET /api/v1/usage", "?gid=$groups"},      {"GET /api/v1/usage/totals", "?gid=$groups"},
  };
  return m;
}

std::string substitute(std::string text, const std::map<std::string, int64_t>& ids) {
  // No collection name is a prefix of another, so plain replacement is exact.
  for (const auto& [name, id] : ids) {
    std::string key = "$" + name;
    for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at)) {
      text.replace(at, key.size(), std::to_string(id));
    }
  }
  return text;
}

// Digits blurred, so "user 12 not found" and "user 900001 not found" read alike.
std::string blur(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (std::isdigit(static_cast<unsigned char>(c))) {
      if (out.empty() || out.back() != '#') out += '#';
    } else {
      out += c;
    }
  }
  return out;
}

// What an answer tells the caller: the status and the body, minus the request id.
std::string shape(const Reply& r) {
  auto body = parse_json(r.body);
  if (!body) return std::to_string(r.status) + " " + blur(r.body);
  if (body->is_object() && body->contains("error") && (*body)["error"].is_object()) {
    (*body)["error"].erase("request_id");
  }
  return std::to_string(r.status) + " " + blur(body->dump());
}

}  // namespace

std::vector<RouteSpec> parse_route_table(const Json& routes) {
  std::vector<RouteSpec> out;
  for (const auto& r : routes) {
    out.push_back({r.at("method").get<std::string>(), r.at("path").get<std::string>(),
                   r.value("auth", "bearer")});
  }
  return out;
}

IsolationFixture build_isolation_fixture(const Transport& transport, const std::string& admin_auth,
                                         const std::function<void()>& expire) {
  auto call = [&](const std::string& method, const std::string& target, const Json& body,
                  const std::string& auth) -> Json {
    Reply r = transport(method, target, body.is_null() ? "" : body.dump(), auth);
    if (r.status >= 300) {
      throw std::runtime_error("fixture: " + method + " " + target + " answered " +
                               std::to_string(r.status) + ": " + r.body);
    }
    auto parsed = parse_json(r.body);
    return parsed ? *parsed : Json();
  };
  auto login = [&](const std::string& user, const std::string& password, int expires_in) {
    std::string basic = "Basic " + auth::base64_encode(user + ":" + password);
    Json token = call("POST", "/api/v1/auth/tokens", Json{{"expires_in", expires_in}}, basic);
    return std::make_pair("Bearer " + token.at("token").get<std::string>(),
                          token.at("id").get<int64_t>());
  };
  IsolationFixture f;
  for (int t = 0; t < 3; ++t) {
    IsolationTenant tenant;
    std::string m = "t" + std::to_string(t) + "x9";
    tenant.marker = m;
    std::string password = "password-" + m;
    auto& ids = tenant.ids;
    ids["groups"] = call("POST", "/api/v1/groups", {{"name", m + "-grp"}}, admin_auth)["id"];
    ids["clusters"] =
        call("POST", "/api/v1/clusters", {{"name", m + "-cluster"}}, admin_auth)["id"];
    ids["hosts"] =
        call("POST", "/api/v1/hosts", {{"name", m + "-host"}, {"cluster_id", ids["clusters"]}},
             admin_auth)["host"]["id"];
    ids["vdcs"] = call("POST", "/api/v1/vdcs", {{"name", m + "-vdc"}}, admin_auth)["id"];
    std::string vdc = "/api/v1/vdcs/" + std::to_string(ids["vdcs"]);
    call("POST", vdc + "/groups", {{"gid", ids["groups"]}}, admin_auth);
    call("POST", vdc + "/resources", {{"kind", "cluster"}, {"id", ids["clusters"]}}, admin_auth);
    ids["datastores"] =
        call("POST", "/api/v1/datastores", {{"name", m + "-ds"}, {"clusters", {ids["clusters"]}}},
             admin_auth)["id"];
    ids["vnets"] = call("POST", "/api/v1/vnets",
                        {{"name", m + "-net"},
                         {"bridge", "br-" + m},
                         {"clusters", {ids["clusters"]}},
                         {"ranges", {{{"type", "IP4"}, {"ip", "10.77.0.1"}, {"size", 8}}}}},
                        admin_auth)["id"];
    ids["ranges"] = 0;
    call("POST", "/api/v1/vnets/" + std::to_string(ids["vnets"]) + "/hold", {{"ip", "10.77.0.2"}},
         admin_auth);
    Json shown =
        call("POST", vdc + "/resources", {{"kind", "host"}, {"id", ids["hosts"]}}, admin_auth);
    ids["acl"] = shown.at("rules").at(0).get<int64_t>();
    int64_t admin = call("POST", "/api/v1/users",
                         {{"name", m + "-admin"}, {"password", password}, {"gid", ids["groups"]}},
                         admin_auth)["id"];
    call("POST", "/api/v1/groups/" + std::to_string(ids["groups"]) + "/admins", {{"uid", admin}},
         admin_auth);
    call("PUT", "/api/v1/groups/" + std::to_string(ids["groups"]) + "/quota",
         {{"limits", {{"gpu:H100", 16}, {"vms", 10}}}, {"user_defaults", {{"vms", 2}}}},
         admin_auth);
    tenant.admin_auth = login(m + "-admin", password, 3600).first;
    // The tenant administrator runs the rest of its tenant.
    ids["users"] = call("POST", "/api/v1/users",
                        {{"name", m + "-user"}, {"password", password}, {"gid", ids["groups"]}},
                        tenant.admin_auth)["id"];
    call("PUT", "/api/v1/users/" + std::to_string(ids["users"]) + "/quota",
         {{"limits", {{"gpu:H100", 4}}}}, tenant.admin_auth);
    Json key = call("POST", "/api/v1/apikeys", {{"name", m + "-key"}, {"endpoints", {"*"}}},
                    tenant.admin_auth);
    ids["apikeys"] = key["id"];
    ids["endpoints"] = call("POST", "/api/v1/endpoints",
                            {{"name", m + "-llm"},
                             {"model", m + "/model"},
                             {"description", m + " chat model"},
                             {"backends", {"http://" + m + ".internal:8000"}},
                             {"backend_key", m + "-upstream-key"}},
                            tenant.admin_auth)["id"];
    ids["templates"] = call("POST", "/api/v1/templates",
                            {{"name", m + "-template"},
                             {"description", m + " training node"},
                             {"request", {{"vcpus", 4}, {"memory_mb", 8192}}}},
                            tenant.admin_auth)["id"];
    ids["vms"] =
        call("POST", "/api/v1/templates/" + std::to_string(ids["templates"]) + "/instantiate",
             {{"name", m + "-vm"}}, tenant.admin_auth)["id"];
    ids["images"] = call("POST", "/api/v1/images",
                         {{"name", m + "-image"},
                          {"description", m + " model weights"},
                          {"datastore_id", ids["datastores"]},
                          {"type", "DATABLOCK"},
                          {"blank_mb", 1}},
                         tenant.admin_auth)["id"];
    std::string vm_path = "/api/v1/vms/" + std::to_string(ids["vms"]);
    ids["disks"] = call("POST", vm_path + "/disks", {{"size_mb", 1}},
                        tenant.admin_auth)["disks"][0]["disk_id"];
    // Let the scheduler's first look at the VM land before anything is fingerprinted.
    for (int i = 0; i < 200; ++i) {
      if (call("GET", vm_path, nullptr, tenant.admin_auth)["explanation"] !=
          "waiting for the scheduler") {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    tenant.apikey_auth = "Bearer " + key["key"].get<std::string>();
    auto [user_auth, token_id] = login(m + "-user", password, 3600);
    tenant.user_auth = user_auth;
    ids["tokens"] = token_id;
    f.tenants.push_back(std::move(tenant));
  }
  call("POST", "/api/v1/users", {{"name", "norights"}, {"password", "norights-password"}},
       admin_auth);
  f.norights_auth = login("norights", "norights-password", 3600).first;
  f.expired_auth = login("norights", "norights-password", 1).first;
  expire();
  return f;
}

std::vector<std::string> prove_isolation(const Transport& transport,
                                         const std::vector<RouteSpec>& routes,
                                         const IsolationFixture& fixture,
                                         const std::function<std::string()>& digest,
                                         size_t* requests) {
  std::vector<std::string> violations;
  size_t made = 0;
  std::string before = digest();
  for (size_t v = 0; v < fixture.tenants.size(); ++v) {
    const IsolationTenant& victim = fixture.tenants[v];
    std::map<std::string, int64_t> ghost;
    int64_t n = 0;
    for (const auto& [name, id] : victim.ids) ghost[name] = kGhostBase + n++;
    std::vector<std::pair<std::string, std::string>> actors;
    for (size_t o = 0; o < fixture.tenants.size(); ++o) {
      if (o == v) continue;
      actors.push_back({"tenant " + std::to_string(o) + " admin", fixture.tenants[o].admin_auth});
      actors.push_back({"tenant " + std::to_string(o) + " user", fixture.tenants[o].user_auth});
    }
    actors.push_back({"user without group rights", fixture.norights_auth});
    actors.push_back({"the victim's own end-user API key", victim.apikey_auth});
    actors.push_back({"no credentials", ""});
    actors.push_back({"expired token", fixture.expired_auth});

    for (const RouteSpec& route : routes) {
      std::string key = route.method + " " + route.pattern;
      // The victim's objects in the path.
      std::string path;
      bool placeholders = false, unknown = false;
      std::string previous;
      size_t i = 0;
      while (i < route.pattern.size()) {
        size_t j = route.pattern.find('/', i + 1);
        if (j == std::string::npos) j = route.pattern.size();
        std::string segment = route.pattern.substr(i + 1, j - i - 1);
        if (segment.starts_with("{")) {
          placeholders = true;
          if (segment == "{kind}") {
            segment = "host";
          } else if (segment == "{rid}" && previous == "host") {
            segment = "$hosts";
          } else if (auto c = collections().find(previous); c != collections().end()) {
            segment = "$" + c->second;
          } else {
            unknown = true;
          }
        }
        path += "/" + segment;
        previous = segment;
        i = j;
      }
      if (unknown) {
        violations.push_back(key +
                             ": the isolation proof has no tenant object for its "
                             "placeholders; teach build_isolation_fixture about them");
        continue;
      }
      std::string body;
      if (route.method == "POST" || route.method == "PUT" || route.method == "PATCH") {
        auto b = probe_bodies().find(key);
        if (b == probe_bodies().end()) {
          violations.push_back(key + ": no probe body; add a valid one to probe_bodies()");
          continue;
        }
        body = b->second;
      }
      if (auto q = probe_queries().find(key); q != probe_queries().end()) path += q->second;
      for (const auto& [who, auth] : actors) {
        Reply hit = transport(route.method, substitute(path, victim.ids),
                              substitute(body, victim.ids), auth);
        Reply miss =
            transport(route.method, substitute(path, ghost), substitute(body, ghost), auth);
        made += 2;
        std::string what = key + " as " + who + " against tenant " + std::to_string(v);
        bool reads_own = route.method == "GET" && !placeholders;
        if (hit.status < 400 && !reads_own) {
          violations.push_back(what + ": answered " + std::to_string(hit.status) + " " +
                               hit.body.substr(0, 200));
        }
        if (hit.body.find(victim.marker) != std::string::npos) {
          violations.push_back(
              what + ": the answer names the victim's objects: " + hit.body.substr(0, 200));
        }
        if (shape(hit) != shape(miss)) {
          violations.push_back(what + ": answers differently for an existing object (" +
                               shape(hit).substr(0, 160) + ") than for a missing one (" +
                               shape(miss).substr(0, 160) + ")");
        }
      }
      std::string after = digest();
      if (after != before) {
        violations.push_back(key + " against tenant " + std::to_string(v) + ": the store changed");
        before = after;
      }
    }
  }
  if (requests != nullptr) *requests = made;
  return violations;
}

std::string sqlite_digest(const std::string& db_path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    throw std::runtime_error("cannot open " + db_path);
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* stmt = nullptr;
  sqlite3_prepare_v2(db,
                     "SELECT type, id, version, body FROM objects WHERE type != 'audit' "
                     "ORDER BY type, id",
                     -1, &stmt, nullptr);
  std::string all;
  while (sqlite3_step(stmt) == SQLITE_ROW) {
    for (int c = 0; c < 4; ++c) {
      const unsigned char* text = sqlite3_column_text(stmt, c);
      all += text ? reinterpret_cast<const char*>(text) : "";
      all += '\x1f';
    }
    all += '\n';
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return auth::sha256_hex(all);
}

}  // namespace fabrica::testing
