#include "storage/filesystem.h"

#include <fcntl.h>
#include <mntent.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <future>
#include <vector>

#include "core/json.h"
#include "core/process.h"

namespace fabrica::storage {
namespace {

namespace fs = std::filesystem;

Error sys_error(const std::string& what, const std::string& path) {
  return Error(ErrorCode::kInternal, what + " " + path + ": " + std::strerror(errno));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

Result<void> write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(sys_error("cannot write", path));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<void> sync_dir(const std::string& path) {
  std::string dir = fs::path(path).parent_path().string();
  Fd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || ::fsync(fd.get()) != 0) return fail(sys_error("cannot sync", dir));
  return {};
}

Result<void> pwrite_all(int fd, const char* data, size_t size, int64_t offset,
                        const std::string& path) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(sys_error("cannot write", path));
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += n;
  }
  return {};
}

// Image data arrives at a few GB/s and is read once by qemu: it bypasses the page cache
// (O_DIRECT, whose copies cost more than the disk on most machines) in aligned 4 MiB blocks,
// written on a second thread while the next block fills. Bytes before the first aligned
// offset and after the last full block go through the page cache. Filesystems without
// O_DIRECT (tmpfs) get plain writes.
class PosixFile : public WritableFile {
 public:
  static constexpr size_t kBlock = 4 << 20;
  static constexpr int64_t kAlign = 4096;

  PosixFile(int fd, int direct_fd, std::string path, int64_t offset)
      : fd_(fd), direct_fd_(direct_fd), path_(std::move(path)), end_(offset) {
    if (direct_fd_.get() >= 0) {
      for (auto& b : blocks_) {
        void* p = nullptr;
        if (::posix_memalign(&p, kAlign, kBlock) != 0) throw std::bad_alloc();
        b.reset(static_cast<char*>(p));
      }
    }
  }
  ~PosixFile() override {
    if (pending_.valid()) (void)pending_.get();
  }

  Result<void> append(std::string_view data) override {
    if (direct_fd_.get() < 0) {
      FAB_TRY(pwrite_all(fd_.get(), data.data(), data.size(), end_, path_));
      end_ += static_cast<int64_t>(data.size());
      return {};
    }
    // Up to the first aligned offset through the page cache.
    if (filled_ == 0 && end_ % kAlign != 0) {
      size_t head = std::min<size_t>(data.size(), static_cast<size_t>(kAlign - end_ % kAlign));
      FAB_TRY(pwrite_all(fd_.get(), data.data(), head, end_, path_));
      end_ += static_cast<int64_t>(head);
      data.remove_prefix(head);
    }
    while (!data.empty()) {
      size_t n = std::min(data.size(), kBlock - filled_);
      std::memcpy(blocks_[current_].get() + filled_, data.data(), n);
      filled_ += n;
      data.remove_prefix(n);
      if (filled_ == kBlock) FAB_TRY(flush_block());
    }
    return {};
  }

  Result<void> sync() override {
    FAB_TRY(wait_pending());
    if (filled_ > 0) {
      size_t aligned = filled_ & ~static_cast<size_t>(kAlign - 1);
      const char* data = blocks_[current_].get();
      if (aligned > 0) FAB_TRY(pwrite_all(direct_fd_.get(), data, aligned, end_, path_));
      FAB_TRY(pwrite_all(fd_.get(), data + aligned, filled_ - aligned, end_ + aligned, path_));
      end_ += static_cast<int64_t>(filled_);
      filled_ = 0;
    }
    if (::fdatasync(fd_.get()) != 0) return fail(sys_error("cannot sync", path_));
    return {};
  }

 private:
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };

  Result<void> wait_pending() {
    if (!pending_.valid()) return {};
    return pending_.get();
  }

  // Hands the full block to the writer and fills the other one meanwhile.
  Result<void> flush_block() {
    FAB_TRY(wait_pending());
    const char* data = blocks_[current_].get();
    int64_t at = end_;
    pending_ = std::async(std::launch::async, [this, data, at]() -> Result<void> {
      return pwrite_all(direct_fd_.get(), data, kBlock, at, path_);
    });
    end_ += static_cast<int64_t>(kBlock);
    current_ ^= 1;
    filled_ = 0;
    return {};
  }

  Fd fd_;
  Fd direct_fd_;
  std::string path_;
  int64_t end_;  // File offset after the last byte handed to a write.
  std::array<std::unique_ptr<char, Free>, 2> blocks_;
  int current_ = 0;
  size_t filled_ = 0;
  std::future<Result<void>> pending_;
};

