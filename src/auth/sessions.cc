#include "auth/sessions.h"

namespace fabrica::auth {
namespace {

std::string pair_key(std::string_view user, std::string_view address) {
  return std::string(user) + '\n' + std::string(address);
}

store::Record token_record(const Token& t, const std::string& hash) {
  Json body{{"id", t.id},
            {"uid", t.uid},
            {"name", t.name},
            {"created_at", t.created_at},
            {"expires_at", t.expires_at}};
  if (t.revoked_at) body["revoked_at"] = *t.revoked_at;
  return store::Record{.type = std::string(kTokenType),
                       .id = t.id,
                       .name = t.name,
                       .uid = t.uid,
                       .gid = 0,
                       .state = t.revoked_at ? kTokenRevoked : kTokenActive,
                       .key = hash,
                       .body = dump_json(body)};
}

Result<Token> token_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  try {
    Token t{.id = r.id,
            .uid = r.uid,
            .name = r.name,
            .created_at = body.at("created_at").get<int64_t>(),
            .expires_at = body.at("expires_at").get<int64_t>()};
    if (body.contains("revoked_at")) t.revoked_at = body["revoked_at"].get<int64_t>();
    return t;
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal, std::string("stored token is malformed: ") + e.what());
  }
}

}  // namespace

Result<void> LoginLimiter::check_one(Failures& failures, size_t limit, Clock::TimePoint now) {
  while (!failures.empty() && failures.front() + limits_.window <= now) failures.pop_front();
  if (failures.size() < limit) return {};
  auto wait =
      std::chrono::duration_cast<std::chrono::seconds>(failures.front() + limits_.window - now);
  int seconds = static_cast<int>(std::max<int64_t>(1, wait.count()));
  return fail(Error(ErrorCode::kResourceExhausted,
                    "too many failed logins; try again in " + std::to_string(seconds) + " s")
                  .with_retry_after(seconds));
}

Result<void> LoginLimiter::check(std::string_view user, std::string_view address) {
  std::lock_guard lock(mutex_);
  auto now = clock_.now();
  auto pair = by_pair_.find(pair_key(user, address));
  if (pair != by_pair_.end()) FAB_TRY(check_one(pair->second, limits_.per_user_and_address, now));
  auto addr = by_address_.find(address);
  if (addr != by_address_.end()) FAB_TRY(check_one(addr->second, limits_.per_address, now));
  auto by_user = by_user_.find(user);
  if (by_user != by_user_.end()) {
    Failures& failures = by_user->second;
    while (!failures.empty() && failures.front() + limits_.window <= now) failures.pop_front();
    if (failures.size() >= limits_.per_user_free) {
      size_t doublings = std::min<size_t>(failures.size() - limits_.per_user_free, 16);
      auto backoff = std::min<std::chrono::seconds>(std::chrono::seconds(int64_t{1} << doublings),
                                                    limits_.per_user_max_backoff);
      auto allowed_at = failures.back() + backoff;
      if (now < allowed_at) {
        auto wait = std::chrono::ceil<std::chrono::seconds>(allowed_at - now);
        int seconds = static_cast<int>(std::max<int64_t>(1, wait.count()));
        return fail(Error(ErrorCode::kResourceExhausted,
                          "too many failed logins for this user; try again in " +
                              std::to_string(seconds) + " s")
                        .with_retry_after(seconds));
      }
    }
  }
  return {};
}

void LoginLimiter::record_failure(std::string_view user, std::string_view address) {
  std::lock_guard lock(mutex_);
  auto now = clock_.now();
  by_pair_[pair_key(user, address)].push_back(now);
  auto it = by_address_.find(address);
  if (it == by_address_.end()) it = by_address_.emplace(std::string(address), Failures{}).first;
  it->second.push_back(now);
  auto user_it = by_user_.find(user);
  if (user_it == by_user_.end()) user_it = by_user_.emplace(std::string(user), Failures{}).first;
  user_it->second.push_back(now);
  // Bound memory: forget entries whose newest failure left the window.
  if (by_pair_.size() > 100000 || by_user_.size() > 100000) {
    std::erase_if(by_pair_,
                  [&](const auto& kv) { return kv.second.back() + limits_.window <= now; });
    std::erase_if(by_address_,
                  [&](const auto& kv) { return kv.second.back() + limits_.window <= now; });
    std::erase_if(by_user_,
                  [&](const auto& kv) { return kv.second.back() + limits_.window <= now; });
  }
}

void LoginLimiter::record_success(std::string_view user, std::string_view address) {
  std::lock_guard lock(mutex_);
  by_pair_.erase(pair_key(user, address));
  // The owner got in: a guesser's failures no longer slow the owner down.
  if (auto it = by_user_.find(user); it != by_user_.end()) by_user_.erase(it);
}

Json Token::to_api_json() const {
  Json j{{"id", id},
         {"uid", uid},
         {"name", name},
         {"created_at", format_time(created_at)},
         {"expires_at", format_time(expires_at)},
         {"revoked", revoked_at.has_value()}};
  if (revoked_at) j["revoked_at"] = format_time(*revoked_at);
  return j;
}

