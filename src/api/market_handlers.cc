#include "api/api.h"

namespace fabrica::api {
namespace {

Result<std::optional<std::vector<std::string>>> string_list(JsonObjectReader& body,
                                                            std::string_view key) {
  FAB_ASSIGN_OR_RETURN(auto array, body.optional_array(key));
  if (!array) return std::optional<std::vector<std::string>>();
  std::vector<std::string> out;
  for (const Json& item : *array) {
    if (!item.is_string()) {
      return fail(ErrorCode::kInvalidArgument, "must be a list of strings", std::string(key));
    }
    out.push_back(item.get<std::string>());
  }
  return std::optional<std::vector<std::string>>(std::move(out));
}

Result<market::ImportRequest> read_import(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  market::ImportRequest r;
  FAB_ASSIGN_OR_RETURN(r.source, body.required_string("source"));
  FAB_ASSIGN_OR_RETURN(r.name, body.optional_string("name"));
  FAB_ASSIGN_OR_RETURN(r.gid, body.optional_int("gid"));
  FAB_ASSIGN_OR_RETURN(auto datastore, body.optional_int("datastore_id"));
  FAB_ASSIGN_OR_RETURN(r.marketplace_id, body.optional_int("marketplace_id"));
  FAB_ASSIGN_OR_RETURN(r.include, string_list(body, "include"));
  FAB_ASSIGN_OR_RETURN(auto exclude, string_list(body, "exclude"));
  FAB_ASSIGN_OR_RETURN(r.token, body.optional_string("token"));
  FAB_ASSIGN_OR_RETURN(auto description, body.optional_string("description"));
  FAB_TRY(body.finish());
  if (datastore) r.datastore_id = *datastore;
  r.exclude = exclude.value_or(std::vector<std::string>{});
  r.description = description.value_or("");
  return r;
}

void add_marketplace_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/marketplaces", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.marketplaces.list(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/marketplaces", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               market::NewMarketplace m;
               FAB_ASSIGN_OR_RETURN(m.name, body.required_string("name"));
               FAB_ASSIGN_OR_RETURN(auto kind, body.optional_string("kind"));
               FAB_ASSIGN_OR_RETURN(m.url, body.required_string("url"));
               FAB_ASSIGN_OR_RETURN(auto description, body.optional_string("description"));
               FAB_ASSIGN_OR_RETURN(auto is_public, body.optional_bool("public"));
               FAB_TRY(body.finish());
               m.is_public = is_public.value_or(false);
               if (kind && *kind != "huggingface") {
                 return fail(ErrorCode::kInvalidArgument, "must be huggingface", "kind");
               }
               m.description = description.value_or("");
               FAB_ASSIGN_OR_RETURN(auto created, s.marketplaces.create(ctx.who(), m));
               return json_response(201, created.to_api_json());
             });
  router.add("GET", "/api/v1/marketplaces/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto m, s.marketplaces.get(ctx.who(), id));
               return json_response(200, m.to_api_json());
             });
  router.add("PUT", "/api/v1/marketplaces/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               market::MarketplaceChange change;
               FAB_ASSIGN_OR_RETURN(change.url, body.optional_string("url"));
               FAB_ASSIGN_OR_RETURN(change.description, body.optional_string("description"));
               FAB_ASSIGN_OR_RETURN(change.enabled, body.optional_bool("enabled"));
               FAB_ASSIGN_OR_RETURN(change.is_public, body.optional_bool("public"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(auto m, s.marketplaces.update(ctx.who(), id, change));
               return json_response(200, m.to_api_json());
             });
  router.add("DELETE", "/api/v1/marketplaces/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.marketplaces.remove(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
}

}  // namespace

void add_market_routes(Router& router, Services& s) {
  add_marketplace_routes(router, s);
  router.add("GET", "/api/v1/models", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name", "gid"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.models.list(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/models", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_import(ctx));
               FAB_ASSIGN_OR_RETURN(auto image, s.models.import(ctx.who(), request));
               return json_response(201, image.to_api_json());
             });
  router.add("GET", "/api/v1/models/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto image, s.models.get(ctx.who(), id));
               return json_response(200, image.to_api_json());
             });
  router.add("DELETE", "/api/v1/models/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.models.remove(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
}

}  // namespace fabrica::api
