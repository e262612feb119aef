// The isolation proof: three tenants, every route the server serves, every attacker.
#include "testing/isolation.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "crypto/crypto.h"
#include "daemon/wiring.h"
#include "store/sqlite_store.h"
#include "testing/daemon_process.h"
#include "testing/fake_clock.h"

namespace fabrica {
namespace {

using testing::Reply;

std::string report(const std::vector<std::string>& violations) {
  std::string out;
  for (size_t i = 0; i < violations.size() && i < 40; ++i) out += violations[i] + "\n";
  if (violations.size() > 40)
    out += "... and " + std::to_string(violations.size() - 40) + " more\n";
  return out;
}

std::string admin_auth(const testing::Transport& transport, const std::string& password) {
  std::string basic = "Basic " + crypto::base64_encode("admin:" + password);
  Reply r = transport("POST", "/api/v1/auth/tokens", "", basic);
  return "Bearer " + (*parse_json(r.body))["token"].get<std::string>();
}

// Over HTTP against the real fabricad, with the route table it prints.
TEST(IsolationProof, NoRouteLetsAnyActorReachAnotherTenant) {
  // Hosts never join here; keep them from going OFFLINE (a store change) during the walk.
  testing::DaemonProcess daemon({"--host-offline-after", "86400"});
  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto http = daemon.http();
  testing::Transport transport = [&](const std::string& method, const std::string& target,
                                     const std::string& body, const std::string& auth) {
    client::Headers headers;
    if (!auth.empty()) headers.push_back({"Authorization", auth});
    if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
    auto r = http->request(method, target, body, headers);
    if (!r) return Reply{.status = 0, .body = r.error().message()};
    return Reply{.status = r->status, .body = r->body};
  };
  auto printed = testing::run_command(testing::binary_path("fabricad") + " --print-routes");
  ASSERT_EQ(printed.exit_code, 0) << printed.output;
  auto routes = testing::parse_route_table(*parse_json(printed.output));
  auto fixture = testing::build_isolation_fixture(
      transport, admin_auth(transport, testing::DaemonProcess::kAdminPassword),
      [] { std::this_thread::sleep_for(std::chrono::milliseconds(2100)); });
  size_t requests = 0;
  std::string db = (daemon.data_dir() / "fabrica.db").string();
  auto violations = testing::prove_isolation(
      transport, routes, fixture, [&] { return testing::sqlite_digest(db); }, &requests);
  EXPECT_TRUE(violations.empty()) << report(violations);
  // 3 victims x 8 attackers x 2 requests (the victim's object and a missing one) per route.
  EXPECT_EQ(requests, routes.size() * 3 * 8 * 2);
  std::printf("isolation proof: %zu routes, %zu requests, %zu violations\n", routes.size(),
              requests, violations.size());

  // The bodies: every object a body names, every restricted field, login names.
  size_t body_requests = 0;
  auto body_violations = testing::prove_body_isolation(
      transport, routes, fixture, [&] { return testing::sqlite_digest(db); }, &body_requests);
  EXPECT_TRUE(body_violations.empty()) << report(body_violations);
  EXPECT_GT(body_requests, 0u);
  std::printf("isolation proof (bodies): %zu requests, %zu violations\n", body_requests,
              body_violations.size());
}

// The proof must fail when a route forgets authorization: in process, with two unguarded
// routes added beside the real ones.
TEST(IsolationProof, CatchesARouteAddedWithoutAuthorization) {
  auto dir = std::filesystem::temp_directory_path() / ("fabrica-iso-" + crypto::random_hex(6));
  std::filesystem::create_directories(dir);
  {
    auto store =
        std::move(*store::SqliteStore::open((dir / "db").string(), {.sync = store::Sync::kNormal}));
    testing::FakeClock clock;
    Wiring wiring(*store, clock, "test", {}, {.datastores_root = (dir / "datastores").string()});
    ASSERT_TRUE(wiring.identity.bootstrap("admin-password"));
    ASSERT_TRUE(wiring.fleet.bootstrap());
    store::Store& raw = *store;
    wiring.api.router().add("GET", "/api/v1/users/{id}/profile", api::AuthMode::kBearer,
                            [&raw](const api::Context& ctx) -> Result<api::HttpResponse> {
                              FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
                              FAB_ASSIGN_OR_RETURN(auto user, raw.read_value<store::Record>(
                                                                  [&](store::Transaction& tx) {
                                                                    return tx.get("user", id);
                                                                  }));
                              return api::json_response(200, Json{{"name", user.name}});
                            });
    wiring.api.router().add("POST", "/api/v1/users/{id}/nickname", api::AuthMode::kBearer,
                            [](const api::Context&) -> Result<api::HttpResponse> {
                              return api::json_response(200, Json::object());
                            });
    testing::Transport transport = [&](const std::string& method, const std::string& target,
                                       const std::string& body, const std::string& auth) {
      api::HttpRequest request{.method = method,
                               .target = target,
                               .body = body,
                               .authorization = auth,
                               .remote_address = "127.0.0.1",
                               .request_id = "proof"};
      size_t q = target.find('?');
      request.path = target.substr(0, q);
      if (q != std::string::npos) {
        std::string query = target.substr(q + 1);
        size_t eq = query.find('=');
        request.query.emplace(query.substr(0, eq), query.substr(eq + 1));
      }
      auto response = wiring.api.handle(request);
      return Reply{.status = response.status, .body = response.body};
    };
    std::vector<testing::RouteSpec> routes;
    for (const auto& r : wiring.api.routes()) {
      routes.push_back({r.method, r.pattern, std::string(api::auth_mode_name(r.auth))});
    }
    auto fixture =
        testing::build_isolation_fixture(transport, admin_auth(transport, "admin-password"),
                                         [&] { clock.advance(std::chrono::seconds(2)); });
    std::string db = (dir / "db").string();
    auto violations = testing::prove_isolation(transport, routes, fixture,
                                               [&] { return testing::sqlite_digest(db); });
    ASSERT_FALSE(violations.empty());
    size_t leaks = 0, unprobed = 0;
    bool leaked_name = false, answered = false, differs = false;
    for (const auto& v : violations) {
      if (v.starts_with("GET /api/v1/users/{id}/profile")) {
        leaked_name = leaked_name || v.find("names the victim's objects") != std::string::npos;
        answered = answered || v.find("answered 200") != std::string::npos;
        differs = differs || v.find("answers differently") != std::string::npos;
        ++leaks;
      } else if (v.starts_with("POST /api/v1/users/{id}/nickname: no probe body")) {
        ++unprobed;
      } else {
        ADD_FAILURE() << "unexpected violation: " << v;
      }
    }
    EXPECT_GT(leaks, 0u);
    EXPECT_TRUE(leaked_name && answered && differs);  // Each check catches it on its own.
    EXPECT_EQ(unprobed, 3u);                          // Once per victim.

    // A route that checks the object in its path but trusts one named in its body.
    wiring.api.router().add("POST", "/api/v1/vms/{id}/peek", api::AuthMode::kBearer,
                            [&raw, &wiring](const api::Context& ctx) -> Result<api::HttpResponse> {
                              FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
                              FAB_TRY(wiring.compute.get_vm(ctx.who(), id));
                              FAB_ASSIGN_OR_RETURN(auto body, parse_json(ctx.request.body));
                              int64_t image = body.value("image_id", int64_t{-1});
                              FAB_ASSIGN_OR_RETURN(auto record, raw.read_value<store::Record>(
                                                                    [&](store::Transaction& tx) {
                                                                      return tx.get("image", image);
                                                                    }));
                              return api::json_response(200, Json{{"name", record.name}});
                            });
    routes.push_back({"POST", "/api/v1/vms/{id}/peek", "bearer"});
    auto body_violations = testing::prove_body_isolation(
        transport, routes, fixture, [&] { return testing::sqlite_digest(db); }, nullptr,
        {{"POST /api/v1/vms/{id}/peek", R"({"image_id":$images})"}});
    size_t peeks = 0;
    for (const auto& v : body_violations) {
      if (v.starts_with("POST /api/v1/vms/{id}/peek")) {
        ++peeks;
      } else {
        ADD_FAILURE() << "unexpected violation: " << v;
      }
    }
    // Each victim x each other tenant's administrator (its user may not see its VM):
    // answered, named the victim's image, and differed from a missing one.
    EXPECT_EQ(peeks, 3u * 2u * 3u) << report(body_violations);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace fabrica