class PosixFilesystem : public Filesystem {
 public:
  Result<Capacity> capacity(const std::string& path) override {
    struct statvfs st {};
    if (::statvfs(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return fail(ErrorCode::kNotFound, path + " does not exist");
      return fail(sys_error("cannot read the capacity of", path));
    }
    auto block = static_cast<int64_t>(st.f_frsize);
    return Capacity{.total = static_cast<int64_t>(st.f_blocks) * block,
                    .free = static_cast<int64_t>(st.f_bavail) * block,
                    .type = mount_type(path)};
  }

  // The type of the mount holding `path`: the longest mount point that contains it, from
  // the kernel's mount table.
  static std::string mount_type(const std::string& path) {
    std::error_code ec;
    std::string real = fs::weakly_canonical(path, ec).string();
    if (ec) real = path;
    std::string best_dir, best_type;
    FILE* table = ::setmntent("/proc/self/mounts", "r");
    if (table == nullptr) return "";
    while (struct mntent* m = ::getmntent(table)) {
      std::string dir = m->mnt_dir;
      bool inside = real == dir || dir == "/" ||
                    (real.starts_with(dir) && real.size() > dir.size() && real[dir.size()] == '/');
      if (inside && dir.size() >= best_dir.size()) {
        best_dir = dir;
        best_type = m->mnt_type;
      }
    }
    ::endmntent(table);
    return best_type;
  }

  Result<void> make_dirs(const std::string& path) override {
    std::error_code ec;
    fs::create_directories(path, ec);
    if (ec) return fail(ErrorCode::kInternal, "cannot create " + path + ": " + ec.message());
    fs::permissions(path, fs::perms(0750), fs::perm_options::replace, ec);
    return {};
  }

  Result<int64_t> file_size(const std::string& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return fail(ErrorCode::kNotFound, path + " does not exist", "path");
      return fail(sys_error("cannot read", path));
    }
    if (!S_ISREG(st.st_mode)) {
      return fail(ErrorCode::kInvalidArgument, path + " is not a regular file", "path");
    }
    return static_cast<int64_t>(st.st_size);
  }

  Result<void> copy(const std::string& from, const std::string& to,
                    const std::function<bool(int64_t)>& progress) override {
    Fd in(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
    if (in.get() < 0) return fail(sys_error("cannot open", from));
    Fd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
    if (out.get() < 0) return fail(sys_error("cannot create", to));
    int64_t copied = 0;
    bool in_kernel = true;
    std::vector<char> buffer;
    while (true) {
      if (!progress(copied)) return fail(ErrorCode::kAborted, "copy to " + to + " cancelled");
      ssize_t n = -1;
      if (in_kernel) {
        n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, 64 << 20, 0);
        if (n < 0 &&
            (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
          in_kernel = false;
          continue;
        }
      } else {
        buffer.resize(4 << 20);
        n = ::read(in.get(), buffer.data(), buffer.size());
        if (n > 0) FAB_TRY(write_all(out.get(), std::string_view(buffer.data(), n), to));
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(sys_error("cannot copy to", to));
      }
      if (n == 0) break;
      copied += n;
    }
    if (::fdatasync(out.get()) != 0) return fail(sys_error("cannot sync", to));
    progress(copied);
    return {};
  }

  Result<std::unique_ptr<WritableFile>> open_at(const std::string& path, int64_t offset) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return fail(sys_error("cannot open", path));
    if (::ftruncate(fd, offset) != 0) {
      ::close(fd);
      return fail(sys_error("cannot cut", path));
    }
    int direct = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
    return std::unique_ptr<WritableFile>(std::make_unique<PosixFile>(fd, direct, path, offset));
  }

  Result<void> read(const std::string& path, int64_t length,
                    const std::function<void(std::string_view)>& piece) override {
    Fd in(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (in.get() < 0) return fail(sys_error("cannot open", path));
    std::vector<char> buffer(4 << 20);
    while (length > 0) {
      ssize_t n = ::read(in.get(), buffer.data(),
                         static_cast<size_t>(std::min<int64_t>(length, buffer.size())));
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(sys_error("cannot read", path));
      }
      if (n == 0) return fail(ErrorCode::kInternal, path + " is shorter than expected");
      piece(std::string_view(buffer.data(), static_cast<size_t>(n)));
      length -= n;
    }
    return {};
  }

  Result<void> rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return fail(sys_error("cannot rename", from));
    return sync_dir(to);
  }

  Result<void> remove(const std::string& path) override {
    if (::unlink(path.c_str()) == 0 || errno == ENOENT) return {};
    if (errno == EISDIR || errno == EPERM) {  // A model image's tree.
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
      if (!ec) return {};
      return fail(ErrorCode::kInternal, "cannot remove " + path + ": " + ec.message());
    }
    return fail(sys_error("cannot remove", path));
  }

  Result<DiskInfo> inspect(const std::string& path) override {
    auto out = run_process({"qemu-img", "info", "--output=json", path});
    if (!out) {
      if (out.error().code() == ErrorCode::kUnavailable) return fail(out.error());
      return fail(ErrorCode::kInvalidArgument, "qemu-img cannot read it: " + out.error().message());
    }
    auto json = parse_json(*out);
    if (!json || !json->is_object()) {
      return fail(ErrorCode::kInternal, "qemu-img info printed something other than JSON");
    }
    DiskInfo info;
    info.format = json->value("format", "");
    info.virtual_size = json->value("virtual-size", int64_t{0});
    info.actual_size = json->value("actual-size", int64_t{0});
    info.has_backing_file = json->contains("backing-filename");
    if (json->contains("format-specific")) {
      const Json& data = (*json)["format-specific"].value("data", Json::object());
      info.corrupt = data.value("corrupt", false);
    }
    return info;
  }

  Result<void> check(const std::string& path, const std::string& format) override {
    if (format == "raw") return {};  // No metadata to check.
    auto out = run_process({"qemu-img", "check", "-q", "-f", format, path});
    if (!out) {
      if (out.error().code() == ErrorCode::kUnavailable) return fail(out.error());
      return fail(ErrorCode::kInvalidArgument,
                  "qemu-img check found damage: " + out.error().message());
    }
    return {};
  }

  Result<void> create_disk(const std::string& path, const std::string& format,
                           int64_t bytes) override {
    FAB_TRY(run_process({"qemu-img", "create", "-q", "-f", format, path, std::to_string(bytes)}));
    return {};
  }
};

}  // namespace

std::unique_ptr<Filesystem> make_posix_filesystem() { return std::make_unique<PosixFilesystem>(); }

}  // namespace fabrica::storage
