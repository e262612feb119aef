#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "auth/authorizer.h"
#include "core/clock.h"
#include "crypto/sealer.h"
#include "market/hub.h"
#include "market/marketplace.h"
#include "storage/storage.h"

namespace fabrica::market {

struct ModelsOptions {
  int parallel_files = 4;                         // Files of one import fetched at once.
  int parallel_imports = 2;                       // Imports running at once; more wait their turn.
  std::chrono::milliseconds timeout{30000};       // A Hub read or write that stalls this long.
  std::chrono::milliseconds longest_wait{60000};  // Most a 429's Retry-After is obeyed.
  int attempts = 8;  // Tries of one file (or one listing) that move no byte, then it fails.
};

// POST /api/v1/models: a Hugging Face repository at a revision, imported as a MODEL image.
struct ImportRequest {
  std::string source;               // "hf://ORG/NAME[@REVISION]"
  std::optional<std::string> name;  // Default: NAME lower-cased.
  std::optional<int64_t> gid;
  int64_t datastore_id = 1;
  std::optional<int64_t> marketplace_id;            // Default: the first enabled huggingface one.
  std::optional<std::vector<std::string>> include;  // fnmatch patterns on the file's path.
  std::vector<std::string> exclude;
  std::optional<std::string> token;  // For gated and private repositories; stored sealed.
  std::string description;
};

// Imports models from the Hugging Face Hub (or a mirror) into MODEL images, the way a
// careful operator would by hand, and better:
//  - before anything is written: the revision resolved to its commit (kept: the import is
//    pinned), the tree at that commit listed (all pages) and filtered, the Hub's refusals
//    (gated, private, token) as clear errors, and the total checked against the datastore's
//    free space and the caller's image quota;
//  - then in the background, `parallel_files` at a time: each file into the datastore's blob
//    store (<datastore>/.blobs, one copy per content across revisions and tenants), resumed
//    with Range from its partial file (<datastore>/.blobs/partial, named by its expected hash
//    and size, so a fabricad restart resumes it), verified (SHA-256 for LFS files, the git
//    blob id for the others), then hard-linked into the image's tree;
//  - progress (bytes, files, rate, ETA) on the image while LOCKED; deleting the image cancels;
//  - at the end the facts (model_facts.h), and on a local datastore a raw ext4 volume made
//    with `mkfs.ext4 -d`; READY, or ERROR saying which file failed and why.
// Thread-safe.
class Models {
 public:
  Models(storage::Storage& storage, Marketplaces& marketplaces, auth::Authorizer& authorizer,
         const crypto::Sealer& sealer, const Clock& clock, ModelsOptions options = {});
  ~Models();
  Models(const Models&) = delete;
  Models& operator=(const Models&) = delete;

  // Starts the import threads and resumes the imports a stop or crash left LOCKED.
  Result<void> bootstrap();
  // Stops the threads; running imports stay LOCKED and resume at the next bootstrap().
  void stop();

  Result<storage::Image> import(const auth::Caller& caller, const ImportRequest& request);
  // MODEL images only: another image id is kNotFound.
  Result<storage::Image> get(const auth::Caller& caller, int64_t id);
  Result<auth::Page<storage::Image>> list(const auth::Caller& caller,
                                          const auth::ListOptions& options);
  // Deletes the image (cancelling its import; partial files stay for a later import).
  Result<void> remove(const auth::Caller& caller, int64_t id);

  // The patterns used when a request gives none: safetensors weights, configs, tokenizers.
  static const std::vector<std::string>& default_include();

 private:
  struct Progress;
  void worker();
  void run_import(int64_t id);
  Result<Json> import_files(const storage::Image& image, const storage::Datastore& ds,
                            const std::string& tree, Progress& progress);
  Result<void> fetch_file(Hub& hub, const storage::Image& image, const HubFile& file,
                          const std::string& blobs, const std::string& tree, Progress& progress);
  Result<void> link_blob(const std::string& blob, const std::string& tree, const std::string& path);
  // Called by Storage after an image is deleted.
  void on_deleted(const storage::Image& image);
  // Removes blobs no image links any more.
  void sweep_blobs(const std::string& blobs);
  bool cancelled(int64_t id);
  // Sleeps `d` unless the import is cancelled or fabricad stops first (false then).
  bool pause(int64_t id, std::chrono::milliseconds d);
  void enqueue(int64_t id);

  storage::Storage& storage_;
  auth::Authorizer& authorizer_;
  Marketplaces& marketplaces_;
  const crypto::Sealer& sealer_;
  const Clock& clock_;
  ModelsOptions options_;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<int64_t> queue_;
  std::set<int64_t> cancelled_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
  // Held while a blob is renamed into the store and linked, and while blobs are swept.
  std::mutex blobs_mutex_;
};

}  // namespace fabrica::market
