#include "store/sqlite_store.h"

#include <sqlite3.h>

#include <chrono>
#include <map>
#include <thread>

namespace fabrica::store {

namespace {

Error sqlite_error(sqlite3* db, int rc, std::string_view what) {
  std::string msg = std::string(what) + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  int primary = rc & 0xff;
  if (primary == SQLITE_CONSTRAINT) return Error(ErrorCode::kAlreadyExists, msg);
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
    return Error(ErrorCode::kUnavailable, msg);
  return Error(ErrorCode::kInternal, msg);
}

}  // namespace

// One sqlite3 handle with its prepared-statement cache. Not thread-safe.
class SqliteConnection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  ~SqliteConnection() {
    for (auto& [sql, stmt] : statements_) sqlite3_finalize(stmt);
    sqlite3_close_v2(db_);
  }
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  sqlite3* db() const { return db_; }

  Result<void> exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      return fail(sqlite_error(nullptr, rc, msg));
    }
    return {};
  }

  // A reset statement for `sql`, prepared once per connection.
  Result<sqlite3_stmt*> prepare(const std::string& sql) {
    auto it = statements_.find(sql);
    if (it != statements_.end()) {
      sqlite3_reset(it->second);
      sqlite3_clear_bindings(it->second);
      return it->second;
    }
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK) return fail(sqlite_error(db_, rc, "prepare"));
    statements_.emplace(sql, stmt);
    return stmt;
  }

 private:
  sqlite3* db_;
  std::map<std::string, sqlite3_stmt*, std::less<>> statements_;
};

namespace {

// Binds positional parameters: text, integers, or NULL for an empty optional.
struct Binder {
  sqlite3_stmt* stmt;
  int index = 1;
  void operator()(std::string_view v) {
    sqlite3_bind_text(stmt, index++, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
  }
  void operator()(const std::string& v) { (*this)(std::string_view(v)); }
  void operator()(int64_t v) { sqlite3_bind_int64(stmt, index++, v); }
  void operator()(const std::optional<std::string>& v) {
    if (v) {
      (*this)(std::string_view(*v));
    } else {
      sqlite3_bind_null(stmt, index++);
    }
  }
};

std::string column_text(sqlite3_stmt* stmt, int col) {
  const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, col));
  return p ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt, col))) : std::string();
}

constexpr const char* kColumns = "type, id, name, uid, gid, state, key, body, version";

Record read_record(sqlite3_stmt* stmt) {
  Record r;
  r.type = column_text(stmt, 0);
  r.id = sqlite3_column_int64(stmt, 1);
  r.name = column_text(stmt, 2);
  r.uid = sqlite3_column_int64(stmt, 3);
  r.gid = sqlite3_column_int64(stmt, 4);
  r.state = sqlite3_column_int(stmt, 5);
  if (sqlite3_column_type(stmt, 6) != SQLITE_NULL) r.key = column_text(stmt, 6);
  r.body = column_text(stmt, 7);
  r.version = sqlite3_column_int64(stmt, 8);
  return r;
}

std::string describe(std::string_view type, int64_t id) {
  return std::string(type) + " " + std::to_string(id);
}

// Each filter is a fixed clause with a fixed parameter number, so statements cache well.
std::string filters(const ListQuery& q) {
  std::string sql;
  if (q.uid) sql += " AND uid = ?2";
  if (q.gid) sql += " AND gid = ?3";
  if (q.name) sql += " AND name = ?4";
  if (q.state) sql += " AND state = ?5";
  return sql;
}

class SqliteTransaction final : public Transaction {
 public:
  enum class Mode { kRead, kWrite };
  SqliteTransaction(SqliteConnection& conn, Mode mode) : conn_(conn), mode_(mode) {}

  Result<Record> get(std::string_view type, int64_t id) override {
    FAB_ASSIGN_OR_RETURN(auto stmt, conn_.prepare(std::string("SELECT ") + kColumns +
                                                  " FROM objects WHERE type = ?1 AND id = ?2"));
    Binder bind{stmt};
    bind(type);
    bind(id);
    return single(stmt, describe(type, id) + " not found");
  }

  Result<Record> get_by_key(std::string_view type, std::string_view key) override {
    FAB_ASSIGN_OR_RETURN(auto stmt, conn_.prepare(std::string("SELECT ") + kColumns +
                                                  " FROM objects WHERE type = ?1 AND key = ?2"));
    Binder bind{stmt};
    bind(type);
    bind(key);
    return single(stmt, std::string(type) + " not found");
  }

