// The channel of fabrica-gateway: it pulls what to route (endpoints and API-key hashes) and
// pushes what it metered (usage records). Administrators' credentials only.
#include "api/api.h"
#include "crypto/crypto.h"

namespace fabrica::api {
namespace {

Json key_json(const auth::ApiKey& k) {
  return Json{{"id", k.header.id},     {"gid", k.header.gid},       {"uid", k.header.uid},
              {"hash", k.secret_hash}, {"endpoints", k.endpoints},  {"rpm", k.rpm},
              {"tpm", k.tpm},          {"expires_at", k.expires_at}};
}

Result<HttpResponse> snapshot(Services& s, const Context& ctx) {
  FAB_TRY(s.authorizer.require_superuser(ctx.who(), "read the gateway snapshot"));
  FAB_TRY(ctx.allow_query({}));
  FAB_ASSIGN_OR_RETURN(auto routes, s.endpoints.routes());
  FAB_ASSIGN_OR_RETURN(auto keys, s.apikeys.active_keys());
  Json body{{"endpoints", Json::array()}, {"keys", Json::array()}};
  for (const auto& r : routes) body["endpoints"].push_back(r.to_json());
  for (const auto& k : keys) body["keys"].push_back(key_json(k));
  std::string text = dump_json(body);
  // Keys expire by the clock, so the snapshot is a function of the content alone: its hash.
  std::string etag = "\"" + crypto::sha256_hex(text).substr(0, 32) + "\"";
  if (ctx.request.if_none_match == etag) {
    return HttpResponse{.status = 304, .content_type = "", .headers = {{"ETag", etag}}};
  }
  return HttpResponse{.status = 200, .body = std::move(text), .headers = {{"ETag", etag}}};
}

Result<HttpResponse> ingest(Services& s, const Context& ctx) {
  FAB_TRY(s.authorizer.require_superuser(ctx.who(), "record gateway usage"));
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  FAB_ASSIGN_OR_RETURN(auto records, body.optional_array("records"));
  FAB_TRY(body.finish());
  if (!records) return fail(ErrorCode::kInvalidArgument, "is required", "records");
  if (records->empty() || records->size() > usage::Usage::kMaxBatch) {
    return fail(ErrorCode::kInvalidArgument, "must hold 1 to 1000 records", "records");
  }
  std::vector<usage::UsageRecord> batch;
  batch.reserve(records->size());
  for (size_t i = 0; i < records->size(); ++i) {
    FAB_ASSIGN_OR_RETURN(auto r, usage::UsageRecord::from_json(
                                     (*records)[i], "records[" + std::to_string(i) + "]."));
    batch.push_back(std::move(r));
  }
  FAB_ASSIGN_OR_RETURN(auto result, s.usage.ingest(ctx.who(), batch));
  return json_response(200, Json{{"accepted", result.accepted}, {"duplicates", result.duplicates}});
}

}  // namespace

void add_gateway_routes(Router& router, Services& s) {
  router.add(
      "GET", "/api/v1/gateway/snapshot", AuthMode::kBearer,
      [&s](const Context& ctx) { return snapshot(s, ctx); }, Audit::kNever);
  router.add(
      "POST", "/api/v1/gateway/usage", AuthMode::kBearer,
      [&s](const Context& ctx) { return ingest(s, ctx); }, Audit::kNever);
}

}  // namespace fabrica::api
