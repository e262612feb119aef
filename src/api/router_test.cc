#include "api/router.h"

#include <gtest/gtest.h>

namespace fabrica::api {
namespace {

Handler named(std::string name) {
  return [name](const Context&) -> Result<HttpResponse> { return HttpResponse{.body = name}; };
}

TEST(RouterTest, MatchesLiteralsBeforePlaceholdersInOrderAndCapturesParams) {
  Router router;
  router.add("GET", "/api/v1/users", AuthMode::kBearer, named("list"));
  router.add("GET", "/api/v1/users/{id}", AuthMode::kBearer, named("show"));
  router.add("DELETE", "/api/v1/users/{id}/groups/{gid}", AuthMode::kBearer, named("delgroup"));
  auto m = router.match("DELETE", "/api/v1/users/7/groups/100");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->route->pattern, "/api/v1/users/{id}/groups/{gid}");
  EXPECT_EQ(m->params, (std::vector<std::string>{"7", "100"}));
  EXPECT_EQ(router.match("GET", "/api/v1/users/")->route->pattern, "/api/v1/users");
  auto wrong_method = router.match("PUT", "/api/v1/users/7");
  EXPECT_EQ(wrong_method.error().code(), ErrorCode::kMethodNotAllowed);
  EXPECT_NE(wrong_method.error().message().find("GET"), std::string::npos);
  EXPECT_EQ(router.match("GET", "/api/v2/users").error().code(), ErrorCode::kNotFound);
}

TEST(RouterTest, ValidatesIdsAndQueryParameters) {
  HttpRequest request{.query = {{"limit", "10"}, {"bogus", "1"}}};
  Context ctx{.request = request, .params = {"12", "-1", "abc", "99999999999999999999"}};
  EXPECT_EQ(*ctx.id_param(0), 12);
  for (size_t i = 1; i < 4; ++i) {
    auto bad = ctx.id_param(i);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().field(), "id");
  }
  EXPECT_EQ(ctx.allow_query({"limit"}).error().field(), "bogus");
  EXPECT_TRUE(ctx.allow_query({"limit", "bogus"}));
  EXPECT_EQ(**ctx.query_int("limit", 1, 1000), 10);
  EXPECT_FALSE(ctx.query_int("limit", 1, 5));
}

}  // namespace
}  // namespace fabrica::api
