#include <algorithm>

#include "auth/restricted.h"
#include "storage/storage.h"

namespace fabrica::storage {
namespace {

constexpr Permissions kImagePermissions{0600};
constexpr std::array<std::pair<ImageType, std::string_view>, 6> kTypeNames = {{
    {ImageType::kOs, "OS"},
    {ImageType::kCdrom, "CDROM"},
    {ImageType::kDatablock, "DATABLOCK"},
    {ImageType::kKernel, "KERNEL"},
    {ImageType::kRamdisk, "RAMDISK"},
    {ImageType::kModel, "MODEL"},
}};

std::string image_noun(int64_t id) { return "image " + std::to_string(id); }

store::Record image_record(const Image& image) {
  Json body = image.to_api_json();
  if (!image.sealed_token.empty()) body["sealed_token"] = image.sealed_token;
  return store::Record{.type = std::string(kImageType),
                       .id = image.header.id,
                       .name = image.header.name,
                       .uid = image.header.uid,
                       .gid = image.header.gid,
                       .state = image.header.state,
                       .body = dump_json(body),
                       .version = image.version};
}

Result<Image> image_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Image image;
  FAB_ASSIGN_OR_RETURN(image.header, ObjectHeader::from_json(body));
  auto type = image_type_from_name(body.value("type", ""));
  if (!type || !body.contains("datastore_id") || !body.contains("path")) {
    return fail(ErrorCode::kInternal, "stored " + image_noun(r.id) + " is malformed");
  }
  image.type = *type;
  image.datastore_id = body["datastore_id"].get<int64_t>();
  image.format = body.value("format", "");
  image.persistent = body.value("persistent", false);
  image.description = body.value("description", "");
  image.path = body["path"].get<std::string>();
  image.size = body.value("size", int64_t{0});
  image.virtual_size = body.value("virtual_size", int64_t{0});
  image.sha256 = body.value("sha256", "");
  image.source = body.value("source", Json::object());
  image.progress = body.value("progress", Json());
  image.error = body.value("error", "");
  image.vms = body.value("vms", std::vector<int64_t>{});
  image.model = body.value("model", Json());
  image.sealed_token = body.value("sealed_token", "");
  image.version = r.version;
  return image;
}

bool is_disk(ImageType type) { return type == ImageType::kOs || type == ImageType::kDatablock; }

int64_t megabytes(int64_t bytes) { return (bytes + (1 << 20) - 1) >> 20; }

}  // namespace

std::string_view image_type_name(ImageType type) {
  for (const auto& [t, name] : kTypeNames) {
    if (t == type) return name;
  }
  return "UNKNOWN";
}

std::optional<ImageType> image_type_from_name(std::string_view name) {
  for (const auto& [t, n] : kTypeNames) {
    if (n == name) return t;
  }
  return std::nullopt;
}

std::string_view image_state_name(ImageState state) {
  switch (state) {
    case ImageState::kReady:
      return "READY";
    case ImageState::kUsed:
      return "USED";
    case ImageState::kDisabled:
      return "DISABLED";
    case ImageState::kLocked:
      return "LOCKED";
    case ImageState::kError:
      return "ERROR";
    case ImageState::kUsedPers:
      return "USED_PERS";
  }
  return "UNKNOWN";
}

Result<ImageState> image_next(ImageState state, ImageEvent event, bool persistent, int users) {
  auto refuse = [&](std::string why) -> Result<ImageState> {
    return fail(ErrorCode::kFailedPrecondition, std::move(why), "state");
  };
  std::string is = "the image is " + std::string(image_state_name(state));
  switch (event) {
    case ImageEvent::kDataReady:
      if (state == ImageState::kLocked) return ImageState::kReady;
      return refuse(is + ", not waiting for data");
    case ImageEvent::kDataFailed:
      if (state == ImageState::kLocked) return ImageState::kError;
      return refuse(is + ", not waiting for data");
    case ImageEvent::kAttach:
      if (state == ImageState::kReady)
        return persistent ? ImageState::kUsedPers : ImageState::kUsed;
      if (state == ImageState::kUsed && !persistent) return ImageState::kUsed;
      if (state == ImageState::kUsedPers) {
        return refuse("the image is persistent and another VM uses it; clone it for a second VM");
      }
      if (state == ImageState::kLocked) return refuse("the image's data is still arriving");
      return refuse(is + "; only READY or USED images can be attached");
    case ImageEvent::kDetach:
      if (state == ImageState::kUsed) return users > 1 ? ImageState::kUsed : ImageState::kReady;
      if (state == ImageState::kUsedPers) return ImageState::kReady;
      return refuse(is + ", no VM uses it");
    case ImageEvent::kDisable:
      if (state == ImageState::kReady) return ImageState::kDisabled;
      return refuse(is + "; only a READY image can be disabled");
    case ImageEvent::kEnable:
      if (state == ImageState::kDisabled) return ImageState::kReady;
      return refuse(is + "; only a DISABLED image can be enabled");
  }
  return refuse("unknown event");
}

