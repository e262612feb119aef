#include "testing/isolation.h"

#include <sqlite3.h>

#include <cctype>
#include <chrono>
#include <set>
#include <stdexcept>
#include <thread>

#include "auth/restricted.h"
#include "crypto/crypto.h"

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
      {"join-tokens", "join_tokens"},
      {"marketplaces", "marketplaces"},
      {"apps", "apps"},
      // A model is a MODEL image: the victim's image stands for it (an id /models refuses
      // to everyone but the owner, as an image).
      {"models", "images"},
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
      {"POST /api/v1/hosts/{id}/rotate-credential", "{}"},
      {"POST /api/v1/agent/credential", "{}"},
      {"POST /api/v1/system/sealing-key/rotate", "{}"},
      {"POST /api/v1/agent/join", R"({"token":"fjt_probe","hostname":"probe-host"})"},
      {"PUT /api/v1/agent/inventory", R"({"inventory":{}})"},
      {"POST /api/v1/agent/heartbeat", "{}"},
      {"POST /api/v1/agent/operations", R"({"id":"1-1","ok":true})"},
      {"POST /api/v1/agent/vms", R"({"vms":[{"vm_id":1,"state":"shutoff"}]})"},
      {"POST /api/v1/vdcs", R"({"name":"probe-vdc"})"},
      {"POST /api/v1/vdcs/{id}/groups", R"({"gid":$groups})"},
      {"POST /api/v1/vdcs/{id}/resources", R"({"kind":"cluster","id":$clusters})"},
      {"POST /api/v1/apikeys", R"({"name":"probe-key","gid":$groups,"endpoints":["@endpoints"]})"},
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
      {"POST /api/v1/marketplaces", R"({"name":"probe-market","url":"http://127.0.0.1:1"})"},
      {"POST /api/v1/apps", R"({"name":"probe-app","template_id":$templates,"public":true})"},
      {"POST /api/v1/apps/{id}/instantiate",
       R"({"name":"probe-vm","gid":$groups,"model_id":$images,"gpus":0})"},
      {"PUT /api/v1/guest/self", R"({"ready":false,"attributes":{"url":"http://probe:1"}})"},
      {"POST /api/v1/guest/self", R"({"ready":false,"attributes":{"url":"http://probe:1"}})"},
      {"POST /api/v1/guest/self/metrics", R"({"metrics":{"probe":1}})"},
      {"PUT /api/v1/marketplaces/{id}", R"({"description":"hijacked","public":true})"},
      {"POST /api/v1/models",
       R"({"source":"hf://probe/model","gid":$groups,"datastore_id":$datastores,"marketplace_id":$marketplaces})"},
      {"POST /api/v1/gateway/usage",
       R"({"records":[{"id":"probe-1","time_ms":1,"gid":$groups,"uid":$users,"apikey_id":$apikeys,"endpoint_id":$endpoints,"endpoint":"probe","model":"m","backend":"","vm_id":$vms,"kind":"chat","status":200,"input_tokens":1000000,"output_tokens":0,"latency_ms":1,"gateway":"probe"}]})"},
  };
  return m;
}

// Filters that name the victim's objects on list routes.
const std::map<std::string, std::string>& probe_queries() {
  static const std::map<std::string, std::string> m = {
      {"GET /api/v1/users", "?gid=$groups"},        {"GET /api/v1/apikeys", "?gid=$groups"},
      {"GET /api/v1/auth/tokens", "?uid=$users"},   {"GET /api/v1/hosts", "?cluster_id=$clusters"},
      {"GET /api/v1/audit", "?uid=$users"},         {"GET /api/v1/vms", "?gid=$groups"},
      {"GET /api/v1/templates", "?gid=$groups"},    {"GET /api/v1/images", "?gid=$groups"},
      {"GET /api/v1/models", "?gid=$groups"},       {"GET /api/v1/usage", "?gid=$groups"},
      {"GET /api/v1/usage/totals", "?gid=$groups"},
  };
  return m;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to) {
  if (from.empty()) return text;
  for (size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
  return text;
}

// $collection becomes an id, @collection a name ("ghost-<collection>" when none is given).
// No collection name is a prefix of another, so plain replacement is exact.
std::string substitute(std::string text, const std::map<std::string, int64_t>& ids,
                       const std::map<std::string, std::string>& names = {}) {
  for (const auto& [name, id] : ids) {
    text = replace_all(text, "$" + name, std::to_string(id));
    auto given = names.find(name);
    text = replace_all(text, "@" + name, given == names.end() ? "ghost-" + name : given->second);
  }
  return text;
}

// A host path or device for every restricted field (auth/restricted.h): the route, the body
// (with $collection of the actor's own objects), the field the refusal must name, and the
// declared field it covers ("object:field").
struct HostProbe {
  std::string route;
  std::string body;
  std::string field;
  std::string covers;
};
const std::vector<HostProbe>& host_probes() {
  static const std::vector<HostProbe> probes = {
      {"POST /api/v1/vms", R"({"name":"probe-vm","os":{"kernel":"/var/lib/fabrica/sealing.key"}})",
       "os.kernel", "vm:os.kernel"},
      {"POST /api/v1/vms",
       R"({"name":"probe-vm","os":{"kernel_image_id":0,"initrd":"/var/lib/fabrica/sealing.key"}})",
       "os.initrd", "vm:os.initrd"},
      {"POST /api/v1/vms",
       R"({"name":"probe-vm","request":{"vfs":[{"fabric":"infiniband","count":1,"pf":"ib0"}]}})",
       "request.vfs[0].pf", "vm:request.vfs[].pf"},
      {"POST /api/v1/templates",
       R"({"name":"probe-template","os":{"kernel":"/boot/vmlinuz","initrd":"/etc/shadow"}})",
       "os.kernel", "vm:os.kernel"},
      {"PUT /api/v1/templates/{id}", R"({"os":{"kernel":"/var/lib/fabrica/sealing.key"}})",
       "os.kernel", "vm:os.kernel"},
      {"POST /api/v1/templates/{id}/instantiate",
       R"({"name":"probe-vm","os":{"kernel":"/var/lib/fabrica/sealing.key"}})", "os.kernel",
       "vm:os.kernel"},
      {"POST /api/v1/images",
       R"({"name":"probe-image","datastore_id":$datastores,"type":"KERNEL","path":"/var/lib/fabrica/sealing.key"})",
       "path", "image:path"},
      {"POST /api/v1/datastores", R"({"name":"probe-ds","clusters":[$clusters],"path":"/var/lib"})",
       "path", "datastore:path"},
      {"POST /api/v1/vnets", R"({"name":"probe-vnet","bridge":"fabr0","clusters":[$clusters]})",
       "bridge", "vnet:bridge"},
      {"POST /api/v1/vnets",
       R"({"name":"probe-vnet","mode":"vlan","phydev":"eth0","vlan_id":5,"clusters":[$clusters]})",
       "phydev", "vnet:phydev"},
  };
  return probes;
}

// The path of `pattern` with the actor's own objects in it (as the path proof builds it).
std::string own_path(const std::string& pattern) {
  std::string path, previous;
  size_t i = 0;
  while (i < pattern.size()) {
    size_t j = pattern.find('/', i + 1);
    if (j == std::string::npos) j = pattern.size();
    std::string segment = pattern.substr(i + 1, j - i - 1);
    if (segment.starts_with("{")) {
      if (segment == "{kind}") {
        segment = "host";
      } else if (segment == "{rid}" && previous == "host") {
        segment = "$hosts";
      } else if (auto c = collections().find(previous); c != collections().end()) {
        segment = "$" + c->second;
      }
    }
    path += "/" + segment;
    previous = segment;
    i = j;
  }
  return path;
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

// The checks of one probe: refused (unless `may_answer`, a caller's read of its own list),
// naming nothing of the victim, and answered exactly as for an object that does not exist.
void judge(std::vector<std::string>& violations, const std::string& what, const Reply& hit,
           const Reply& miss, const std::string& marker, bool may_answer) {
  if (hit.status < 400 && !may_answer) {
    violations.push_back(what + ": answered " + std::to_string(hit.status) + " " +
                         hit.body.substr(0, 200));
  }
  if (hit.body.find(marker) != std::string::npos) {
    violations.push_back(what +
                         ": the answer names the victim's objects: " + hit.body.substr(0, 200));
  }
  if (shape(hit) != shape(miss)) {
    violations.push_back(what + ": answers differently for an existing object (" +
                         shape(hit).substr(0, 160) + ") than for a missing one (" +
                         shape(miss).substr(0, 160) + ")");
  }
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
    std::string basic = "Basic " + crypto::base64_encode(user + ":" + password);
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
    // A private marketplace (a mirror nobody answers on) that only this tenant's VDC lists.
    ids["marketplaces"] =
        call("POST", "/api/v1/marketplaces",
             {{"name", m + "-market"}, {"url", "http://127.0.0.1:1"}}, admin_auth)["id"];
    call("POST", vdc + "/resources", {{"kind", "marketplace"}, {"id", ids["marketplaces"]}},
         admin_auth);
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
    ids["join_tokens"] = call("POST", "/api/v1/hosts/join-tokens",
                              {{"cluster_id", ids["clusters"]}, {"count", 1}}, admin_auth)["id"];
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
    // The tenant's template published as a private vLLM appliance that only this tenant's
    // VDC lists (instantiate takes a MODEL image: model_id is probed with the victim's).
    ids["apps"] =
        call("POST", "/api/v1/apps",
             {{"name", m + "-app"}, {"template_id", ids["templates"]}, {"appliance", "vllm"}},
             admin_auth)["id"];
    call("POST", vdc + "/resources", {{"kind", "app"}, {"id", ids["apps"]}}, admin_auth);
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
    tenant.names = {
        {"users", m + "-user"},          {"groups", m + "-grp"},    {"endpoints", m + "-llm"},
        {"templates", m + "-template"},  {"vms", m + "-vm"},        {"images", m + "-image"},
        {"apikeys", m + "-key"},         {"datastores", m + "-ds"}, {"vnets", m + "-net"},
        {"clusters", m + "-cluster"},    {"hosts", m + "-host"},    {"vdcs", m + "-vdc"},
        {"marketplaces", m + "-market"}, {"apps", m + "-app"}};
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
                              substitute(body, victim.ids, victim.names), auth);
        Reply miss =
            transport(route.method, substitute(path, ghost), substitute(body, ghost), auth);
        made += 2;
        std::string what = key + " as " + who + " against tenant " + std::to_string(v);
        bool reads_own = route.method == "GET" && !placeholders;
        judge(violations, what, hit, miss, victim.marker, reads_own);
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

std::vector<std::string> prove_body_isolation(const Transport& transport,
                                              const std::vector<RouteSpec>& routes,
                                              const IsolationFixture& fixture,
                                              const std::function<std::string()>& digest,
                                              size_t* requests,
                                              const std::map<std::string, std::string>& extra) {
  std::vector<std::string> violations;
  size_t made = 0;
  std::string before = digest();
  auto settle = [&](const std::string& what) {
    std::string after = digest();
    if (after != before) {
      violations.push_back(what + ": the store changed");
      before = after;
    }
  };
  std::set<std::string> served;
  for (const RouteSpec& r : routes) served.insert(r.method + " " + r.pattern);

  for (size_t v = 0; v < fixture.tenants.size(); ++v) {
    const IsolationTenant& victim = fixture.tenants[v];
    for (size_t o = 0; o < fixture.tenants.size(); ++o) {
      if (o == v) continue;
      const IsolationTenant& own = fixture.tenants[o];
      for (const auto& [who, credential] : {std::pair{std::string("admin"), own.admin_auth},
                                            std::pair{std::string("user"), own.user_auth}}) {
        std::string actor = "tenant " + std::to_string(o) + " " + who;
        for (const RouteSpec& route : routes) {
          if (route.auth != "bearer") continue;
          std::string key = route.method + " " + route.pattern;
          const std::string* probe = nullptr;
          if (auto e = extra.find(key); e != extra.end()) {
            probe = &e->second;
          } else if (auto b = probe_bodies().find(key); b != probe_bodies().end()) {
            probe = &b->second;
          }
          if (probe == nullptr) continue;  // The path proof reports a body route without one.
          const std::string& body = *probe;
          std::string path = substitute(own_path(route.pattern), own.ids, own.names);
          for (const auto& [collection, id] : victim.ids) {
            for (char sigil : {'$', '@'}) {
              std::string token = std::string(1, sigil) + collection;
              if (body.find(token) == std::string::npos) continue;
              bool by_name = sigil == '@';
              std::string victim_value = std::to_string(id), ghost_value = "900999";
              if (by_name) {
                auto name = victim.names.find(collection);
                if (name == victim.names.end()) {
                  violations.push_back(key + ": the fixture has no name for " + token);
                  continue;
                }
                victim_value = name->second;
                ghost_value = "ghost-" + collection;
              }
              std::string hit_body =
                  substitute(replace_all(body, token, victim_value), own.ids, own.names);
              std::string miss_body =
                  substitute(replace_all(body, token, ghost_value), own.ids, own.names);
              Reply hit = transport(route.method, path, hit_body, credential);
              Reply miss = transport(route.method, path, miss_body, credential);
              made += 2;
              std::string what = key + " as " + actor + " with the body's " + token +
                                 " naming tenant " + std::to_string(v) + "'s";
              // A name the actor sent may come back; nothing else of the victim may. (Ids are
              // blurred with every other digit.)
              Reply hit_seen = hit, miss_seen = miss;
              if (by_name) {
                hit_seen.body = replace_all(hit.body, victim_value, "<sent>");
                miss_seen.body = replace_all(miss.body, ghost_value, "<sent>");
              }
              judge(violations, what, hit_seen, miss_seen, victim.marker, false);
              settle(what);
            }
          }
        }

        // Host paths and devices in restricted fields: refused 403 naming the field.
        std::set<std::string> covered;
        for (const HostProbe& probe : host_probes()) {
          covered.insert(probe.covers);
          if (!served.contains(probe.route)) {
            violations.push_back(probe.route + ": a host-path probe names a route not served");
            continue;
          }
          size_t space = probe.route.find(' ');
          std::string method = probe.route.substr(0, space);
          std::string path =
              substitute(own_path(probe.route.substr(space + 1)), own.ids, own.names);
          Reply r = transport(method, path, substitute(probe.body, own.ids, own.names), credential);
          ++made;
          std::string what = probe.route + " as " + actor + " setting " + probe.field;
          auto parsed = parse_json(r.body);
          std::string field;
          if (parsed && parsed->contains("error") && (*parsed)["error"].is_object() &&
              (*parsed)["error"].value("field", Json()).is_string()) {
            field = (*parsed)["error"]["field"].get<std::string>();
          }
          // The tenant's administrator owns every object it names, so only the field can be at
          // fault; its plain user may be refused earlier, for the object.
          bool refused = who == "admin" ? r.status == 403 && field == probe.field : r.status >= 400;
          if (!refused) {
            violations.push_back(what + ": answered " + std::to_string(r.status) + " " +
                                 r.body.substr(0, 200) + " (want 403 naming " + probe.field + ")");
          }
          settle(what);
        }
        for (const auth::RestrictedField& f : auth::restricted_fields()) {
          std::string id = std::string(f.object) + ":" + std::string(f.field);
          if (!covered.contains(id)) {
            violations.push_back("restricted field " + id +
                                 " has no host-path probe; add one to host_probes()");
          }
        }

        // A login name taken in the victim's tenant reads as one taken in the actor's own.
        if (served.contains("POST /api/v1/users")) {
          std::string form = R"({"name":"NAME","password":"probe-password-1"})";
          std::string theirs = victim.names.at("users"), mine = own.names.at("users");
          Reply hit =
              transport("POST", "/api/v1/users", replace_all(form, "NAME", theirs), credential);
          Reply taken =
              transport("POST", "/api/v1/users", replace_all(form, "NAME", mine), credential);
          made += 2;
          std::string what = "POST /api/v1/users as " + actor + " with tenant " +
                             std::to_string(v) + "'s user name";
          Reply hit_seen{hit.status, replace_all(hit.body, theirs, "<sent>")};
          Reply taken_seen{taken.status, replace_all(taken.body, mine, "<sent>")};
          if (hit.status < 400)
            violations.push_back(what + ": answered " + hit.body.substr(0, 200));
          if (shape(hit_seen) != shape(taken_seen)) {
            violations.push_back(what + ": reads differently (" + shape(hit_seen).substr(0, 160) +
                                 ") than a name taken in the actor's own tenant (" +
                                 shape(taken_seen).substr(0, 160) + ")");
          }
          settle(what);
        }
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
  return crypto::sha256_hex(all);
}

}  // namespace fabrica::testing
