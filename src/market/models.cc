#include "market/models.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <variant>

#include "core/process.h"
#include "crypto/crypto.h"
#include "market/model_facts.h"

namespace fabrica::market {

namespace fs = std::filesystem;

struct Models::Progress {
  int64_t image_id = -1;
  int64_t bytes_total = 0;
  int files_total = 0;
  std::atomic<int64_t> bytes_done{0};
  std::atomic<int64_t> downloaded{0};  // Moved over the network by this run.
  std::atomic<int> files_done{0};
  std::atomic<int> files_reused{0};
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  std::atomic<int64_t> last_report_ms{0};
};

namespace {

constexpr size_t kMaxPatterns = 32;
constexpr int64_t kMaxConfig = 16 << 20;

std::string model_noun(int64_t id) { return "model " + std::to_string(id); }

// The content hash a file must have: SHA-256 for LFS files, the git blob id for the others.
class FileHash {
 public:
  explicit FileHash(const HubFile& f) : file_(f) { reset(); }
  void reset() {
    if (file_.sha256.empty()) {
      hash_.emplace<crypto::GitBlobHash>(file_.size);
    } else {
      hash_.emplace<crypto::Sha256>();
    }
  }
  void update(std::string_view data) {
    std::visit([&](auto& h) { h.update(data); }, hash_);
  }
  std::string finish() {
    return std::visit([](auto& h) { return h.finish(); }, hash_);
  }
  const std::string& expected() const {
    return file_.sha256.empty() ? file_.git_oid : file_.sha256;
  }
  std::string_view kind() const { return file_.sha256.empty() ? "git blob id" : "sha256"; }

 private:
  const HubFile& file_;
  std::variant<crypto::Sha256, crypto::GitBlobHash> hash_;
};

std::string blob_key(const HubFile& f) {
  return f.sha256.empty() ? "git-" + f.git_oid : "sha256-" + f.sha256;
}

Json file_json(const HubFile& f) {
  Json j = {{"path", f.path}, {"size", f.size}, {"oid", f.git_oid}};
  if (!f.sha256.empty()) j["sha256"] = f.sha256;
  return j;
}

Result<std::vector<HubFile>> files_from(const Json& source) {
  std::vector<HubFile> files;
  try {
    for (const Json& j : source.at("files")) {
      files.push_back(HubFile{.path = j.at("path").get<std::string>(),
                              .size = j.at("size").get<int64_t>(),
                              .git_oid = j.at("oid").get<std::string>(),
                              .sha256 = j.value("sha256", "")});
    }
  } catch (const std::exception&) {
    return fail(ErrorCode::kInternal, "the stored file list is malformed");
  }
  return files;
}

bool matches(const std::vector<std::string>& patterns, const std::string& path) {
  return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& p) {
    return ::fnmatch(p.c_str(), path.c_str(), 0) == 0;
  });
}

Result<void> check_patterns(const std::vector<std::string>& patterns, const std::string& field) {
  if (patterns.size() > kMaxPatterns) {
    return fail(ErrorCode::kInvalidArgument, "must list at most 32 patterns", field);
  }
  for (const auto& p : patterns) {
    if (p.empty() || p.size() > 200 || std::any_of(p.begin(), p.end(), [](char c) {
          return static_cast<unsigned char>(c) < 0x20;
        })) {
      return fail(ErrorCode::kInvalidArgument, "holds an empty, long or unprintable pattern",
                  field);
    }
  }
  return {};
}

std::string default_name(const std::string& repo) {
  std::string name = repo.substr(repo.find('/') + 1);
  for (char& c : name) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return name;
}

std::string errno_text(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

Result<std::string> read_small(const std::string& path, int64_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(ErrorCode::kInternal, "cannot read " + path);
  std::string data(static_cast<size_t>(limit), '\0');
  in.read(data.data(), limit);
  data.resize(static_cast<size_t>(in.gcount()));
  return data;
}

// The safetensors header of a file in the tree.
Result<SafetensorsSummary> read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string first8(8, '\0');
  if (!in.read(first8.data(), 8)) {
    return fail(ErrorCode::kInvalidArgument, path + " is not a safetensors file");
  }
  FAB_ASSIGN_OR_RETURN(int64_t n, safetensors_header_length(first8));
  std::string header(static_cast<size_t>(n), '\0');
  if (!in.read(header.data(), n)) {
    return fail(ErrorCode::kInvalidArgument, path + " is shorter than its safetensors header");
  }
  return parse_safetensors_header(header);
}

