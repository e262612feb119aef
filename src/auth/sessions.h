#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "auth/identity.h"

namespace fabrica::auth {

// Counts failed logins per (user, address), per address and per user over a sliding window
// and refuses further attempts with kResourceExhausted (with retry-after) past the limits.
// A user whose failures come from many addresses is not locked out: past `per_user_free`
// failures each next attempt waits twice as long after the last failure (1 s, 2 s, ... up
// to `per_user_max_backoff`), so the owner can still log in while a guesser crawls.
// Thread-safe.
class LoginLimiter {
 public:
  struct Limits {
    std::chrono::seconds window{300};
    size_t per_user_and_address = 5;
    size_t per_address = 30;
    size_t per_user_free = 10;
    std::chrono::seconds per_user_max_backoff{60};
  };
  LoginLimiter(const Clock& clock, Limits limits) : clock_(clock), limits_(limits) {}
  explicit LoginLimiter(const Clock& clock) : LoginLimiter(clock, Limits{}) {}

  Result<void> check(std::string_view user, std::string_view address);
  void record_failure(std::string_view user, std::string_view address);
  void record_success(std::string_view user, std::string_view address);

 private:
  using Failures = std::deque<Clock::TimePoint>;
  Result<void> check_one(Failures& failures, size_t limit, Clock::TimePoint now);

  const Clock& clock_;
  Limits limits_;
  std::mutex mutex_;
  std::map<std::string, Failures, std::less<>> by_pair_;
  std::map<std::string, Failures, std::less<>> by_address_;
  std::map<std::string, Failures, std::less<>> by_user_;
};

struct Token {
  int64_t id = -1;
  int64_t uid = -1;
  std::string name;
  int64_t created_at = 0;
  int64_t expires_at = 0;
  std::optional<int64_t> revoked_at;
  Json to_api_json() const;
};

struct IssuedToken {
  Token token;
  std::string secret;  // Shown once; only its SHA-256 is stored.
};

struct TokenRequest {
  std::string name = "token";
  std::chrono::seconds lifetime{std::chrono::hours(24 * 30)};
};

// Bearer tokens: issue on password login, authenticate, list, revoke. Thread-safe.
// Authenticated callers are cached per token hash and tagged with the store's write
// generation: any committed write (a revocation, a disabled user, a group change) retires
// every entry, so the cache never answers with stale identity.
class Sessions {
 public:
  static constexpr std::chrono::seconds kMaxLifetime{std::chrono::hours(24 * 366)};

  Sessions(store::Store& store, Identity& identity, const Clock& clock, LoginLimiter& limiter)
      : store_(store), identity_(identity), clock_(clock), limiter_(limiter) {}

  // Verifies the password and issues a token. kUnauthenticated for a wrong user or password
  // or a disabled user (one message for all, so names cannot be probed); kResourceExhausted
  // after too many failures; kInvalidArgument for a bad request.
  Result<IssuedToken> login(std::string_view user, std::string_view password,
                            std::string_view address, const TokenRequest& request);
  // The caller a bearer secret stands for. kUnauthenticated when unknown, expired, revoked
  // or its user disabled.
  Result<Caller> authenticate(std::string_view secret, std::string address);
  // Tokens of user `uid` (the caller's own unless the caller is the superuser).
  Result<std::vector<Token>> list(const Caller& caller, std::optional<int64_t> uid);
  // Revokes one token. kNotFound for another user's token unless superuser.
  Result<Token> revoke(const Caller& caller, int64_t id);
  // Deletes tokens that expired or were revoked more than `keep` ago (they stay listed that
  // long, for whoever looks at what was revoked). Returns how many went.
  Result<int> prune(std::chrono::seconds keep);

 private:
  struct CachedCaller {
    Caller caller;
    int64_t expires_at = 0;
    uint64_t generation = 0;
  };
  Result<CachedCaller> load_caller(const std::string& hash);

  store::Store& store_;
  Identity& identity_;
  const Clock& clock_;
  LoginLimiter& limiter_;
  std::mutex cache_mutex_;
  std::unordered_map<std::string, CachedCaller> cache_;
};

inline constexpr std::string_view kTokenType = "token";
inline constexpr int kTokenActive = 0;
inline constexpr int kTokenRevoked = 1;

}  // namespace fabrica::auth
