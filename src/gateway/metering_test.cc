// The usage spool: records survive a restart, the cursor moves only on acknowledgement, a torn
// line is dropped, and an emptied spool starts over.
#include "gateway/metering.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "crypto/crypto.h"

namespace fabrica::gateway {
namespace {

namespace fs = std::filesystem;

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fabrica-spool-" + crypto::random_hex(6));
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(SpoolTest, RecordsWaitUntilAcknowledgedAcrossRestarts) {
  {
    auto spool = Spool::open(dir_.string());
    ASSERT_TRUE(spool) << spool.error().message();
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*spool)->append(Json{{"id", i}}));
    auto batch = (*spool)->next(2);
    ASSERT_TRUE(batch);
    ASSERT_EQ(batch->lines.size(), 2u);
    EXPECT_EQ(batch->lines[0], R"({"id":0})");
    ASSERT_TRUE((*spool)->commit(batch->end));
    // Sent but not acknowledged: comes back after the "crash".
    auto unacked = (*spool)->next(2);
    EXPECT_EQ(unacked->lines[0], R"({"id":2})");
  }
  auto spool = Spool::open(dir_.string());
  ASSERT_TRUE(spool);
  auto batch = (*spool)->next(100);
  ASSERT_EQ(batch->lines.size(), 3u);
  EXPECT_EQ(batch->lines[0], R"({"id":2})");
  ASSERT_TRUE((*spool)->commit(batch->end));
  EXPECT_EQ((*spool)->pending_bytes(), 0u);
  EXPECT_EQ(fs::file_size(dir_ / "usage.spool"), 0u);  // Emptied once all is acknowledged.
  ASSERT_TRUE((*spool)->append(Json{{"id", 9}}));
  EXPECT_EQ((*spool)->next(10)->lines.at(0), R"({"id":9})");
}

TEST_F(SpoolTest, ATornLastLineIsDropped) {
  {
    auto spool = Spool::open(dir_.string());
    ASSERT_TRUE((*spool)->append(Json{{"id", 1}}));
  }
  std::ofstream(dir_ / "usage.spool", std::ios::app) << R"({"id":2,"ha)";
  auto spool = Spool::open(dir_.string());
  ASSERT_TRUE(spool);
  auto batch = (*spool)->next(10);
  ASSERT_EQ(batch->lines.size(), 1u);
  EXPECT_EQ(batch->lines[0], R"({"id":1})");
}

TEST_F(SpoolTest, ACursorPastTheEndMeansNothingIsPending) {
  {
    auto spool = Spool::open(dir_.string());
    ASSERT_TRUE((*spool)->append(Json{{"id", 1}}));
  }
  std::ofstream(dir_ / "usage.cursor") << "999\n";
  auto spool = Spool::open(dir_.string());
  EXPECT_EQ((*spool)->pending_bytes(), 0u);
}

TEST_F(SpoolTest, RejectedLinesAreKeptAside) {
  auto spool = Spool::open(dir_.string());
  ASSERT_TRUE((*spool)->reject({"{\"bad\":1}"}));
  std::ifstream in(dir_ / "usage.rejected");
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "{\"bad\":1}");
}

TEST(RecordIdsTest, IdsAreUniqueAndCarryTheGatewayName) {
  RecordIds a("gw-a"), b("gw-a");
  std::string x = a.next(), y = a.next(), z = b.next();
  EXPECT_TRUE(x.starts_with("gw-a-"));
  EXPECT_NE(x, y);
  EXPECT_NE(x, z);  // Another start of the same gateway never reuses an id.
}

}  // namespace
}  // namespace fabrica::gateway
