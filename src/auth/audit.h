#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "auth/authorizer.h"
#include "core/clock.h"
#include "core/json.h"
#include "store/store.h"

namespace fabrica::auth {

enum class AuditOutcome : int { kSuccess = 0, kDenied = 1, kFailed = 2 };
std::string_view audit_outcome_name(AuditOutcome outcome);

// One security-relevant action: who, what, when, from where, and how it ended.
struct AuditEntry {
  int64_t id = -1;
  int64_t time = 0;     // Unix seconds.
  int64_t uid = -1;     // -1 when the caller was not authenticated.
  std::string user;     // The user name (or the name tried at a failed login).
  std::string address;  // Peer address.
  std::string action;   // "POST /api/v1/users/{id}/password": the route.
  std::string target;   // The request path, with the ids acted on.
  int status = 0;       // HTTP status answered.
  AuditOutcome outcome = AuditOutcome::kSuccess;
  std::string error_code;  // Set unless success.
  std::string request_id;
  Json to_api_json() const;
};

struct AuditQuery {
  std::optional<int64_t> uid;
  std::optional<AuditOutcome> outcome;
  std::optional<std::string> action;  // Exact route, e.g. "POST /api/v1/auth/tokens".
  std::optional<int64_t> since;       // Unix seconds, inclusive.
  std::optional<int64_t> before_id;   // Cursor: entries older than this id.
  size_t limit = 100;
};

// The append-only audit log. append() returns once the entry is durable; concurrent
// appends share one transaction (group commit), so auditing costs one commit per burst
// rather than one per request. Thread-safe.
class AuditLog {
 public:
  AuditLog(store::Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  // Fills in id and time. Failures are returned (the caller logs them; the action already
  // happened and its answer stands).
  Result<void> append(AuditEntry entry);
  // Newest first. Superuser only.
  Result<std::vector<AuditEntry>> query(const Caller& caller, const AuditQuery& query);

 private:
  store::Store& store_;
  const Clock& clock_;
  std::mutex mutex_;
  std::condition_variable flushed_;
  std::vector<AuditEntry> pending_;
  uint64_t queued_ = 0;     // Entries ever queued.
  uint64_t committed_ = 0;  // Entries whose batch has finished (committed or failed).
  bool flushing_ = false;
  struct FailedBatch {
    uint64_t first = 0;  // Queue numbers first..last (inclusive) were not written.
    uint64_t last = 0;
    Error error;
  };
  std::vector<FailedBatch> failed_;  // The most recent few.
};

inline constexpr std::string_view kAuditType = "audit";

}  // namespace fabrica::auth
