#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "testing/daemon_process.h"

namespace fabrica {
namespace {

using testing::DaemonProcess;
namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::set<std::string> all_group_names(client::ApiClient& api) {
  std::set<std::string> names;
  std::string cursor;
  while (true) {
    auto page = api.get("/api/v1/groups?limit=1000" + cursor);
    EXPECT_TRUE(page) << page.error().message();
    if (!page) return names;
    for (auto& g : (*page)["items"]) names.insert(g["name"].get<std::string>());
    if ((*page)["next_cursor"].is_null()) return names;
    cursor = "&cursor=" + (*page)["next_cursor"].get<std::string>();
  }
}

TEST(DurabilityTest, EveryAcknowledgedWriteSurvivesKill9) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.start()) << daemon.log();
  constexpr int kWriters = 4;
  std::atomic<bool> stop{false};
  std::atomic<int> acked_total{0};
  std::mutex mutex;
  std::set<std::string> acked;
  std::string last_acked_mode = "640", in_flight_mode;
  int64_t shared_gid = (*daemon.login().post("/api/v1/groups", Json{{"name", "shared"}}))["id"];

  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      auto api = daemon.login();
      for (int i = 0; !stop; ++i) {
        std::string name = "w" + std::to_string(w) + "-" + std::to_string(i);
        auto r = api.post("/api/v1/groups", Json{{"name", name}});
        if (!r) return;  // The server died under us.
        std::lock_guard lock(mutex);
        acked.insert(name);
        acked_total++;
      }
    });
  }
  // One thread keeps rewriting one object: afterwards it must hold the last acknowledged
  // value or the one whose answer was lost, never anything else.
  writers.emplace_back([&] {
    auto api = daemon.login();
    for (int i = 0; !stop; ++i) {
      std::string mode = i % 2 ? "600" : "644";
      {
        std::lock_guard lock(mutex);
        in_flight_mode = mode;
      }
      auto r = api.post("/api/v1/groups/" + std::to_string(shared_gid) + "/chmod",
                        Json{{"permissions", mode}});
      if (!r) return;
      std::lock_guard lock(mutex);
      last_acked_mode = mode;
    }
  });
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (acked_total < 300 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(daemon.stop(SIGKILL), 128 + SIGKILL);
  stop = true;
  for (auto& t : writers) t.join();
  ASSERT_GE(acked.size(), 300u);

  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto api = daemon.login();
  auto present = all_group_names(api);
  for (const auto& name : acked)
    EXPECT_TRUE(present.contains(name)) << name << " was acknowledged but lost";
  auto shared = api.get("/api/v1/groups/" + std::to_string(shared_gid));
  ASSERT_TRUE(shared);
  std::string mode = (*shared)["permissions"];
  EXPECT_TRUE(mode == last_acked_mode || mode == in_flight_mode) << mode;
  EXPECT_EQ(daemon.stop(SIGTERM), 0);

  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((daemon.data_dir() / "fabrica.db").c_str(), &db, SQLITE_OPEN_READONLY,
                            nullptr),
            SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0)), "ok");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

