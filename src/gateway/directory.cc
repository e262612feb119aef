#include "gateway/directory.h"

#include <algorithm>

#include "crypto/crypto.h"

namespace fabrica::gateway {
namespace {

std::string model_key(int64_t gid, std::string_view model) {
  return std::to_string(gid) + "/" + std::string(model);
}

}  // namespace

bool KeyEntry::allows(std::string_view endpoint) const {
  return std::any_of(endpoints.begin(), endpoints.end(),
                     [&](const std::string& e) { return e == "*" || e == endpoint; });
}

std::shared_ptr<const Snapshot> Snapshot::empty() { return std::make_shared<const Snapshot>(); }

Result<std::shared_ptr<const Snapshot>> Snapshot::from_json(const Json& j, std::string etag) {
  auto snapshot = std::make_shared<Snapshot>();
  snapshot->etag_ = std::move(etag);
  try {
    for (const Json& e : j.at("endpoints")) {
      EndpointEntry entry{.id = e.at("endpoint_id").get<int64_t>(),
                          .name = e.at("name").get<std::string>(),
                          .gid = e.at("gid").get<int64_t>(),
                          .model = e.at("model").get<std::string>(),
                          .backends = e.at("backends").get<std::vector<std::string>>(),
                          .backend_key = e.at("backend_key").get<std::string>()};
      if (e.contains("backend_keys")) {
        entry.backend_keys = e["backend_keys"].get<std::unordered_map<std::string, std::string>>();
      }
      if (e.contains("backend_vms")) {
        entry.backend_vms = e["backend_vms"].get<std::unordered_map<std::string, int64_t>>();
      }
      snapshot->by_model_[model_key(entry.gid, entry.model)] = snapshot->endpoints_.size();
      snapshot->endpoints_.push_back(std::move(entry));
    }
    for (const Json& k : j.at("keys")) {
      KeyEntry key{.id = k.at("id").get<int64_t>(),
                   .gid = k.at("gid").get<int64_t>(),
                   .uid = k.at("uid").get<int64_t>(),
                   .hash = k.at("hash").get<std::string>(),
                   .endpoints = k.at("endpoints").get<std::vector<std::string>>(),
                   .rpm = k.at("rpm").get<int64_t>(),
                   .tpm = k.at("tpm").get<int64_t>(),
                   .expires_at = k.at("expires_at").get<int64_t>()};
      snapshot->keys_.emplace(key.hash, std::move(key));
    }
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInvalidArgument, std::string("not a gateway snapshot: ") + e.what());
  }
  std::sort(snapshot->endpoints_.begin(), snapshot->endpoints_.end(),
            [](const EndpointEntry& a, const EndpointEntry& b) { return a.id < b.id; });
  snapshot->by_model_.clear();
  for (size_t i = 0; i < snapshot->endpoints_.size(); ++i) {
    const auto& e = snapshot->endpoints_[i];
    snapshot->by_model_[model_key(e.gid, e.model)] = i;
  }
  return std::shared_ptr<const Snapshot>(std::move(snapshot));
}

const KeyEntry* Snapshot::authenticate(std::string_view secret, int64_t now) const {
  if (!secret.starts_with("fak_") || secret.size() > 256) return nullptr;
  auto it = keys_.find(crypto::sha256_hex(secret));
  if (it == keys_.end()) return nullptr;
  const KeyEntry& key = it->second;
  if (key.expires_at != 0 && key.expires_at <= now) return nullptr;
  return &key;
}

Resolved Snapshot::resolve(const KeyEntry& key, std::string_view model) const {
  auto it = by_model_.find(model_key(key.gid, model));
  if (it == by_model_.end()) return {Resolution::kUnknownModel};
  const EndpointEntry& e = endpoints_[it->second];
  if (!key.allows(e.name)) return {Resolution::kNotAllowed};
  return {Resolution::kRouted, &e};
}

std::vector<const EndpointEntry*> Snapshot::models(const KeyEntry& key) const {
  std::vector<const EndpointEntry*> out;
  for (const auto& e : endpoints_) {
    if (e.gid == key.gid && key.allows(e.name)) out.push_back(&e);
  }
  return out;
}

const EndpointEntry* Snapshot::endpoint(int64_t id) const {
  auto it = std::lower_bound(endpoints_.begin(), endpoints_.end(), id,
                             [](const EndpointEntry& e, int64_t v) { return e.id < v; });
  return it != endpoints_.end() && it->id == id ? &*it : nullptr;
}

}  // namespace fabrica::gateway
