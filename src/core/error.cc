#include "core/error.h"

#include <cstdio>
#include <cstdlib>

namespace fabrica {

Error Error::with_context(std::string_view context) const {
  Error out(code_, std::string(context) + ": " + message_, field_);
  out.retry_after_ = retry_after_;
  return out;
}

std::string_view error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case ErrorCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    case ErrorCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case ErrorCode::kNotFound:
      return "NOT_FOUND";
    case ErrorCode::kMethodNotAllowed:
      return "METHOD_NOT_ALLOWED";
    case ErrorCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case ErrorCode::kAborted:
      return "ABORTED";
    case ErrorCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case ErrorCode::kPayloadTooLarge:
      return "PAYLOAD_TOO_LARGE";
    case ErrorCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case ErrorCode::kInternal:
      return "INTERNAL";
    case ErrorCode::kUnavailable:
      return "UNAVAILABLE";
    case ErrorCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case ErrorCode::kQuotaExceeded:
      return "QUOTA_EXCEEDED";
  }
  return "INTERNAL";
}

ErrorCode error_code_from_name(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(ErrorCode::kQuotaExceeded); ++i) {
    auto code = static_cast<ErrorCode>(i);
    if (error_code_name(code) == name) return code;
  }
  return ErrorCode::kInternal;
}

int http_status(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kMethodNotAllowed:
      return 405;
    case ErrorCode::kAlreadyExists:
      return 409;
    case ErrorCode::kAborted:
      return 409;
    case ErrorCode::kFailedPrecondition:
      return 409;
    case ErrorCode::kPayloadTooLarge:
      return 413;
    case ErrorCode::kResourceExhausted:
      return 429;
    case ErrorCode::kInternal:
      return 500;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kDeadlineExceeded:
      return 504;
    case ErrorCode::kQuotaExceeded:
      return 403;
  }
  return 500;
}

void check_failed(const char* condition, const char* file, int line) {
  std::fprintf(stderr, "FAB_CHECK failed: %s at %s:%d\n", condition, file, line);
  std::abort();
}

}  // namespace fabrica
