// Hugging Face imports through the real fabricad and CLI against a Hub look-alike
// (tests/hf/hub.mjs): a pinned, verified import through redirects, pagination, a 429 and a cut
// connection; refusals before anything is written (gated, token, missing, quota, space); a
// corrupt file; a re-import that downloads nothing; kill -9 mid-import resumed by Range.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "crypto/crypto.h"
#include "testing/daemon_process.h"
#include "testing/fake_hub.h"

namespace fabrica {
namespace {

namespace fs = std::filesystem;
using testing::ChildProcess;
using testing::DaemonProcess;
using testing::eventually;

using testing::node_binary;

using testing::FakeHub;

class ModelE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (node_binary().empty()) GTEST_SKIP() << "node is missing: run scripts/test";
    hub_ = std::make_unique<FakeHub>(fs::temp_directory_path() /
                                     ("fabrica-hub-" + std::to_string(::getpid())));
    ASSERT_GT(hub_->port(), 0);
    daemon_ = std::make_unique<DaemonProcess>(
        std::vector<std::string>{"--hub-url", hub_->url(), "--import-parallel-files", "3"});
    ASSERT_TRUE(daemon_->start()) << daemon_->log();
    admin_ = std::make_unique<client::ApiClient>(daemon_->login());
  }

  Result<Json> import(client::ApiClient& api, const Json& body) {
    return api.post("/api/v1/models", body);
  }
  // Waits until the model leaves LOCKED and returns it.
  Json settle(int64_t id) {
    Json model;
    EXPECT_TRUE(eventually(
        [&] {
          auto m = admin_->get("/api/v1/models/" + std::to_string(id));
          if (!m) return false;
          model = *m;
          return model["state_name"] != "LOCKED";
        },
        std::chrono::seconds(120)))
        << model.dump();
    return model;
  }
  testing::CommandResult cli(const std::string& args) {
    return testing::run_command("FABRICA_ENDPOINT=" + daemon_->url() + " FABRICA_TOKEN=" + token() +
                                " " + testing::binary_path("fabrica") + " " + args);
  }
  std::string token() {
    client::ApiClient fresh(daemon_->http(), "");
    auto login = fresh.login("admin", DaemonProcess::kAdminPassword, Json::object());
    EXPECT_TRUE(login);
    return login ? (*login)["token"].get<std::string>() : "";
  }
  fs::path blobs() { return daemon_->data_dir() / "datastores/1/.blobs"; }

  std::unique_ptr<FakeHub> hub_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<client::ApiClient> admin_;
};

