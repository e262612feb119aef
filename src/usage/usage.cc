#include "usage/usage.h"

#include <map>
#include <tuple>

namespace fabrica::usage {
namespace {

constexpr size_t kMaxText = 2048;

store::Record usage_record(const UsageRecord& r) {
  return store::Record{.type = std::string(kUsageType),
                       .id = r.seq,
                       .name = r.endpoint,
                       .uid = r.uid,
                       .gid = r.gid,
                       .state = r.status,
                       .key = r.id,
                       .body = dump_json(r.to_json())};
}

Result<UsageRecord> from_record(const store::Record& record) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(record.body));
  auto r = UsageRecord::from_json(body);
  if (!r) {
    return fail(ErrorCode::kInternal, "stored usage record " + std::to_string(record.id) +
                                          " is malformed: " + r.error().message());
  }
  r->seq = record.id;
  return r;
}

bool selected(const UsageQuery& q, const UsageRecord& r) {
  return (!q.endpoint_id || r.endpoint_id == *q.endpoint_id) &&
         (!q.since_ms || r.time_ms >= *q.since_ms) && (!q.until_ms || r.time_ms < *q.until_ms);
}

Result<void> text_field(const std::string& value, const std::string& field, bool required) {
  if (required && value.empty()) return fail(ErrorCode::kInvalidArgument, "is required", field);
  if (value.size() > kMaxText) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 2048 characters", field);
  }
  return {};
}

}  // namespace

Json UsageRecord::to_json() const {
  Json j{{"id", id},
         {"time_ms", time_ms},
         {"gid", gid},
         {"uid", uid},
         {"apikey_id", apikey_id},
         {"endpoint_id", endpoint_id},
         {"endpoint", endpoint},
         {"model", model},
         {"backend", backend},
         {"kind", kind},
         {"stream", stream},
         {"status", status},
         {"input_tokens", input_tokens},
         {"output_tokens", output_tokens},
         {"latency_ms", latency_ms},
         {"ttft_ms", ttft_ms ? Json(*ttft_ms) : Json(nullptr)},
         {"gateway", gateway}};
  if (seq >= 0) j["seq"] = seq;
  if (vm_id >= 0) j["vm_id"] = vm_id;
  return j;
}

Result<UsageRecord> UsageRecord::from_json(const Json& j, const std::string& prefix) {
  FAB_ASSIGN_OR_RETURN(auto in, JsonObjectReader::wrap(j, prefix));
  UsageRecord r;
  FAB_ASSIGN_OR_RETURN(r.id, in.required_string("id"));
  FAB_ASSIGN_OR_RETURN(r.time_ms, in.required_int("time_ms"));
  FAB_ASSIGN_OR_RETURN(r.gid, in.required_int("gid"));
  FAB_ASSIGN_OR_RETURN(r.uid, in.required_int("uid"));
  FAB_ASSIGN_OR_RETURN(r.apikey_id, in.required_int("apikey_id"));
  FAB_ASSIGN_OR_RETURN(r.endpoint_id, in.required_int("endpoint_id"));
  FAB_ASSIGN_OR_RETURN(r.endpoint, in.required_string("endpoint"));
  FAB_ASSIGN_OR_RETURN(r.model, in.required_string("model"));
  FAB_ASSIGN_OR_RETURN(r.backend, in.required_string("backend"));
  FAB_ASSIGN_OR_RETURN(auto vm_id, in.optional_int("vm_id"));
  r.vm_id = vm_id.value_or(-1);
  FAB_ASSIGN_OR_RETURN(r.kind, in.required_string("kind"));
  FAB_ASSIGN_OR_RETURN(auto stream, in.optional_bool("stream"));
  FAB_ASSIGN_OR_RETURN(int64_t status, in.required_int("status"));
  FAB_ASSIGN_OR_RETURN(r.input_tokens, in.required_int("input_tokens"));
  FAB_ASSIGN_OR_RETURN(r.output_tokens, in.required_int("output_tokens"));
  FAB_ASSIGN_OR_RETURN(auto seq, in.optional_int("seq"));
  (void)seq;  // Assigned by the store; ignored when a listed record is sent back.
  FAB_ASSIGN_OR_RETURN(r.gateway, in.required_string("gateway"));
  FAB_ASSIGN_OR_RETURN(auto latency, in.optional_number("latency_ms"));
  FAB_ASSIGN_OR_RETURN(r.ttft_ms, in.optional_number("ttft_ms"));
  FAB_TRY(in.finish());
  r.stream = stream.value_or(false);
  r.status = static_cast<int>(status);
  FAB_TRY(text_field(r.id, prefix + "id", true));
  FAB_TRY(text_field(r.endpoint, prefix + "endpoint", false));
  FAB_TRY(text_field(r.model, prefix + "model", false));
  FAB_TRY(text_field(r.backend, prefix + "backend", false));
  FAB_TRY(text_field(r.kind, prefix + "kind", true));
  FAB_TRY(text_field(r.gateway, prefix + "gateway", false));
  if (status < 100 || status > 599) {
    return fail(ErrorCode::kInvalidArgument, "must be an HTTP status", prefix + "status");
  }
  if (r.input_tokens < 0 || r.output_tokens < 0) {
    return fail(ErrorCode::kInvalidArgument, "must be >= 0",
                prefix + (r.input_tokens < 0 ? "input_tokens" : "output_tokens"));
  }
  if (!latency) return fail(ErrorCode::kInvalidArgument, "is required", prefix + "latency_ms");
  r.latency_ms = *latency;
  if (r.latency_ms < 0 || (r.ttft_ms && *r.ttft_ms < 0)) {
    return fail(ErrorCode::kInvalidArgument, "must be >= 0",
                prefix + (r.latency_ms < 0 ? "latency_ms" : "ttft_ms"));
  }
  if (r.gid < 0) return fail(ErrorCode::kInvalidArgument, "must be >= 0", prefix + "gid");
  if (vm_id && *vm_id < 0) {
    return fail(ErrorCode::kInvalidArgument, "must be >= 0", prefix + "vm_id");
  }
  return r;
}