Json Image::to_api_json() const {
  Json j = Json::object();
  header.to_json(j);
  j["state_name"] = image_state_name(state());
  j["datastore_id"] = datastore_id;
  j["type"] = image_type_name(type);
  j["format"] = format;
  j["persistent"] = persistent;
  j["description"] = description;
  j["path"] = path;
  j["size"] = size;
  j["size_mb"] = megabytes(size);
  j["virtual_size"] = virtual_size;
  j["sha256"] = sha256;
  j["source"] = source;
  j["progress"] = progress;
  j["error"] = error;
  j["vms"] = vms;
  j["running_vms"] = vms.size();
  if (!model.is_null()) j["model"] = model;
  return j;
}

Result<Image> Storage::load_image(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                                  Right right) {
  auto r = tx.get(kImageType, id);
  if (!r) return fail(r.error().code(), image_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(Image image, image_from_record(*r));
  FAB_TRY(authorizer_.require(caller, auth::object_ref(ObjectType::kImage, image.header), right,
                              image_noun(id)));
  return image;
}

void Storage::set_progress(int64_t id, int64_t done) {
  std::lock_guard lock(progress_mutex_);
  if (done < 0) {
    progress_.erase(id);
    progress_extra_.erase(id);
  } else {
    progress_[id] = done;
  }
}

void Storage::report_progress(int64_t id, int64_t done, Json extra) {
  set_progress(id, done);
  if (done < 0 || extra.is_null()) return;
  std::lock_guard lock(progress_mutex_);
  progress_extra_[id] = std::move(extra);
}

void Storage::add_progress(Image& image) {
  if (image.state() != ImageState::kLocked || !image.progress.is_object()) return;
  std::lock_guard lock(progress_mutex_);
  auto p = progress_.find(image.header.id);
  if (p != progress_.end()) image.progress["bytes_done"] = p->second;
  auto e = progress_extra_.find(image.header.id);
  if (e != progress_extra_.end()) image.progress.update(e->second);
}

Result<Image> Storage::insert_image(store::Transaction& tx, const auth::Caller& caller, Image image,
                                    int64_t reserve_bytes, std::optional<int64_t> free_bytes) {
  if (!tx.get(auth::kGroupType, image.header.gid)) {
    return fail(ErrorCode::kInvalidArgument,
                "group " + std::to_string(image.header.gid) + " does not exist", "gid");
  }
  auto loaded = load_datastore(tx, caller, image.datastore_id, Right::kUse);
  if (!loaded) return fail(loaded.error().code(), loaded.error().message(), "datastore_id");
  Datastore ds = std::move(*loaded);
  if (ds.header.state != 0) {
    return fail(ErrorCode::kFailedPrecondition,
                "datastore " + std::to_string(ds.header.id) + " is disabled", "datastore_id");
  }
  bool files = image.type == ImageType::kKernel || image.type == ImageType::kRamdisk;
  if (ds.kind == DatastoreKind::kSystem || (ds.kind == DatastoreKind::kFiles) != files) {
    return fail(ErrorCode::kInvalidArgument,
                std::string(image_type_name(image.type)) + " images belong in " +
                    (files ? "a files" : "an image") + " datastore; datastore " +
                    std::to_string(ds.header.id) + " is a " +
                    std::string(datastore_kind_name(ds.kind)) + " datastore",
                "datastore_id");
  }
  fill_capacity(ds);
  int64_t needed = free_bytes.value_or(reserve_bytes);
  if (ds.capacity && ds.capacity->free < needed) {
    return fail(ErrorCode::kFailedPrecondition,
                "datastore " + std::to_string(ds.header.id) + " has " +
                    std::to_string(ds.capacity->free >> 20) + " MB free; the image needs " +
                    std::to_string(megabytes(needed)) + " MB",
                "datastore_id");
  }
  if (ds.limit_mb >= 0 && megabytes(ds.images_bytes + reserve_bytes) > ds.limit_mb) {
    return fail(ErrorCode::kFailedPrecondition,
                "datastore " + std::to_string(ds.header.id) + " is limited to " +
                    std::to_string(ds.limit_mb) + " MB of images and holds " +
                    std::to_string(megabytes(ds.images_bytes)) + " MB",
                "datastore_id");
  }
  FAB_TRY(store::require_unique_in_group(tx, kImageType, image.header.gid, image.header.name,
                                         "an image"));
  FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kImageType));
  image.header.id = id;
  image.path = ds.path + "/img-" + std::to_string(id);
  auth::Amounts amounts{{"images", 1}, {"image_mb", megabytes(reserve_bytes)}};
  FAB_ASSIGN_OR_RETURN(auto hold,
                       quotas_.reserve(tx, auth::Consumer{image.header.uid, image.header.gid},
                                       std::nullopt, amounts, "image:" + std::to_string(id)));
  FAB_TRY(quotas_.commit(tx, hold.id));
  FAB_TRY(count_image(tx, ds.header.id, 1, reserve_bytes));
  image.size = reserve_bytes;
  image.version = 1;
  FAB_TRY(tx.insert(image_record(image)));
  return image;
}

