// Resumable uploads: each PUT carries one piece of an image's data, starting exactly where
// the acknowledged data ends. What arrived is synced and counted before the answer (and when
// the client goes away), so a broken transfer resumes from there. The SHA-256 runs as the
// bytes arrive and survives between pieces in memory; after a restart the data so far is
// hashed once again.
#include "storage/storage.h"

namespace fabrica::storage {

class UploadSession : public Storage::Upload {
 public:
  UploadSession(Storage& storage, Image image, int64_t offset, int64_t total,
                std::unique_ptr<WritableFile> file, crypto::Sha256 hash)
      : storage_(storage),
        image_(std::move(image)),
        offset_(offset),
        total_(total),
        file_(std::move(file)),
        hash_(std::move(hash)) {}

  ~UploadSession() override {
    if (!finished_) (void)finish(false);
  }

  Result<void> write(std::string_view data) override {
    if (offset_ + written_ + static_cast<int64_t>(data.size()) > total_) {
      failed_ = true;
      return fail(ErrorCode::kInvalidArgument,
                  "more data than the declared " + std::to_string(total_) + " bytes", "upload");
    }
    auto appended = file_->append(data);
    if (!appended) {
      failed_ = true;
      return appended;
    }
    hash_.update(data);
    written_ += static_cast<int64_t>(data.size());
    storage_.set_progress(image_.header.id, offset_ + written_);
    return {};
  }

  Result<Image> finish(bool complete) override {
    finished_ = true;
    int64_t id = image_.header.id;
    // A failed write may have left part of a piece: it counts only up to what was hashed,
    // and the next PUT cuts the file there.
    auto synced = file_->sync();
    int64_t received = synced ? offset_ + written_ : offset_;
    bool last = complete && !failed_ && synced && received == total_;
    {
      std::lock_guard lock(storage_.uploads_mutex_);
      auto& state = storage_.uploads_[id];
      state.active = false;
      if (synced && !last) {
        state.offset = received;
        state.hash = std::move(hash_);
      } else if (!synced) {
        state.hash.reset();
      }
    }
    if (!synced) return fail(synced.error());
    FAB_ASSIGN_OR_RETURN(Image saved, record_received(received));
    if (!last) {
      storage_.set_progress(id, -1);
      return saved;
    }
    {
      std::lock_guard lock(storage_.uploads_mutex_);
      storage_.uploads_.erase(id);
    }
    std::string sha = hash_.finish();
    std::string declared = image_.progress.value("sha256", "");
    std::string staged = image_.path + ".part";
    Result<DiskInfo> verified =
        !declared.empty() && !equal_hex(declared, sha)
            ? Result<DiskInfo>(fail(ErrorCode::kInvalidArgument,
                                    "checksum mismatch: the data's SHA-256 is " + sha +
                                        ", the upload declared " + declared,
                                    "sha256"))
            : storage_.verify(image_, staged);
    return storage_.settle_data(id, staged, verified, received, sha);
  }

 private:
  static bool equal_hex(std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) ==
                    std::tolower(static_cast<unsigned char>(y));
           });
  }

  // Makes `received` the image's acknowledged byte count.
  Result<Image> record_received(int64_t received) {
    int64_t id = image_.header.id;
    return storage_.store_.write_value<Image>([&](store::Transaction& tx) -> Result<Image> {
      auto r = tx.get(kImageType, id);
      if (!r) return fail(ErrorCode::kNotFound, "image " + std::to_string(id) + " was deleted");
      FAB_ASSIGN_OR_RETURN(Json body, parse_json(r->body));
      if (body.value("state", 0) != static_cast<int>(ImageState::kLocked) ||
          !body["progress"].is_object()) {
        return fail(ErrorCode::kFailedPrecondition,
                    "image " + std::to_string(id) + " no longer waits for an upload", "state");
      }
      body["progress"]["bytes_done"] = received;
      body["updated_at"] = format_time(unix_seconds(storage_.clock_.now()));
      r->body = dump_json(body);
      FAB_ASSIGN_OR_RETURN(int64_t version, tx.update(*r));
      (void)version;
      Image image = image_;
      image.progress = body["progress"];
      return image;
    });
  }

  Storage& storage_;
  Image image_;
  int64_t offset_;
  int64_t total_;
  std::unique_ptr<WritableFile> file_;
  crypto::Sha256 hash_;
  int64_t written_ = 0;
  bool failed_ = false;
  bool finished_ = false;
};

Result<std::unique_ptr<Storage::Upload>> Storage::begin_upload(const auth::Caller& caller,
                                                               int64_t id, int64_t offset,
                                                               std::optional<int64_t> length,
                                                               std::optional<int64_t> whole) {
  FAB_ASSIGN_OR_RETURN(Image image, store_.read_value<Image>([&](store::Transaction& tx) {
    return load_image(tx, caller, id, Right::kManage);
  }));
  if (image.state() != ImageState::kLocked || image.source.value("kind", "") != "upload" ||
      !image.progress.is_object()) {
    return fail(ErrorCode::kFailedPrecondition,
                "image " + std::to_string(id) + " is " +
                    std::string(image_state_name(image.state())) + ", not waiting for an upload",
                "state");
  }
  int64_t received = image.progress.value("bytes_done", int64_t{0});
  int64_t total = image.progress.value("bytes_total", int64_t{0});
  if (whole && *whole != total) {
    return fail(ErrorCode::kInvalidArgument,
                "the upload was declared as " + std::to_string(total) + " bytes, not " +
                    std::to_string(*whole),
                "Content-Range");
  }
  if (offset != received) {
    return fail(ErrorCode::kFailedPrecondition,
                "the upload continues at byte " + std::to_string(received) + ", not " +
                    std::to_string(offset),
                "offset");
  }
  if (length && offset + *length > total) {
    return fail(ErrorCode::kInvalidArgument,
                "the piece ends past the declared size of " + std::to_string(total) + " bytes",
                "length");
  }
  std::optional<crypto::Sha256> hash;
  {
    std::lock_guard lock(uploads_mutex_);
    auto& state = uploads_[id];
    if (state.active) {
      return fail(ErrorCode::kAborted,
                  "another upload to image " + std::to_string(id) + " is running", "state");
    }
    state.active = true;
    if (state.hash && state.offset == offset) hash = std::move(state.hash);
    state.hash.reset();
  }
  auto release = [&] {
    std::lock_guard lock(uploads_mutex_);
    uploads_[id].active = false;
  };
  std::string staged = image.path + ".part";
  if (!hash) {  // After a restart: hash what is already there once.
    hash.emplace();
    auto read = offset == 0
                    ? Result<void>()
                    : fs_.read(staged, offset, [&](std::string_view p) { hash->update(p); });
    if (!read) {
      release();
      return fail(read.error());
    }
  }
  auto file = fs_.open_at(staged, offset);
  if (!file) {
    release();
    return fail(file.error());
  }
  return std::unique_ptr<Upload>(std::make_unique<UploadSession>(
      *this, std::move(image), offset, total, std::move(*file), std::move(*hash)));
}

}  // namespace fabrica::storage
