#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "auth/authorizer.h"
#include "auth/identity.h"
#include "auth/quota.h"
#include "core/clock.h"
#include "core/object.h"
#include "storage/filesystem.h"
#include "store/store.h"

namespace fabrica::storage {

// OpenNebula's datastore TYPE: images for VM disks, the running VMs' disks, plain files
// (kernels, initrds, context files).
enum class DatastoreKind { kImage = 0, kSystem = 1, kFiles = 2 };
// shared: one path mounted on fabricad and every host of its clusters (NFS, NetApp, WekaFS,
// VAST); a VM's disk is a qcow2 overlay on the image, nothing is copied. local: each host
// copies the image to its system datastore at deploy time.
enum class DatastoreDriver { kShared, kLocal };

std::string_view datastore_kind_name(DatastoreKind kind);   // "image", "system", "files"
std::string_view datastore_driver_name(DatastoreDriver d);  // "shared", "local"

struct Datastore {
  ObjectHeader header;  // state 0 READY, 1 DISABLED (OpenNebula's numbers).
  DatastoreKind kind = DatastoreKind::kImage;
  DatastoreDriver driver = DatastoreDriver::kShared;
  std::string path;               // Absolute; the same on every host that sees it.
  std::vector<int64_t> clusters;  // The clusters whose hosts mount it.
  int64_t limit_mb = -1;          // Most its images may hold; -1 for the filesystem's size.
  int64_t images_bytes = 0;       // What its images hold (counted in each image's transaction).
  int images = 0;
  int64_t version = 0;
  // Filled on read from the filesystem (statvfs), not stored; null when fabricad cannot see
  // the path (a local system datastore lives on the hosts).
  std::optional<Capacity> capacity;

  Json to_api_json() const;
};

// OpenNebula's image TYPE and STATE numbers. kModel is Fabrica's own (OpenNebula uses 5 and 6
// for CONTEXT and BACKUP): a model's files, read-only, as a directory tree on a shared
// datastore ("dir") or a raw ext4 volume on a local one.
enum class ImageType { kOs = 0, kCdrom = 1, kDatablock = 2, kKernel = 3, kRamdisk = 4, kModel = 7 };
enum class ImageState {
  kReady = 1,
  kUsed = 2,
  kDisabled = 3,
  kLocked = 4,  // Its data is arriving: an upload, a copy or a clone.
  kError = 5,
  kUsedPers = 8,  // A persistent image attached to its one VM.
};
std::string_view image_type_name(ImageType type);  // "OS", "CDROM", "DATABLOCK", ...
std::string_view image_state_name(ImageState state);
std::optional<ImageType> image_type_from_name(std::string_view name);

// What changes an image's state; image_next() is the whole table.
enum class ImageEvent {
  kDataReady,   // LOCKED: the copy or upload finished and verified.
  kDataFailed,  // LOCKED: it failed; the data is gone.
  kAttach,      // A VM takes it.
  kDetach,      // A VM lets go of it (the last one: READY again).
  kDisable,
  kEnable,
};
// The state after `event`, or kFailedPrecondition saying why not. `users` counts the VMs
// using the image before the event.
Result<ImageState> image_next(ImageState state, ImageEvent event, bool persistent, int users);

struct Image {
  ObjectHeader header;  // state = ImageState.
  int64_t datastore_id = -1;
  ImageType type = ImageType::kOs;
  std::string format;  // "qcow2" or "raw"; "raw" for kernels, ramdisks and CD-ROMs.
  bool persistent = false;
  std::string description;
  std::string path;          // The data, inside its datastore.
  int64_t size = 0;          // Bytes of the file.
  int64_t virtual_size = 0;  // What the guest sees (qemu-img's virtual size).
  std::string sha256;        // Of the file, once READY (declared by the uploader, or computed).
  Json source;               // {"kind": "upload"|"path"|"clone"|"blank", ...}
  // While LOCKED: {"bytes_done", "bytes_total"}; an upload adds "sha256" (declared) and
  // "resumable": true.
  Json progress;
  std::string error;         // Why it is in ERROR.
  std::vector<int64_t> vms;  // VMs using it.
  // MODEL images: what the files say (architecture, parameters, heads, tensor-parallel sizes,
  // which GPUs hold it); null otherwise.
  Json model;
  // MODEL images: the importer's access token, sealed (crypto::Sealer); never in API answers.
  std::string sealed_token;
  int64_t version = 0;