Result<Image> Storage::create_image(const auth::Caller& caller, const NewImage& request) {
  FAB_TRY(validate_name(request.name));
  if (request.description.size() > 1024) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 1024 characters", "description");
  }
  int sources = int(request.upload_size.has_value()) + int(request.from_path.has_value()) +
                int(request.blank_mb.has_value());
  if (sources != 1) {
    return fail(ErrorCode::kInvalidArgument, "give exactly one of upload (size), path or blank_mb",
                "upload");
  }
  if (request.upload_sha256 && !request.upload_size) {
    return fail(ErrorCode::kInvalidArgument, "goes with upload.size", "upload.sha256");
  }
  if (request.upload_sha256 && !crypto::is_sha256_hex(*request.upload_sha256)) {
    return fail(ErrorCode::kInvalidArgument, "must be 64 hex digits", "upload.sha256");
  }
  if (request.upload_size &&
      (*request.upload_size < 1 || *request.upload_size > (int64_t{1} << 50))) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 byte to 1 PiB", "upload.size");
  }
  if (request.blank_mb && (*request.blank_mb < 1 || *request.blank_mb > (int64_t{1} << 30))) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 to 2^30 MiB", "blank_mb");
  }
  if (request.blank_mb && request.type != ImageType::kDatablock) {
    return fail(ErrorCode::kInvalidArgument, "a blank image must be a DATABLOCK", "type");
  }
  std::string format = request.format.value_or("");
  if (!format.empty() && format != "qcow2" && format != "raw") {
    return fail(ErrorCode::kInvalidArgument, "must be qcow2 or raw", "format");
  }
  if (!is_disk(request.type) && !format.empty() && format != "raw") {
    return fail(ErrorCode::kInvalidArgument,
                std::string(image_type_name(request.type)) + " images are raw files", "format");
  }
  if (!is_disk(request.type)) format = "raw";
  if (request.blank_mb && format.empty()) format = "qcow2";
  int64_t size = 0;
  Json source;
  if (request.from_path) {
    FAB_TRY(auth::check_restricted(caller, "image", Json{{"path", *request.from_path}}));
    if (request.from_path->empty() || request.from_path->front() != '/') {
      return fail(ErrorCode::kInvalidArgument, "must be an absolute path", "path");
    }
    FAB_ASSIGN_OR_RETURN(size, fs_.file_size(*request.from_path));
    source = {{"kind", "path"}, {"path", *request.from_path}};
  } else if (request.upload_size) {
    size = *request.upload_size;
    source = {{"kind", "upload"}};
  } else {
    size = *request.blank_mb << 20;
    source = {{"kind", "blank"}};
  }
  int64_t gid = request.gid.value_or(caller.gid);
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kImage, gid));
  int64_t now = unix_seconds(clock_.now());
  Image image{.header = ObjectHeader::create(-1, request.name, caller.uid, gid, kImagePermissions,
                                             static_cast<int>(ImageState::kLocked), now),
              .datastore_id = request.datastore_id,
              .type = request.type,
              .format = format,
              .persistent = request.persistent,
              .description = request.description,
              .source = source,
              .progress = {{"bytes_done", 0}, {"bytes_total", size}}};
  if (request.upload_size) {
    image.progress["resumable"] = true;
    image.progress["sha256"] = request.upload_sha256.value_or("");
  }
  FAB_ASSIGN_OR_RETURN(image, store_.write_value<Image>([&](store::Transaction& tx) {
    return insert_image(tx, caller, image, size);
  }));
  if (request.from_path) {
    {
      std::lock_guard lock(jobs_mutex_);
      jobs_.push_back(Job{image.header.id, *request.from_path});
    }
    jobs_wake_.notify_all();
  } else if (request.blank_mb) {
    std::string staged = staged_path(image);
    auto created = fs_.create_disk(staged, format, size);
    Result<DiskInfo> verified =
        created ? verify(image, staged) : Result<DiskInfo>(fail(created.error()));
    int64_t bytes = 0;
    if (verified) {
      FAB_ASSIGN_OR_RETURN(bytes, fs_.file_size(staged));
    }
    return settle_data(image.header.id, staged, verified, bytes, "");
  }
  return image;
}

