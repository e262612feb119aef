#include <charconv>

#include "api/api.h"

namespace fabrica::api {
namespace {

template <typename Enum>
Result<std::optional<Enum>> enum_field(
    JsonObjectReader& body, std::string_view key,
    std::initializer_list<std::pair<std::string_view, Enum>> names, std::string_view expected) {
  FAB_ASSIGN_OR_RETURN(auto text, body.optional_string(key));
  if (!text) return std::optional<Enum>();
  for (const auto& [name, value] : names) {
    if (*text == name) return std::optional<Enum>(value);
  }
  return fail(ErrorCode::kInvalidArgument, "must be " + std::string(expected), std::string(key));
}

Result<storage::NewDatastore> read_datastore(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  storage::NewDatastore d;
  FAB_ASSIGN_OR_RETURN(d.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(
      auto kind, enum_field<storage::DatastoreKind>(body, "kind",
                                                    {{"image", storage::DatastoreKind::kImage},
                                                     {"system", storage::DatastoreKind::kSystem},
                                                     {"files", storage::DatastoreKind::kFiles}},
                                                    "image, system or files"));
  FAB_ASSIGN_OR_RETURN(auto driver, enum_field<storage::DatastoreDriver>(
                                        body, "driver",
                                        {{"shared", storage::DatastoreDriver::kShared},
                                         {"local", storage::DatastoreDriver::kLocal}},
                                        "shared or local"));
  FAB_ASSIGN_OR_RETURN(d.path, body.optional_string("path"));
  FAB_ASSIGN_OR_RETURN(auto clusters, body.optional_array("clusters"));
  FAB_ASSIGN_OR_RETURN(auto limit, body.optional_int("limit_mb"));
  FAB_TRY(body.finish());
  if (kind) d.kind = *kind;
  if (driver) d.driver = *driver;
  if (clusters) {
    d.clusters.clear();
    for (const Json& c : *clusters) {
      if (!c.is_number_integer() || c.get<int64_t>() < 0) {
        return fail(ErrorCode::kInvalidArgument, "must be cluster ids", "clusters");
      }
      d.clusters.push_back(c.get<int64_t>());
    }
  }
  if (limit) d.limit_mb = *limit;
  return d;
}

Result<storage::NewImage> read_image(const Context& ctx) {
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
  storage::NewImage n;
  FAB_ASSIGN_OR_RETURN(n.name, body.required_string("name"));
  FAB_ASSIGN_OR_RETURN(n.gid, body.optional_int("gid"));
  FAB_ASSIGN_OR_RETURN(auto datastore, body.optional_int("datastore_id"));
  FAB_ASSIGN_OR_RETURN(auto type, body.optional_string("type"));
  FAB_ASSIGN_OR_RETURN(n.format, body.optional_string("format"));
  FAB_ASSIGN_OR_RETURN(auto persistent, body.optional_bool("persistent"));
  FAB_ASSIGN_OR_RETURN(auto description, body.optional_string("description"));
  FAB_ASSIGN_OR_RETURN(auto upload, body.optional_object("upload"));
  FAB_ASSIGN_OR_RETURN(n.from_path, body.optional_string("path"));
  FAB_ASSIGN_OR_RETURN(n.blank_mb, body.optional_int("blank_mb"));
  FAB_TRY(body.finish());
  if (datastore) n.datastore_id = *datastore;
  if (type) {
    auto t = storage::image_type_from_name(*type);
    if (t == storage::ImageType::kModel) {
      return fail(ErrorCode::kInvalidArgument,
                  "MODEL images are imported: POST /api/v1/models (fabrica model import)", "type");
    }
    if (!t) {
      return fail(ErrorCode::kInvalidArgument, "must be OS, CDROM, DATABLOCK, KERNEL or RAMDISK",
                  "type");
    }
    n.type = *t;
    // Kernels and ramdisks live in the files datastore unless told otherwise.
    if (!datastore && (*t == storage::ImageType::kKernel || *t == storage::ImageType::kRamdisk)) {
      n.datastore_id = 2;
    }
  }
  n.persistent = persistent.value_or(false);
  n.description = description.value_or("");
  if (upload) {
    FAB_ASSIGN_OR_RETURN(auto u, JsonObjectReader::wrap(*upload, "upload."));
    FAB_ASSIGN_OR_RETURN(int64_t size, u.required_int("size"));
    FAB_ASSIGN_OR_RETURN(n.upload_sha256, u.optional_string("sha256"));
    FAB_TRY(u.finish());
    n.upload_size = size;
  }
  return n;
}

// "bytes FIRST-LAST/TOTAL" (TOTAL may be "*").
struct ContentRange {
  int64_t first = 0;
  int64_t last = 0;
  std::optional<int64_t> total;
};

Result<ContentRange> parse_content_range(std::string_view text) {
  auto bad = [] {
    return fail(ErrorCode::kInvalidArgument, "must be \"bytes FIRST-LAST/TOTAL\"", "Content-Range");
  };
  constexpr std::string_view kUnit = "bytes ";
  if (text.substr(0, kUnit.size()) != kUnit) return bad();
  text.remove_prefix(kUnit.size());
  auto number = [&](std::string_view& in, int64_t& out) {
    auto [end, ec] = std::from_chars(in.data(), in.data() + in.size(), out);
    if (ec != std::errc() || end == in.data() || out < 0) return false;
    in.remove_prefix(static_cast<size_t>(end - in.data()));
    return true;
  };
  ContentRange r;
  if (!number(text, r.first) || text.empty() || text.front() != '-') return bad();
  text.remove_prefix(1);
  if (!number(text, r.last) || text.empty() || text.front() != '/' || r.last < r.first) {
    return bad();
  }
  text.remove_prefix(1);
  if (text != "*") {
    int64_t total = 0;
    if (!number(text, total) || !text.empty() || r.last >= total) return bad();
    r.total = total;
  }
  return r;
}

// One PUT's body into an image upload.
class UploadSink : public BodySink {
 public:
  UploadSink(std::unique_ptr<storage::Storage::Upload> upload, std::string request_id)
      : upload_(std::move(upload)), request_id_(std::move(request_id)) {}
  Result<void> write(std::string_view piece) override { return upload_->write(piece); }
  HttpResponse finish(bool complete) override {
    auto image = upload_->finish(complete);
    if (!image) return error_response(image.error(), request_id_);
    return json_response(200, image->to_api_json());
  }

 private:
  std::unique_ptr<storage::Storage::Upload> upload_;
  std::string request_id_;
};

void add_datastore_routes(Router& router, Services& s) {
  router.add("GET", "/api/v1/datastores", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({}));
               FAB_ASSIGN_OR_RETURN(auto all, s.storage.list_datastores(ctx.who()));
               Json items = Json::array();
               for (const auto& d : all) items.push_back(d.to_api_json());
               return json_response(200, Json{{"items", items}, {"next_cursor", nullptr}});
             });
  router.add("POST", "/api/v1/datastores", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_datastore(ctx));
               FAB_ASSIGN_OR_RETURN(auto ds, s.storage.create_datastore(ctx.who(), request));
               return json_response(201, ds.to_api_json());
             });
  router.add("GET", "/api/v1/datastores/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto ds, s.storage.get_datastore(ctx.who(), id));
               return json_response(200, ds.to_api_json());
             });
  router.add("DELETE", "/api/v1/datastores/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.storage.delete_datastore(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
}

}  // namespace

