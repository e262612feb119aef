// The usage ledger against a real SQLite store: batches land once however often they are sent,
// ill-formed batches store nothing, and tenants read only their own records.
#include "usage/usage.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "crypto/crypto.h"
#include "auth/identity.h"
#include "store/sqlite_store.h"
#include "testing/fake_clock.h"
#include "testing/tenants.h"

namespace fabrica::usage {
namespace {

namespace fs = std::filesystem;

class UsageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fabrica-usage-" + crypto::random_hex(8));
    fs::create_directories(dir_);
    store_ = std::move(*store::SqliteStore::open((dir_ / "db").string()));
    authorizer_ = std::make_unique<auth::Authorizer>(*store_);
    identity_ =
        std::make_unique<auth::Identity>(*store_, *authorizer_, clock_, crypto::HashCost::kMinimum);
    ASSERT_TRUE(*identity_->bootstrap("admin-password"));
    usage_ = std::make_unique<Usage>(*store_, *authorizer_);
    admin_ = *identity_->caller_for(0, "test");
    testing::add_tenants(*identity_, admin_, {"acme", "umbrella"}, gids_, bosses_, members_);
    ASSERT_FALSE(HasFatalFailure());
  }
  void TearDown() override { fs::remove_all(dir_); }

  UsageRecord record(std::string id, size_t tenant, int64_t in, int64_t out) {
    return UsageRecord{.id = std::move(id),
                       .time_ms = 1'700'000'000'000,
                       .gid = gids_[tenant],
                       .uid = bosses_[tenant].uid,
                       .apikey_id = 7,
                       .endpoint_id = 3 + static_cast<int64_t>(tenant),
                       .endpoint = tenant == 0 ? "llama" : "qwen",
                       .model = "m",
                       .backend = "http://127.0.0.1:9",
                       .kind = "chat",
                       .status = 200,
                       .input_tokens = in,
                       .output_tokens = out,
                       .latency_ms = 12.5,
                       .ttft_ms = 3.0,
                       .gateway = "gw-1"};
  }

  fs::path dir_;
  testing::FakeClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::unique_ptr<auth::Identity> identity_;
  std::unique_ptr<Usage> usage_;
  auth::Caller admin_;
  std::vector<int64_t> gids_;
  std::vector<auth::Caller> bosses_, members_;
};

TEST_F(UsageTest, ABatchSentTwiceIsCountedOnce) {
  std::vector<UsageRecord> batch = {record("gw-1-1", 0, 10, 5), record("gw-1-2", 1, 20, 7)};
  auto first = usage_->ingest(admin_, batch);
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(first->accepted, 2u);
  batch.push_back(record("gw-1-3", 0, 1, 1));
  auto again = usage_->ingest(admin_, batch);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->accepted, 1u);
  EXPECT_EQ(again->duplicates, 2u);
  auto page = usage_->list(admin_, {});
  ASSERT_TRUE(page);
  ASSERT_EQ(page->items.size(), 3u);
  EXPECT_EQ(page->items[0].id, "gw-1-1");
  EXPECT_EQ(page->items[2].id, "gw-1-3");
  EXPECT_DOUBLE_EQ(*page->items[0].ttft_ms, 3.0);
}

TEST_F(UsageTest, TheSameIdTwiceInOneBatchIsOneRecord) {
  auto r = usage_->ingest(admin_, {record("dup", 0, 1, 1), record("dup", 0, 1, 1)});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(r->duplicates, 1u);
}

TEST_F(UsageTest, OnlyAdministratorsIngest) {
  auto r = usage_->ingest(bosses_[0], {record("x", 0, 1, 1)});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_TRUE(usage_->list(admin_, {})->items.empty());
}

TEST_F(UsageTest, IllFormedRecordsNameTheirFieldAndStoreNothing) {
  Json good = record("a", 0, 1, 1).to_json();
  Json bad = good;
  bad["output_tokens"] = -3;
  auto parsed = UsageRecord::from_json(bad, "records[1].");
  ASSERT_FALSE(parsed);
  EXPECT_EQ(parsed.error().field(), "records[1].output_tokens");
  bad = good;
  bad.erase("latency_ms");
  EXPECT_EQ(UsageRecord::from_json(bad).error().field(), "latency_ms");
  bad = good;
  bad["status"] = 42;
  EXPECT_EQ(UsageRecord::from_json(bad).error().field(), "status");
  bad = good;
  bad["surprise"] = 1;
  EXPECT_EQ(UsageRecord::from_json(bad).error().field(), "surprise");
  auto empty = usage_->ingest(admin_, {});
  EXPECT_EQ(empty.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(usage_->list(admin_, {})->items.empty());
}

TEST_F(UsageTest, TenantsReadOnlyTheirOwnRecordsAndTotals) {
  ASSERT_TRUE(usage_->ingest(
      admin_, {record("a", 0, 10, 5), record("b", 1, 20, 7), record("c", 0, 30, 9)}));
  auto acme = usage_->list(bosses_[0], {});
  ASSERT_TRUE(acme);
  ASSERT_EQ(acme->items.size(), 2u);
  for (const auto& r : acme->items) EXPECT_EQ(r.gid, gids_[0]);
  // Asking for the other tenant by filter shows nothing, the same as a tenant with no usage.
  auto peek = usage_->list(bosses_[0], {.gid = gids_[1]});
  ASSERT_TRUE(peek);
  EXPECT_TRUE(peek->items.empty());
  EXPECT_TRUE(usage_->list(members_[1], {})->items.empty());

  auto totals = usage_->totals(bosses_[0], {});
  ASSERT_TRUE(totals);
  ASSERT_EQ(totals->size(), 1u);
  EXPECT_EQ((*totals)[0].requests, 2);
  EXPECT_EQ((*totals)[0].input_tokens, 40);
  EXPECT_EQ((*totals)[0].output_tokens, 14);
  auto all = usage_->totals(admin_, {});
  EXPECT_EQ(all->size(), 2u);
}

TEST_F(UsageTest, PagesFollowIngestOrder) {
  std::vector<UsageRecord> batch;
  for (int i = 0; i < 5; ++i) batch.push_back(record("p" + std::to_string(i), 0, i, i));
  ASSERT_TRUE(usage_->ingest(admin_, batch));
  auto first = usage_->list(admin_, {.limit = 2});
  ASSERT_TRUE(first);
  ASSERT_EQ(first->items.size(), 2u);
  ASSERT_TRUE(first->next_cursor);
  auto second = usage_->list(admin_, {.after_seq = std::stoll(*first->next_cursor), .limit = 10});
  ASSERT_EQ(second->items.size(), 3u);
  EXPECT_EQ(second->items[0].id, "p2");
  EXPECT_FALSE(second->next_cursor);
}

}  // namespace
}  // namespace fabrica::usage