Result<Image> Storage::get_image(const auth::Caller& caller, int64_t id) {
  FAB_ASSIGN_OR_RETURN(Image image, store_.read_value<Image>([&](store::Transaction& tx) {
    return load_image(tx, caller, id, Right::kUse);
  }));
  add_progress(image);
  return image;
}

Result<auth::Page<Image>> Storage::list_images(const auth::Caller& caller,
                                               const auth::ListOptions& options,
                                               std::optional<ImageType> type) {
  store::ListQuery query{.after_id = options.after_id, .gid = options.gid, .name = options.name};
  FAB_ASSIGN_OR_RETURN(auto page, store_.read_value<auth::Page<Image>>([&](store::Transaction& tx) {
    return auth::visible_page<Image>(
        tx, kImageType, query, options.limit, image_from_record, [&](const Image& image) {
          if (type && image.type != *type) return false;
          return authorizer_.allows(caller, auth::object_ref(ObjectType::kImage, image.header),
                                    Right::kUse);
        });
  }));
  for (auto& image : page.items) add_progress(image);
  return page;
}

Result<void> Storage::delete_image(const auth::Caller& caller, int64_t id) {
  Image deleted;
  FAB_TRY(store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(deleted, load_image(tx, caller, id, Right::kManage));
    if (!deleted.vms.empty()) {
      return fail(ErrorCode::kFailedPrecondition,
                  image_noun(id) + " is used by " + std::to_string(deleted.vms.size()) +
                      " VM(s); terminate them or detach the disk first",
                  "state");
    }
    FAB_TRY(quotas_.release_holder(tx, "image:" + std::to_string(id)));
    FAB_TRY(count_image(tx, deleted.datastore_id, -1, -deleted.size));
    return tx.remove(kImageType, id);
  }));
  {
    std::lock_guard lock(jobs_mutex_);
    cancelled_.insert(id);
  }
  {
    std::lock_guard lock(uploads_mutex_);
    auto u = uploads_.find(id);
    if (u != uploads_.end() && !u->second.active) uploads_.erase(u);
  }
  set_progress(id, -1);
  FAB_TRY(fs_.remove(staged_path(deleted)));
  FAB_TRY(fs_.remove(deleted.path));
  if (delete_listener_) delete_listener_(deleted);
  return {};
}

Result<Image> Storage::clone_image(const auth::Caller& caller, int64_t id, const std::string& name,
                                   std::optional<int64_t> datastore_id) {
  FAB_TRY(validate_name(name));
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kImage, caller.gid));
  int64_t now = unix_seconds(clock_.now());
  std::string from;
  FAB_ASSIGN_OR_RETURN(
      Image image, store_.write_value<Image>([&](store::Transaction& tx) -> Result<Image> {
        FAB_ASSIGN_OR_RETURN(Image original, load_image(tx, caller, id, Right::kUse));
        if (original.type == ImageType::kModel) {
          return fail(ErrorCode::kInvalidArgument,
                      image_noun(id) +
                          " is a MODEL: import it again instead (its files are "
                          "stored once and shared)",
                      "id");
        }
        if (original.state() != ImageState::kReady && original.state() != ImageState::kUsed) {
          return fail(ErrorCode::kFailedPrecondition,
                      image_noun(id) + " is " + std::string(image_state_name(original.state())) +
                          "; only READY or USED (non-persistent) images can be cloned",
                      "state");
        }
        from = original.path;
        Image copy{
            .header = ObjectHeader::create(-1, name, caller.uid, caller.gid, kImagePermissions,
                                           static_cast<int>(ImageState::kLocked), now),
            .datastore_id = datastore_id.value_or(original.datastore_id),
            .type = original.type,
            .format = original.format,
            .persistent = false,
            .description = original.description,
            .source = {{"kind", "clone"}, {"image_id", id}, {"path", original.path}},
            .progress = {{"bytes_done", 0}, {"bytes_total", original.size}}};
        return insert_image(tx, caller, copy, original.size);
      }));
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_.push_back(Job{image.header.id, from});
  }
  jobs_wake_.notify_all();
  return image;
}

Result<Image> Storage::chmod_image(const auth::Caller& caller, int64_t id,
                                   Permissions permissions) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Image>([&](store::Transaction& tx) -> Result<Image> {
    FAB_ASSIGN_OR_RETURN(Image image, load_image(tx, caller, id, Right::kManage));
    image.header.permissions = permissions;
    image.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(image.version, tx.update(image_record(image)));
    return image;
  });
}

