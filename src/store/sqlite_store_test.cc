#include "store/sqlite_store.h"

#include <sqlite3.h>

#include <filesystem>

#include "store/store_conformance.h"

namespace fabrica::store {
namespace {

std::unique_ptr<Store> open_sqlite(const std::string& dir) {
  auto store = SqliteStore::open(dir + "/fabrica.db");
  EXPECT_TRUE(store) << store.error().message();
  return std::move(*store);
}

INSTANTIATE_TEST_SUITE_P(Sqlite, StoreConformanceTest,
                         testing::Values(StoreFactory{"sqlite", open_sqlite}),
                         [](const auto& info) { return info.param.name; });

class SqliteStoreTest : public StoreConformanceTest {};

TEST_F(SqliteStoreTest, AppliesEveryMigrationOnce) {
  auto path = dir_ + "/m.db";
  {
    auto store = SqliteStore::open(path);
    ASSERT_TRUE(store);
    EXPECT_EQ((*store)->schema_version(), static_cast<int>(SqliteStore::migrations().size()));
  }
  auto again = SqliteStore::open(path);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ((*again)->schema_version(), static_cast<int>(SqliteStore::migrations().size()));
}

TEST_F(SqliteStoreTest, RefusesADatabaseFromANewerVersion) {
  auto path = dir_ + "/new.db";
  { ASSERT_TRUE(SqliteStore::open(path)); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (999, 0)", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  auto store = SqliteStore::open(path);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(store.error().message().find("999"), std::string::npos);
}

TEST_F(SqliteStoreTest, UsesWriteAheadLogging) {
  auto path = dir_ + "/wal.db";
  auto store = SqliteStore::open(path);
  ASSERT_TRUE(store);
  ASSERT_TRUE((*store)->write([](Transaction& tx) {
    return tx.insert(Record{.type = "x", .id = 1, .name = "x", .body = "{}"});
  }));
  EXPECT_TRUE(std::filesystem::exists(path + "-wal"));
}

// A filtered list must not walk every row of the type: with thousands of VMs, listing the few
// PENDING ones once per scheduler pass read them all before the planner was told the index.
TEST_F(SqliteStoreTest, FilteredListsSearchTheFiltersIndex) {
  auto path = dir_ + "/plan.db";
  { ASSERT_TRUE(SqliteStore::open(path)); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  auto plan = [&](const ListQuery& q) {
    std::string sql = "EXPLAIN QUERY PLAN " + SqliteStore::list_sql(q);
    sqlite3_stmt* stmt = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr), SQLITE_OK) << sql;
    std::string out;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      out += reinterpret_cast<const char*>(sqlite3_column_text(stmt, 3));
    }
    sqlite3_finalize(stmt);
    return out;
  };
  EXPECT_NE(plan({.state = 1}).find("INDEX objects_by_state (type=? AND state=? AND id>?)"),
            std::string::npos)
      << plan({.state = 1});
  EXPECT_NE(plan({.uid = 5, .state = 1}).find("INDEX objects_by_uid"), std::string::npos);
  EXPECT_NE(plan({.gid = 5, .descending = true}).find("INDEX objects_by_gid"), std::string::npos);
  EXPECT_NE(plan({.gid = 5, .name = "x"}).find("INDEX objects_by_name"), std::string::npos);
  EXPECT_NE(plan({}).find("PRIMARY KEY"), std::string::npos);
  sqlite3_close(db);
}

}  // namespace
}  // namespace fabrica::store
