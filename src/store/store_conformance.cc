#include "store/store_conformance.h"

#include <atomic>
#include <filesystem>
#include <optional>
#include <random>
#include <thread>

namespace fabrica::store {

void StoreConformanceTest::SetUp() {
  std::random_device rd;
  dir_ = (std::filesystem::temp_directory_path() /
          ("fabrica-store-" + std::to_string(rd()) + "-" + std::to_string(rd())))
             .string();
  std::filesystem::create_directories(dir_);
}

void StoreConformanceTest::TearDown() { std::filesystem::remove_all(dir_); }

namespace {

Record user(int64_t id, std::string name, int64_t gid = 1) {
  return Record{.type = "user",
                .id = id,
                .name = name,
                .uid = id,
                .gid = gid,
                .state = 0,
                .key = name,
                .body = R"({"name":")" + name + R"("})"};
}

Result<void> insert_new(Transaction& tx, Record r) {
  FAB_ASSIGN_OR_RETURN(r.id, tx.allocate_id(r.type));
  r.uid = r.id;
  return tx.insert(r);
}

TEST_P(StoreConformanceTest, InsertThenGetByIdAndKey) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) { return tx.insert(user(5, "alice")); }));
  auto r = store->read_value<Record>([](Transaction& tx) { return tx.get("user", 5); });
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->name, "alice");
  EXPECT_EQ(r->gid, 1);
  EXPECT_EQ(r->version, 1);
  EXPECT_EQ(r->body, R"({"name":"alice"})");
  auto k =
      store->read_value<Record>([](Transaction& tx) { return tx.get_by_key("user", "alice"); });
  ASSERT_TRUE(k);
  EXPECT_EQ(k->id, 5);
  auto missing = store->read_value<Record>([](Transaction& tx) { return tx.get("user", 6); });
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  auto other_type = store->read_value<Record>([](Transaction& tx) { return tx.get("group", 5); });
  EXPECT_EQ(other_type.error().code(), ErrorCode::kNotFound);
}

TEST_P(StoreConformanceTest, DuplicateIdOrKeyIsAlreadyExistsAndChangesNothing) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) { return tx.insert(user(1, "alice")); }));
  auto dup_key = store->write([](Transaction& tx) { return tx.insert(user(2, "alice")); });
  EXPECT_EQ(dup_key.error().code(), ErrorCode::kAlreadyExists);
  auto dup_id = store->write([](Transaction& tx) { return tx.insert(user(1, "bob")); });
  EXPECT_EQ(dup_id.error().code(), ErrorCode::kAlreadyExists);
  auto n = store->read_value<int64_t>([](Transaction& tx) { return tx.count("user", {}); });
  EXPECT_EQ(*n, 1);
  // Records without a key may share names.
  ASSERT_TRUE(store->write([](Transaction& tx) -> Result<void> {
    FAB_TRY(tx.insert(Record{.type = "vm", .id = 1, .name = "same", .body = "{}"}));
    return tx.insert(Record{.type = "vm", .id = 2, .name = "same", .body = "{}"});
  }));
}

TEST_P(StoreConformanceTest, FailedWorkRollsBackEverything) {
  auto store = open();
  uint64_t before = store->write_generation();
  auto r = store->write([](Transaction& tx) -> Result<void> {
    FAB_TRY(tx.insert(user(1, "alice")));
    FAB_TRY(tx.insert(user(2, "bob")));
    return fail(ErrorCode::kInvalidArgument, "changed my mind");
  });
  EXPECT_EQ(r.error().message(), "changed my mind");
  EXPECT_EQ(store->write_generation(), before);
  auto n = store->read_value<int64_t>([](Transaction& tx) { return tx.count("user", {}); });
  EXPECT_EQ(*n, 0);
}

