// Images through the real fabricad over HTTP: a streamed upload broken by a dropped connection
// and by kill -9, resumed by the CLI; checksum and size refusals; another tenant's reach.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>

#include "crypto/crypto.h"
#include "testing/daemon_process.h"

namespace fabrica {
namespace {

namespace fs = std::filesystem;

std::string pattern_bytes(size_t size, unsigned seed) {
  std::string data(size, '\0');
  uint32_t x = seed;
  for (size_t i = 0; i < size; ++i) {
    x = x * 1664525u + 1013904223u;
    data[i] = static_cast<char>(x >> 24);
  }
  return data;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class ImageE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(daemon_.start()) << daemon_.log();
    admin_ = std::make_unique<client::ApiClient>(daemon_.login());
    file_ = daemon_.data_dir() / "disk.raw";
    data_ = pattern_bytes(40 << 20, 7);
    std::ofstream(file_, std::ios::binary) << data_;
  }

  Json create_upload(const std::string& name, int64_t size, const std::string& sha) {
    auto image = admin_->post(
        "/api/v1/images",
        Json{{"name", name}, {"format", "raw"}, {"upload", {{"size", size}, {"sha256", sha}}}});
    EXPECT_TRUE(image) << image.error().message();
    return *image;
  }

  Result<Json> put(int64_t id, std::string_view bytes, int64_t first, int64_t total) {
    std::string range = "bytes " + std::to_string(first) + "-" +
                        std::to_string(first + static_cast<int64_t>(bytes.size()) - 1) + "/" +
                        std::to_string(total);
    return admin_->send_bytes("PUT", "/api/v1/images/" + std::to_string(id) + "/upload", bytes,
                              {{"Content-Range", range}});
  }

  int64_t bytes_done(int64_t id) {
    auto image = admin_->get("/api/v1/images/" + std::to_string(id));
    EXPECT_TRUE(image);
    return (*image)["progress"]["bytes_done"].get<int64_t>();
  }

  // Sends a PUT whose Content-Length promises `promised` bytes but stops after `sent` and
  // hangs up, the way a dropped connection does.
  void put_and_hang_up(int64_t id, int64_t first, int64_t promised, int64_t sent) {
    auto port = daemon_.url().substr(daemon_.url().rfind(':') + 1);
    fs::path part = daemon_.data_dir() / "part";
    std::ofstream(part, std::ios::binary)
        << data_.substr(static_cast<size_t>(first), static_cast<size_t>(sent));
    std::string request = "PUT /api/v1/images/" + std::to_string(id) +
                          "/upload HTTP/1.1\\r\\nHost: x\\r\\nAuthorization: Bearer " + token() +
                          "\\r\\nContent-Range: bytes " + std::to_string(first) + "-" +
                          std::to_string(first + promised - 1) + "/" +
                          std::to_string(data_.size()) +
                          "\\r\\nContent-Length: " + std::to_string(promised) + "\\r\\n\\r\\n";
    auto r = testing::run_command("bash -c 'exec 3<>/dev/tcp/127.0.0.1/" + port + "; printf \"" +
                                  request + "\" >&3; cat " + part.string() +
                                  " >&3; sleep 0.3; exec 3>&-'");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }

  std::string token() {
    auto http = daemon_.http();
    client::ApiClient fresh(std::move(http), "");
    auto login = fresh.login("admin", testing::DaemonProcess::kAdminPassword, Json::object());
    EXPECT_TRUE(login);
    return (*login)["token"].get<std::string>();
  }

  testing::CommandResult cli(const std::string& args) {
    return testing::run_command("FABRICA_ENDPOINT=" + daemon_.url() + " FABRICA_TOKEN=" + token() +
                                " " + testing::binary_path("fabrica") + " " + args);
  }

