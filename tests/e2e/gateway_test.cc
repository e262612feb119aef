// fabrica-gateway end to end: the real fabricad, two tenants with endpoints and keys made
// through the API, OpenAI-compatible test upstreams (tests/gateway/upstream.mjs), the real
// gateway, and the official openai npm client (tests/gateway/openai.test.mjs) against it.
// Then what the client suite cannot see: usage records (each once, also across a fabricad
// restart under load), revocation, isolation in every answer, and faults.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <set>
#include <thread>

#include "testing/daemon_process.h"

namespace fabrica {
namespace {

namespace fs = std::filesystem;
using testing::ChildProcess;
using testing::DaemonProcess;
using testing::eventually;

using testing::node_binary;

// The port a child printed on its first lines ("port":N or "listening on H:N").
int port_in_log(const std::string& log, const std::regex& pattern) {
  std::smatch m;
  if (std::regex_search(log, m, pattern)) return std::stoi(m[1]);
  return 0;
}

class GatewayE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (node_binary().empty() ||
        !fs::exists(testing::source_dir() / "tests/gateway/node_modules/openai")) {
      GTEST_SKIP() << "node or tests/gateway/node_modules missing: run scripts/test (npm ci)";
    }
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    admin_ = std::make_unique<client::ApiClient>(daemon_.login());
    dir_ = daemon_.data_dir() / "gateway-test";
    fs::create_directories(dir_);
    for (const char* name : {"acme-a", "acme-b", "umbrella"}) start_upstream(name);

    acme_gid_ = make_tenant("acme");
    umbrella_gid_ = make_tenant("umbrella");
    auto acme = tenant_admin("acme");
    auto umbrella = tenant_admin("umbrella");
    endpoint(acme, "llama", "acme/llama-8b", {upstream_url("acme-a"), upstream_url("acme-b")}, "");
    endpoint(acme, "qwen", "acme/qwen-7b", {upstream_url("acme-b")}, "");
    endpoint(umbrella, "secret", "umbrella/secret-model", {upstream_url("umbrella")},
             "sk-umbrella-backend");
    acme_key_ = key(acme, "acme-all", Json::array({"*"}), 0);
    acme_narrow_key_ = key(acme, "acme-narrow", Json::array({"llama"}), 0);
    acme_limited_key_ = key(acme, "acme-limited", Json::array({"llama"}), 1);
    umbrella_key_ = key(umbrella, "umbrella-all", Json::array({"*"}), 0);
    start_gateway();
  }

  void TearDown() override {
    gateway_.reset();
    upstreams_.clear();
  }

  void start_upstream(const std::string& name) {
    std::vector<std::string> argv = {
        node_binary(), (testing::source_dir() / "tests/gateway/upstream.mjs").string(), "--name",
        name};
    if (name == "umbrella") {
      argv.insert(argv.end(), {"--key", "sk-umbrella-backend"});
    }
    auto log = (dir_ / (name + ".log")).string();
    upstreams_[name] = std::make_unique<ChildProcess>(argv, log);
    ASSERT_TRUE(eventually([&] {
      return port_in_log(upstreams_[name]->log(), std::regex(R"re("port":(\d+))re")) > 0;
    })) << upstreams_[name]->log();
    upstream_ports_[name] = port_in_log(upstreams_[name]->log(), std::regex(R"re("port":(\d+))re"));
  }
  std::string upstream_url(const std::string& name) {
    return "http://127.0.0.1:" + std::to_string(upstream_ports_[name]);
  }

  // The gateway on its port (0 the first time), with the test's token file and spool.
  std::vector<std::string> gateway_argv() {
    return {testing::binary_path("fabrica-gateway"),
            "--server",
            daemon_.url(),
            "--listen",
            "127.0.0.1:" + std::to_string(gateway_port_),
            "--admin-listen",
            "127.0.0.1:0",
            "--token-file",
            (dir_ / "token").string(),
            "--spool-dir",
            (dir_ / "spool").string(),
            "--name",
            "gw-test",
            "--insecure-http"};
  }

