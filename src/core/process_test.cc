#include "core/process.h"

#include <gtest/gtest.h>

namespace fabrica {
namespace {

TEST(ProcessTest, ReturnsTheOutputOfAProgramThatSucceeds) {
  auto out = run_process({"sh", "-c", "echo out; echo err >&2"});
  ASSERT_TRUE(out) << out.error().message();
  EXPECT_EQ(*out, "out\nerr\n");
  // Arguments reach the program as they are: no shell in between.
  EXPECT_EQ(*run_process({"printf", "%s|", "a b", "$HOME", "'q'"}), "a b|$HOME|'q'|");
}

TEST(ProcessTest, FailuresCarryTheExitStatusAndTheOutput) {
  auto failed = run_process({"sh", "-c", "echo why; exit 3"});
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code(), ErrorCode::kInternal);
  EXPECT_NE(failed.error().message().find("exited with 3: why"), std::string::npos)
      << failed.error().message();
  auto missing = run_process({"fabrica-no-such-program"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kUnavailable);
  EXPECT_FALSE(run_process({}));
}

}  // namespace
}  // namespace fabrica