  testing::DaemonProcess daemon_;
  std::unique_ptr<client::ApiClient> admin_;
  fs::path file_;
  std::string data_;
};

TEST_F(ImageE2eTest, UploadSurvivesDroppedConnectionsAndKill9ThenTheCliResumes) {
  auto total = static_cast<int64_t>(data_.size());
  Json image = create_upload("weights", total, crypto::sha256_hex(data_));
  int64_t id = image["id"].get<int64_t>();
  EXPECT_EQ(image["state_name"], "LOCKED");

  // 16 MiB acknowledged.
  auto first = put(id, std::string_view(data_).substr(0, 16 << 20), 0, total);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ((*first)["progress"]["bytes_done"], 16 << 20);

  // A client promising 8 MiB more hangs up after 3 MiB: those 3 MiB count.
  put_and_hang_up(id, 16 << 20, 8 << 20, 3 << 20);
  EXPECT_EQ(bytes_done(id), (16 << 20) + (3 << 20));

  // fabricad dies; what it acknowledged is still there after the restart.
  EXPECT_EQ(daemon_.stop(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(daemon_.start()) << daemon_.log();
  admin_ = std::make_unique<client::ApiClient>(daemon_.login());
  EXPECT_EQ(bytes_done(id), (19 << 20));

  // Resuming from the wrong byte is refused with the right one.
  auto wrong = put(id, std::string_view(data_).substr(0, 1024), 0, total);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(wrong.error().message().find("continues at byte 19922944"), std::string::npos);

  // The CLI picks up where the server's data ends.
  auto resumed = cli("image upload " + file_.string() + " --resume " + std::to_string(id));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("(READY)"), std::string::npos) << resumed.output;
  auto ready = admin_->get("/api/v1/images/" + std::to_string(id));
  ASSERT_TRUE(ready);
  EXPECT_EQ((*ready)["state_name"], "READY");
  EXPECT_EQ((*ready)["sha256"], crypto::sha256_hex(data_));
  EXPECT_TRUE(read_file((*ready)["path"].get<std::string>()) == data_);
}

TEST_F(ImageE2eTest, RefusesWrongBytesAndLeavesNoHalfImage) {
  std::string small = data_.substr(0, 1 << 20);
  Json image = create_upload("tampered", 1 << 20, std::string(64, 'b'));
  int64_t id = image["id"].get<int64_t>();
  // More than declared: refused, nothing counted.
  auto too_long = put(id, data_.substr(0, (1 << 20) + 1), 0, (1 << 20) + 1);
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bytes_done(id), 0);
  // All of it, but not what was declared.
  auto mismatch = put(id, small, 0, 1 << 20);
  ASSERT_FALSE(mismatch);
  EXPECT_EQ(mismatch.error().field(), "sha256");
  EXPECT_NE(mismatch.error().message().find("checksum mismatch"), std::string::npos);
  auto after = admin_->get("/api/v1/images/" + std::to_string(id));
  ASSERT_TRUE(after);
  EXPECT_EQ((*after)["state_name"], "ERROR");
  EXPECT_FALSE(fs::exists((*after)["path"].get<std::string>()));
  EXPECT_FALSE(fs::exists((*after)["path"].get<std::string>() + ".part"));
  EXPECT_EQ((*after)["size"], 0);

  // A whole-body PUT without Content-Range, as curl -T sends it.
  Json whole = create_upload("whole", 1 << 20, crypto::sha256_hex(small));
  auto done = admin_->send_bytes("PUT", "/api/v1/images/" + whole["id"].dump() + "/upload", small);
  ASSERT_TRUE(done) << done.error().message();
  EXPECT_EQ((*done)["state_name"], "READY");

  // The CLI's table and a second tenant's view.
  auto list = cli("image list");
  EXPECT_NE(list.output.find("whole"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("ERROR"), std::string::npos) << list.output;
  ASSERT_TRUE(admin_->post("/api/v1/users", Json{{"name", "eve"}, {"password", "eve-password"}}));
  auto eve = daemon_.login("eve", "eve-password");
  auto reach = eve.send_bytes("PUT", "/api/v1/images/" + whole["id"].dump() + "/upload", small);
  ASSERT_FALSE(reach);
  EXPECT_EQ(reach.error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE((*eve.get("/api/v1/images"))["items"].empty());
}

}  // namespace
}  // namespace fabrica