  void start_gateway(const std::vector<std::string>& extra = {}) {
    std::ofstream(dir_ / "token") << admin_token() << "\n";
    std::vector<std::string> argv = gateway_argv();
    argv.insert(argv.end(), {"--sync-interval-ms", "500", "--threads", "2"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto log = (dir_ / "gateway.log").string();
    fs::remove(log);
    gateway_ = std::make_unique<ChildProcess>(argv, log);
    std::regex listening(R"(listening on 127\.0\.0\.1:(\d+) admin 127\.0\.0\.1:(\d+))");
    ASSERT_TRUE(eventually([&] {
      std::smatch m;
      std::string text = gateway_->log();
      if (!std::regex_search(text, m, listening)) return false;
      gateway_port_ = std::stoi(m[1]);
      admin_port_ = std::stoi(m[2]);
      return true;
    })) << gateway_->log();
    // Serving once the first snapshot is in.
    ASSERT_TRUE(eventually([&] { return models(acme_key_).status == 200; })) << gateway_->log();
  }

  // A token of its own for the gateway, the way an operator would issue one.
  std::string admin_token() {
    client::ApiClient api(daemon_.http(), "");
    auto t = api.login("admin", DaemonProcess::kAdminPassword, Json{{"name", "gateway"}});
    EXPECT_TRUE(t) << t.error().message();
    return t ? (*t)["token"].get<std::string>() : "";
  }

  int64_t make_tenant(const std::string& name) {
    auto g = admin_->post("/api/v1/groups", Json{{"name", name}});
    EXPECT_TRUE(g) << g.error().message();
    auto u = admin_->post(
        "/api/v1/users",
        Json{{"name", name + "-admin"}, {"password", "password-" + name}, {"gid", (*g)["id"]}});
    EXPECT_TRUE(u) << u.error().message();
    auto made =
        admin_->post("/api/v1/groups/" + std::to_string((*g)["id"].get<int64_t>()) + "/admins",
                     Json{{"uid", (*u)["id"]}});
    EXPECT_TRUE(made) << made.error().message();
    return (*g)["id"].get<int64_t>();
  }
  client::ApiClient tenant_admin(const std::string& name) {
    return daemon_.login(name + "-admin", "password-" + name);
  }
  void endpoint(client::ApiClient& api, const std::string& name, const std::string& model,
                const std::vector<std::string>& backends, const std::string& key) {
    Json body{{"name", name}, {"model", model}, {"backends", backends}};
    if (!key.empty()) body["backend_key"] = key;
    auto e = api.post("/api/v1/endpoints", body);
    ASSERT_TRUE(e) << e.error().message();
  }
  std::string key(client::ApiClient& api, const std::string& name, const Json& endpoints,
                  int64_t rpm) {
    auto k =
        api.post("/api/v1/apikeys", Json{{"name", name}, {"endpoints", endpoints}, {"rpm", rpm}});
    EXPECT_TRUE(k) << k.error().message();
    key_ids_[name] = (*k)["id"].get<int64_t>();
    return (*k)["key"].get<std::string>();
  }

  // With fabricad down, from the snapshot the last run saved.
  void start_gateway_without_waiting_for_fabricad() {
    std::vector<std::string> argv = gateway_argv();
    gateway_ = std::make_unique<ChildProcess>(argv, (dir_ / "gateway-offline.log").string());
    ASSERT_TRUE(eventually([&] { return models(acme_key_).status == 200; })) << gateway_->log();
  }

  std::unique_ptr<client::HttpClient> gateway_http() {
    return std::move(
        *client::HttpClient::create("http://127.0.0.1:" + std::to_string(gateway_port_)));
  }
  client::ClientResponse post(const std::string& key, const std::string& path,
                              const std::string& body) {
    auto http = gateway_http();
    auto r = http->request("POST", path, body, {{"Authorization", "Bearer " + key}});
    return r ? *r : client::ClientResponse{.status = -1, .body = r.error().message()};
  }
  client::ClientResponse chat(const std::string& key, const std::string& model,
                              const std::string& content) {
    return post(key, "/v1/chat/completions",
                dump_json(Json{{"model", model},
                               {"messages", {{{"role", "user"}, {"content", content}}}},
                               {"max_tokens", 2}}));
  }
  client::ClientResponse models(const std::string& key) {
    auto http = gateway_http();
    auto r = http->request("GET", "/v1/models", "", {{"Authorization", "Bearer " + key}});
    return r ? *r : client::ClientResponse{.status = -1, .body = r.error().message()};
  }
  // Every usage record but those of the /v1/models calls that wait for the gateway to serve.
  Json usage_records() {
    Json all = Json::array();
    std::string cursor;
    while (true) {
      auto page =
          admin_->get("/api/v1/usage?limit=1000" + (cursor.empty() ? "" : "&cursor=" + cursor));
      EXPECT_TRUE(page) << page.error().message();
      if (!page) return all;
      for (auto& r : (*page)["items"]) {
        if (r["kind"] != "models") all.push_back(r);
      }
      if ((*page)["next_cursor"].is_null()) return all;
      cursor = (*page)["next_cursor"].get<std::string>();
    }
  }

  DaemonProcess daemon_;
  std::unique_ptr<client::ApiClient> admin_;
  fs::path dir_;
  std::map<std::string, std::unique_ptr<ChildProcess>> upstreams_;
  std::map<std::string, int> upstream_ports_;
  std::unique_ptr<ChildProcess> gateway_;
  int gateway_port_ = 0;
  int admin_port_ = 0;
  int64_t acme_gid_ = -1, umbrella_gid_ = -1;
  std::map<std::string, int64_t> key_ids_;
  std::string acme_key_, acme_narrow_key_, acme_limited_key_, umbrella_key_;
};

TEST_F(GatewayE2eTest, TheOfficialOpenAiClientWorksAgainstTheGateway) {
  std::string cmd = "cd " + (testing::source_dir() / "tests/gateway").string() +
                    " && GATEWAY_URL=http://127.0.0.1:" + std::to_string(gateway_port_) + "/v1" +
                    " ACME_KEY=" + acme_key_ + " ACME_NARROW_KEY=" + acme_narrow_key_ +
                    " ACME_LIMITED_KEY=" + acme_limited_key_ + " UMBRELLA_KEY=" + umbrella_key_ +
                    " ACME_MODEL=acme/llama-8b ACME_OTHER_MODEL=acme/qwen-7b"
                    " UMBRELLA_MODEL=umbrella/secret-model " +
                    node_binary() + " --test --test-reporter=spec openai.test.mjs";
  auto r = testing::run_command(cmd);
  EXPECT_EQ(r.exit_code, 0) << r.output << "\n--- gateway ---\n" << gateway_->log();
  std::cout << r.output.substr(r.output.size() > 3000 ? r.output.size() - 3000 : 0) << std::endl;
  // The backend credential went to umbrella's backend only, and never to acme's.
  auto stats = [&](const std::string& name) {
    auto http = client::HttpClient::create(upstream_url(name));
    return Json::parse((*http)->request("GET", "/test/stats")->body);
  };
  // Each answer is kept in a local: a range-for over a temporary's member would read freed memory.
  const Json umbrella = stats("umbrella");
  for (const auto& auth : umbrella["authorization"]) {
    EXPECT_EQ(auth, "Bearer sk-umbrella-backend");
  }
  for (const char* name : {"acme-a", "acme-b"}) {
    const Json acme = stats(name);
    for (const auto& auth : acme["authorization"]) EXPECT_EQ(auth, "");
  }
  // Both of llama's backends took requests.
  EXPECT_GT(stats("acme-a")["requests"].get<int>(), 0);
  EXPECT_GT(stats("acme-b")["requests"].get<int>(), 0);
}

TEST_F(GatewayE2eTest, EveryRequestIsMeteredOnceWithTokensAndTiming) {
  for (int i = 0; i < 5; ++i) ASSERT_EQ(chat(acme_key_, "acme/llama-8b", "a b c").status, 200);
  auto stream = post(
      acme_key_, "/v1/chat/completions",
      R"({"model":"acme/qwen-7b","stream":true,"messages":[{"role":"user","content":"x [[tokens:4]]"}]})");
  ASSERT_EQ(stream.status, 200);
  EXPECT_NE(stream.body.find("data: [DONE]"), std::string::npos);
  EXPECT_EQ(stream.body.find("\"usage\""), std::string::npos) << stream.body;
  EXPECT_EQ(chat(acme_key_, "no/such", "x").status, 404);
  ASSERT_TRUE(eventually([&] { return usage_records().size() == 7; })) << usage_records().dump();
  Json records = usage_records();
  std::set<std::string> ids;
  int streamed = 0;
  for (const auto& r : records) {
    ids.insert(r["id"].get<std::string>());
    EXPECT_EQ(r["gid"], acme_gid_);
    EXPECT_EQ(r["apikey_id"], key_ids_["acme-all"]);
    EXPECT_EQ(r["gateway"], "gw-test");
    if (r["status"] == 200 && !r["stream"].get<bool>()) {
      EXPECT_EQ(r["input_tokens"], 3);
      EXPECT_EQ(r["output_tokens"], 2);
      EXPECT_EQ(r["endpoint"], "llama");
      EXPECT_TRUE(r["backend"].get<std::string>().starts_with("http://127.0.0.1:"));
    }
    if (r["stream"].get<bool>()) {
      ++streamed;
      EXPECT_EQ(r["endpoint"], "qwen");
      EXPECT_EQ(r["output_tokens"], 4);  // Metered from the usage chunk it asked for.
      EXPECT_FALSE(r["ttft_ms"].is_null());
      EXPECT_LE(r["ttft_ms"].get<double>(), r["latency_ms"].get<double>());
    }
    if (r["status"] == 404) {
      EXPECT_EQ(r["endpoint_id"], -1);
    }
  }
  EXPECT_EQ(ids.size(), 7u);
  EXPECT_EQ(streamed, 1);
  // Tenants read their own usage only.
  auto acme = tenant_admin("acme");
  auto umbrella = tenant_admin("umbrella");
  EXPECT_EQ((*acme.get("/api/v1/usage"))["items"].size(), 8u);  // With the first /v1/models.
  EXPECT_EQ((*umbrella.get("/api/v1/usage"))["items"].size(), 0u);
  EXPECT_EQ((*umbrella.get("/api/v1/usage?gid=" + std::to_string(acme_gid_)))["items"].size(), 0u);
  auto totals = acme.get("/api/v1/usage/totals");
  ASSERT_TRUE(totals);
  int64_t input = 0;
  for (const auto& t : (*totals)["items"]) input += t["input_tokens"].get<int64_t>();
  EXPECT_GT(input, 15);
  // Metrics: bounded labels, counts that add up.
  auto metrics = client::HttpClient::create("http://127.0.0.1:" + std::to_string(admin_port_));
  auto text = (*metrics)->request("GET", "/metrics")->body;
  EXPECT_NE(text.find("fabrica_gateway_requests_total{tenant=\"" + std::to_string(acme_gid_) +
                      "\",endpoint=\"llama\",status=\"2xx\"} 5"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("fabrica_gateway_time_to_first_token_seconds_count{tenant=\"" +
                      std::to_string(acme_gid_) + "\",endpoint=\"qwen\"} 1"),
            std::string::npos);
  EXPECT_EQ(text.find("no/such"), std::string::npos);
}

TEST_F(GatewayE2eTest, UsageRecordsSurviveAFabricadRestartUnderLoadAndArriveOnce) {
  std::atomic<int> sent{0}, ok{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> load;
  for (int t = 0; t < 3; ++t) {
    load.emplace_back([&] {
      auto http = gateway_http();
      std::string body =
          R"({"model":"acme/llama-8b","messages":[{"role":"user","content":"load"}],"max_tokens":1})";
      while (!stop) {
        auto r = http->request("POST", "/v1/chat/completions", body,
                               {{"Authorization", "Bearer " + acme_key_}});
        ++sent;
        if (r && r->status == 200) ++ok;
      }
    });
  }
  ASSERT_TRUE(eventually([&] { return sent.load() > 100; }));
  EXPECT_EQ(daemon_.stop(SIGKILL), 128 + SIGKILL);
  int during = sent.load();
  ASSERT_TRUE(eventually([&] { return sent.load() > during + 200; }))
      << "the gateway kept serving from its snapshot while fabricad was down";
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  admin_ = std::make_unique<client::ApiClient>(daemon_.login());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_EQ(ok.load(), sent.load());
  ASSERT_TRUE(eventually([&] { return usage_records().size() >= static_cast<size_t>(sent.load()); },
                         std::chrono::seconds(60)))
      << usage_records().size() << " of " << sent.load() << "\n"
      << gateway_->log();
  Json records = usage_records();
  std::set<std::string> ids;
  for (const auto& r : records) ids.insert(r["id"].get<std::string>());
  EXPECT_EQ(records.size(), static_cast<size_t>(sent.load()));
  EXPECT_EQ(ids.size(), records.size());

  // A gateway killed outright loses nothing either: the spool is on disk.
  gateway_->stop(SIGKILL);
  daemon_.stop(SIGKILL);
  start_gateway_without_waiting_for_fabricad();
  for (int i = 0; i < 10; ++i) ASSERT_EQ(chat(acme_key_, "acme/llama-8b", "x").status, 200);
  gateway_->stop(SIGKILL);
  ASSERT_TRUE(daemon_.start());
  admin_ = std::make_unique<client::ApiClient>(daemon_.login());
  start_gateway();
  ASSERT_TRUE(eventually([&] { return usage_records().size() == records.size() + 10; },
                         std::chrono::seconds(30)))
      << usage_records().size();
}

TEST_F(GatewayE2eTest, ARevokedKeyStopsWorkingWithinTwoSeconds) {
  ASSERT_EQ(chat(acme_narrow_key_, "acme/llama-8b", "x").status, 200);
  auto acme = tenant_admin("acme");
  auto revoked = acme.post("/api/v1/apikeys/" + std::to_string(key_ids_["acme-narrow"]) + "/revoke",
                           Json::object());
  ASSERT_TRUE(revoked) << revoked.error().message();
  auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return chat(acme_narrow_key_, "acme/llama-8b", "x").status == 401; },
                         std::chrono::seconds(10)));
  auto took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "revoked key refused after " << took << " s" << std::endl;
  EXPECT_EQ(chat(acme_key_, "acme/llama-8b", "x").status, 200);
}

// The gateway's own fabricad token rotates without a restart: the operator writes the new one
// into --token-file, waits for the gateway to say it took it, and revokes the old one; the
// gateway goes on syncing (a key made afterwards works) and shipping usage.
TEST_F(GatewayE2eTest, ItsFabricadTokenRotatesWithoutARestart) {
  std::string old;
  std::getline(std::ifstream(dir_ / "token"), old);
  client::ApiClient as_old(daemon_.http(), old);
  auto mine = as_old.get("/api/v1/auth/tokens");
  ASSERT_TRUE(mine) << mine.error().message();
  int64_t old_id = -1;
  for (const auto& t : (*mine)["items"]) {
    if (t["current"] == true) old_id = t["id"].get<int64_t>();
  }
  ASSERT_GE(old_id, 0);

  std::string fresh = admin_token();
  {
    std::ofstream out(dir_ / "token.new");
    out << fresh << "\n";
  }
  fs::rename(dir_ / "token.new", dir_ / "token");
  ASSERT_TRUE(eventually([&] {
    return gateway_->log().find("using the new token") != std::string::npos;
  })) << gateway_->log();
  ASSERT_TRUE(admin_->del("/api/v1/auth/tokens/" + std::to_string(old_id)));
  EXPECT_EQ(as_old.get("/api/v1/auth/whoami").error().code(), ErrorCode::kUnauthenticated);

  // Synced with the new token: a key made now is honoured, its use metered.
  auto acme = tenant_admin("acme");
  std::string late = key(acme, "acme-late", Json::array({"llama"}), 0);
  ASSERT_TRUE(eventually([&] { return chat(late, "acme/llama-8b", "after").status == 200; }))
      << gateway_->log();
  ASSERT_TRUE(eventually([&] {
    for (const auto& r : usage_records()) {
      if (r["apikey_id"] == key_ids_["acme-late"]) return true;
    }
    return false;
  })) << gateway_->log();
  EXPECT_TRUE(gateway_->running());
}

TEST_F(GatewayE2eTest, NothingOfAnotherTenantShowsInAnyAnswer) {
  std::vector<client::ClientResponse> answers = {
      models(acme_key_),
      chat(acme_key_, "umbrella/secret-model", "x"),
      chat(acme_key_, "acme/llama-8b", "x"),
      post(acme_key_, "/v1/embeddings", R"({"model":"umbrella/secret-model","input":"x"})"),
      post(acme_key_, "/v1/completions", R"({"model":"umbrella/secret-model","prompt":"x"})"),
      post(acme_narrow_key_, "/v1/chat/completions", R"({"model":"acme/qwen-7b","messages":[]})"),
  };
  for (const auto& a : answers) {
    // Errors repeat the model name the caller sent, as OpenAI's do; nothing else of umbrella.
    std::string rest = std::regex_replace(a.body, std::regex("umbrella/secret-model"), "M");
    for (const char* s : {"umbrella", "secret", "sk-umbrella-backend"}) {
      EXPECT_EQ(rest.find(s), std::string::npos) << a.body;
    }
  }
  auto theirs = chat(acme_key_, "umbrella/secret-model", "x");
  auto none = chat(acme_key_, "nobody/model-xyzzy1", "x");
  EXPECT_EQ(theirs.status, 404);
  EXPECT_EQ(none.status, 404);
  EXPECT_EQ(std::regex_replace(theirs.body, std::regex("umbrella/secret-model"), "M"),
            std::regex_replace(none.body, std::regex("nobody/model-xyzzy1"), "M"));
  // The other way round too, and a key never reaches fabricad's own API.
  EXPECT_EQ(chat(umbrella_key_, "acme/llama-8b", "x").status, 404);
  auto api = daemon_.http()->request("GET", "/api/v1/endpoints", "",
                                     {{"Authorization", "Bearer " + umbrella_key_}});
  ASSERT_TRUE(api);
  EXPECT_EQ(api->status, 401);
}

TEST_F(GatewayE2eTest, BadRequestsGetOpenAiErrorsAndTheGatewayStaysUp) {
  auto malformed = post(acme_key_, "/v1/chat/completions", "{\"model\": ");
  EXPECT_EQ(malformed.status, 400);
  EXPECT_NE(malformed.body.find("\"type\":\"invalid_request_error\""), std::string::npos);
  EXPECT_EQ(post(acme_key_, "/v1/chat/completions", "[]").status, 400);
  EXPECT_EQ(post(acme_key_, "/v1/nothing-here", "{}").status, 404);
  auto big = post(acme_key_, "/v1/chat/completions",
                  "{\"model\":\"acme/llama-8b\",\"x\":\"" + std::string(5 << 20, 'a') + "\"}");
  EXPECT_EQ(big.status, 413) << big.body.substr(0, 200);
  EXPECT_EQ(post("", "/v1/chat/completions", "{}").status, 401);
  auto raw = testing::run_command(
      "(printf 'GARBAGE\\r\\n\\r\\n' | timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/" +
      std::to_string(gateway_port_) + "; cat >&3; cat <&3')");
  EXPECT_NE(raw.output.find("400"), std::string::npos) << raw.output;
  EXPECT_EQ(chat(acme_key_, "acme/llama-8b", "still up").status, 200);
}

TEST_F(GatewayE2eTest, UpstreamFaultsRetryBeforeTheFirstByteAndEjectDeadBackends) {
  // One of llama's two backends dies: every request still succeeds (retried on the other).
  upstreams_["acme-a"]->stop(SIGKILL);
  for (int i = 0; i < 10; ++i) {
    auto r = chat(acme_key_, "acme/llama-8b", "x");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("acme-b:"), std::string::npos);
  }
  auto metrics = client::HttpClient::create("http://127.0.0.1:" + std::to_string(admin_port_));
  auto text = (*metrics)->request("GET", "/metrics")->body;
  EXPECT_NE(
      text.find("fabrica_gateway_backend_healthy{backend=\"" + upstream_url("acme-a") + "\"} 0"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("reason=\"connect\""), std::string::npos);
  // An injected 503 is retried on the other backend; with none left it reaches the client.
  auto qwen = chat(acme_key_, "acme/qwen-7b", "[[fail:503]]");
  EXPECT_EQ(qwen.status, 503);
  auto injected = chat(acme_key_, "acme/qwen-7b", "[[fail:500]]");
  EXPECT_EQ(injected.status, 500);  // The model's own error passes through.
  // Its only backend gone: 502 in OpenAI's shape.
  upstreams_["acme-b"]->stop(SIGKILL);
  auto down = chat(acme_key_, "acme/qwen-7b", "x");
  EXPECT_EQ(down.status, 502);
  EXPECT_NE(down.body.find("\"type\":\"api_error\""), std::string::npos);
}

TEST_F(GatewayE2eTest, AClientThatHangsUpCancelsItsUpstreamRequest) {
  auto stats = [&] {
    auto http = client::HttpClient::create(upstream_url("umbrella"));
    return Json::parse((*http)->request("GET", "/test/stats")->body);
  };
  // A slow stream (200 tokens, 20 ms each) that the client abandons after its first bytes.
  std::string body =
      R"({"model":"umbrella/secret-model","stream":true,"messages":[{"role":"user","content":"[[tokens:200]] [[delay:20]]"}]})";
  std::string request =
      "POST /v1/chat/completions HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer " +
      umbrella_key_ +
      "\\r\\nContent-Type: application/json\\r\\nContent-Length: " + std::to_string(body.size()) +
      "\\r\\n\\r\\n";
  std::string escaped = std::regex_replace(body, std::regex("\""), "\\\"");
  auto r =
      testing::run_command("timeout 10 bash -c 'exec 3<>/dev/tcp/127.0.0.1/" +
                           std::to_string(gateway_port_) + "; printf \"" + request + "%s\" \"" +
                           escaped + "\" >&3; head -c 300 <&3 >/dev/null; exec 3>&-'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(
      eventually([&] { return stats()["aborted"].get<int>() == 1; }, std::chrono::seconds(3)))
      << stats().dump();
  EXPECT_EQ(stats()["completed_streams"], 0);
}

TEST_F(GatewayE2eTest, TenThousandIdleConnectionsDoNotStopService) {
  std::vector<int> fds;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(gateway_port_));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int i = 0; i < 10000; ++i) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0) << "socket " << i << ": " << std::strerror(errno);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0)
        << "connect " << i << ": " << std::strerror(errno);
    fds.push_back(fd);
  }
  // Everything still works with the idle crowd connected.
  EXPECT_EQ(chat(acme_key_, "acme/llama-8b", "x").status, 200);
  auto metrics = client::HttpClient::create("http://127.0.0.1:" + std::to_string(admin_port_));
  EXPECT_EQ((*metrics)->request("GET", "/healthz")->status, 200);
  for (int fd : fds) ::close(fd);
  EXPECT_EQ(chat(acme_key_, "acme/llama-8b", "x").status, 200);
}

}  // namespace
}  // namespace fabrica
