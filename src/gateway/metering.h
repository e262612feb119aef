#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/json.h"

namespace fabrica::client {
class HttpClient;
}

namespace fabrica::gateway {

// The gateway's local spool of usage records: one JSON line per record appended to
// DIR/usage.spool with a single write(2), so a record survives a crash of the gateway the
// moment append() returns; DIR/usage.cursor says how far fabricad has acknowledged. A torn
// last line (power loss mid-write) is cut off at open. Thread-safe.
class Spool {
 public:
  // kInternal when the directory or its files cannot be opened.
  static Result<std::unique_ptr<Spool>> open(const std::string& dir);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  Result<void> append(const Json& record);
  struct Batch {
    std::vector<std::string> lines;
    uint64_t end = 0;  // Offset just past the last line.
  };
  // Up to `max` records past the cursor (none when all are acknowledged).
  Result<Batch> next(size_t max);
  // Everything up to `end` is acknowledged: the cursor moves there (durably). When nothing
  // is left, the spool is emptied.
  Result<void> commit(uint64_t end);
  // Puts lines fabricad refused as ill-formed aside in DIR/usage.rejected.
  Result<void> reject(const std::vector<std::string>& lines);
  // fdatasync of what was appended (once a second from the shipper: a power loss loses at
  // most that, a process crash nothing).
  void sync();
  uint64_t pending_bytes();

 private:
  Spool(std::string dir, int fd, uint64_t cursor);
  Result<void> write_cursor(uint64_t cursor);

  std::string dir_;
  int fd_ = -1;
  std::mutex mutex_;
  uint64_t cursor_ = 0;
  uint64_t size_ = 0;
};

struct ShipperOptions {
  std::string server;          // https://fabricad:8470
  std::string server_ca_file;  // CA certificates fabricad is verified with (empty: the system's)
  std::string token;           // An administrator's bearer token.
  std::function<std::string()> token_source;  // As SyncOptions::token_source.
  size_t batch = 1000;
  std::chrono::milliseconds interval{200};
};

// Drains the spool to fabricad (POST /api/v1/gateway/usage) on its own thread: in order, in
// batches, retried with backoff while fabricad is away. A batch acknowledged by fabricad but
// not yet by the cursor (a crash in between) is sent again; fabricad counts each record id
// once. Thread-safe.
class Shipper {
 public:
  Shipper(Spool& spool, ShipperOptions options);
  ~Shipper();
  void start();
  // Sends what is pending (up to `limit`), then stops the thread.
  void stop(std::chrono::milliseconds limit = std::chrono::milliseconds(3000));
  void wake();
  uint64_t shipped() const { return shipped_.load(); }
  bool connected() const { return connected_.load(); }

 private:
  void run();
  // True when the batch is done with (sent or put aside); false to retry later.
  bool ship_once(client::HttpClient& http);

  Spool& spool_;
  ShipperOptions options_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool woken_ = false;
  std::chrono::steady_clock::time_point drain_deadline_{};
  std::atomic<uint64_t> shipped_{0};
  std::atomic<bool> connected_{false};
};

// Unique record ids for one gateway process: "<name>-<boot>-<n>", boot random per start.
class RecordIds {
 public:
  explicit RecordIds(std::string name);
  std::string next();
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::string prefix_;
  std::atomic<uint64_t> n_{0};
};

}  // namespace fabrica::gateway