TEST_P(StoreConformanceTest, UpdateChecksVersion) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) { return tx.insert(user(1, "alice")); }));
  Record r = *store->read_value<Record>([](Transaction& tx) { return tx.get("user", 1); });
  r.body = R"({"v":2})";
  auto v = store->write_value<int64_t>([&](Transaction& tx) { return tx.update(r); });
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, 2);
  auto stale = store->write([&](Transaction& tx) { return tx.update(r).map([](int64_t) {}); });
  EXPECT_EQ(stale.error().code(), ErrorCode::kAborted);
  Record ghost = user(9, "ghost");
  ghost.version = 1;
  auto gone = store->write([&](Transaction& tx) { return tx.update(ghost).map([](int64_t) {}); });
  EXPECT_EQ(gone.error().code(), ErrorCode::kNotFound);
  auto now = store->read_value<Record>([](Transaction& tx) { return tx.get("user", 1); });
  EXPECT_EQ(now->body, R"({"v":2})");
  EXPECT_EQ(now->version, 2);
}

TEST_P(StoreConformanceTest, RemoveThenNotFound) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) { return tx.insert(user(1, "alice")); }));
  ASSERT_TRUE(store->write([](Transaction& tx) { return tx.remove("user", 1); }));
  auto again = store->write([](Transaction& tx) { return tx.remove("user", 1); });
  EXPECT_EQ(again.error().code(), ErrorCode::kNotFound);
  // The key is free again.
  EXPECT_TRUE(store->write([](Transaction& tx) { return tx.insert(user(2, "alice")); }));
}

TEST_P(StoreConformanceTest, IdsIncreaseAndAreNeverReused) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) { return tx.insert(user(0, "admin")); }));
  ASSERT_TRUE(store->write([](Transaction& tx) { return tx.insert(user(100, "svc")); }));
  auto a = store->write_value<int64_t>([](Transaction& tx) { return tx.allocate_id("user"); });
  EXPECT_EQ(*a, 101);
  ASSERT_TRUE(store->write([&](Transaction& tx) { return tx.insert(user(*a, "x")); }));
  ASSERT_TRUE(store->write([&](Transaction& tx) { return tx.remove("user", *a); }));
  auto b = store->write_value<int64_t>([](Transaction& tx) { return tx.allocate_id("user"); });
  EXPECT_EQ(*b, 102);
  auto g = store->write_value<int64_t>([](Transaction& tx) { return tx.allocate_id("group"); });
  EXPECT_EQ(*g, 0);
}

TEST_P(StoreConformanceTest, ListPaginatesAndFilters) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) -> Result<void> {
    for (int i = 0; i < 25; ++i) {
      FAB_TRY(insert_new(tx, user(0, "u" + std::to_string(i), i % 2 == 0 ? 1 : 2)));
    }
    return {};
  }));
  std::vector<int64_t> seen;
  int64_t cursor = -1;
  for (int page = 0; page < 10; ++page) {
    auto r = store->read_value<std::vector<Record>>([&](Transaction& tx) {
      return tx.list("user", ListQuery{.after_id = cursor, .limit = 10});
    });
    ASSERT_TRUE(r);
    if (r->empty()) break;
    for (const auto& rec : *r) seen.push_back(rec.id);
    cursor = r->back().id;
  }
  ASSERT_EQ(seen.size(), 25u);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  auto odd = store->read_value<std::vector<Record>>(
      [](Transaction& tx) { return tx.list("user", ListQuery{.limit = 100, .gid = 2}); });
  EXPECT_EQ(odd->size(), 12u);
  auto named = store->read_value<std::vector<Record>>(
      [](Transaction& tx) { return tx.list("user", ListQuery{.name = "u7"}); });
  ASSERT_EQ(named->size(), 1u);
  EXPECT_EQ(named->front().name, "u7");
  auto n = store->read_value<int64_t>(
      [](Transaction& tx) { return tx.count("user", ListQuery{.gid = 1}); });
  EXPECT_EQ(*n, 13);
  // Newest first, paged with before_id.
  std::vector<int64_t> newest;
  std::optional<int64_t> before;
  while (true) {
    auto r = store->read_value<std::vector<Record>>([&](Transaction& tx) {
      return tx.list("user", ListQuery{.limit = 10, .descending = true, .before_id = before});
    });
    ASSERT_TRUE(r);
    if (r->empty()) break;
    for (const auto& rec : *r) newest.push_back(rec.id);
    before = r->back().id;
  }
  EXPECT_EQ(newest, std::vector<int64_t>(seen.rbegin(), seen.rend()));
}

