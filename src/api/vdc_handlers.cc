#include "api/api.h"

namespace fabrica::api {
namespace {

// A VDC with the ACL rules it owns spelled out, so `vdc show` says exactly what it grants.
Result<HttpResponse> vdc_response(Services& s, int status, const auth::Vdc& vdc) {
  Json out = vdc.to_api_json();
  FAB_ASSIGN_OR_RETURN(auto rules, s.authorizer.rules());
  Json acl = Json::array();
  for (const auto& r : *rules) {
    if (std::find(vdc.rules.begin(), vdc.rules.end(), r.id) != vdc.rules.end()) {
      acl.push_back(r.to_json());
    }
  }
  out["acl"] = std::move(acl);
  return json_response(status, out);
}

Result<auth::VdcResource> read_resource(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  auth::VdcResource r;
  FAB_ASSIGN_OR_RETURN(r.kind, body.required_string("kind"));
  FAB_ASSIGN_OR_RETURN(r.id, body.required_int("id"));
  FAB_TRY(body.finish());
  return r;
}

}  // namespace

void add_vdc_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/vdcs", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({}));
               FAB_ASSIGN_OR_RETURN(auto vdcs, s.vdcs.list(ctx.who()));
               Json items = Json::array();
               for (const auto& v : vdcs) items.push_back(v.to_api_json());
               return json_response(200, Json{{"items", items}, {"next_cursor", nullptr}});
             });
  router.add("POST", "/api/v1/vdcs", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(std::string name, body.required_string("name"));
               FAB_ASSIGN_OR_RETURN(auto attributes, body.optional_object("template"));
               FAB_TRY(body.finish());
               AttributeTree attrs;
               if (attributes) {
                 FAB_ASSIGN_OR_RETURN(attrs, AttributeTree::from_json(*attributes));
               }
               FAB_ASSIGN_OR_RETURN(auto vdc, s.vdcs.create(ctx.who(), name, attrs));
               return vdc_response(s, 201, vdc);
             });
  router.add("GET", "/api/v1/vdcs/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto vdc, s.vdcs.get(ctx.who(), id));
               return vdc_response(s, 200, vdc);
             });
  router.add("DELETE", "/api/v1/vdcs/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.vdcs.remove(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add("POST", "/api/v1/vdcs/{id}/groups", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t gid, read_int_body(ctx, "gid"));
               FAB_ASSIGN_OR_RETURN(auto vdc, s.vdcs.add_group(ctx.who(), id, gid));
               return vdc_response(s, 200, vdc);
             });
  router.add("DELETE", "/api/v1/vdcs/{id}/groups/{gid}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t gid, ctx.id_param(1, "gid"));
               FAB_ASSIGN_OR_RETURN(auto vdc, s.vdcs.remove_group(ctx.who(), id, gid));
               return vdc_response(s, 200, vdc);
             });
  router.add("POST", "/api/v1/vdcs/{id}/resources", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto resource, read_resource(ctx));
               FAB_ASSIGN_OR_RETURN(auto vdc, s.vdcs.add_resource(ctx.who(), id, resource));
               return vdc_response(s, 200, vdc);
             });
  router.add("DELETE", "/api/v1/vdcs/{id}/resources/{kind}/{rid}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(int64_t rid, ctx.id_param(2, "rid"));
               auth::VdcResource resource{ctx.params.at(1), rid};
               FAB_ASSIGN_OR_RETURN(auto vdc, s.vdcs.remove_resource(ctx.who(), id, resource));
               return vdc_response(s, 200, vdc);
             });
}

}  // namespace fabrica::api