Result<Image> Storage::set_persistent(const auth::Caller& caller, int64_t id, bool persistent) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Image>([&](store::Transaction& tx) -> Result<Image> {
    FAB_ASSIGN_OR_RETURN(Image image, load_image(tx, caller, id, Right::kManage));
    if (!image.vms.empty()) {
      return fail(ErrorCode::kFailedPrecondition,
                  image_noun(id) + " is used by VMs; change it when none uses it", "state");
    }
    if (!is_disk(image.type) && persistent) {
      return fail(ErrorCode::kInvalidArgument,
                  std::string(image_type_name(image.type)) + " images are read-only", "persistent");
    }
    image.persistent = persistent;
    image.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(image.version, tx.update(image_record(image)));
    return image;
  });
}

Result<Image> Storage::set_enabled(const auth::Caller& caller, int64_t id, bool enabled) {
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Image>([&](store::Transaction& tx) -> Result<Image> {
    FAB_ASSIGN_OR_RETURN(Image image, load_image(tx, caller, id, Right::kManage));
    FAB_ASSIGN_OR_RETURN(
        ImageState next,
        image_next(image.state(), enabled ? ImageEvent::kEnable : ImageEvent::kDisable,
                   image.persistent, static_cast<int>(image.vms.size())));
    image.header.state = static_cast<int>(next);
    image.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(image.version, tx.update(image_record(image)));
    return image;
  });
}

Result<Storage::Attached> Storage::attach_image(store::Transaction& tx, const auth::Caller& caller,
                                                int64_t id, int64_t vm_id,
                                                std::initializer_list<ImageType> types,
                                                const std::string& field) {
  auto loaded = load_image(tx, caller, id, Right::kUse);
  if (!loaded) return fail(loaded.error().code(), loaded.error().message(), field);
  Image image = std::move(*loaded);
  if (std::find(types.begin(), types.end(), image.type) == types.end()) {
    std::string allowed;
    for (ImageType t : types)
      allowed += (allowed.empty() ? "" : " or ") + std::string(image_type_name(t));
    return fail(ErrorCode::kInvalidArgument,
                image_noun(id) + " is a " + std::string(image_type_name(image.type)) +
                    " image; this needs " + allowed,
                field);
  }
  auto next = image_next(image.state(), ImageEvent::kAttach, image.persistent,
                         static_cast<int>(image.vms.size()));
  if (!next) {
    return fail(next.error().code(), image_noun(id) + ": " + next.error().message(), field);
  }
  image.header.state = static_cast<int>(*next);
  if (std::find(image.vms.begin(), image.vms.end(), vm_id) == image.vms.end()) {
    image.vms.push_back(vm_id);
  }
  FAB_ASSIGN_OR_RETURN(image.version, tx.update(image_record(image)));
  FAB_ASSIGN_OR_RETURN(auto ds_record, tx.get(kDatastoreType, image.datastore_id));
  FAB_ASSIGN_OR_RETURN(Json ds, parse_json(ds_record.body));
  return Attached{.image_id = id,
                  .name = image.header.name,
                  .type = image.type,
                  .path = image.path,
                  .format = image.format,
                  .persistent = image.persistent,
                  .virtual_size = image.virtual_size,
                  .datastore_id = image.datastore_id,
                  .driver = ds.value("driver", "shared") == "local" ? DatastoreDriver::kLocal
                                                                    : DatastoreDriver::kShared,
                  .clusters = ds.value("clusters", std::vector<int64_t>{})};
}

Result<void> Storage::detach_image(store::Transaction& tx, int64_t id, int64_t vm_id) {
  auto r = tx.get(kImageType, id);
  if (!r) return {};
  FAB_ASSIGN_OR_RETURN(Image image, image_from_record(*r));
  auto held = std::find(image.vms.begin(), image.vms.end(), vm_id);
  if (held == image.vms.end()) return {};
  auto next = image_next(image.state(), ImageEvent::kDetach, image.persistent,
                         static_cast<int>(image.vms.size()));
  image.vms.erase(held);
  if (next) image.header.state = static_cast<int>(*next);
  FAB_ASSIGN_OR_RETURN(image.version, tx.update(image_record(image)));
  return {};
}

// ---- Data arriving: verification and the copy thread ----

