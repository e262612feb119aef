#include "gateway/sync.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fstream>

#include "client/http_client.h"
#include "core/files.h"

namespace fabrica::gateway {

class SyncClient {
 public:
  std::unique_ptr<client::HttpClient> http;
};

Syncer::Syncer(Directory& directory, SyncOptions options)
    : directory_(directory), options_(std::move(options)) {}

Syncer::~Syncer() { stop(); }

void Syncer::load_cache() {
  if (options_.cache_path.empty()) return;
  std::ifstream in(options_.cache_path);
  if (!in) return;
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto json = parse_json(text);
  if (!json || !json->contains("snapshot") || !json->contains("etag")) return;
  auto snapshot = Snapshot::from_json((*json)["snapshot"], (*json)["etag"].get<std::string>());
  if (!snapshot) return;
  directory_.replace(*snapshot);
  spdlog::info("serving the saved snapshot ({} endpoints, {} keys) until fabricad answers",
               (*snapshot)->endpoints().size(), (*snapshot)->key_count());
}

void Syncer::save_cache(const std::string& body) {
  if (options_.cache_path.empty()) return;
  auto etag = directory_.current()->etag();
  std::string text = "{\"etag\":" + dump_json(Json(etag)) + ",\"snapshot\":" + body + "}";
  // Best effort: without it a restart waits for fabricad instead of serving the old snapshot.
  (void)write_file_atomically(options_.cache_path, text, /*sync_directory=*/false);
}

bool Syncer::poll_once() {
  if (!client_) {
    client_ = std::make_unique<SyncClient>();
    auto http = client::HttpClient::create(options_.server, {.ca_file = options_.server_ca_file});
    if (!http) {
      spdlog::error("sync: {}", http.error().message());
      return false;
    }
    client_->http = std::move(*http);
    client_->http->set_timeout(std::chrono::seconds(5));
  }
  if (!client_->http) return false;
  std::string token = options_.token_source ? options_.token_source() : options_.token;
  client::Headers headers{{"Authorization", "Bearer " + token}};
  std::string etag = directory_.loaded() ? directory_.current()->etag() : "";
  if (!etag.empty()) headers.emplace_back("If-None-Match", etag);
  auto response = client_->http->request("GET", "/api/v1/gateway/snapshot", "", headers);
  bool ok = response && (response->status == 200 || response->status == 304);
  if (ok && response->status == 200) {
    auto json = parse_json(response->body);
    auto snapshot = json ? Snapshot::from_json(*json, response->header("etag"))
                         : Result<std::shared_ptr<const Snapshot>>(fail(json.error()));
    if (!snapshot) {
      spdlog::error("sync: {}", snapshot.error().message());
      ok = false;
    } else {
      directory_.replace(*snapshot);
      save_cache(response->body);
      spdlog::info("sync: {} endpoints, {} keys", (*snapshot)->endpoints().size(),
                   (*snapshot)->key_count());
    }
  }
  if (ok != connected_.exchange(ok)) {
    if (ok) {
      spdlog::info("sync: connected to {}", options_.server);
    } else {
      spdlog::warn(
          "sync: fabricad unreachable ({}); serving the last good snapshot",
          response ? "HTTP " + std::to_string(response->status) : response.error().message());
    }
  }
  return ok;
}

void Syncer::start() {
  load_cache();
  thread_ = std::thread([this] { run(); });
}

void Syncer::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

void Syncer::run() {
  while (true) {
    poll_once();
    std::unique_lock lock(mutex_);
    if (wake_.wait_for(lock, options_.interval, [&] { return stopping_; })) break;
  }
}

}  // namespace fabrica::gateway
