#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/authorizer.h"
#include "core/clock.h"
#include "core/json.h"
#include "store/store.h"

namespace fabrica::auth {

// Quotas per user and per group, with OpenNebula's conventions: a limit of -1 means "the
// default" (for a user: its group's default for users; otherwise no limit) and -2 unlimited.
// Usage lives in the quota records themselves and changes only in the transaction that
// creates or frees what it counts, through holds (reserve / commit / release), so it cannot
// drift from the objects; recount() proves it.
enum class QuotaOwner { kUser, kGroup };
std::string_view quota_owner_name(QuotaOwner owner);

inline constexpr int64_t kQuotaDefault = -1;
inline constexpr int64_t kQuotaUnlimited = -2;

// Amounts by quota key: "vms", "running_vms", "vcpus", "memory_mb", "system_disk_mb",
// "images", "image_mb", "leases", "gpu:<model>" (e.g. "gpu:H100") and "mig:<profile>"
// (e.g. "mig:1g.10gb").
using Amounts = std::map<std::string, int64_t, std::less<>>;
// kInvalidArgument on `field` unless `key` is a quota key.
Result<void> validate_quota_key(std::string_view key, std::string_view field);
// How messages name a key: "GPU H100", "MIG 1g.10gb", "vCPU", "memory MB".
std::string describe_quota_key(std::string_view key);
// Reads {"key": integer, ...}; values must be >= `min`. Field names are "<field>.<key>".
Result<Amounts> read_amounts(const Json& object, std::string_view field, int64_t min);

struct QuotaScope {
  Amounts limits;
  Amounts usage;
};

struct Quota {
  QuotaOwner owner = QuotaOwner::kUser;
  int64_t owner_id = -1;
  int64_t gid = -1;  // The user's primary group, or the group itself.
  std::string owner_name;
  QuotaScope global;
  std::map<int64_t, QuotaScope> clusters;  // Limits and usage scoped to one cluster.
  Amounts user_defaults;                   // Groups only: what -1 means for its users.
  int64_t record_id = -1;
  int64_t version = 0;

  // {"owner","id","name","gid","limits","usage","clusters":{"<id>":{"limits","usage"}},
  //  "user_defaults"}
  Json to_api_json() const;
};

struct QuotaUpdate {
  std::optional<int64_t> cluster;  // Set limits scoped to this cluster instead of globally.
  Amounts limits;                  // Keys to change; others keep their value.
  Amounts user_defaults;           // Groups only.
};

// Who a hold charges: the owner of the object and the object's group.
struct Consumer {
  int64_t uid = -1;
  int64_t gid = -1;
};

// Resources held for an object ("vm:12", "upload:7"). A reserved hold may carry a deadline
// after which expire() releases it (an upload that never finished); a committed hold stays
// until released.
struct Hold {
  int64_t id = -1;
  Consumer consumer;
  std::optional<int64_t> cluster;
  Amounts amounts;
  std::string holder;
  bool committed = false;
  int64_t expires_at = 0;  // Unix seconds; 0 = none.
  int64_t created_at = 0;
  Json to_api_json() const;
};

struct QuotaDrift {
  QuotaOwner owner = QuotaOwner::kUser;
  int64_t owner_id = -1;
  std::optional<int64_t> cluster;
  std::string key;
  int64_t stored = 0;
  int64_t counted = 0;
};

class Quotas {
 public:
  Quotas(store::Store& store, Authorizer& authorizer, const Clock& clock)
      : store_(store), authorizer_(authorizer), clock_(clock) {}

  // The quota of a user (visible to itself, its group's administrators and the superuser)
  // or of a group (visible to its members); kNotFound otherwise.
  Result<Quota> get(const Caller& caller, QuotaOwner owner, int64_t id);
  // Group limits: superuser only. A group's defaults for users and the quotas of its users:
  // the superuser or the group's administrators, never above the group's own limit, never
  // their own quota.
  Result<Quota> set(const Caller& caller, QuotaOwner owner, int64_t id, const QuotaUpdate& update);
  // Recomputes every usage from the holds (superuser only); returns each difference found
  // and, with `fix`, corrects it.
  Result<std::vector<QuotaDrift>> recount(const Caller& caller, bool fix);
  // Holds of one consumer visible to `caller` (the same visibility as get()).
  Result<std::vector<Hold>> holds(const Caller& caller, QuotaOwner owner, int64_t id);

  // The reservation API for domain services, run inside the transaction that creates,
  // resizes or frees the object. reserve: kQuotaExceeded naming the quota, the limit, the
  // usage and the request; nothing is charged then.
  Result<Hold> reserve(store::Transaction& tx, Consumer consumer, std::optional<int64_t> cluster,
                       const Amounts& amounts, std::string holder,
                       std::optional<int64_t> expires_at = std::nullopt);
  // Makes a hold permanent, optionally with the amounts actually used (more than reserved
  // is checked against the limits again). Committing twice is harmless.
  Result<Hold> commit(store::Transaction& tx, int64_t hold_id,
                      std::optional<Amounts> actual = std::nullopt);
  // Gives a hold's amounts back. kNotFound when absent.
  Result<void> release(store::Transaction& tx, int64_t hold_id);
  // Releases every hold of `holder`; returns how many.
  Result<int> release_holder(store::Transaction& tx, std::string_view holder);
  // Releases reserved holds past their deadline (the daemon calls this periodically).
  Result<int> expire();

 private:
  Result<Quota> load_visible(store::Transaction& tx, const Caller& caller, QuotaOwner owner,
                             int64_t id);

  store::Store& store_;
  Authorizer& authorizer_;
  const Clock& clock_;
};

inline constexpr std::string_view kQuotaType = "quota";
inline constexpr std::string_view kHoldType = "quota_hold";

// For the identity service: a user or group still holding resources cannot be deleted.
Result<void> require_no_quota_use(store::Transaction& tx, QuotaOwner owner, int64_t id);
Result<void> remove_quota(store::Transaction& tx, QuotaOwner owner, int64_t id);

}  // namespace fabrica::auth
