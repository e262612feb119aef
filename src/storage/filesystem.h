#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"
#include "crypto/crypto.h"

namespace fabrica::storage {

// Space on the filesystem holding a path, in bytes.
struct Capacity {
  int64_t total = 0;
  int64_t free = 0;  // Available to fabricad (statvfs f_bavail).
  std::string type;  // The filesystem's type as mounted: "ext4", "nfs4", "wekafs"...
  int64_t used() const { return total - free; }
};

// What `qemu-img info` says of a disk file.
struct DiskInfo {
  std::string format;  // "qcow2", "raw", ...
  int64_t virtual_size = 0;
  int64_t actual_size = 0;
  bool has_backing_file = false;
  bool corrupt = false;  // qcow2's "corrupt" flag.
};

// A file being written from the start or from an offset (an upload resuming). Not
// thread-safe.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Result<void> append(std::string_view data) = 0;
  // Everything appended so far is on disk (fdatasync).
  virtual Result<void> sync() = 0;
};

// The filesystem under the datastores, as fabricad sees it: the seam where tests inject
// copy and write failures (leveldb's Env). Every method is thread-safe; errors are
// kInternal naming the path and the system's reason unless said otherwise.
class Filesystem {
 public:
  virtual ~Filesystem() = default;
  // kNotFound when `path` does not exist.
  virtual Result<Capacity> capacity(const std::string& path) = 0;
  // Creates `path` and its parents (mode 0750) when missing.
  virtual Result<void> make_dirs(const std::string& path) = 0;
  // kNotFound when absent; kInvalidArgument when not a regular file.
  virtual Result<int64_t> file_size(const std::string& path) = 0;
  // Copies `from` to `to` (replacing it) and syncs it. `progress(bytes copied so far)` is
  // called now and then; returning false cancels the copy (kAborted).
  virtual Result<void> copy(const std::string& from, const std::string& to,
                            const std::function<bool(int64_t)>& progress) = 0;
  // Opens `path` for writing at `offset`: created when missing, cut to `offset` (bytes past it
  // were never acknowledged).
  virtual Result<std::unique_ptr<WritableFile>> open_at(const std::string& path,
                                                        int64_t offset) = 0;
  // Reads `path` from the start in pieces of at most a few MiB, up to `length` bytes.
  virtual Result<void> read(const std::string& path, int64_t length,
                            const std::function<void(std::string_view)>& piece) = 0;
  // Atomic replace, then syncs the directory.
  virtual Result<void> rename(const std::string& from, const std::string& to) = 0;
  // Removes a file, or a directory tree (a model image); absent is fine.
  virtual Result<void> remove(const std::string& path) = 0;
  // `qemu-img info`: kInvalidArgument when qemu-img cannot read it as a disk.
  virtual Result<DiskInfo> inspect(const std::string& path) = 0;
  // `qemu-img check` for formats with metadata: kInvalidArgument with what it found.
  virtual Result<void> check(const std::string& path, const std::string& format) = 0;
  // `qemu-img create -f <format> <path> <bytes>`: an empty disk.
  virtual Result<void> create_disk(const std::string& path, const std::string& format,
                                   int64_t bytes) = 0;
};

// The real one: POSIX calls and qemu-img.
std::unique_ptr<Filesystem> make_posix_filesystem();

}  // namespace fabrica::storage
