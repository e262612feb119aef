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
