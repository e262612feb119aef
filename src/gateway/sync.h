#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "gateway/directory.h"

namespace fabrica::gateway {

class SyncClient;

struct SyncOptions {
  std::string server;          // https://fabricad:8470
  std::string server_ca_file;  // CA certificates fabricad is verified with (empty: the system's)
  std::string token;           // An administrator's bearer token.
  // When set, asked before every request instead of `token` (a token file that is re-read when
  // it changes, so the token rotates without a restart).
  std::function<std::string()> token_source;
  std::chrono::milliseconds interval{1000};
  std::string cache_path;  // Last good snapshot (mode 0600); "" keeps none.
};

// Keeps the directory current: polls GET /api/v1/gateway/snapshot with If-None-Match every
// interval (a revoked key stops working within one interval plus a request), keeps the last
// good snapshot when fabricad is away, and saves it so a restarted gateway serves at once
// even before fabricad answers. Thread-safe.
class Syncer {
 public:
  Syncer(Directory& directory, SyncOptions options);
  ~Syncer();
  // Loads the saved snapshot, if any, then starts polling.
  void start();
  void stop();
  // One poll, on the caller's thread: true when fabricad answered (200 or 304).
  bool poll_once();
  bool connected() const { return connected_.load(); }

 private:
  void run();
  void load_cache();
  void save_cache(const std::string& body);

  Directory& directory_;
  SyncOptions options_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::atomic<bool> connected_{false};
  std::unique_ptr<SyncClient> client_;
};

}  // namespace fabrica::gateway
