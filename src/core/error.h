#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <utility>

namespace fabrica {

// The one vocabulary of failure used everywhere. Each code keeps its retry meaning:
// kUnavailable may be retried as is, kAborted by redoing the read-modify-write,
// kFailedPrecondition only after the state changes.
enum class ErrorCode {
  kInvalidArgument,
  kUnauthenticated,
  kPermissionDenied,
  kNotFound,
  kMethodNotAllowed,
  kAlreadyExists,
  kAborted,
  kFailedPrecondition,
  kPayloadTooLarge,
  kResourceExhausted,
  kInternal,
  kUnavailable,
  kDeadlineExceeded,
  kQuotaExceeded,  // 403: a quota refuses the request (429 stays for rate limits).
};

// A failure for a person to read: a code, a message, and optionally the input field at fault.
class Error {
 public:
  Error(ErrorCode code, std::string message, std::string field = {})
      : code_(code), message_(std::move(message)), field_(std::move(field)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  const std::string& field() const { return field_; }

  // Returns a copy whose message is prefixed with `context: `, for errors crossing a layer.
  Error with_context(std::string_view context) const;

  // For kResourceExhausted and kUnavailable: when the caller may try again.
  std::optional<int> retry_after_seconds() const { return retry_after_; }
  Error with_retry_after(int seconds) && {
    retry_after_ = seconds;
    return std::move(*this);
  }

 private:
  ErrorCode code_;
  std::string message_;
  std::string field_;
  std::optional<int> retry_after_;
};

// Stable upper-snake name of a code ("NOT_FOUND"), as sent in API error bodies.
std::string_view error_code_name(ErrorCode code);

// The code whose name is `name`; kInternal for names this build does not know.
ErrorCode error_code_from_name(std::string_view name);

// The HTTP status for a code. This is the only place the mapping lives.
int http_status(ErrorCode code);

template <typename T>
using Result = tl::expected<T, Error>;

// Builds the failing side of a Result: `return fail(ErrorCode::kNotFound, "user 7 not found");`
inline tl::unexpected<Error> fail(ErrorCode code, std::string message, std::string field = {}) {
  return tl::unexpected<Error>(Error(code, std::move(message), std::move(field)));
}
inline tl::unexpected<Error> fail(Error error) { return tl::unexpected<Error>(std::move(error)); }

}  // namespace fabrica

#define FAB_CONCAT_INNER(a, b) a##b
#define FAB_CONCAT(a, b) FAB_CONCAT_INNER(a, b)

// Returns the error of a failed Result from the enclosing function.
#define FAB_TRY(expr)                                                                 \
  do {                                                                                \
    auto&& fab_try_result_ = (expr);                                                  \
    if (!fab_try_result_) return ::fabrica::fail(std::move(fab_try_result_).error()); \
  } while (0)

// `FAB_ASSIGN_OR_RETURN(auto user, load_user(id));`
#define FAB_ASSIGN_OR_RETURN(lhs, expr) \
  FAB_ASSIGN_OR_RETURN_IMPL(FAB_CONCAT(fab_result_, __LINE__), lhs, expr)
#define FAB_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)           \
  auto tmp = (expr);                                        \
  if (!tmp) return ::fabrica::fail(std::move(tmp).error()); \
  lhs = std::move(*tmp)

// Coroutine forms.
#define FAB_CO_TRY(expr)                                                                 \
  do {                                                                                   \
    auto&& fab_try_result_ = (expr);                                                     \
    if (!fab_try_result_) co_return ::fabrica::fail(std::move(fab_try_result_).error()); \
  } while (0)
#define FAB_CO_ASSIGN_OR_RETURN(lhs, expr) \
  FAB_CO_ASSIGN_OR_RETURN_IMPL(FAB_CONCAT(fab_result_, __LINE__), lhs, expr)
#define FAB_CO_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)           \
  auto tmp = (expr);                                           \
  if (!tmp) co_return ::fabrica::fail(std::move(tmp).error()); \
  lhs = std::move(*tmp)

// Fatal invariant check, always on. Never for external input.
#define FAB_CHECK(cond)                                              \
  do {                                                               \
    if (!(cond)) ::fabrica::check_failed(#cond, __FILE__, __LINE__); \
  } while (0)

namespace fabrica {
[[noreturn]] void check_failed(const char* condition, const char* file, int line);
}
