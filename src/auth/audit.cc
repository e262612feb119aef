#include "auth/audit.h"

#include "core/object.h"

namespace fabrica::auth {
namespace {

store::Record audit_record(const AuditEntry& e) {
  Json body = e.to_api_json();
  body["time_unix"] = e.time;
  return store::Record{.type = std::string(kAuditType),
                       .id = e.id,
                       .name = e.action,
                       .uid = e.uid,
                       .gid = -1,
                       .state = static_cast<int>(e.outcome),
                       .body = dump_json(body)};
}

Result<AuditEntry> audit_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  AuditEntry e;
  try {
    e.id = r.id;
    e.time = body.at("time_unix").get<int64_t>();
    e.uid = r.uid;
    e.user = body.at("user").get<std::string>();
    e.address = body.at("address").get<std::string>();
    e.action = r.name;
    e.target = body.at("target").get<std::string>();
    e.status = body.at("status").get<int>();
    e.outcome = static_cast<AuditOutcome>(r.state);
    e.error_code = body.at("error_code").get<std::string>();
    e.request_id = body.at("request_id").get<std::string>();
  } catch (const std::exception& ex) {
    return fail(ErrorCode::kInternal,
                "stored audit entry " + std::to_string(r.id) + " is malformed: " + ex.what());
  }
  return e;
}

}  // namespace

std::string_view audit_outcome_name(AuditOutcome outcome) {
  switch (outcome) {
    case AuditOutcome::kSuccess:
      return "success";
    case AuditOutcome::kDenied:
      return "denied";
    case AuditOutcome::kFailed:
      return "failed";
  }
  return "failed";
}

Json AuditEntry::to_api_json() const {
  return Json{{"id", id},
              {"time", format_time(time)},
              {"uid", uid},
              {"user", user},
              {"address", address},
              {"action", action},
              {"target", target},
              {"status", status},
              {"outcome", audit_outcome_name(outcome)},
              {"error_code", error_code},
              {"request_id", request_id}};
}

Result<void> AuditLog::append(AuditEntry entry) {
  std::unique_lock lock(mutex_);
  entry.time = unix_seconds(clock_.now());
  pending_.push_back(std::move(entry));
  uint64_t mine = ++queued_;
  while (committed_ < mine) {
    if (flushing_) {
      flushed_.wait(lock);
      continue;
    }
    // Become the flusher: write everything queued so far in one transaction.
    flushing_ = true;
    std::vector<AuditEntry> batch;
    batch.swap(pending_);
    uint64_t first = committed_ + 1, last = queued_;
    lock.unlock();
    auto written = store_.write([&](store::Transaction& tx) -> Result<void> {
      for (auto& e : batch) {
        FAB_ASSIGN_OR_RETURN(e.id, tx.allocate_id(kAuditType));
        FAB_TRY(tx.insert(audit_record(e)));
      }
      return {};
    });
    lock.lock();
    committed_ = last;
    flushing_ = false;
    if (!written) {
      failed_.push_back({first, last, written.error()});
      if (failed_.size() > 64) failed_.erase(failed_.begin());
    }
    flushed_.notify_all();
  }
  for (const auto& f : failed_) {
    if (mine >= f.first && mine <= f.last) return fail(f.error);
  }
  return {};
}

Result<std::vector<AuditEntry>> AuditLog::query(const Caller& caller, const AuditQuery& q) {
  if (!caller.is_superuser()) {
    return fail(ErrorCode::kPermissionDenied, "only the administrators may read the audit log");
  }
  return store_.read_value<std::vector<AuditEntry>>(
      [&](store::Transaction& tx) -> Result<std::vector<AuditEntry>> {
        std::vector<AuditEntry> out;
        store::ListQuery lq{.limit = std::max<size_t>(q.limit, 256),
                            .uid = q.uid,
                            .name = q.action,
                            .descending = true,
                            .before_id = q.before_id};
        if (q.outcome) lq.state = static_cast<int>(*q.outcome);
        while (true) {
          FAB_ASSIGN_OR_RETURN(auto batch, tx.list(kAuditType, lq));
          for (const auto& r : batch) {
            FAB_ASSIGN_OR_RETURN(AuditEntry e, audit_from_record(r));
            if (q.since && e.time < *q.since) return out;  // Older from here on.
            out.push_back(std::move(e));
            if (out.size() == q.limit) return out;
          }
          if (batch.size() < lq.limit) return out;
          lq.before_id = batch.back().id;
        }
      });
}

}  // namespace fabrica::auth
