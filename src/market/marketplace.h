#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "auth/authorizer.h"
#include "auth/identity.h"
#include "core/clock.h"
#include "core/object.h"
#include "store/store.h"

namespace fabrica::market {

// Where models and appliances come from. "huggingface": the Hugging Face Hub's HTTP API at
// `url` (https://huggingface.co, or a mirror as HF_ENDPOINT names one).
enum class MarketKind { kHuggingFace };
std::string_view market_kind_name(MarketKind kind);

struct Marketplace {
  ObjectHeader header;  // state 0 ENABLED, 1 DISABLED.
  MarketKind kind = MarketKind::kHuggingFace;
  std::string url;
  std::string description;
  int64_t version = 0;

  // Every signed-in user may use it (permissions 604); otherwise only the groups of the VDCs
  // that list it (600).
  bool is_public() const { return header.permissions.bits() == 0604; }
  bool enabled() const { return header.state == 0; }
  Json to_api_json() const;
};

struct NewMarketplace {
  std::string name;
  MarketKind kind = MarketKind::kHuggingFace;
  std::string url;
  std::string description;
  bool is_public = false;
};

struct MarketplaceChange {
  std::optional<std::string> url;
  std::optional<std::string> description;
  std::optional<bool> enabled;
  std::optional<bool> is_public;
};

// Marketplace objects: administrators create, change and delete them; a tenant sees and
// imports through the public ones and those its VDC lists (`fabrica vdc addmarketplace`),
// and no other. Thread-safe.
class Marketplaces {
 public:
  Marketplaces(store::Store& store, auth::Authorizer& authorizer, const Clock& clock)
      : store_(store), authorizer_(authorizer), clock_(clock) {}

  // Creates "huggingface" at `hub_url`, public, when no marketplace exists yet.
  Result<void> bootstrap(const std::string& hub_url);

  // kInvalidArgument naming `url` unless an http(s) URL without path, query or credentials.
  Result<Marketplace> create(const auth::Caller& caller, const NewMarketplace& request);
  Result<Marketplace> get(const auth::Caller& caller, int64_t id);
  Result<auth::Page<Marketplace>> list(const auth::Caller& caller,
                                       const auth::ListOptions& options);
  Result<Marketplace> update(const auth::Caller& caller, int64_t id,
                             const MarketplaceChange& change);
  Result<void> remove(const auth::Caller& caller, int64_t id);
  // The enabled marketplace of `kind` that `caller` imports through: `id` when given
  // (kNotFound when it may not use it, kFailedPrecondition when disabled or of another kind,
  // naming `marketplace_id`), else the first enabled one of that kind it may use.
  Result<Marketplace> pick(const auth::Caller& caller, std::optional<int64_t> id, MarketKind kind);

 private:
  store::Store& store_;
  auth::Authorizer& authorizer_;
  const Clock& clock_;
};

inline constexpr std::string_view kMarketplaceType = "marketplace";

}  // namespace fabrica::market
