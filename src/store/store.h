#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/error.h"

namespace fabrica::store {

// One stored object: a JSON body plus the indexed columns every query needs.
struct Record {
  std::string type;  // "user", "group", "acl", "token", ...
  int64_t id = -1;
  std::string name;
  int64_t uid = 0;
  int64_t gid = 0;
  int state = 0;
  std::optional<std::string> key;  // Unique within `type` when set (user names, token hashes).
  std::string body;                // JSON text.
  int64_t version = 0;             // 1 on insert, +1 on every update.
};

// Filters for list(): records of one type in ascending id order, id > after_id (or
// descending, see below).
struct ListQuery {
  int64_t after_id = -1;
  size_t limit = 100;
  std::optional<int64_t> uid;
  std::optional<int64_t> gid;
  std::optional<std::string> name;
  std::optional<int> state;
  // Newest first: descending ids, only ids below before_id when set (after_id still applies).
  bool descending = false;
  std::optional<int64_t> before_id;
};

// Operations inside one transaction. Reads see one consistent snapshot. Mutations are
// kFailedPrecondition inside a read-only transaction. Not thread-safe: one thread at a time.
class Transaction {
 public:
  virtual ~Transaction() = default;

  // kNotFound when absent.
  virtual Result<Record> get(std::string_view type, int64_t id) = 0;
  virtual Result<Record> get_by_key(std::string_view type, std::string_view key) = 0;
  virtual Result<std::vector<Record>> list(std::string_view type, const ListQuery& query) = 0;
  // Records matching the filters of `query` (after_id and limit ignored).
  virtual Result<int64_t> count(std::string_view type, const ListQuery& query) = 0;

  // Next id for `type`: increasing, never reused, beyond any id inserted explicitly.
  virtual Result<int64_t> allocate_id(std::string_view type) = 0;
  // Stores a new record with version 1. kAlreadyExists when the id or key is taken.
  virtual Result<void> insert(const Record& record) = 0;
  // Replaces the record whose version equals record.version and returns the new version.
  // kNotFound when absent, kAborted when the version moved on (re-read and retry),
  // kAlreadyExists when the new key is taken.
  virtual Result<int64_t> update(const Record& record) = 0;
  // kNotFound when absent.
  virtual Result<void> remove(std::string_view type, int64_t id) = 0;
};

// Inserts a record whose unique key is its name: a taken name is kAlreadyExists on field
// "name", as API callers expect.
inline Result<void> insert_named(Transaction& tx, const Record& record) {
  auto inserted = tx.insert(record);
  if (!inserted && inserted.error().code() == ErrorCode::kAlreadyExists) {
    return fail(ErrorCode::kAlreadyExists, record.type + " \"" + record.name + "\" already exists",
                "name");
  }
  return inserted;
}

// The naming rule for the objects a tenant owns (templates, images, endpoints, API keys):
// unique within their group, so a name means one object to everyone who can see it.
// kAlreadyExists on field "name" when another record of `type` in group `gid` (other than
// `except_id`) is named `name`; `noun` names the type in the message.
inline Result<void> require_unique_in_group(Transaction& tx, std::string_view type, int64_t gid,
                                            const std::string& name, std::string_view noun,
                                            int64_t except_id = -1) {
  FAB_ASSIGN_OR_RETURN(auto same, tx.list(type, {.limit = 2, .gid = gid, .name = name}));
  for (const auto& r : same) {
    if (r.id == except_id) continue;
    return fail(ErrorCode::kAlreadyExists,
                "group " + std::to_string(gid) + " already has " + std::string(noun) + " \"" +
                    name + "\" (id " + std::to_string(r.id) + ")",
                "name");
  }
  return {};
}

// Calls visit(record) for every record of `type` passing `query`'s filters, in ascending id
// order, a page at a time; stops at the first failure. visit returns Result<void>, or
// Result<bool> where false stops the walk early (a page that is full).
template <typename Visit>
Result<void> for_each(Transaction& tx, std::string_view type, Visit&& visit, ListQuery query = {}) {
  query.limit = 1000;
  while (true) {
    FAB_ASSIGN_OR_RETURN(auto batch, tx.list(type, query));
    for (const auto& record : batch) {
      if constexpr (std::is_same_v<decltype(visit(record)), Result<bool>>) {
        FAB_ASSIGN_OR_RETURN(bool more, visit(record));
        if (!more) return {};
      } else {
        FAB_TRY(visit(record));
      }
    }
    if (batch.size() < query.limit) return {};
    query.after_id = batch.back().id;
  }
}

// A transactional object store. Thread-safe: any number of concurrent readers and writers.
class Store {
 public:
  using Work = std::function<Result<void>(Transaction&)>;

  virtual ~Store() = default;

  // Runs `work` on a read-only snapshot and returns its result.
  virtual Result<void> read(const Work& work) = 0;
  // Runs `work` in one read-write transaction: everything it did is committed durably
  // (surviving a kill -9 of the process) iff it returns success; otherwise nothing is.
  virtual Result<void> write(const Work& work) = 0;
  // Increases after every committed write; lets caches know they are stale.
  virtual uint64_t write_generation() const = 0;
  // kInternal with the backend's report unless its own consistency check passes.
  virtual Result<void> check_integrity() = 0;
  // Highest schema migration applied.
  virtual int schema_version() = 0;

  // Convenience: runs `fn(Transaction&) -> Result<T>` and returns its value.
  template <typename T, typename Fn>
  Result<T> read_value(Fn&& fn) {
    std::optional<T> out;
    FAB_TRY(read([&](Transaction& tx) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(out, fn(tx));
      return {};
    }));
    return std::move(*out);
  }
  template <typename T, typename Fn>
  Result<T> write_value(Fn&& fn) {
    std::optional<T> out;
    FAB_TRY(write([&](Transaction& tx) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(out, fn(tx));
      return {};
    }));
    return std::move(*out);
  }
};

}  // namespace fabrica::store