std::string mkfs_program() {
  for (const char* p : {"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "mkfs.ext4";
}

}  // namespace

const std::vector<std::string>& Models::default_include() {
  static const std::vector<std::string> patterns = {"*.safetensors", "*.json",     "tokenizer*",
                                                    "*.model",       "*.tiktoken", "merges.txt",
                                                    "vocab.txt",     "*.jinja"};
  return patterns;
}

Models::Models(storage::Storage& storage, Marketplaces& marketplaces, auth::Authorizer& authorizer,
               const crypto::Sealer& sealer, const Clock& clock, ModelsOptions options)
    : storage_(storage),
      authorizer_(authorizer),
      marketplaces_(marketplaces),
      sealer_(sealer),
      clock_(clock),
      options_(options) {
  storage_.set_delete_listener([this](const storage::Image& image) { on_deleted(image); });
}

Models::~Models() { stop(); }

Result<void> Models::bootstrap() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = false;
    if (workers_.empty()) {
      for (int i = 0; i < std::max(1, options_.parallel_imports); ++i) {
        workers_.emplace_back([this] { worker(); });
      }
    }
  }
  FAB_ASSIGN_OR_RETURN(auto locked, storage_.locked_images("hf"));
  for (const auto& image : locked) enqueue(image.header.id);
  return {};
}

void Models::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

void Models::enqueue(int64_t id) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(id);
  }
  wake_.notify_all();
}

bool Models::cancelled(int64_t id) {
  std::lock_guard lock(mutex_);
  return stopping_ || cancelled_.contains(id);
}

bool Models::pause(int64_t id, std::chrono::milliseconds d) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, d, [&] { return stopping_ || cancelled_.contains(id); });
}

void Models::on_deleted(const storage::Image& image) {
  if (image.type != storage::ImageType::kModel) return;
  {
    std::lock_guard lock(mutex_);
    cancelled_.insert(image.header.id);
  }
  wake_.notify_all();
  auto ds = storage_.find_datastore(image.datastore_id);
  if (ds) sweep_blobs(ds->path + "/.blobs");
}

void Models::sweep_blobs(const std::string& blobs) {
  std::lock_guard lock(blobs_mutex_);
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(blobs, ec)) {
    struct stat st {};
    if (!entry.is_regular_file(ec) || ::lstat(entry.path().c_str(), &st) != 0) continue;
    if (st.st_nlink == 1) fs::remove(entry.path(), ec);
  }
}

// ---- The request: everything checked before the first byte ----

Result<storage::Image> Models::import(const auth::Caller& caller, const ImportRequest& request) {
  FAB_ASSIGN_OR_RETURN(HubRef ref, parse_hub_uri(request.source));
  std::string name = request.name.value_or(default_name(ref.repo));
  FAB_TRY(validate_name(name));
  std::vector<std::string> include = request.include.value_or(default_include());
  FAB_TRY(check_patterns(include, "include"));
  FAB_TRY(check_patterns(request.exclude, "exclude"));
  if (request.token && (request.token->empty() || request.token->size() > 1024 ||
                        std::any_of(request.token->begin(), request.token->end(), [](char c) {
                          return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
                        }))) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 to 1024 printable characters", "token");
  }
  // Authorization first, before the Hub hears of the request: the group, the datastore and
  // the marketplace (kNotFound as for any object the caller may not see).
  FAB_TRY(authorizer_.require_create(caller, ObjectType::kImage, request.gid.value_or(caller.gid)));
  auto ds = storage_.get_datastore(caller, request.datastore_id);
  if (!ds) return fail(ds.error().code(), ds.error().message(), "datastore_id");
  FAB_ASSIGN_OR_RETURN(Marketplace market, marketplaces_.pick(caller, request.marketplace_id,
                                                              MarketKind::kHuggingFace));
  FAB_ASSIGN_OR_RETURN(auto hub, Hub::create(HubOptions{.endpoint = market.url,
                                                        .token = request.token.value_or(""),
                                                        .timeout = options_.timeout}));
  // The Hub's answers, retried while it asks us to wait (429) or is briefly away.
  auto patient = [&](auto call) {
    for (int attempt = 1;; ++attempt) {
      auto r = call();
      if (r || attempt >= 3) return r;
      ErrorCode code = r.error().code();
      if (code != ErrorCode::kResourceExhausted && code != ErrorCode::kUnavailable) return r;
      auto wait = std::chrono::milliseconds(1000 * r.error().retry_after_seconds().value_or(1));
      std::this_thread::sleep_for(std::min(wait, std::chrono::milliseconds(5000)));
    }
  };
  FAB_ASSIGN_OR_RETURN(std::string commit, patient([&] { return hub->resolve(ref); }));
  FAB_ASSIGN_OR_RETURN(auto all, patient([&] { return hub->tree(ref.repo, commit); }));
  std::vector<HubFile> files;
  int64_t bytes = 0, new_bytes = 0;
  bool config = false;
  for (auto& f : all) {
    if (!matches(include, f.path) || matches(request.exclude, f.path)) continue;
    config = config || f.path == "config.json";
    bytes += f.size;
    if (!fs::exists(ds->path + "/.blobs/" + blob_key(f))) new_bytes += f.size;
    files.push_back(std::move(f));
  }
  if (!config) {
    return fail(ErrorCode::kInvalidArgument,
                ref.repo + " at " + commit.substr(0, 12) +
                    " has no config.json among the files chosen (" + std::to_string(files.size()) +
                    " of " + std::to_string(all.size()) +
                    "): not a transformers model, or the "
                    "include patterns leave it out",
                "include");
  }
  Json listed = Json::array();
  for (const auto& f : files) listed.push_back(file_json(f));
  Json source = {{"kind", "hf"},
                 {"uri", ref.uri()},
                 {"repo", ref.repo},
                 {"revision", ref.revision},
                 {"commit", commit},
                 {"marketplace_id", market.header.id},
                 {"endpoint", market.url},
                 {"include", include},
                 {"exclude", request.exclude},
                 {"files", listed}};
  FAB_ASSIGN_OR_RETURN(
      storage::Image image,
      storage_.create_model(caller, storage::Storage::NewModel{
                                        .name = name,
                                        .gid = request.gid,
                                        .datastore_id = request.datastore_id,
                                        .description = request.description,
                                        .bytes = bytes,
                                        .new_bytes = new_bytes,
                                        .source = source,
                                        .sealed_token = request.token ? sealer_.seal(*request.token)
                                                                      : std::string()}));
  enqueue(image.header.id);
  return image;
}