TEST_P(StoreConformanceTest, ForEachVisitsEveryPageAndStopsWhenTold) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) -> Result<void> {
    for (int i = 0; i < 2500; ++i) FAB_TRY(insert_new(tx, user(0, "u" + std::to_string(i))));
    return {};
  }));
  int all = 0, some = 0;
  ASSERT_TRUE(store->read([&](Transaction& tx) -> Result<void> {
    FAB_TRY(for_each(tx, "user", [&](const Record&) -> Result<void> {
      ++all;
      return {};
    }));
    return for_each(tx, "user", [&](const Record&) -> Result<bool> { return ++some < 1500; });
  }));
  EXPECT_EQ(all, 2500);
  EXPECT_EQ(some, 1500);
}

TEST_P(StoreConformanceTest, StoresHostileTextLiterally) {
  auto store = open();
  const std::string evil = "x'); DROP TABLE objects; --\"\\%_*";
  Record r = user(1, evil);
  r.body = R"({"note":"\u0000 and 'quotes'"})";
  ASSERT_TRUE(store->write([&](Transaction& tx) { return tx.insert(r); }));
  auto back =
      store->read_value<Record>([&](Transaction& tx) { return tx.get_by_key("user", evil); });
  ASSERT_TRUE(back);
  EXPECT_EQ(back->name, evil);
  EXPECT_EQ(back->body, r.body);
  auto like = store->read_value<std::vector<Record>>(
      [](Transaction& tx) { return tx.list("user", ListQuery{.name = "%"}); });
  EXPECT_TRUE(like->empty());
  EXPECT_TRUE(store->check_integrity());
}

TEST_P(StoreConformanceTest, MutationsInReadAreRefused) {
  auto store = open();
  auto r = store->read([](Transaction& tx) { return tx.insert(user(1, "alice")); });
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
}

TEST_P(StoreConformanceTest, CommittedWritesSurviveReopen) {
  {
    auto store = open();
    ASSERT_TRUE(store->write([](Transaction& tx) { return insert_new(tx, user(0, "alice")); }));
  }
  auto store = open();
  auto r =
      store->read_value<Record>([](Transaction& tx) { return tx.get_by_key("user", "alice"); });
  ASSERT_TRUE(r);
  auto next = store->write_value<int64_t>([](Transaction& tx) { return tx.allocate_id("user"); });
  EXPECT_EQ(*next, r->id + 1);
}

TEST_P(StoreConformanceTest, ConcurrentReadModifyWritesLoseNothing) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) {
    return tx.insert(Record{.type = "counter", .id = 0, .name = "c", .body = "0"});
  }));
  constexpr int kThreads = 4, kIncrements = 50;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        auto r = store->write([](Transaction& tx) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(Record c, tx.get("counter", 0));
          c.body = std::to_string(std::stoi(c.body) + 1);
          return tx.update(c).map([](int64_t) {});
        });
        if (!r) failures++;
        auto seen = store->read_value<Record>([](Transaction& tx) { return tx.get("counter", 0); });
        if (!seen) failures++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto c = store->read_value<Record>([](Transaction& tx) { return tx.get("counter", 0); });
  EXPECT_EQ(c->body, std::to_string(kThreads * kIncrements));
  EXPECT_EQ(c->version, 1 + kThreads * kIncrements);
}

TEST_P(StoreConformanceTest, ReadsSeeOneSnapshot) {
  auto store = open();
  ASSERT_TRUE(store->write([](Transaction& tx) { return tx.insert(user(1, "alice")); }));
  auto r = store->read([&](Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(int64_t before, tx.count("user", {}));
    std::thread writer([&] {
      EXPECT_TRUE(store->write([](Transaction& wtx) { return wtx.insert(user(2, "bob")); }));
    });
    writer.join();
    FAB_ASSIGN_OR_RETURN(int64_t after, tx.count("user", {}));
    EXPECT_EQ(before, after);
    return {};
  });
  EXPECT_TRUE(r);
  auto n = store->read_value<int64_t>([](Transaction& tx) { return tx.count("user", {}); });
  EXPECT_EQ(*n, 2);
}

}  // namespace
}  // namespace fabrica::store