void add_storage_routes(Router& router, Services& s) {
  add_datastore_routes(router, s);
  router.add("GET", "/api/v1/images", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_TRY(ctx.allow_query({"limit", "cursor", "name", "gid"}));
               FAB_ASSIGN_OR_RETURN(auto options, list_options(ctx));
               FAB_ASSIGN_OR_RETURN(auto page, s.storage.list_images(ctx.who(), options));
               return page_response(page);
             });
  router.add("POST", "/api/v1/images", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(auto request, read_image(ctx));
               FAB_ASSIGN_OR_RETURN(auto image, s.storage.create_image(ctx.who(), request));
               return json_response(201, image.to_api_json());
             });
  router.add("GET", "/api/v1/images/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto image, s.storage.get_image(ctx.who(), id));
               return json_response(200, image.to_api_json());
             });
  router.add("DELETE", "/api/v1/images/{id}", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_TRY(s.storage.delete_image(ctx.who(), id));
               return HttpResponse{.status = 204, .content_type = ""};
             });
  router.add_stream(
      "PUT", "/api/v1/images/{id}/upload", AuthMode::kBearer,
      [&s](const Context& ctx) -> Result<std::unique_ptr<BodySink>> {
        FAB_TRY(ctx.allow_query({}));
        FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
        int64_t offset = 0;
        std::optional<int64_t> length, total;
        if (ctx.request.content_length) length = static_cast<int64_t>(*ctx.request.content_length);
        if (!ctx.request.content_range.empty()) {
          FAB_ASSIGN_OR_RETURN(auto range, parse_content_range(ctx.request.content_range));
          offset = range.first;
          total = range.total;
          if (length && *length != range.last - range.first + 1) {
            return fail(ErrorCode::kInvalidArgument,
                        "Content-Range covers " + std::to_string(range.last - range.first + 1) +
                            " bytes but Content-Length is " + std::to_string(*length),
                        "Content-Range");
          }
          length = range.last - range.first + 1;
        }
        FAB_ASSIGN_OR_RETURN(auto upload,
                             s.storage.begin_upload(ctx.who(), id, offset, length, total));
        return std::unique_ptr<BodySink>(
            std::make_unique<UploadSink>(std::move(upload), ctx.request.request_id));
      });
  router.add("POST", "/api/v1/images/{id}/clone", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(std::string name, body.required_string("name"));
               FAB_ASSIGN_OR_RETURN(auto datastore, body.optional_int("datastore_id"));
               FAB_TRY(body.finish());
               FAB_ASSIGN_OR_RETURN(auto image,
                                    s.storage.clone_image(ctx.who(), id, name, datastore));
               return json_response(201, image.to_api_json());
             });
  router.add("POST", "/api/v1/images/{id}/chmod", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(Permissions p, read_chmod_body(ctx));
               FAB_ASSIGN_OR_RETURN(auto image, s.storage.chmod_image(ctx.who(), id, p));
               return json_response(200, image.to_api_json());
             });
  router.add("POST", "/api/v1/images/{id}/persistent", AuthMode::kBearer,
             [&s](const Context& ctx) -> Result<HttpResponse> {
               FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
               FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(ctx.request.body));
               FAB_ASSIGN_OR_RETURN(auto persistent, body.optional_bool("persistent"));
               FAB_TRY(body.finish());
               if (!persistent) {
                 return fail(ErrorCode::kInvalidArgument, "is required", "persistent");
               }
               FAB_ASSIGN_OR_RETURN(auto image,
                                    s.storage.set_persistent(ctx.who(), id, *persistent));
               return json_response(200, image.to_api_json());
             });
  for (bool enable : {true, false}) {
    router.add("POST", enable ? "/api/v1/images/{id}/enable" : "/api/v1/images/{id}/disable",
               AuthMode::kBearer, [&s, enable](const Context& ctx) -> Result<HttpResponse> {
                 FAB_ASSIGN_OR_RETURN(int64_t id, ctx.id_param(0));
                 FAB_ASSIGN_OR_RETURN(auto image, s.storage.set_enabled(ctx.who(), id, enable));
                 return json_response(200, image.to_api_json());
               });
  }
}

}  // namespace fabrica::api