Result<storage::Image> Models::get(const auth::Caller& caller, int64_t id) {
  auto image = storage_.get_image(caller, id);
  if (!image || image->type != storage::ImageType::kModel) {
    if (image || image.error().code() == ErrorCode::kNotFound) {
      return fail(ErrorCode::kNotFound, model_noun(id) + " not found");
    }
    return fail(image.error());
  }
  return image;
}

Result<auth::Page<storage::Image>> Models::list(const auth::Caller& caller,
                                                const auth::ListOptions& options) {
  return storage_.list_images(caller, options, storage::ImageType::kModel);
}

Result<void> Models::remove(const auth::Caller& caller, int64_t id) {
  FAB_TRY(get(caller, id));
  return storage_.delete_image(caller, id);
}

// ---- The background part ----

void Models::worker() {
  while (true) {
    int64_t id;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      id = queue_.front();
      queue_.pop_front();
    }
    run_import(id);
  }
}

void Models::run_import(int64_t id) {
  auto image = storage_.find_image(id);
  if (!image || image->state() != storage::ImageState::kLocked) return;
  auto ds = storage_.find_datastore(image->datastore_id);
  bool local = ds && ds->driver == storage::DatastoreDriver::kLocal;
  std::string staged = storage::Storage::staged_path(*image);
  std::string tree = local ? image->path + ".tree" : staged;
  Progress progress;
  progress.image_id = id;
  Result<Json> facts =
      ds ? import_files(*image, *ds, tree, progress) : Result<Json>(fail(ds.error()));
  std::error_code ec;
  if (cancelled(id)) {
    // Deleted (the image is gone: so is its tree) or fabricad stopping (resumed later).
    fs::remove_all(tree, ec);
    return;
  }
  int64_t size = progress.bytes_total;
  if (facts && local) {
    // A raw ext4 volume with the tree in it, for hosts that copy images.
    size = ((progress.bytes_total + progress.bytes_total / 8 + (64 << 20)) >> 20) << 20;
    fs::remove(staged, ec);
    auto made = run_process({mkfs_program(), "-q", "-F", "-t", "ext4", "-L", "model", "-d", tree,
                             staged, std::to_string(size >> 10) + "k"});
    if (!made) facts = fail(ErrorCode::kInternal, "mkfs.ext4 failed: " + made.error().message());
  }
  if (facts) (*facts)["files_verified"] = progress.files_total;
  (void)storage_.finish_model(id, staged, facts, size, local ? "raw" : "dir");
  if (local) fs::remove_all(tree, ec);  // The volume holds it, or the import failed.
}

