#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "core/json.h"

namespace fabrica::gateway {

// One tenant endpoint as the gateway routes to it.
struct EndpointEntry {
  int64_t id = -1;
  std::string name;
  int64_t gid = -1;
  std::string model;
  std::vector<std::string> backends;
  std::string backend_key;  // Sent upstream as "Authorization: Bearer"; "" for none.
  // Backends that are appliance VMs: each has its own credential and names its VM.
  std::unordered_map<std::string, std::string> backend_keys;
  std::unordered_map<std::string, int64_t> backend_vms;
  const std::string& key_for(const std::string& url) const {
    auto it = backend_keys.find(url);
    return it == backend_keys.end() ? backend_key : it->second;
  }
  int64_t vm_for(const std::string& url) const {
    auto it = backend_vms.find(url);
    return it == backend_vms.end() ? -1 : it->second;
  }
};

// One end-user API key: only its hash is known here.
struct KeyEntry {
  int64_t id = -1;
  int64_t gid = -1;
  int64_t uid = -1;
  std::string hash;                    // SHA-256 hex of the secret.
  std::vector<std::string> endpoints;  // Endpoint names, "*" = all of the tenant's.
  int64_t rpm = 0;
  int64_t tpm = 0;
  int64_t expires_at = 0;  // Unix seconds; 0 = never.
  bool allows(std::string_view endpoint) const;
};

// What a key may reach, answered for one request.
enum class Resolution { kRouted, kUnknownModel, kNotAllowed };
struct Resolved {
  Resolution resolution = Resolution::kUnknownModel;
  const EndpointEntry* endpoint = nullptr;  // Set when kRouted.
};

// An immutable view of what fabricad says the gateway may route: every tenant's endpoints and
// every active key's hash. Built from GET /api/v1/gateway/snapshot. Thread-safe (immutable).
class Snapshot {
 public:
  // kInvalidArgument when the JSON is not a snapshot.
  static Result<std::shared_ptr<const Snapshot>> from_json(const Json& j, std::string etag);
  static std::shared_ptr<const Snapshot> empty();

  // The key a secret stands for, if active at `now` (Unix seconds); null otherwise.
  const KeyEntry* authenticate(std::string_view secret, int64_t now) const;
  // The endpoint serving `model` for the key's tenant. Another tenant's endpoints are never
  // considered: their models read as unknown.
  Resolved resolve(const KeyEntry& key, std::string_view model) const;
  // The tenant's endpoints the key may call, in id order.
  std::vector<const EndpointEntry*> models(const KeyEntry& key) const;
  const EndpointEntry* endpoint(int64_t id) const;
  const std::vector<EndpointEntry>& endpoints() const { return endpoints_; }
  size_t key_count() const { return keys_.size(); }
  const std::string& etag() const { return etag_; }

 private:
  std::vector<EndpointEntry> endpoints_;
  std::unordered_map<std::string, KeyEntry> keys_;  // By hash.
  // "gid/model" -> index into endpoints_.
  std::unordered_map<std::string, size_t> by_model_;
  std::string etag_;
};

// The current snapshot, swapped whole when a newer one arrives. Thread-safe.
class Directory {
 public:
  Directory() : current_(Snapshot::empty()) {}
  std::shared_ptr<const Snapshot> current() const {
    std::lock_guard lock(mutex_);
    return current_;
  }
  void replace(std::shared_ptr<const Snapshot> next) {
    std::lock_guard lock(mutex_);
    current_ = std::move(next);
    loaded_ = true;
  }
  // False until the first snapshot (from fabricad or the saved copy) arrived.
  bool loaded() const {
    std::lock_guard lock(mutex_);
    return loaded_;
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const Snapshot> current_;
  bool loaded_ = false;
};

}  // namespace fabrica::gateway