// The sealing key rotates online; a rotation survives kill -9 once answered, and one cut short
// between its steps (the keyring file holds the new key before the old one) is finished when
// fabricad starts, with every backend credential still opening.
TEST(DurabilityTest, TheSealingKeyRotatesAndAnInterruptedRotationIsFinishedAtStart) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto api = daemon.login();
  ASSERT_TRUE(api.post("/api/v1/endpoints", Json{{"name", "llm"},
                                                 {"model", "acme/llm"},
                                                 {"backends", {"http://127.0.0.1:9"}},
                                                 {"backend_key", "sk-upstream-1"}}));
  auto backend_key = [&](client::ApiClient& c) -> std::string {
    auto snap = c.get("/api/v1/gateway/snapshot");
    if (!snap) return "error: " + snap.error().message();
    return (*snap)["endpoints"][0].value("backend_key", "");
  };
  fs::path key_file = daemon.data_dir() / "sealing.key";
  EXPECT_EQ(fs::file_size(key_file), 32u);

  // Administrators only; a tenant learns nothing about the key.
  ASSERT_TRUE(api.post("/api/v1/users", Json{{"name", "tenant"}, {"password", "tenant-password"}}));
  auto tenant = daemon.login("tenant", "tenant-password");
  EXPECT_EQ(tenant.get("/api/v1/system/sealing-key").error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(tenant.post("/api/v1/system/sealing-key/rotate", Json::object()).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(api.post("/api/v1/system/sealing-key/rotate", Json{{"force", true}}).error().field(),
            "force");

  auto before = api.get("/api/v1/system/sealing-key");
  ASSERT_TRUE(before) << before.error().message();
  EXPECT_EQ((*before)["keys"], 1);
  std::string first_bytes = read_file(key_file);
  auto rotated = api.post("/api/v1/system/sealing-key/rotate", Json::object());
  ASSERT_TRUE(rotated) << rotated.error().message();
  EXPECT_EQ((*rotated)["previous_key_id"], (*before)["key_id"]);
  EXPECT_NE((*rotated)["key_id"], (*before)["key_id"]);
  EXPECT_EQ((*rotated)["resealed"], 1);
  EXPECT_EQ(fs::file_size(key_file), 32u);
  EXPECT_NE(read_file(key_file), first_bytes);
  EXPECT_EQ(backend_key(api), "sk-upstream-1");

  // Answered, then kill -9: the new key and the re-sealed credential are both on disk.
  EXPECT_EQ(daemon.stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto again = daemon.login();
  EXPECT_EQ(backend_key(again), "sk-upstream-1");
  EXPECT_EQ((*again.get("/api/v1/system/sealing-key"))["key_id"], (*rotated)["key_id"]);

  // A rotation cut short after its first step: the ring is [new, current], nothing re-sealed.
  EXPECT_EQ(daemon.stop(SIGKILL), 128 + SIGKILL);
  std::string staged(32, '\0');
  {
    std::ifstream random("/dev/urandom", std::ios::binary);
    random.read(staged.data(), 32);
  }
  std::string current = read_file(key_file);
  {
    std::ofstream out(key_file, std::ios::binary | std::ios::trunc);
    out << staged << current;
  }
  ASSERT_TRUE(daemon.start()) << daemon.log();
  EXPECT_NE(daemon.log().find("finished an interrupted sealing-key rotation: 1 secrets"),
            std::string::npos)
      << daemon.log();
  EXPECT_EQ(read_file(key_file), staged) << "the staged key seals now, alone";
  auto after = daemon.login();
  EXPECT_EQ(backend_key(after), "sk-upstream-1");
  EXPECT_EQ((*after.get("/api/v1/system/sealing-key"))["keys"], 1);

  // The audit log names each rotation and never a key.
  auto audit = after.get("/api/v1/audit?limit=1000");
  ASSERT_TRUE(audit);
  EXPECT_NE(dump_json(*audit).find("sealing-key/rotate"), std::string::npos);
}

TEST(DurabilityTest, SigtermLetsInFlightRequestsFinish) {
  DaemonProcess daemon;
  ASSERT_TRUE(daemon.start()) << daemon.log();
  std::atomic<int> completed{0}, truncated{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      client::ApiClient anon(daemon.http(), "");
      while (!stop) {
        // A password login takes tens of milliseconds of Argon2id: a long in-flight request.
        auto r = anon.login("admin", DaemonProcess::kAdminPassword, Json::object());
        if (r) {
          completed++;
          if (!r->contains("token")) truncated++;
        } else if (r.error().code() != ErrorCode::kUnavailable) {
          truncated++;  // Anything but a clean answer or a refused connection is wrong.
        } else {
          return;
        }
      }
    });
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (completed < 8 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  int status = daemon.stop(SIGTERM);
  stop = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(status, 0) << daemon.log();
  EXPECT_EQ(truncated.load(), 0);
  EXPECT_NE(daemon.log().find("finishing in-flight requests"), std::string::npos);
}

}  // namespace
}  // namespace fabrica

namespace fabrica {
namespace {

TEST(DaemonTest, ConfigFileSetsOptionsAndFlagsOverrideIt) {
  auto dir =
      std::filesystem::temp_directory_path() / ("fabrica-config-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream config(dir / "fabricad.json");
    config << R"({"body_limit": 2048, "listen": "127.0.0.1:1", "log_level": "warn"})";
  }
  testing::DaemonProcess daemon({"--config", (dir / "fabricad.json").string()});
  ASSERT_TRUE(daemon.start()) << daemon.log();  // --listen 127.0.0.1:0 beats the file's port.
  auto api = daemon.login();
  auto small = api.post("/api/v1/groups", Json{{"name", "fits"}});
  EXPECT_TRUE(small) << small.error().message();
  auto big = api.post("/api/v1/groups", Json{{"name", std::string(3000, 'x')}});
  EXPECT_EQ(big.error().code(), ErrorCode::kPayloadTooLarge);

  {
    std::ofstream bad(dir / "bad.json");
    bad << R"({"listen": "127.0.0.1:0", "colour": "blue"})";
  }
  auto bad =
      testing::run_command(testing::binary_path("fabricad") + " --config " +
                           (dir / "bad.json").string() + " --data-dir " + (dir / "data").string());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("colour"), std::string::npos) << bad.output;
  std::filesystem::remove_all(dir);
}

TEST(DaemonTest, ASecondDaemonOnTheSameDataDirectoryRefusesToStart) {
  testing::DaemonProcess daemon;
  ASSERT_TRUE(daemon.start()) << daemon.log();
  auto second =
      testing::run_command(testing::binary_path("fabricad") + " --data-dir " +
                           daemon.data_dir().string() + " --listen 127.0.0.1:0 --insecure-http");
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.output.find("in use by another fabricad"), std::string::npos) << second.output;
  EXPECT_TRUE(daemon.login().get("/api/v1/users"));
}

}  // namespace
}  // namespace fabrica