Result<Json> Models::import_files(const storage::Image& image, const storage::Datastore& ds,
                                  const std::string& tree, Progress& progress) {
  const Json& source = image.source;
  FAB_ASSIGN_OR_RETURN(std::vector<HubFile> files, files_from(source));
  std::string token;
  if (!image.sealed_token.empty()) {
    FAB_ASSIGN_OR_RETURN(token, sealer_.open(image.sealed_token));
  }
  std::string blobs = ds.path + "/.blobs";
  std::error_code ec;
  fs::remove_all(tree, ec);  // Links are cheap: a resumed import makes them again.
  fs::create_directories(blobs + "/partial", ec);
  fs::permissions(blobs, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec, ec);
  fs::create_directories(tree, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot create " + tree + ": " + ec.message());
  progress.files_total = static_cast<int>(files.size());
  for (const auto& f : files) progress.bytes_total += f.size;

  std::atomic<size_t> next{0};
  std::mutex failure_mutex;
  std::optional<Error> failure;
  auto work = [&] {
    auto hub = Hub::create(HubOptions{
        .endpoint = source.value("endpoint", ""), .token = token, .timeout = options_.timeout});
    for (size_t i = next++; i < files.size(); i = next++) {
      {
        std::lock_guard lock(failure_mutex);
        if (failure) return;
      }
      auto fetched = hub ? fetch_file(**hub, image, files[i], blobs, tree, progress)
                         : Result<void>(fail(hub.error()));
      if (!fetched) {
        std::lock_guard lock(failure_mutex);
        if (!failure) failure = fetched.error();
        return;
      }
      ++progress.files_done;
    }
  };
  std::vector<std::thread> threads;
  int n = std::clamp(options_.parallel_files, 1, std::max<int>(1, static_cast<int>(files.size())));
  for (int i = 0; i < n; ++i) threads.emplace_back(work);
  for (auto& t : threads) t.join();
  if (failure) return fail(*failure);

  FAB_ASSIGN_OR_RETURN(std::string config_text, read_small(tree + "/config.json", kMaxConfig));
  auto config = parse_json(config_text);
  if (!config) {
    return fail(ErrorCode::kInvalidArgument, "config.json is not JSON: " + config.error().message(),
                "config.json");
  }
  std::vector<SafetensorsSummary> shards;
  for (const auto& f : files) {
    if (!f.path.ends_with(".safetensors")) continue;
    auto summary = read_safetensors(tree + "/" + f.path);
    if (!summary) {
      return fail(ErrorCode::kInvalidArgument, f.path + ": " + summary.error().message());
    }
    shards.push_back(*summary);
  }
  FAB_ASSIGN_OR_RETURN(Json facts, model_facts(*config, shards));
  facts["commit"] = source.value("commit", "");
  facts["repo"] = source.value("repo", "");
  facts["files_reused"] = progress.files_reused.load();
  return facts;
}

Result<void> Models::link_blob(const std::string& blob, const std::string& tree,
                               const std::string& path) {
  std::string target = tree + "/" + path;
  std::error_code ec;
  fs::create_directories(fs::path(target).parent_path(), ec);
  fs::remove(target, ec);
  if (::link(blob.c_str(), target.c_str()) != 0) {
    return fail(ErrorCode::kInternal, errno_text("cannot link", target));
  }
  return {};
}

Result<void> Models::fetch_file(Hub& hub, const storage::Image& image, const HubFile& file,
                                const std::string& blobs, const std::string& tree,
                                Progress& progress) {
  const int64_t id = image.header.id;
  std::string key = blob_key(file);
  std::string blob = blobs + "/" + key;
  auto report = [&](bool force) {
    auto elapsed = std::chrono::steady_clock::now() - progress.started;
    int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count();
    if (!force && ms - progress.last_report_ms.load() < 200) return;
    progress.last_report_ms = ms;
    double rate = ms > 0 ? static_cast<double>(progress.downloaded.load()) * 1000.0 / ms : 0;
    int64_t left = progress.bytes_total - progress.bytes_done.load();
    Json extra = {{"files_done", progress.files_done.load()},
                  {"files_total", progress.files_total},
                  {"rate_bytes_per_s", static_cast<int64_t>(rate)},
                  {"eta_s", rate > 0 ? Json(static_cast<int64_t>(left / rate)) : Json(nullptr)}};
    storage_.report_progress(id, progress.bytes_done.load(), extra);
  };
  {
    std::lock_guard lock(blobs_mutex_);
    struct stat st {};
    if (::stat(blob.c_str(), &st) == 0 && st.st_size == file.size) {
      FAB_TRY(link_blob(blob, tree, file.path));
      progress.bytes_done += file.size;
      ++progress.files_reused;
      report(false);
      return {};
    }
  }
  std::string part = blobs + "/partial/" + key + "-" + std::to_string(file.size);
  int fd = ::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return fail(ErrorCode::kInternal, errno_text("cannot open", part));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  FileHash hash(file);
  int64_t offset = ::lseek(fd, 0, SEEK_END);
  if (offset > file.size) {
    if (::ftruncate(fd, 0) != 0) return fail(ErrorCode::kInternal, errno_text("cannot cut", part));
    offset = 0;
  }
  // What an earlier run left is hashed again: the digest covers the whole file.
  std::vector<char> buffer(1 << 20);
  for (int64_t at = 0; at < offset;) {
    ssize_t n = ::pread(fd, buffer.data(), buffer.size(), at);
    if (n <= 0) return fail(ErrorCode::kInternal, errno_text("cannot read", part));
    hash.update(std::string_view(buffer.data(), static_cast<size_t>(n)));
    at += n;
  }
  progress.bytes_done += offset;
  std::optional<Error> write_error;
  auto sink = [&](std::string_view data) {
    if (offset + static_cast<int64_t>(data.size()) > file.size) {
      write_error = Error(ErrorCode::kUnavailable, "the Hub sent more than " + file.path + "'s " +
                                                       std::to_string(file.size) + " bytes");
      return false;
    }
    while (!data.empty()) {
      ssize_t n = ::pwrite(fd, data.data(), data.size(), offset);
      if (n < 0) {
        write_error = Error(ErrorCode::kInternal, errno_text("cannot write", part));
        return false;
      }
      hash.update(data.substr(0, static_cast<size_t>(n)));
      data.remove_prefix(static_cast<size_t>(n));
      offset += n;
      progress.bytes_done += n;
      progress.downloaded += n;
    }
    report(false);
    return !cancelled(id);
  };
  auto restart = [&] {
    progress.bytes_done -= offset;
    offset = 0;
    if (::ftruncate(fd, 0) != 0)
      write_error = Error(ErrorCode::kInternal, errno_text("cannot cut", part));
    hash.reset();
  };
  int idle = 0;
  while (offset < file.size) {
    if (cancelled(id)) return fail(ErrorCode::kAborted, "cancelled");
    int64_t before = offset;
    auto got = hub.download(image.source.value("repo", ""), image.source.value("commit", ""),
                            file.path, offset, sink, restart);
    if (write_error) {
      if (write_error->code() != ErrorCode::kUnavailable) return fail(*write_error);
      got = fail(*write_error);
      write_error.reset();
    }
    if (got) continue;  // The loop checks the length; a short body is resumed.
    ErrorCode code = got.error().code();
    if (code == ErrorCode::kAborted) return fail(ErrorCode::kAborted, "cancelled");
    if (code != ErrorCode::kUnavailable && code != ErrorCode::kResourceExhausted) {
      return fail(ErrorCode::kFailedPrecondition, file.path + ": " + got.error().message(),
                  got.error().field());
    }
    idle = offset > before ? 0 : idle + 1;
    if (idle >= options_.attempts) {
      return fail(ErrorCode::kUnavailable,
                  file.path + ": gave up after " + std::to_string(idle) +
                      " tries that moved no byte: " + got.error().message());
    }
    auto wait =
        code == ErrorCode::kResourceExhausted
            ? std::min(
                  options_.longest_wait,
                  std::chrono::milliseconds(1000 * got.error().retry_after_seconds().value_or(1)))
            : std::chrono::milliseconds(std::min(5000, 100 << std::min(idle, 6)));
    if (!pause(id, wait)) return fail(ErrorCode::kAborted, "cancelled");
  }
  std::string digest = hash.finish();
  if (digest != hash.expected()) {
    (void)::ftruncate(fd, 0);
    ::unlink(part.c_str());
    progress.bytes_done -= offset;
    return fail(ErrorCode::kFailedPrecondition,
                file.path + " does not match its " + std::string(hash.kind()) + ": the Hub lists " +
                    hash.expected() + ", the bytes received hash to " + digest +
                    " (the partial file was dropped; import again)",
                "source");
  }
  if (::fdatasync(fd) != 0 || ::fchmod(fd, 0444) != 0) {
    return fail(ErrorCode::kInternal, errno_text("cannot sync", part));
  }
  std::lock_guard lock(blobs_mutex_);
  if (::rename(part.c_str(), blob.c_str()) != 0) {
    return fail(ErrorCode::kInternal, errno_text("cannot store", blob));
  }
  FAB_TRY(link_blob(blob, tree, file.path));
  report(true);
  return {};
}

}  // namespace fabrica::market