Result<IssuedToken> Sessions::login(std::string_view user, std::string_view password,
                                    std::string_view address, const TokenRequest& request) {
  FAB_TRY(validate_name(request.name));
  if (request.lifetime.count() <= 0 || request.lifetime > kMaxLifetime) {
    return fail(ErrorCode::kInvalidArgument, "must be between 1 and 31622400 seconds",
                "expires_in");
  }
  FAB_TRY(limiter_.check(user, address));
  auto found = identity_.find_user_by_name(user);
  if (!found && found.error().code() != ErrorCode::kNotFound) return fail(found.error());
  bool ok = found && crypto::verify_password(found->password_hash, password);
  if (!ok) {
    // Burn comparable time for unknown users so response timing does not reveal names.
    if (!found) {
      static const std::string dummy =
          crypto::hash_password(crypto::new_token_secret()).value_or("");
      (void)crypto::verify_password(dummy, password);
    }
    limiter_.record_failure(user, address);
    return fail(ErrorCode::kUnauthenticated, "wrong user name or password");
  }
  if (!found->enabled()) {
    return fail(ErrorCode::kUnauthenticated, "wrong user name or password");
  }
  limiter_.record_success(user, address);
  int64_t now = unix_seconds(clock_.now());
  IssuedToken issued;
  issued.secret = crypto::new_token_secret();
  issued.token.uid = found->header.id;
  issued.token.name = request.name;
  issued.token.created_at = now;
  issued.token.expires_at = now + request.lifetime.count();
  std::string hash = crypto::sha256_hex(issued.secret);
  FAB_TRY(store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(issued.token.id, tx.allocate_id(kTokenType));
    return tx.insert(token_record(issued.token, hash));
  }));
  return issued;
}

Result<int> Sessions::prune(std::chrono::seconds keep) {
  int64_t cutoff = unix_seconds(clock_.now()) - keep.count();
  int pruned = 0;
  FAB_TRY(store_.write([&](store::Transaction& tx) -> Result<void> {
    std::vector<int64_t> gone;
    FAB_TRY(store::for_each(tx, kTokenType, [&](const store::Record& r) -> Result<void> {
      FAB_ASSIGN_OR_RETURN(Token t, token_from_record(r));
      int64_t ended = t.revoked_at ? std::min(*t.revoked_at, t.expires_at) : t.expires_at;
      if (ended < cutoff) gone.push_back(t.id);
      return {};
    }));
    for (int64_t id : gone) FAB_TRY(tx.remove(kTokenType, id));
    pruned = static_cast<int>(gone.size());
    return {};
  }));
  return pruned;
}

Result<Sessions::CachedCaller> Sessions::load_caller(const std::string& hash) {
  CachedCaller entry{.generation = store_.write_generation()};
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    auto record = tx.get_by_key(kTokenType, hash);
    if (!record) {
      if (record.error().code() == ErrorCode::kNotFound) {
        return fail(ErrorCode::kUnauthenticated, "invalid token");
      }
      return fail(record.error());
    }
    FAB_ASSIGN_OR_RETURN(Token token, token_from_record(*record));
    if (token.revoked_at) return fail(ErrorCode::kUnauthenticated, "token has been revoked");
    FAB_ASSIGN_OR_RETURN(entry.caller, identity_.caller_in(tx, token.uid, ""));
    entry.caller.token_id = token.id;
    entry.expires_at = token.expires_at;
    return {};
  }));
  return entry;
}

Result<Caller> Sessions::authenticate(std::string_view secret, std::string address) {
  if (secret.size() != 47 || secret.substr(0, 4) != "fab_") {
    return fail(ErrorCode::kUnauthenticated, "invalid token");
  }
  std::string hash = crypto::sha256_hex(secret);
  std::optional<CachedCaller> entry;
  {
    std::lock_guard lock(cache_mutex_);
    auto it = cache_.find(hash);
    if (it != cache_.end() && it->second.generation == store_.write_generation()) {
      entry = it->second;
    }
  }
  if (!entry) {
    FAB_ASSIGN_OR_RETURN(entry, load_caller(hash));
    std::lock_guard lock(cache_mutex_);
    if (cache_.size() >= 10000) cache_.clear();
    cache_[hash] = *entry;
  }
  if (entry->expires_at <= unix_seconds(clock_.now())) {
    return fail(ErrorCode::kUnauthenticated, "token has expired");
  }
  entry->caller.address = std::move(address);
  return std::move(entry->caller);
}

Result<std::vector<Token>> Sessions::list(const Caller& caller, std::optional<int64_t> uid) {
  int64_t owner = uid.value_or(caller.uid);
  if (owner != caller.uid && !caller.is_superuser()) {
    return fail(ErrorCode::kNotFound, "user " + std::to_string(owner) + " not found");
  }
  return store_.read_value<std::vector<Token>>(
      [&](store::Transaction& tx) -> Result<std::vector<Token>> {
        std::vector<Token> out;
        int64_t after = -1;
        while (true) {
          FAB_ASSIGN_OR_RETURN(
              auto batch, tx.list(kTokenType, {.after_id = after, .limit = 1000, .uid = owner}));
          for (const auto& r : batch) {
            FAB_ASSIGN_OR_RETURN(Token t, token_from_record(r));
            out.push_back(std::move(t));
          }
          if (batch.size() < 1000) return out;
          after = batch.back().id;
        }
      });
}

Result<Token> Sessions::revoke(const Caller& caller, int64_t id) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Token>([&](store::Transaction& tx) -> Result<Token> {
    std::string noun = "token " + std::to_string(id);
    auto record = tx.get(kTokenType, id);
    if (!record) return fail(record.error().code(), noun + " not found");
    if (record->uid != caller.uid && !caller.is_superuser()) {
      return fail(ErrorCode::kNotFound, noun + " not found");
    }
    FAB_ASSIGN_OR_RETURN(Token token, token_from_record(*record));
    if (!token.revoked_at) {
      token.revoked_at = now;
      store::Record updated = token_record(token, *record->key);
      updated.version = record->version;
      FAB_TRY(tx.update(updated));
    }
    return token;
  });
}

}  // namespace fabrica::auth