  Result<std::vector<Record>> list(std::string_view type, const ListQuery& q) override {
    FAB_ASSIGN_OR_RETURN(auto stmt, conn_.prepare(SqliteStore::list_sql(q)));
    bind_filters(stmt, type, q);
    sqlite3_bind_int64(stmt, 6, q.after_id);
    sqlite3_bind_int64(stmt, 7, static_cast<int64_t>(q.limit));
    if (q.before_id) sqlite3_bind_int64(stmt, 8, *q.before_id);
    std::vector<Record> out;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) out.push_back(read_record(stmt));
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) return fail(sqlite_error(conn_.db(), rc, "list"));
    return out;
  }

  Result<int64_t> count(std::string_view type, const ListQuery& q) override {
    FAB_ASSIGN_OR_RETURN(
        auto stmt, conn_.prepare("SELECT count(*) FROM objects WHERE type = ?1" + filters(q)));
    bind_filters(stmt, type, q);
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) return fail(sqlite_error(conn_.db(), rc, "count"));
    int64_t n = sqlite3_column_int64(stmt, 0);
    sqlite3_reset(stmt);  // An unreset statement would pin this snapshot past COMMIT.
    return n;
  }

  Result<int64_t> allocate_id(std::string_view type) override {
    FAB_TRY(writable());
    FAB_ASSIGN_OR_RETURN(
        auto stmt,
        conn_.prepare(
            "INSERT INTO sequences(type, next_id) VALUES (?1, 1) "
            "ON CONFLICT(type) DO UPDATE SET next_id = next_id + 1 RETURNING next_id - 1"));
    Binder{stmt}(type);
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW) return fail(sqlite_error(conn_.db(), rc, "allocate id"));
    int64_t id = sqlite3_column_int64(stmt, 0);
    sqlite3_reset(stmt);
    return id;
  }

  Result<void> insert(const Record& r) override {
    FAB_TRY(writable());
    if (r.id < 0) return fail(ErrorCode::kInvalidArgument, "record id must be >= 0");
    FAB_ASSIGN_OR_RETURN(auto stmt,
                         conn_.prepare("INSERT INTO objects(type, id, name, uid, gid, state, key, "
                                       "body, version) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,1)"));
    Binder bind{stmt};
    bind(r.type), bind(r.id), bind(r.name), bind(r.uid), bind(r.gid);
    bind(int64_t{r.state}), bind(r.key), bind(r.body);
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) {
      if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        return fail(ErrorCode::kAlreadyExists, r.key ? r.type + " \"" + r.name + "\" already exists"
                                                     : describe(r.type, r.id) + " already exists");
      }
      return fail(sqlite_error(conn_.db(), rc, "insert"));
    }
    // Keep the sequence beyond explicitly chosen ids.
    FAB_ASSIGN_OR_RETURN(auto seq,
                         conn_.prepare("INSERT INTO sequences(type, next_id) VALUES (?1, ?2) "
                                       "ON CONFLICT(type) DO UPDATE SET next_id = "
                                       "max(next_id, excluded.next_id)"));
    Binder sbind{seq};
    sbind(r.type), sbind(r.id + 1);
    return step_done(seq, "advance sequence");
  }

  Result<int64_t> update(const Record& r) override {
    FAB_TRY(writable());
    FAB_ASSIGN_OR_RETURN(auto stmt,
                         conn_.prepare("UPDATE objects SET name = ?3, uid = ?4, gid = ?5, "
                                       "state = ?6, key = ?7, body = ?8, version = version + 1 "
                                       "WHERE type = ?1 AND id = ?2 AND version = ?9"));
    Binder bind{stmt};
    bind(r.type), bind(r.id), bind(r.name), bind(r.uid), bind(r.gid);
    bind(int64_t{r.state}), bind(r.key), bind(r.body), bind(r.version);
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) {
      if ((rc & 0xff) == SQLITE_CONSTRAINT) {
        return fail(ErrorCode::kAlreadyExists, r.type + " \"" + r.name + "\" already exists");
      }
      return fail(sqlite_error(conn_.db(), rc, "update"));
    }
    if (sqlite3_changes(conn_.db()) == 1) return r.version + 1;
    FAB_ASSIGN_OR_RETURN(Record current, get(r.type, r.id));
    return fail(ErrorCode::kAborted, describe(r.type, r.id) + " changed concurrently (version " +
                                         std::to_string(current.version) + ", expected " +
                                         std::to_string(r.version) + "); re-read and retry");
  }

  Result<void> remove(std::string_view type, int64_t id) override {
    FAB_TRY(writable());
    FAB_ASSIGN_OR_RETURN(auto stmt,
                         conn_.prepare("DELETE FROM objects WHERE type = ?1 AND id = ?2"));
    Binder bind{stmt};
    bind(type), bind(id);
    FAB_TRY(step_done(stmt, "delete"));
    if (sqlite3_changes(conn_.db()) != 1) {
      return fail(ErrorCode::kNotFound, describe(type, id) + " not found");
    }
    return {};
  }

 private:
  Result<void> writable() const {
    if (mode_ == Mode::kRead) {
      return fail(ErrorCode::kFailedPrecondition, "mutation inside a read-only transaction");
    }
    return {};
  }

  static void bind_filters(sqlite3_stmt* stmt, std::string_view type, const ListQuery& q) {
    sqlite3_bind_text(stmt, 1, type.data(), static_cast<int>(type.size()), SQLITE_TRANSIENT);
    if (q.uid) sqlite3_bind_int64(stmt, 2, *q.uid);
    if (q.gid) sqlite3_bind_int64(stmt, 3, *q.gid);
    if (q.name)
      sqlite3_bind_text(stmt, 4, q.name->data(), static_cast<int>(q.name->size()),
                        SQLITE_TRANSIENT);
    if (q.state) sqlite3_bind_int(stmt, 5, *q.state);
  }

  Result<Record> single(sqlite3_stmt* stmt, const std::string& not_found) {
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
      Record r = read_record(stmt);
      sqlite3_reset(stmt);
      return r;
    }
    sqlite3_reset(stmt);
    if (rc == SQLITE_DONE) return fail(ErrorCode::kNotFound, not_found);
    return fail(sqlite_error(conn_.db(), rc, "select"));
  }

  Result<void> step_done(sqlite3_stmt* stmt, std::string_view what) {
    int rc = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE) return fail(sqlite_error(conn_.db(), rc, what));
    return {};
  }

  SqliteConnection& conn_;
  Mode mode_;
};

}  // namespace