Json UsageTotal::to_json() const {
  return Json{{"gid", gid},
              {"endpoint_id", endpoint_id},
              {"endpoint", endpoint},
              {"model", model},
              {"requests", requests},
              {"errors", errors},
              {"input_tokens", input_tokens},
              {"output_tokens", output_tokens}};
}

bool Usage::may_read(const auth::Caller& caller, const UsageRecord& r) const {
  return caller.is_superuser() || caller.administers(r.gid) || r.uid == caller.uid;
}

Result<IngestResult> Usage::ingest(const auth::Caller& caller,
                                   const std::vector<UsageRecord>& batch) {
  FAB_TRY(authorizer_.require_superuser(caller, "record gateway usage"));
  if (batch.empty() || batch.size() > kMaxBatch) {
    return fail(ErrorCode::kInvalidArgument, "must hold 1 to 1000 records", "records");
  }
  return store_.write_value<IngestResult>([&](store::Transaction& tx) -> Result<IngestResult> {
    IngestResult result;
    for (const UsageRecord& in : batch) {
      auto existing = tx.get_by_key(kUsageType, in.id);
      if (existing) {
        ++result.duplicates;
        continue;
      }
      if (existing.error().code() != ErrorCode::kNotFound) return fail(existing.error());
      UsageRecord r = in;
      FAB_ASSIGN_OR_RETURN(r.seq, tx.allocate_id(kUsageType));
      auto inserted = tx.insert(usage_record(r));
      if (!inserted && inserted.error().code() == ErrorCode::kAlreadyExists) {
        ++result.duplicates;  // The same id twice in one batch.
        continue;
      }
      FAB_TRY(inserted);
      ++result.accepted;
    }
    return result;
  });
}

Result<UsagePage> Usage::list(const auth::Caller& caller, const UsageQuery& query) {
  store::ListQuery q{.after_id = query.after_seq, .gid = query.gid};
  return store_.read_value<UsagePage>([&](store::Transaction& tx) -> Result<UsagePage> {
    UsagePage page;
    FAB_TRY(store::for_each(
        tx, kUsageType,
        [&](const store::Record& record) -> Result<bool> {
          FAB_ASSIGN_OR_RETURN(UsageRecord r, from_record(record));
          if (!may_read(caller, r) || !selected(query, r)) return true;
          if (page.items.size() == query.limit) {
            page.next_cursor = std::to_string(page.items.back().seq);
            return false;
          }
          page.items.push_back(std::move(r));
          return true;
        },
        q));
    return page;
  });
}

Result<std::vector<UsageTotal>> Usage::totals(const auth::Caller& caller, const UsageQuery& query) {
  store::ListQuery q{.after_id = query.after_seq, .gid = query.gid};
  using Key = std::tuple<int64_t, int64_t, std::string>;
  std::map<Key, UsageTotal> rows;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    return store::for_each(
        tx, kUsageType,
        [&](const store::Record& record) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(UsageRecord r, from_record(record));
          if (!may_read(caller, r) || !selected(query, r)) return {};
          UsageTotal& t = rows[Key{r.gid, r.endpoint_id, r.model}];
          t.gid = r.gid;
          t.endpoint_id = r.endpoint_id;
          t.endpoint = r.endpoint;
          t.model = r.model;
          ++t.requests;
          if (r.status >= 400) ++t.errors;
          t.input_tokens += r.input_tokens;
          t.output_tokens += r.output_tokens;
          return {};
        },
        q);
  }));
  std::vector<UsageTotal> out;
  for (auto& [key, total] : rows) out.push_back(std::move(total));
  return out;
}

}  // namespace fabrica::usage
