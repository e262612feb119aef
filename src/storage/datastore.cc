#include <algorithm>
#include <filesystem>

#include "auth/restricted.h"
#include "auth/vdc.h"
#include "storage/storage.h"

namespace fabrica::storage {
namespace {

std::string datastore_noun(int64_t id) { return "datastore " + std::to_string(id); }

auth::ObjectRef datastore_ref(const Datastore& ds) {
  auto ref = auth::object_ref(ObjectType::kDatastore, ds.header);
  ref.clusters = ds.clusters;
  return ref;
}

store::Record datastore_record(const Datastore& ds) {
  Datastore stored = ds;
  stored.capacity.reset();
  return store::Record{.type = std::string(kDatastoreType),
                       .id = ds.header.id,
                       .name = ds.header.name,
                       .uid = ds.header.uid,
                       .gid = ds.header.gid,
                       .state = ds.header.state,
                       .key = ds.header.name,
                       .body = dump_json(stored.to_api_json()),
                       .version = ds.version};
}

template <typename Enum, size_t N>
std::optional<Enum> enum_named(const std::array<std::string_view, N>& names, std::string_view n) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == n) return static_cast<Enum>(i);
  }
  return std::nullopt;
}

constexpr std::array<std::string_view, 3> kKindNames = {"image", "system", "files"};
constexpr std::array<std::string_view, 2> kDriverNames = {"shared", "local"};

Result<Datastore> datastore_from_record(const store::Record& r) {
  FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
  Datastore ds;
  FAB_ASSIGN_OR_RETURN(ds.header, ObjectHeader::from_json(body));
  auto kind = enum_named<DatastoreKind>(kKindNames, body.value("kind", ""));
  auto driver = enum_named<DatastoreDriver>(kDriverNames, body.value("driver", ""));
  if (!kind || !driver || !body.contains("path")) {
    return fail(ErrorCode::kInternal, "stored " + datastore_noun(r.id) + " is malformed");
  }
  ds.kind = *kind;
  ds.driver = *driver;
  ds.path = body["path"].get<std::string>();
  ds.clusters = body.value("clusters", std::vector<int64_t>{});
  ds.limit_mb = body.value("limit_mb", int64_t{-1});
  ds.images_bytes = body.value("images_bytes", int64_t{0});
  ds.images = body.value("images", 0);
  ds.version = r.version;
  return ds;
}

// `inner` is `outer` or below it.
bool path_within(const std::string& inner, const std::string& outer) {
  auto a = std::filesystem::path(inner).lexically_normal();
  auto b = std::filesystem::path(outer).lexically_normal();
  auto [end, _] = std::mismatch(b.begin(), b.end(), a.begin(), a.end());
  return end == b.end();
}

Result<void> validate_path(const std::string& path) {
  if (path.empty() || path.front() != '/' || path.size() > 1024 ||
      path.find('\0') != std::string::npos) {
    return fail(ErrorCode::kInvalidArgument, "must be an absolute path of at most 1024 bytes",
                "path");
  }
  for (const auto& part : std::filesystem::path(path)) {
    if (part == "..") return fail(ErrorCode::kInvalidArgument, "must not contain ..", "path");
  }
  if (path == "/") return fail(ErrorCode::kInvalidArgument, "must not be /", "path");
  return {};
}

}  // namespace

std::string_view datastore_kind_name(DatastoreKind kind) {
  return kKindNames[static_cast<size_t>(kind)];
}
std::string_view datastore_driver_name(DatastoreDriver d) {
  return kDriverNames[static_cast<size_t>(d)];
}

Json Datastore::to_api_json() const {
  Json j = Json::object();
  header.to_json(j);
  j["state_name"] = header.state == 0 ? "READY" : "DISABLED";
  j["kind"] = datastore_kind_name(kind);
  j["driver"] = datastore_driver_name(driver);
  j["path"] = path;
  j["clusters"] = clusters;
  j["limit_mb"] = limit_mb;
  j["images_bytes"] = images_bytes;
  j["images"] = images;
  if (capacity) {
    j["capacity"] = {{"total_mb", capacity->total >> 20},
                     {"free_mb", capacity->free >> 20},
                     {"used_mb", capacity->used() >> 20},
                     {"filesystem", capacity->type}};
  } else {
    j["capacity"] = nullptr;
  }
  return j;
}

Storage::Storage(store::Store& store, auth::Authorizer& authorizer, auth::Quotas& quotas,
                 Filesystem& filesystem, const Clock& clock, StorageOptions options)
    : store_(store),
      authorizer_(authorizer),
      quotas_(quotas),
      fs_(filesystem),
      clock_(clock),
      options_(std::move(options)) {}

Storage::~Storage() { stop(); }

