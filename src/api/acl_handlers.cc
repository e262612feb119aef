#include <charconv>

#include "api/api.h"

namespace fabrica::api {
namespace {

Result<uint64_t> parse_hex(const std::string& text, std::string_view field) {
  std::string_view digits = text;
  if (digits.starts_with("0x") || digits.starts_with("0X")) digits.remove_prefix(2);
  uint64_t value = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, 16);
  if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size()) {
    return fail(ErrorCode::kInvalidArgument, "must be a hexadecimal number", std::string(field));
  }
  return value;
}

// Either {"rule": "@1 VM/* USE"} or the numeric form {"user","resource","rights"[,"zone"]}.
Result<auth::AclRule> read_rule(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  FAB_ASSIGN_OR_RETURN(auto text, body.optional_string("rule"));
  FAB_ASSIGN_OR_RETURN(auto user, body.optional_string("user"));
  FAB_ASSIGN_OR_RETURN(auto resource, body.optional_string("resource"));
  FAB_ASSIGN_OR_RETURN(auto rights, body.optional_string("rights"));
  FAB_ASSIGN_OR_RETURN(auto zone, body.optional_string("zone"));
  FAB_TRY(body.finish());
  if (text) {
    if (user || resource || rights || zone) {
      return fail(ErrorCode::kInvalidArgument, "give either rule or user/resource/rights", "rule");
    }
    return auth::AclRule::parse(*text);
  }
  if (!user || !resource || !rights) {
    return fail(ErrorCode::kInvalidArgument, "is required (or give user, resource and rights)",
                "rule");
  }
  FAB_ASSIGN_OR_RETURN(uint64_t u, parse_hex(*user, "user"));
  FAB_ASSIGN_OR_RETURN(uint64_t r, parse_hex(*resource, "resource"));
  FAB_ASSIGN_OR_RETURN(uint64_t p, parse_hex(*rights, "rights"));
  uint64_t z = auth::kAclIndividual | auth::kLocalZone;
  if (zone) {
    FAB_ASSIGN_OR_RETURN(z, parse_hex(*zone, "zone"));
  }
  return auth::AclRule::from_numbers(u, r, p, z);
}

}  // namespace

void add_acl_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/acl", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({}));
               FAB_ASSIGN_OR_RETURN(auto rules, s.authorizer.list_rules(ctx.who()));
               Json items = Json::array();
               for (const auto& r : rules) items.push_back(r.to_json());
               return json_response(200, Json{{"items", items}, {"next_cursor", nullptr}});
             });
  router.add("POST", "/api/v1/acl", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(s.authorizer.require_superuser(ctx.who(), "manage ACL rules"));
               FAB_ASSIGN_OR_RETURN(auto rule, read_rule(ctx));
               FAB_ASSIGN_OR_RETURN(rule, s.authorizer.create_rule(ctx.who(), rule));
               return json_response(201, rule.to_json());
             });
  router.add("GET", "/api/v1/acl/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto rule, s.authorizer.get_rule(ctx.who(), id));
               return json_response(200, rule.to_json());
             });
  router.add("DELETE", "/api/v1/acl/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.authorizer.delete_rule(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
}

}  // namespace fabrica::api