Result<DiskInfo> Storage::verify(const Image& image, const std::string& staged) {
  FAB_ASSIGN_OR_RETURN(int64_t size, fs_.file_size(staged));
  if (size == 0) return fail(ErrorCode::kInvalidArgument, "the data is empty", "upload");
  if (!is_disk(image.type)) {
    return DiskInfo{.format = "raw", .virtual_size = size, .actual_size = size};
  }
  FAB_ASSIGN_OR_RETURN(DiskInfo info, fs_.inspect(staged));
  if (info.format != "qcow2" && info.format != "raw") {
    return fail(
        ErrorCode::kInvalidArgument,
        "the data is a " + info.format + " disk; convert it with `qemu-img convert -O qcow2` first",
        "format");
  }
  if (!image.format.empty() && info.format != image.format) {
    return fail(ErrorCode::kInvalidArgument,
                "the data is " + info.format + ", not " + image.format + " as declared", "format");
  }
  if (info.has_backing_file) {
    return fail(ErrorCode::kInvalidArgument,
                "the qcow2 data names a backing file; flatten it with `qemu-img convert` first",
                "format");
  }
  if (info.corrupt) {
    return fail(ErrorCode::kInvalidArgument, "the qcow2 data is marked corrupt", "format");
  }
  FAB_TRY(fs_.check(staged, info.format));
  return info;
}

Result<Image> Storage::settle_data(int64_t id, const std::string& staged,
                                   const Result<DiskInfo>& verified, int64_t size,
                                   const std::string& sha256) {
  int64_t now = unix_seconds(clock_.now());
  std::optional<Image> image;
  FAB_ASSIGN_OR_RETURN(auto record,
                       store_.read_value<std::optional<store::Record>>(
                           [&](store::Transaction& tx) -> Result<std::optional<store::Record>> {
                             auto r = tx.get(kImageType, id);
                             if (!r) return std::optional<store::Record>();
                             return std::optional<store::Record>(*r);
                           }));
  if (record) {
    FAB_ASSIGN_OR_RETURN(Image current, image_from_record(*record));
    if (current.state() == ImageState::kLocked && verified) {
      FAB_TRY(fs_.rename(staged, current.path));
    }
  }
  FAB_TRY(store_.write([&](store::Transaction& tx) -> Result<void> {
    image.reset();
    auto r = tx.get(kImageType, id);
    if (!r) return {};  // Deleted meanwhile.
    FAB_ASSIGN_OR_RETURN(Image current, image_from_record(*r));
    if (current.state() != ImageState::kLocked) return {};
    FAB_ASSIGN_OR_RETURN(
        ImageState next,
        image_next(current.state(), verified ? ImageEvent::kDataReady : ImageEvent::kDataFailed,
                   current.persistent, 0));
    int64_t old_size = current.size;
    if (verified) {
      current.format = verified->format;
      current.virtual_size = verified->virtual_size;
      current.size = size;
      current.sha256 = sha256;
      current.error.clear();
    } else {
      current.error = verified.error().message();
      current.size = 0;
      // The data is gone: only the image itself still counts.
      FAB_TRY(quotas_.release_holder(tx, "image:" + std::to_string(id)));
      FAB_ASSIGN_OR_RETURN(
          auto hold, quotas_.reserve(tx, auth::Consumer{current.header.uid, current.header.gid},
                                     std::nullopt, {{"images", 1}}, "image:" + std::to_string(id)));
      FAB_TRY(quotas_.commit(tx, hold.id));
    }
    if (current.size != old_size) {
      FAB_TRY(count_image(tx, current.datastore_id, 0, current.size - old_size));
      if (verified) {
        FAB_TRY(quotas_.release_holder(tx, "image:" + std::to_string(id)));
        FAB_ASSIGN_OR_RETURN(
            auto hold, quotas_.reserve(tx, auth::Consumer{current.header.uid, current.header.gid},
                                       std::nullopt, {{"images", 1}, {"image_mb", megabytes(size)}},
                                       "image:" + std::to_string(id)));
        FAB_TRY(quotas_.commit(tx, hold.id));
      }
    }
    current.header.state = static_cast<int>(next);
    current.progress = nullptr;
    current.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(current.version, tx.update(image_record(current)));
    image = std::move(current);
    return {};
  }));
  set_progress(id, -1);
  if (!verified || !image) (void)fs_.remove(staged);
  if (!image) return fail(ErrorCode::kNotFound, image_noun(id) + " was deleted meanwhile");
  if (!verified) {
    return fail(verified.error().code(),
                verified.error().message() + "; " + image_noun(id) +
                    " is in ERROR: delete it and try again",
                verified.error().field());
  }
  return *image;
}

