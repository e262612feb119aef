#pragma once

// The Hugging Face Hub look-alike of the test tree (tests/hf/hub.mjs) on a port of its own,
// for end-to-end tests.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <regex>
#include <string>

#include "client/http_client.h"
#include "testing/daemon_process.h"

namespace fabrica::testing {

class FakeHub {
 public:
  explicit FakeHub(const std::filesystem::path& dir) {
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    process_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{node_binary(),
                                 (testing::source_dir() / "tests/hf/hub.mjs").string()},
        (dir / "hub.log").string());
    eventually([&] {
      std::smatch m;
      std::string log = process_->log();
      if (!std::regex_search(log, m, std::regex(R"re("port":(\d+))re"))) return false;
      port_ = std::stoi(m[1]);
      return true;
    });
    http_ = client::HttpClient::create(url()).value();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  Json call(const std::string& method, const std::string& path, const Json& body = nullptr) {
    auto r = http_->request(method, path, body.is_null() ? "" : body.dump());
    EXPECT_TRUE(r) << (r ? "" : r.error().message());
    return r ? parse_json(r->body).value_or(Json()) : Json();
  }
  Json stats() { return call("GET", "/_stats"); }
  void reset() { call("POST", "/_stats/reset", Json::object()); }
  void faults(const Json& f) { call("POST", "/_faults", f); }
  std::string commit(const std::string& repo) {
    return call("GET", "/api/models/" + repo + "/revision/main")["sha"];
  }

 private:
  std::unique_ptr<ChildProcess> process_;
  std::unique_ptr<client::HttpClient> http_;
  int port_ = 0;
};

}  // namespace fabrica::testing
