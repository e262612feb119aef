#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "auth/authorizer.h"
#include "core/clock.h"
#include "core/json.h"
#include "store/store.h"

namespace fabrica::usage {

// One metered request through fabrica-gateway: who called (tenant, API key), what answered
// (endpoint, model, backend), how much (tokens) and how it went (status, latency, time to
// first token). Records are append-only; the accounting work prices them.
struct UsageRecord {
  std::string id;       // Chosen by the gateway, unique forever: a resent record is counted once.
  int64_t seq = -1;     // Store order, assigned on ingest; the list cursor.
  int64_t time_ms = 0;  // Unix milliseconds when the request arrived.
  int64_t gid = -1;     // The tenant.
  int64_t uid = -1;     // Who issued the key.
  int64_t apikey_id = -1;
  int64_t endpoint_id = -1;  // -1 when no endpoint was resolved (unknown model, bad key).
  std::string endpoint;      // Its name.
  std::string model;
  std::string backend;  // Base URL that served it; "" when none did.
  int64_t vm_id = -1;   // The appliance VM behind that backend; -1 for a static backend.
  std::string kind;     // "chat", "completions", "embeddings", "models".
  bool stream = false;
  int status = 0;  // HTTP status the end user saw.
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  double latency_ms = 0;          // Arrival to last byte.
  std::optional<double> ttft_ms;  // Arrival to first byte of the answer (streams).
  std::string gateway;            // Which gateway replica metered it.

  Json to_json() const;
  // kInvalidArgument naming `prefix` + the field on any missing or ill-typed field.
  static Result<UsageRecord> from_json(const Json& j, const std::string& prefix = {});
};

struct IngestResult {
  size_t accepted = 0;
  size_t duplicates = 0;
};

struct UsageQuery {
  std::optional<int64_t> gid;
  std::optional<int64_t> endpoint_id;
  std::optional<int64_t> since_ms;  // time_ms >= since_ms
  std::optional<int64_t> until_ms;  // time_ms < until_ms
  int64_t after_seq = -1;
  size_t limit = 100;
};

struct UsagePage {
  std::vector<UsageRecord> items;
  std::optional<std::string> next_cursor;
};

// Totals over the records a query selects, one row per tenant × endpoint × model.
struct UsageTotal {
  int64_t gid = -1;
  int64_t endpoint_id = -1;
  std::string endpoint;
  std::string model;
  int64_t requests = 0;
  int64_t errors = 0;  // Status >= 400.
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  Json to_json() const;
};

// The append-only usage ledger that gateways feed. Gateways (the administrators' credential)
// ingest; tenant administrators read their tenant's records; the superuser reads all.
// Thread-safe.
class Usage {
 public:
  static constexpr size_t kMaxBatch = 1000;

  explicit Usage(store::Store& store, auth::Authorizer& authorizer)
      : store_(store), authorizer_(authorizer) {}

  // Stores a batch in one transaction; records whose id is already stored are counted as
  // duplicates and left as they are. kPermissionDenied unless the caller is an administrator;
  // kInvalidArgument (nothing stored) for an empty, oversized or ill-formed batch.
  Result<IngestResult> ingest(const auth::Caller& caller, const std::vector<UsageRecord>& batch);
  // Records in ingest order that the caller may read (its administered tenants, records of
  // keys it issued; everything for the superuser).
  Result<UsagePage> list(const auth::Caller& caller, const UsageQuery& query);
  Result<std::vector<UsageTotal>> totals(const auth::Caller& caller, const UsageQuery& query);

 private:
  bool may_read(const auth::Caller& caller, const UsageRecord& r) const;

  store::Store& store_;
  auth::Authorizer& authorizer_;
};

inline constexpr std::string_view kUsageType = "usage";

}  // namespace fabrica::usage