TEST_F(ModelE2eTest, ImportIsPinnedVerifiedThroughFaultsAndAReimportDownloadsNothing) {
  std::string commit = hub_->commit("acme/tiny");
  // The first file download is refused with 429, the next one is cut halfway.
  hub_->faults(Json{{"rate_limit", 1}, {"cut", 1}});
  auto created = import(*admin_, Json{{"source", "hf://acme/tiny@main"}});
  ASSERT_TRUE(created) << created.error().message();
  EXPECT_EQ((*created)["state_name"], "LOCKED");
  EXPECT_EQ((*created)["type"], "MODEL");
  EXPECT_EQ((*created)["name"], "tiny");
  EXPECT_EQ((*created)["source"]["commit"], commit);
  // Three tree pages were read; the README is left out by the default patterns.
  auto& files = (*created)["source"]["files"];
  EXPECT_EQ(files.size(), 7u) << files.dump();
  EXPECT_EQ(files.dump().find("README.md"), std::string::npos);

  Json model = settle((*created)["id"].get<int64_t>());
  ASSERT_EQ(model["state_name"], "READY") << model.dump();
  EXPECT_EQ(model["model"]["heads"], 16);
  EXPECT_EQ(model["model"]["tensor_parallel_sizes"], Json({1, 2, 4, 8, 16}));
  EXPECT_EQ(model["model"]["commit"], commit);
  EXPECT_EQ(model["model"]["files_verified"], 7);
  EXPECT_EQ(model["format"], "dir");
  EXPECT_EQ(model.dump().find("sealed_token"), std::string::npos);
  Json stats = hub_->stats();
  EXPECT_GE(stats["range_requests"].get<int>(), 1) << stats.dump();  // The cut file resumed.

  // The tree is the files, read-only, with the Hub's bytes.
  fs::path dir = model["path"].get<std::string>();
  struct stat st {};
  ASSERT_EQ(::stat((dir / "model-00001-of-00002.safetensors").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);
  std::ifstream shard(dir / "model-00001-of-00002.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(shard)), std::istreambuf_iterator<char>());
  for (const auto& f : files) {
    if (f["path"] == "model-00001-of-00002.safetensors") {
      EXPECT_EQ(crypto::sha256_hex(bytes), f["sha256"]);
    }
  }

  // The same commit again: no file moves, the blobs are shared.
  hub_->reset();
  auto again = import(*admin_, Json{{"source", "hf://acme/tiny@" + commit}, {"name", "tiny-2"}});
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(settle((*again)["id"].get<int64_t>())["state_name"], "READY");
  EXPECT_EQ(hub_->stats()["file_requests"], 0) << hub_->stats().dump();
  EXPECT_EQ(hub_->stats()["bytes"], 0);

  // On a local datastore (hosts copy images) the model is a raw ext4 volume with the tree.
  auto local = admin_->post("/api/v1/datastores", Json{{"name", "local"}, {"driver", "local"}});
  ASSERT_TRUE(local) << local.error().message();
  auto volume = import(*admin_, Json{{"source", "hf://acme/tiny"},
                                     {"name", "tiny-volume"},
                                     {"datastore_id", (*local)["id"]}});
  ASSERT_TRUE(volume) << volume.error().message();
  Json raw = settle((*volume)["id"].get<int64_t>());
  ASSERT_EQ(raw["state_name"], "READY") << raw.dump();
  EXPECT_EQ(raw["format"], "raw");
  auto listed = testing::run_command("/usr/sbin/debugfs -R 'cat /config.json' " +
                                     raw["path"].get<std::string>() + " 2>/dev/null");
  EXPECT_NE(listed.output.find("Qwen3ForCausalLM"), std::string::npos) << listed.output;
  ASSERT_TRUE(admin_->del("/api/v1/models/" + raw["id"].dump()));

  // The CLI shows what a person needs.
  auto show = cli("model show tiny");
  EXPECT_EQ(show.exit_code, 0) << show.output;
  for (const char* want : {commit.c_str(), "1/2/4/8/16", "H100", "MIG 1g.10gb", "7 (verified)"}) {
    EXPECT_NE(show.output.find(want), std::string::npos) << want << "\n" << show.output;
  }
  auto list = cli("model list");
  EXPECT_NE(list.output.find("tiny-2"), std::string::npos) << list.output;

  // Deleting both frees the blobs no model links any more.
  auto blob_count = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(blobs())) n += e.is_regular_file();
    return n;
  };
  EXPECT_EQ(blob_count(), 7);
  ASSERT_EQ(cli("model delete tiny").exit_code, 0);
  EXPECT_EQ(blob_count(), 7);  // tiny-2 still links them.
  ASSERT_EQ(cli("model delete tiny-2").exit_code, 0);
  EXPECT_EQ(blob_count(), 0);
}