Result<int> Storage::expire_uploads() {
  int64_t cutoff = unix_seconds(clock_.now()) - options_.upload_idle.count();
  std::vector<Image> idle;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    return store::for_each(
        tx, kImageType,
        [&](const store::Record& r) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(Image image, image_from_record(r));
          if (image.source.value("kind", "") == "upload" && image.header.updated_at < cutoff) {
            idle.push_back(std::move(image));
          }
          return {};
        },
        store::ListQuery{.state = static_cast<int>(ImageState::kLocked)});
  }));
  int expired = 0;
  for (const Image& image : idle) {
    {
      std::lock_guard lock(uploads_mutex_);
      auto u = uploads_.find(image.header.id);
      if (u != uploads_.end() && u->second.active) continue;  // A PUT is running.
      uploads_.erase(image.header.id);
    }
    Result<DiskInfo> abandoned =
        fail(ErrorCode::kDeadlineExceeded,
             "the upload was abandoned: no data for " +
                 std::to_string(options_.upload_idle.count() / 3600) + " h after byte " +
                 std::to_string(image.progress.value("bytes_done", int64_t{0})));
    auto settled = settle_data(image.header.id, staged_path(image), abandoned, 0, "");
    if (!settled && settled.error().code() == ErrorCode::kDeadlineExceeded) ++expired;
  }
  return expired;
}

void Storage::copy_loop() {
  while (true) {
    Job job;
    {
      std::unique_lock lock(jobs_mutex_);
      jobs_wake_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = jobs_.front();
      jobs_.erase(jobs_.begin());
    }
    run_job(job);
  }
}

void Storage::run_job(const Job& job) {
  auto record = store_.read_value<store::Record>(
      [&](store::Transaction& tx) { return tx.get(kImageType, job.image_id); });
  if (!record) return;
  auto image = image_from_record(*record);
  if (!image || image->state() != ImageState::kLocked) return;
  std::string staged = staged_path(*image);
  auto keep_going = [&](int64_t done) {
    set_progress(job.image_id, done);
    std::lock_guard lock(jobs_mutex_);
    return !stopping_ && !cancelled_.contains(job.image_id);
  };
  // A job without a source verifies data a host wrote (disk-saveas).
  auto copied = job.from.empty() ? Result<void>() : fs_.copy(job.from, staged, keep_going);
  if (!copied && copied.error().code() == ErrorCode::kAborted) {
    (void)fs_.remove(staged);
    std::lock_guard lock(jobs_mutex_);
    cancelled_.erase(job.image_id);
    return;  // Deleted, or fabricad stopping: bootstrap() starts it again.
  }
  (void)settle_staged(*image, staged, copied ? Result<void>() : Result<void>(fail(copied.error())));
}

Result<Image> Storage::settle_staged(const Image& image, const std::string& staged,
                                     const Result<void>& arrived) {
  Result<DiskInfo> verified =
      arrived ? verify(image, staged) : Result<DiskInfo>(fail(arrived.error()));
  int64_t size = 0;
  crypto::Sha256 hash;
  if (verified) {
    auto bytes = fs_.file_size(staged);
    auto read = bytes ? fs_.read(staged, *bytes, [&](std::string_view p) { hash.update(p); })
                      : Result<void>(fail(bytes.error()));
    if (!read) verified = fail(read.error());
    size = bytes.value_or(0);
  }
  return settle_data(image.header.id, staged, verified, size, verified ? hash.finish() : "");
}

// ---- disk-saveas ----

Result<Image> Storage::create_saveas(store::Transaction& tx, const auth::Caller& caller,
                                     const SaveAs& request) {
  FAB_TRY(validate_name(request.name));
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kImage, caller.gid));
  int64_t datastore_id = request.datastore_id.value_or(1);
  auto loaded = load_datastore(tx, caller, datastore_id, Right::kUse);
  if (!loaded) return fail(loaded.error().code(), loaded.error().message(), "datastore_id");
  if (loaded->driver != DatastoreDriver::kShared ||
      std::find(loaded->clusters.begin(), loaded->clusters.end(), request.cluster_id) ==
          loaded->clusters.end()) {
    return fail(ErrorCode::kFailedPrecondition,
                "the VM's host writes the new image itself: datastore " +
                    std::to_string(datastore_id) +
                    " must be a shared datastore mounted in the host's cluster " +
                    std::to_string(request.cluster_id),
                "datastore_id");
  }
  int64_t now = unix_seconds(clock_.now());
  Image image{
      .header = ObjectHeader::create(-1, request.name, caller.uid, caller.gid, kImagePermissions,
                                     static_cast<int>(ImageState::kLocked), now),
      .datastore_id = datastore_id,
      .type = request.type,
      .format = "qcow2",
      .source = {{"kind", "saveas"}, {"vm_id", request.vm_id}, {"disk_id", request.disk_id}},
      .progress = {{"bytes_done", 0}, {"bytes_total", request.bytes}}};
  return insert_image(tx, caller, image, request.bytes);
}