  ImageState state() const { return static_cast<ImageState>(header.state); }
  Json to_api_json() const;
};

struct NewDatastore {
  std::string name;
  DatastoreKind kind = DatastoreKind::kImage;
  DatastoreDriver driver = DatastoreDriver::kShared;
  std::optional<std::string> path;  // Default: <datastores root>/<id>.
  std::vector<int64_t> clusters = {0};
  int64_t limit_mb = -1;
};

// Where a new image's data comes from: exactly one of these.
struct NewImage {
  std::string name;
  std::optional<int64_t> gid;
  int64_t datastore_id = 1;
  ImageType type = ImageType::kOs;
  std::optional<std::string> format;  // Checked against the data; detected when absent.
  bool persistent = false;
  std::string description;
  // An upload of `upload_size` bytes through PUT .../upload, verified against `upload_sha256`
  // when given.
  std::optional<int64_t> upload_size;
  std::optional<std::string> upload_sha256;
  // A file on fabricad's machine (administrators only), copied in the background.
  std::optional<std::string> from_path;
  // An empty DATABLOCK of this many MiB (qcow2 by default).
  std::optional<int64_t> blank_mb;
};

struct StorageOptions {
  std::string datastores_root = "/var/lib/fabrica/datastores";
  // An upload that has received nothing for this long is given up (expire_uploads).
  std::chrono::seconds upload_idle{std::chrono::hours(24)};
};

// Datastores and images: the domain service behind /datastores and /images. Image data is
// written by fabricad into the datastore's path (a shared datastore is mounted on fabricad
// as on its hosts): copies run on a background thread, uploads stream in through
// upload_*(); both leave the image LOCKED until the data is complete and verified (size,
// SHA-256, qemu-img info/check), then READY, or ERROR with the data removed. Quotas
// ("images", "image_mb") are held in the creating transaction and given back on delete.
// Thread-safe.
class Storage {
 public:
  Storage(store::Store& store, auth::Authorizer& authorizer, auth::Quotas& quotas,
          Filesystem& filesystem, const Clock& clock, StorageOptions options = {});
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  // Creates the default datastores when missing (OpenNebula's ids: 0 system, 1 default
  // image, 2 files; all shared, in cluster 0, under the datastores root), and restarts the
  // copies of images left LOCKED by a crash.
  Result<void> bootstrap();
  // Stops the copy thread (running copies are cancelled and resumed by the next bootstrap).
  void stop();

  // Administrators only. kInvalidArgument for a relative path or one inside another
  // datastore's.
  Result<Datastore> create_datastore(const auth::Caller& caller, const NewDatastore& request);
  Result<Datastore> get_datastore(const auth::Caller& caller, int64_t id);
  Result<std::vector<Datastore>> list_datastores(const auth::Caller& caller);
  // kFailedPrecondition while it holds images.
  Result<void> delete_datastore(const auth::Caller& caller, int64_t id);

  Result<Image> create_image(const auth::Caller& caller, const NewImage& request);
  Result<Image> get_image(const auth::Caller& caller, int64_t id);
  // `type`: only images of that type.
  Result<auth::Page<Image>> list_images(const auth::Caller& caller,
                                        const auth::ListOptions& options,
                                        std::optional<ImageType> type = std::nullopt);
  // kFailedPrecondition while VMs use it. A LOCKED image's copy or upload is abandoned.
  Result<void> delete_image(const auth::Caller& caller, int64_t id);
  // A new image with a copy of a READY or USED image's data (LOCKED until copied).
  Result<Image> clone_image(const auth::Caller& caller, int64_t id, const std::string& name,
                            std::optional<int64_t> datastore_id);
  Result<Image> chmod_image(const auth::Caller& caller, int64_t id, Permissions permissions);
  // kFailedPrecondition while VMs use it.
  Result<Image> set_persistent(const auth::Caller& caller, int64_t id, bool persistent);
  Result<Image> set_enabled(const auth::Caller& caller, int64_t id, bool enabled);

