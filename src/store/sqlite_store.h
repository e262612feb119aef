#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/store.h"

namespace fabrica::store {

class SqliteConnection;

enum class Sync {
  kNormal,  // WAL + synchronous=NORMAL: commits survive a process crash, not a power cut.
  kFull,    // WAL + synchronous=FULL: commits also survive a power cut (fsync per commit).
};

struct SqliteOptions {
  Sync sync = Sync::kFull;
};

// Store on one SQLite file in WAL mode. One writer connection (writes are serialised),
// a pool of reader connections (reads run concurrently with each other and with writes).
// Every statement uses bound parameters. Schema migrations are applied on open.
class SqliteStore final : public Store {
 public:
  // Opens or creates the database at `path`. kFailedPrecondition when the file was written
  // by a newer Fabrica; kUnavailable when it cannot be opened.
  static Result<std::unique_ptr<SqliteStore>> open(const std::string& path,
                                                   SqliteOptions options = {});
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Result<void> read(const Work& work) override;
  Result<void> write(const Work& work) override;
  uint64_t write_generation() const override { return generation_.load(); }
  Result<void> check_integrity() override;
  int schema_version() override;

  // The migrations this build knows, in order; index + 1 is the schema version.
  static const std::vector<std::string>& migrations();
  // The SELECT behind Transaction::list. A filtered list walks the filter's index in id order
  // (the planner would otherwise walk the primary key and test every row of the type).
  static std::string list_sql(const ListQuery& query);

 private:
  SqliteStore(std::string path, SqliteOptions options);
  Result<std::unique_ptr<SqliteConnection>> connect();
  Result<void> migrate();
  std::unique_ptr<SqliteConnection> take_reader();
  void return_reader(std::unique_ptr<SqliteConnection> conn);

  std::string path_;
  SqliteOptions options_;
  std::mutex write_mutex_;
  std::unique_ptr<SqliteConnection> writer_;
  std::mutex readers_mutex_;
  std::vector<std::unique_ptr<SqliteConnection>> readers_;
  std::atomic<uint64_t> generation_{0};
};

}  // namespace fabrica::store