void Storage::stop() {
  {
    std::lock_guard lock(jobs_mutex_);
    stopping_ = true;
  }
  jobs_wake_.notify_all();
  if (copier_.joinable()) copier_.join();
}

Result<void> Storage::bootstrap() {
  int64_t now = unix_seconds(clock_.now());
  struct Default {
    int64_t id;
    const char* name;
    DatastoreKind kind;
  };
  std::vector<Datastore> created;
  FAB_TRY(store_.write([&](store::Transaction& tx) -> Result<void> {
    for (auto d : {Default{0, "system", DatastoreKind::kSystem},
                   Default{1, "default", DatastoreKind::kImage},
                   Default{2, "files", DatastoreKind::kFiles}}) {
      if (tx.get(kDatastoreType, d.id)) continue;
      Datastore ds{.header = ObjectHeader::create(d.id, d.name, 0, 0, Permissions(0640), 0, now),
                   .kind = d.kind,
                   .path = options_.datastores_root + "/" + std::to_string(d.id),
                   .clusters = {0},
                   .version = 1};
      FAB_TRY(store::insert_named(tx, datastore_record(ds)));
      created.push_back(ds);
    }
    return {};
  }));
  for (const auto& ds : created) FAB_TRY(fs_.make_dirs(ds.path));
  // Copies a crash interrupted start again from the beginning.
  std::vector<Job> resumed;
  FAB_TRY(store_.read([&](store::Transaction& tx) -> Result<void> {
    return store::for_each(
        tx, kImageType,
        [&](const store::Record& r) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(Json body, parse_json(r.body));
          const Json& source = body.value("source", Json::object());
          std::string kind = source.value("kind", "");
          if (kind == "path" || kind == "clone") {
            resumed.push_back(Job{r.id, source.value("path", "")});
          }
          return {};
        },
        store::ListQuery{.state = static_cast<int>(ImageState::kLocked)});
  }));
  std::lock_guard lock(jobs_mutex_);
  for (auto& job : resumed) jobs_.push_back(std::move(job));
  if (!copier_.joinable()) copier_ = std::thread([this] { copy_loop(); });
  jobs_wake_.notify_all();
  return {};
}

void Storage::fill_capacity(Datastore& ds) {
  auto capacity = fs_.capacity(ds.path);
  if (capacity) ds.capacity = *capacity;
}

Result<Datastore> Storage::load_datastore(store::Transaction& tx, const auth::Caller& caller,
                                          int64_t id, Right right) {
  auto r = tx.get(kDatastoreType, id);
  if (!r) return fail(r.error().code(), datastore_noun(id) + " not found");
  FAB_ASSIGN_OR_RETURN(Datastore ds, datastore_from_record(*r));
  FAB_TRY(authorizer_.require(caller, datastore_ref(ds), right, datastore_noun(id)));
  return ds;
}

Result<void> Storage::count_image(store::Transaction& tx, int64_t datastore_id, int images,
                                  int64_t bytes) {
  FAB_ASSIGN_OR_RETURN(auto r, tx.get(kDatastoreType, datastore_id));
  FAB_ASSIGN_OR_RETURN(Datastore ds, datastore_from_record(r));
  ds.images = std::max(0, ds.images + images);
  ds.images_bytes = std::max<int64_t>(0, ds.images_bytes + bytes);
  return tx.update(datastore_record(ds)).map([](int64_t) {});
}