Result<Image> Storage::finish_saveas(int64_t id, bool ok, const std::string& error) {
  auto record = store_.read_value<store::Record>(
      [&](store::Transaction& tx) { return tx.get(kImageType, id); });
  if (!record) return fail(ErrorCode::kNotFound, image_noun(id) + " was deleted meanwhile");
  FAB_ASSIGN_OR_RETURN(Image image, image_from_record(*record));
  if (image.state() != ImageState::kLocked || image.source.value("kind", "") != "saveas") {
    return image;  // Settled already.
  }
  if (!ok) {
    return settle_staged(image, staged_path(image),
                         fail(ErrorCode::kUnavailable, "the host could not save the disk: " +
                                                           (error.empty() ? "no reason" : error)));
  }
  {
    std::lock_guard lock(jobs_mutex_);
    jobs_.push_back(Job{id, ""});  // Verified and hashed on the copy thread.
  }
  jobs_wake_.notify_all();
  return image;
}

}  // namespace fabrica::storage

namespace fabrica::storage {

// ---- MODEL images (their files arrive through market::Models) ----

Result<Image> Storage::create_model(const auth::Caller& caller, const NewModel& request) {
  FAB_TRY(validate_name(request.name));
  if (request.description.size() > 1024) {
    return fail(ErrorCode::kInvalidArgument, "must be at most 1024 characters", "description");
  }
  int64_t gid = request.gid.value_or(caller.gid);
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kImage, gid));
  int64_t now = unix_seconds(clock_.now());
  Image image{.header = ObjectHeader::create(-1, request.name, caller.uid, gid, kImagePermissions,
                                             static_cast<int>(ImageState::kLocked), now),
              .datastore_id = request.datastore_id,
              .type = ImageType::kModel,
              .format = "dir",
              .persistent = false,
              .description = request.description,
              .source = request.source,
              .progress = {{"bytes_done", 0}, {"bytes_total", request.bytes}},
              .sealed_token = request.sealed_token};
  return store_.write_value<Image>([&](store::Transaction& tx) -> Result<Image> {
    return insert_image(tx, caller, image, request.bytes, request.new_bytes);
  });
}

Result<Image> Storage::finish_model(int64_t id, const std::string& staged,
                                    const Result<Json>& model, int64_t size,
                                    const std::string& format) {
  Result<DiskInfo> verified =
      model
          ? Result<DiskInfo>(DiskInfo{.format = format, .virtual_size = size, .actual_size = size})
          : Result<DiskInfo>(fail(model.error()));
  if (model) {
    FAB_TRY(store_.write([&](store::Transaction& tx) -> Result<void> {
      auto r = tx.get(kImageType, id);
      if (!r) return {};
      FAB_ASSIGN_OR_RETURN(Image current, image_from_record(*r));
      if (current.state() != ImageState::kLocked) return {};
      current.model = *model;
      current.sealed_token.clear();  // The files are in; the token is not needed again.
      FAB_ASSIGN_OR_RETURN(current.version, tx.update(image_record(current)));
      return {};
    }));
  }
  return settle_data(id, staged, verified, size, "");
}

Result<Image> Storage::find_image(int64_t id) {
  return store_.read_value<Image>([&](store::Transaction& tx) -> Result<Image> {
    auto r = tx.get(kImageType, id);
    if (!r) return fail(r.error().code(), image_noun(id) + " not found");
    return image_from_record(*r);
  });
}

Result<size_t> Storage::reseal_tokens(
    store::Transaction& tx, const std::function<Result<std::string>(const std::string&)>& reseal) {
  std::vector<Image> sealed;
  FAB_TRY(store::for_each(tx, kImageType, [&](const store::Record& r) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Image image, image_from_record(r));
    if (!image.sealed_token.empty()) sealed.push_back(std::move(image));
    return {};
  }));
  for (auto& image : sealed) {
    auto again = reseal(image.sealed_token);
    if (!again) return fail(again.error().with_context(image_noun(image.header.id)));
    image.sealed_token = std::move(*again);
    FAB_ASSIGN_OR_RETURN(image.version, tx.update(image_record(image)));
  }
  return sealed.size();
}

Result<std::vector<Image>> Storage::locked_images(std::string_view kind) {
  std::vector<Image> out;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    return store::for_each(
        tx, kImageType,
        [&](const store::Record& r) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(Image image, image_from_record(r));
          if (image.source.value("kind", "") == kind) out.push_back(std::move(image));
          return {};
        },
        store::ListQuery{.state = static_cast<int>(ImageState::kLocked)});
  }));
  return out;
}

}  // namespace fabrica::storage