TEST_F(ModelE2eTest, RefusalsComeBeforeAnythingIsWrittenAndABadFileFailsTheImport) {
  hub_->reset();
  auto expect_refused = [&](client::ApiClient& api, const Json& body, ErrorCode code,
                            const std::string& field, const std::string& words) {
    auto r = import(api, body);
    ASSERT_FALSE(r) << body.dump();
    EXPECT_EQ(r.error().code(), code) << r.error().message();
    EXPECT_EQ(r.error().field(), field) << r.error().message();
    EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().message();
  };
  expect_refused(*admin_, {{"source", "hf://acme/gated"}}, ErrorCode::kPermissionDenied, "token",
                 "accept the licence at " + hub_->url() + "/acme/gated");
  expect_refused(*admin_, {{"source", "hf://acme/gated"}, {"token", "hf_denied"}},
                 ErrorCode::kPermissionDenied, "token", "may not read it yet");
  expect_refused(*admin_, {{"source", "hf://acme/gated"}, {"token", "hf_bogus"}},
                 ErrorCode::kInvalidArgument, "token", "invalid or expired");
  expect_refused(*admin_, {{"source", "hf://acme/missing"}}, ErrorCode::kNotFound, "source",
                 "not found");
  expect_refused(*admin_, {{"source", "hf://acme/tiny@v9"}}, ErrorCode::kNotFound, "source",
                 "revision");
  expect_refused(*admin_, {{"source", "https://huggingface.co/acme/tiny"}},
                 ErrorCode::kInvalidArgument, "source", "hf://");
  expect_refused(*admin_, {{"source", "hf://acme/tiny"}, {"include", {"*.bin"}}},
                 ErrorCode::kInvalidArgument, "include", "no config.json");
  expect_refused(*admin_, {{"source", "hf://acme/tiny"}, {"datastore_id", 0}},
                 ErrorCode::kInvalidArgument, "datastore_id", "image datastore");

  // A datastore too small, and a tenant over its image quota.
  auto small = admin_->post("/api/v1/datastores", Json{{"name", "small"}, {"limit_mb", 1}});
  ASSERT_TRUE(small) << small.error().message();
  expect_refused(*admin_, {{"source", "hf://acme/tiny"}, {"datastore_id", (*small)["id"]}},
                 ErrorCode::kFailedPrecondition, "datastore_id", "limited to 1 MB");
  ASSERT_TRUE(admin_->post("/api/v1/users", Json{{"name", "eve"}, {"password", "eve-password"}}));
  auto quota = admin_->call("PUT", "/api/v1/groups/1/quota", Json{{"limits", {{"image_mb", 2}}}});
  ASSERT_TRUE(quota) << quota.error().message();
  auto eve = daemon_->login("eve", "eve-password");
  // A tenant sees only the datastores a rule (a VDC's) lets it use.
  auto hidden = import(eve, Json{{"source", "hf://acme/tiny"}});
  ASSERT_FALSE(hidden);
  EXPECT_EQ(hidden.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(hidden.error().field(), "datastore_id");
  ASSERT_TRUE(admin_->post("/api/v1/acl", Json{{"rule", "@1 DATASTORE/#1 USE"}}));
  auto over = import(eve, Json{{"source", "hf://acme/tiny"}});
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().code(), ErrorCode::kQuotaExceeded) << over.error().message();
  // Nothing was fetched, nothing was made.
  EXPECT_EQ(hub_->stats()["file_requests"], 0) << hub_->stats().dump();
  EXPECT_TRUE((*admin_->get("/api/v1/models"))["items"].empty());

  // The token of a gated repository works, and is never shown again.
  auto gated = import(*admin_, Json{{"source", "hf://acme/gated"}, {"token", "hf_granted"}});
  ASSERT_TRUE(gated) << gated.error().message();
  EXPECT_EQ(gated->dump().find("hf_granted"), std::string::npos);
  EXPECT_EQ(settle((*gated)["id"].get<int64_t>())["state_name"], "READY");
  // Another tenant does not see it.
  auto peek = eve.get("/api/v1/models/" + (*gated)["id"].dump());
  ASSERT_FALSE(peek);
  EXPECT_EQ(peek.error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE((*eve.get("/api/v1/models"))["items"].empty());
  auto remove = eve.del("/api/v1/models/" + (*gated)["id"].dump());
  ASSERT_FALSE(remove);
  EXPECT_EQ(remove.error().code(), ErrorCode::kNotFound);
  // A MODEL image comes from an import only, and is not cloned.
  auto made = admin_->post("/api/v1/images",
                           Json{{"name", "m"}, {"type", "MODEL"}, {"upload", {{"size", 1}}}});
  ASSERT_FALSE(made);
  EXPECT_EQ(made.error().field(), "type");
  auto clone =
      admin_->post("/api/v1/images/" + (*gated)["id"].dump() + "/clone", Json{{"name", "copy"}});
  ASSERT_FALSE(clone);
  EXPECT_EQ(clone.error().code(), ErrorCode::kInvalidArgument) << clone.error().message();
  // A non-model image id is not a model.
  auto blank = admin_->post("/api/v1/images",
                            Json{{"name", "blank"}, {"type", "DATABLOCK"}, {"blank_mb", 1}});
  ASSERT_TRUE(blank);
  EXPECT_FALSE(admin_->get("/api/v1/models/" + (*blank)["id"].dump()));

  // A file whose bytes do not hash to what the tree lists fails the import, saying which.
  auto corrupt = import(*admin_, Json{{"source", "hf://acme/corrupt"}});
  ASSERT_TRUE(corrupt) << corrupt.error().message();
  Json failed = settle((*corrupt)["id"].get<int64_t>());
  EXPECT_EQ(failed["state_name"], "ERROR");
  EXPECT_NE(failed["error"].get<std::string>().find(
                "model-00002-of-00002.safetensors does not match its sha256"),
            std::string::npos)
      << failed["error"];
  EXPECT_FALSE(fs::exists(failed["path"].get<std::string>()));

  // Tenants cannot manage marketplaces.
  auto market =
      eve.post("/api/v1/marketplaces", Json{{"name", "mine"}, {"url", "http://127.0.0.1:1"}});
  ASSERT_FALSE(market);
  EXPECT_EQ(market.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ((*eve.get("/api/v1/marketplaces"))["items"].size(), 1u);
}

TEST_F(ModelE2eTest, KillNineMidImportResumesByRangeAndDeleteCancels) {
  hub_->faults(Json{{"throttle_bps", 1 << 20}});
  // A gated repository: the resumed import needs its sealed token again after a sealing-key
  // rotation.
  auto created = import(*admin_, Json{{"source", "hf://acme/gated"}, {"token", "hf_granted"}});
  ASSERT_TRUE(created) << created.error().message();
  int64_t id = (*created)["id"].get<int64_t>();
  ASSERT_TRUE(eventually([&] {
    auto m = admin_->get("/api/v1/models/" + std::to_string(id));
    return m && (*m)["progress"].is_object() &&
           (*m)["progress"].value("bytes_done", int64_t{0}) > (2 << 20);
  })) << daemon_->log();
  auto progress = (*admin_->get("/api/v1/models/" + std::to_string(id)))["progress"];
  EXPECT_TRUE(progress.contains("rate_bytes_per_s")) << progress.dump();
  EXPECT_TRUE(progress.contains("files_total")) << progress.dump();
  auto rotated = admin_->post("/api/v1/system/sealing-key/rotate", Json::object());
  ASSERT_TRUE(rotated) << rotated.error().message();
  EXPECT_GE((*rotated)["resealed"].get<int>(), 1) << rotated->dump();
  daemon_->stop(SIGKILL);
  hub_->faults(Json{{"throttle_bps", 0}});
  hub_->reset();
  ASSERT_TRUE(daemon_->start()) << daemon_->log();
  admin_ = std::make_unique<client::ApiClient>(daemon_->login());
  Json model = settle(id);
  ASSERT_EQ(model["state_name"], "READY") << model.dump();
  Json stats = hub_->stats();
  EXPECT_GE(stats["range_requests"].get<int>(), 1) << stats.dump();
  EXPECT_LT(stats["bytes"].get<int64_t>(), model["size"].get<int64_t>() - (1 << 20))
      << stats.dump();

  // Deleting a LOCKED import cancels it; its partial file stays for the next try.
  hub_->faults(Json{{"throttle_bps", 1 << 20}});
  auto slow =
      import(*admin_, Json{{"source", "hf://acme/tiny"}, {"include", {"config.json", "*00001*"}}});
  ASSERT_TRUE(slow) << slow.error().message();
  int64_t slow_id = (*slow)["id"].get<int64_t>();
  ASSERT_TRUE(eventually([&] {
    auto m = admin_->get("/api/v1/models/" + std::to_string(slow_id));
    return m && (*m)["progress"].value("bytes_done", int64_t{0}) > (1 << 20);
  }));
  ASSERT_TRUE(admin_->del("/api/v1/models/" + std::to_string(slow_id)));
  EXPECT_FALSE(admin_->get("/api/v1/models/" + std::to_string(slow_id)));
  EXPECT_FALSE(fs::exists((*slow)["path"].get<std::string>() + ".part"));
  int partials = 0;
  ASSERT_TRUE(eventually([&] {
    partials = 0;
    for (const auto& e : fs::directory_iterator(blobs() / "partial"))
      partials += e.is_regular_file();
    return partials == 1;
  })) << partials;
  hub_->faults(Json{{"throttle_bps", 0}});
}

}  // namespace
}  // namespace fabrica