Result<Datastore> Storage::create_datastore(const auth::Caller& caller,
                                            const NewDatastore& request) {
  FAB_TRY(validate_name(request.name));
  if (request.path)
    FAB_TRY(auth::check_restricted(caller, "datastore", Json{{"path", *request.path}}));
  FAB_TRY(authorizer_.require_superuser(caller, "create datastores"));
  if (request.path) {
    FAB_TRY(validate_path(*request.path));
    // An operator naming a path means a mounted filesystem (NFS, WekaFS, VAST): it must be
    // there already, never an empty directory made in its place.
    auto there = fs_.capacity(*request.path);
    if (!there && there.error().code() == ErrorCode::kNotFound) {
      return fail(ErrorCode::kInvalidArgument,
                  *request.path +
                      " does not exist on fabricad's machine; mount the "
                      "filesystem there first (the same path on every host)",
                  "path");
    }
    FAB_TRY(there);
  }
  if (request.limit_mb < -1) {
    return fail(ErrorCode::kInvalidArgument, "must be -1 (no limit) or more", "limit_mb");
  }
  if (request.clusters.empty()) {
    return fail(ErrorCode::kInvalidArgument, "must name at least one cluster", "clusters");
  }
  int64_t now = unix_seconds(clock_.now());
  FAB_ASSIGN_OR_RETURN(
      Datastore ds, store_.write_value<Datastore>([&](store::Transaction& tx) -> Result<Datastore> {
        for (int64_t cluster : request.clusters) {
          if (!tx.get("cluster", cluster)) {
            return fail(ErrorCode::kNotFound, "cluster " + std::to_string(cluster) + " not found",
                        "clusters");
          }
        }
        FAB_ASSIGN_OR_RETURN(int64_t id, tx.allocate_id(kDatastoreType));
        id = std::max<int64_t>(id, 100);
        std::string path =
            request.path.value_or(options_.datastores_root + "/" + std::to_string(id));
        FAB_TRY(store::for_each(tx, kDatastoreType, [&](const store::Record& r) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(Datastore other, datastore_from_record(r));
          if (path_within(path, other.path) || path_within(other.path, path)) {
            return fail(ErrorCode::kInvalidArgument,
                        "overlaps " + datastore_noun(other.header.id) + " at " + other.path,
                        "path");
          }
          return {};
        }));
        std::vector<int64_t> clusters = request.clusters;
        std::sort(clusters.begin(), clusters.end());
        clusters.erase(std::unique(clusters.begin(), clusters.end()), clusters.end());
        Datastore created{
            .header = ObjectHeader::create(id, request.name, 0, 0, Permissions(0640), 0, now),
            .kind = request.kind,
            .driver = request.driver,
            .path = path,
            .clusters = clusters,
            .limit_mb = request.limit_mb,
            .version = 1};
        FAB_TRY(store::insert_named(tx, datastore_record(created)));
        return created;
      }));
  // A local system datastore's path lives on the hosts; every other one fabricad writes.
  if (!(ds.kind == DatastoreKind::kSystem && ds.driver == DatastoreDriver::kLocal)) {
    FAB_TRY(fs_.make_dirs(ds.path));
  }
  fill_capacity(ds);
  return ds;
}

Result<Datastore> Storage::get_datastore(const auth::Caller& caller, int64_t id) {
  FAB_ASSIGN_OR_RETURN(Datastore ds, store_.read_value<Datastore>([&](store::Transaction& tx) {
    return load_datastore(tx, caller, id, Right::kUse);
  }));
  fill_capacity(ds);
  return ds;
}

Result<Datastore> Storage::find_datastore(int64_t id) {
  FAB_ASSIGN_OR_RETURN(
      Datastore ds, store_.read_value<Datastore>([&](store::Transaction& tx) -> Result<Datastore> {
        FAB_ASSIGN_OR_RETURN(auto r, tx.get(kDatastoreType, id));
        return datastore_from_record(r);
      }));
  fill_capacity(ds);
  return ds;
}

Result<std::vector<Datastore>> Storage::list_datastores(const auth::Caller& caller) {
  using List = std::vector<Datastore>;
  FAB_ASSIGN_OR_RETURN(
      List out, store_.read_value<List>([&](store::Transaction& tx) -> Result<List> {
        List visible;
        FAB_TRY(store::for_each(tx, kDatastoreType, [&](const store::Record& r) -> Result<void> {
          FAB_ASSIGN_OR_RETURN(Datastore ds, datastore_from_record(r));
          if (authorizer_.allows(caller, datastore_ref(ds), Right::kUse)) {
            visible.push_back(std::move(ds));
          }
          return {};
        }));
        return visible;
      }));
  for (auto& ds : out) fill_capacity(ds);
  return out;
}

Result<void> Storage::delete_datastore(const auth::Caller& caller, int64_t id) {
  return store_.write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Datastore ds, load_datastore(tx, caller, id, Right::kAdmin));
    FAB_TRY(authorizer_.require_superuser(caller, "delete datastores"));
    if (ds.images > 0) {
      return fail(ErrorCode::kFailedPrecondition,
                  datastore_noun(id) + " holds " + std::to_string(ds.images) +
                      " image(s); delete or move them first",
                  "images");
    }
    FAB_TRY(auth::vdc_forget_resource(tx, "datastore", id));
    return tx.remove(kDatastoreType, id);
  });
}

// ---- VMs' own disks ----

Result<void> Storage::check_system_room(store::Transaction& tx, int64_t mb,
                                        const std::string& field) {
  if (mb <= 0) return {};
  auto r = tx.get(kDatastoreType, kSystemDatastore);
  if (!r) return {};  // No system datastore: nothing to check against.
  FAB_ASSIGN_OR_RETURN(Datastore ds, datastore_from_record(*r));
  fill_capacity(ds);
  if (!ds.capacity || (ds.capacity->free >> 20) >= mb) return {};
  return fail(ErrorCode::kFailedPrecondition,
              "the VM's own disks need " + std::to_string(mb) + " MB and system datastore " +
                  ds.header.name + " has " + std::to_string(ds.capacity->free >> 20) + " MB free",
              field);
}

}  // namespace fabrica::storage