std::string SqliteStore::list_sql(const ListQuery& q) {
  // The most selective filter's index; each ends in (type, id) as the table's key does.
  const char* index = q.name    ? " INDEXED BY objects_by_name"
                      : q.uid   ? " INDEXED BY objects_by_uid"
                      : q.gid   ? " INDEXED BY objects_by_gid"
                      : q.state ? " INDEXED BY objects_by_state"
                                : "";
  return std::string("SELECT ") + kColumns + " FROM objects" + index + " WHERE type = ?1" +
         filters(q) + " AND id > ?6" + (q.before_id ? " AND id < ?8" : "") +
         (q.descending ? " ORDER BY id DESC" : " ORDER BY id") + " LIMIT ?7";
}

const std::vector<std::string>& SqliteStore::migrations() {
  static const std::vector<std::string> kMigrations = {
      // 1: objects with indexed columns, per-type id sequences.
      "CREATE TABLE objects ("
      "  type TEXT NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,"
      "  uid INTEGER NOT NULL, gid INTEGER NOT NULL, state INTEGER NOT NULL,"
      "  key TEXT, body TEXT NOT NULL, version INTEGER NOT NULL,"
      "  PRIMARY KEY (type, id)) WITHOUT ROWID;"
      "CREATE UNIQUE INDEX objects_by_key ON objects(type, key) WHERE key IS NOT NULL;"
      "CREATE INDEX objects_by_name ON objects(type, name);"
      "CREATE INDEX objects_by_uid ON objects(type, uid, id);"
      "CREATE INDEX objects_by_gid ON objects(type, gid, id);"
      "CREATE INDEX objects_by_state ON objects(type, state, id);"
      "CREATE TABLE sequences (type TEXT PRIMARY KEY, next_id INTEGER NOT NULL) WITHOUT ROWID;",
  };
  return kMigrations;
}

SqliteStore::SqliteStore(std::string path, SqliteOptions options)
    : path_(std::move(path)), options_(options) {}

SqliteStore::~SqliteStore() = default;

Result<std::unique_ptr<SqliteConnection>> SqliteStore::connect() {
  sqlite3* db = nullptr;
  int rc =
      sqlite3_open_v2(path_.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  auto conn = std::make_unique<SqliteConnection>(db);
  if (rc != SQLITE_OK) {
    return fail(ErrorCode::kUnavailable, "cannot open database " + path_ + ": " +
                                             (db ? sqlite3_errmsg(db) : "out of memory"));
  }
  sqlite3_busy_timeout(db, 10000);
  sqlite3_extended_result_codes(db, 1);
  FAB_TRY(conn->exec("PRAGMA journal_mode = WAL"));
  FAB_TRY(conn->exec(options_.sync == Sync::kFull ? "PRAGMA synchronous = FULL"
                                                  : "PRAGMA synchronous = NORMAL"));
  FAB_TRY(conn->exec("PRAGMA foreign_keys = ON"));
  return conn;
}

Result<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path,
                                                       SqliteOptions options) {
  // Before SQLite initialises: no global memory-statistics mutex (every SQLite allocation
  // would take it), and no per-connection mutexes (each connection serves one thread).
  static const bool configured = [] {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    sqlite3_config(SQLITE_CONFIG_MULTITHREAD);
    return true;
  }();
  (void)configured;
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, options));
  FAB_ASSIGN_OR_RETURN(store->writer_, store->connect());
  FAB_TRY(store->migrate());
  return store;
}

