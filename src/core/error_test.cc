#include "core/error.h"

#include <gtest/gtest.h>

namespace fabrica {
namespace {

TEST(ErrorTest, EveryCodeHasAStableNameAndStatus) {
  struct Case {
    ErrorCode code;
    std::string_view name;
    int status;
  };
  const Case cases[] = {
      {ErrorCode::kInvalidArgument, "INVALID_ARGUMENT", 400},
      {ErrorCode::kUnauthenticated, "UNAUTHENTICATED", 401},
      {ErrorCode::kPermissionDenied, "PERMISSION_DENIED", 403},
      {ErrorCode::kNotFound, "NOT_FOUND", 404},
      {ErrorCode::kMethodNotAllowed, "METHOD_NOT_ALLOWED", 405},
      {ErrorCode::kAlreadyExists, "ALREADY_EXISTS", 409},
      {ErrorCode::kAborted, "ABORTED", 409},
      {ErrorCode::kFailedPrecondition, "FAILED_PRECONDITION", 409},
      {ErrorCode::kPayloadTooLarge, "PAYLOAD_TOO_LARGE", 413},
      {ErrorCode::kResourceExhausted, "RESOURCE_EXHAUSTED", 429},
      {ErrorCode::kInternal, "INTERNAL", 500},
      {ErrorCode::kUnavailable, "UNAVAILABLE", 503},
      {ErrorCode::kDeadlineExceeded, "DEADLINE_EXCEEDED", 504},
      {ErrorCode::kQuotaExceeded, "QUOTA_EXCEEDED", 403},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(error_code_name(c.code), c.name);
    EXPECT_EQ(http_status(c.code), c.status) << c.name;
    EXPECT_EQ(error_code_from_name(c.name), c.code);
  }
}

Result<int> half(int x) {
  if (x % 2 != 0) return fail(ErrorCode::kInvalidArgument, "odd", "x");
  return x / 2;
}

Result<int> quarter(int x) {
  FAB_ASSIGN_OR_RETURN(int h, half(x));
  FAB_ASSIGN_OR_RETURN(int q, half(h));
  return q;
}

TEST(ErrorTest, MacrosPropagateTheFirstFailure) {
  EXPECT_EQ(*quarter(8), 2);
  auto r = quarter(6);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().field(), "x");
  EXPECT_EQ(r.error().with_context("user 7").message(), "user 7: odd");
}

}  // namespace
}  // namespace fabrica