  // What a VM needs of an image it uses: where its data is and how to open it.
  struct Attached {
    int64_t image_id = -1;
    std::string name;
    ImageType type = ImageType::kOs;
    std::string path;
    std::string format;
    bool persistent = false;
    int64_t virtual_size = 0;
    int64_t datastore_id = -1;
    DatastoreDriver driver = DatastoreDriver::kShared;
    std::vector<int64_t> clusters;  // Where hosts see the datastore.
  };
  // VM `vm_id` takes image `id`, inside the VM's creating transaction: `caller` needs USE,
  // the image one of `types` (kInvalidArgument naming `field`), and the state table's
  // consent (kFailedPrecondition: LOCKED, DISABLED, ERROR, a persistent image in use).
  Result<Attached> attach_image(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                                int64_t vm_id, std::initializer_list<ImageType> types,
                                const std::string& field);
  // VM `vm_id` lets go of image `id` (in the transaction that ends or deletes the VM). An
  // image deleted meanwhile, or one the VM did not hold, is fine.
  Result<void> detach_image(store::Transaction& tx, int64_t id, int64_t vm_id);

  // Whether the system datastore (0), where hosts keep VMs' own disks (volatile disks, copies
  // from local datastores, overlays), has `mb` MiB free: kFailedPrecondition naming `field`
  // and the room left otherwise. Checked when a VM is created or its disks grow.
  Result<void> check_system_room(store::Transaction& tx, int64_t mb, const std::string& field);

  // A VM's disk saved as a new image (disk-saveas), inside the VM's transaction: a LOCKED
  // image whose data the VM's host writes (qcow2) to staged_path(); `bytes` (the disk's
  // virtual size) is held against the quotas and the datastore meanwhile. The datastore must
  // be a shared image datastore that the hosts of cluster `cluster_id` mount.
  struct SaveAs {
    std::string name;
    std::optional<int64_t> datastore_id;  // Default: the disk image's own, else 1.
    ImageType type = ImageType::kDatablock;
    int64_t bytes = 0;
    int64_t cluster_id = 0;
    int64_t vm_id = -1;
    int64_t disk_id = -1;
  };
  Result<Image> create_saveas(store::Transaction& tx, const auth::Caller& caller,
                              const SaveAs& request);
  // The host finished writing image `id`'s data (`ok`), or failed with `error`: verified and
  // READY, or ERROR with the data removed. Nothing when the image is no longer LOCKED.
  Result<Image> finish_saveas(int64_t id, bool ok, const std::string& error);
  // Where a LOCKED image's data is written before it is verified and renamed into place.
  static std::string staged_path(const Image& image) { return image.path + ".part"; }

  // A MODEL image whose files an importer (market::Models) fetches: LOCKED, `bytes` held
  // against the quotas ("images", "image_mb") and the datastore's limit, of which `new_bytes`
  // (what the datastore's blob store lacks) must be free on its filesystem. The datastore must
  // be an image datastore the caller may use.
  struct NewModel {
    std::string name;
    std::optional<int64_t> gid;
    int64_t datastore_id = 1;
    std::string description;
    int64_t bytes = 0;
    int64_t new_bytes = 0;
    Json source;
    std::string sealed_token;
  };
  Result<Image> create_model(const auth::Caller& caller, const NewModel& request);
  // The importer's end: `staged` (a directory tree or an ext4 volume of `size` bytes, in
  // `format` "dir" or "raw") is renamed into place and the image READY with `model` facts, or
  // ERROR (staged data removed) with `model`'s error. Nothing when it is no longer LOCKED.
  Result<Image> finish_model(int64_t id, const std::string& staged, const Result<Json>& model,
                             int64_t size, const std::string& format);
  // An image as stored, without a caller (the importer's own reads); kNotFound when absent.
  Result<Image> find_image(int64_t id);
  // A datastore as stored, with its capacity, without a caller.
  Result<Datastore> find_datastore(int64_t id);
  // LOCKED images whose source kind is `kind` (an importer resuming after a restart).
  Result<std::vector<Image>> locked_images(std::string_view kind);
  // Progress of an image's data, shown while LOCKED: bytes done, and `extra` fields the
  // importer adds (files, rate, ETA). `done` < 0 forgets it.
  void report_progress(int64_t id, int64_t done, Json extra = nullptr);
  // Seals every image's stored token again with `reseal` (open under the old key, seal under
  // the new), inside a sealing-key rotation's transaction. Returns how many.
  Result<size_t> reseal_tokens(
      store::Transaction& tx, const std::function<Result<std::string>(const std::string&)>& reseal);
  // Called after an image is deleted and its data removed (a running import stops, unused
  // blobs go). Set once, before use.
  void set_delete_listener(std::function<void(const Image&)> listener) {
    delete_listener_ = std::move(listener);
  }