Result<void> SqliteStore::migrate() {
  std::lock_guard lock(write_mutex_);
  FAB_TRY(
      writer_->exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                    "applied_at INTEGER NOT NULL)"));
  int current = schema_version();
  const auto& all = migrations();
  if (current > static_cast<int>(all.size())) {
    return fail(ErrorCode::kFailedPrecondition,
                "database " + path_ + " has schema version " + std::to_string(current) +
                    ", newer than this fabricad supports (" + std::to_string(all.size()) +
                    "); upgrade fabricad");
  }
  for (int v = current + 1; v <= static_cast<int>(all.size()); ++v) {
    FAB_TRY(writer_->exec("BEGIN IMMEDIATE"));
    auto applied = writer_->exec(all[v - 1].c_str());
    if (applied) {
      FAB_ASSIGN_OR_RETURN(
          auto stmt,
          writer_->prepare(
              "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, unixepoch())"));
      sqlite3_bind_int(stmt, 1, v);
      int rc = sqlite3_step(stmt);
      sqlite3_reset(stmt);
      if (rc != SQLITE_DONE) applied = fail(sqlite_error(writer_->db(), rc, "record migration"));
    }
    if (!applied) {
      (void)writer_->exec("ROLLBACK");
      return fail(applied.error().with_context("schema migration " + std::to_string(v)));
    }
    FAB_TRY(writer_->exec("COMMIT"));
  }
  return {};
}

int SqliteStore::schema_version() {
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(writer_->db(), "SELECT coalesce(max(version), 0) FROM schema_migrations",
                         -1, &stmt, nullptr) != SQLITE_OK) {
    return 0;
  }
  int v = sqlite3_step(stmt) == SQLITE_ROW ? sqlite3_column_int(stmt, 0) : 0;
  sqlite3_finalize(stmt);
  return v;
}

std::unique_ptr<SqliteConnection> SqliteStore::take_reader() {
  std::lock_guard lock(readers_mutex_);
  if (readers_.empty()) return nullptr;
  auto conn = std::move(readers_.back());
  readers_.pop_back();
  return conn;
}

void SqliteStore::return_reader(std::unique_ptr<SqliteConnection> conn) {
  std::lock_guard lock(readers_mutex_);
  if (readers_.size() < 32) readers_.push_back(std::move(conn));
}

Result<void> SqliteStore::read(const Work& work) {
  auto conn = take_reader();
  if (!conn) {
    FAB_ASSIGN_OR_RETURN(conn, connect());
  }
  FAB_TRY(conn->exec("BEGIN"));
  SqliteTransaction tx(*conn, SqliteTransaction::Mode::kRead);
  auto result = work(tx);
  auto end = conn->exec(result ? "COMMIT" : "ROLLBACK");
  if (end) return_reader(std::move(conn));
  if (!result) return result;
  return end;
}

Result<void> SqliteStore::write(const Work& work) {
  std::lock_guard lock(write_mutex_);
  FAB_TRY(writer_->exec("BEGIN IMMEDIATE"));
  SqliteTransaction tx(*writer_, SqliteTransaction::Mode::kWrite);
  auto result = work(tx);
  if (!result) {
    (void)writer_->exec("ROLLBACK");
    return result;
  }
  auto committed = writer_->exec("COMMIT");
  if (!committed) {
    (void)writer_->exec("ROLLBACK");
    return committed;
  }
  generation_.fetch_add(1);
  return {};
}

Result<void> SqliteStore::check_integrity() {
  std::lock_guard lock(write_mutex_);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(writer_->db(), "PRAGMA integrity_check", -1, &stmt, nullptr) !=
      SQLITE_OK) {
    return fail(sqlite_error(writer_->db(), SQLITE_ERROR, "integrity_check"));
  }
  std::string report;
  while (sqlite3_step(stmt) == SQLITE_ROW) report += column_text(stmt, 0);
  sqlite3_finalize(stmt);
  if (report != "ok") return fail(ErrorCode::kInternal, "integrity check failed: " + report);
  return {};
}

}  // namespace fabrica::store