  // An upload session: one PUT's body, written as it arrives. begin() checks the caller,
  // that the image awaits an upload and that the piece starts where the data so far ends
  // (kFailedPrecondition naming the byte to resume from otherwise) and fits the declared
  // size. Not thread-safe; one upload per image at a time (kAborted for a second).
  class Upload {
   public:
    virtual ~Upload() = default;
    virtual Result<void> write(std::string_view data) = 0;
    // The body ended (`complete`) or the client went away: what arrived is made durable and
    // counted, so the next PUT resumes after it. When the last byte is in, the image is
    // verified and becomes READY, or ERROR (the error says why: checksum, format, damage).
    virtual Result<Image> finish(bool complete) = 0;
  };
  // Uploads that received nothing for `upload_idle` (and have no PUT running) go to ERROR,
  // their data removed and their `image_mb` given back. The daemon calls it now and then.
  // Returns how many.
  Result<int> expire_uploads();

  // `offset`: where this piece starts (Content-Range), `length` its size and `total` the
  // whole upload's size when the client says (kInvalidArgument unless the declared size).
  Result<std::unique_ptr<Upload>> begin_upload(const auth::Caller& caller, int64_t id,
                                               int64_t offset, std::optional<int64_t> length,
                                               std::optional<int64_t> total = std::nullopt);

 private:
  friend class UploadSession;
  struct Job {
    int64_t image_id;
    std::string from;
  };
  Result<Datastore> load_datastore(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                                   Right right);
  Result<Image> load_image(store::Transaction& tx, const auth::Caller& caller, int64_t id,
                           Right right);
  void fill_capacity(Datastore& ds);
  // Adds to a datastore's image count and bytes, in the image's transaction.
  Result<void> count_image(store::Transaction& tx, int64_t datastore_id, int images, int64_t bytes);
  // Inserts a LOCKED (or READY for blank) image with its quota hold and datastore count
  // (kInvalidArgument naming `gid` when its group does not exist).
  // `free_bytes` (default: `reserve_bytes`) must be free on the datastore's filesystem.
  Result<Image> insert_image(store::Transaction& tx, const auth::Caller& caller, Image image,
                             int64_t reserve_bytes, std::optional<int64_t> free_bytes = {});
  // Moves a LOCKED image to READY with `verified` data, or to ERROR (data removed) with
  // `error`; nothing when it is no longer LOCKED (deleted meanwhile).
  Result<Image> settle_data(int64_t id, const std::string& staged, const Result<DiskInfo>& verified,
                            int64_t size, const std::string& sha256);
  // Checks data at `staged` for image `image`: qemu-img's format against the declared one, no
  // backing file, no damage.
  Result<DiskInfo> verify(const Image& image, const std::string& staged);
  void copy_loop();
  void run_job(const Job& job);
  // Verifies and hashes data that `arrived` at `staged`, then settle_data().
  Result<Image> settle_staged(const Image& image, const std::string& staged,
                              const Result<void>& arrived);
  // Copy progress, kept in memory and shown while the image is LOCKED.
  void set_progress(int64_t id, int64_t done);
  void add_progress(Image& image);

  store::Store& store_;
  auth::Authorizer& authorizer_;
  auth::Quotas& quotas_;
  Filesystem& fs_;
  const Clock& clock_;
  StorageOptions options_;

  std::mutex jobs_mutex_;
  std::condition_variable jobs_wake_;
  std::vector<Job> jobs_;
  std::set<int64_t> cancelled_;  // Images deleted while their copy runs.
  bool stopping_ = false;
  std::thread copier_;

  std::mutex uploads_mutex_;
  struct UploadState {
    bool active = false;
    int64_t offset = 0;  // The hash covers bytes [0, offset).
    std::optional<crypto::Sha256> hash;
  };
  std::map<int64_t, UploadState> uploads_;

  std::mutex progress_mutex_;
  std::map<int64_t, int64_t> progress_;  // Image id -> bytes copied so far.
  std::map<int64_t, Json> progress_extra_;
  std::function<void(const Image&)> delete_listener_;
};

inline constexpr std::string_view kDatastoreType = "datastore";
inline constexpr std::string_view kImageType = "image";
inline constexpr int64_t kSystemDatastore = 0;  // Where hosts keep VMs' own disks.

}  // namespace fabrica::storage
