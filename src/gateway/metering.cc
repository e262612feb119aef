#include "gateway/metering.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "client/http_client.h"
#include "core/files.h"
#include "crypto/crypto.h"

namespace fabrica::gateway {
namespace {

namespace fs = std::filesystem;

Error io_error(const std::string& what) {
  return Error(ErrorCode::kInternal, what + ": " + std::strerror(errno));
}

Result<void> write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail(io_error("cannot write the usage spool"));
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<Spool>> Spool::open(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return fail(ErrorCode::kInternal, "cannot create " + dir + ": " + ec.message());
  std::string path = dir + "/usage.spool";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return fail(io_error("cannot open " + path));
  struct stat st {};
  ::fstat(fd, &st);
  auto size = static_cast<uint64_t>(st.st_size);
  // A line cut short by a power loss is not a record: drop it.
  if (size > 0) {
    std::ifstream in(path, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t keep = all.rfind('\n');
    keep = keep == std::string::npos ? 0 : keep + 1;
    if (keep != all.size()) {
      spdlog::warn("usage spool: dropping a torn last record ({} bytes)", all.size() - keep);
      if (::ftruncate(fd, static_cast<off_t>(keep)) != 0) return fail(io_error("truncate"));
      size = keep;
    }
  }
  uint64_t cursor = 0;
  std::ifstream in(dir + "/usage.cursor");
  if (in) in >> cursor;
  if (cursor > size) cursor = size;
  auto spool = std::unique_ptr<Spool>(new Spool(dir, fd, cursor));
  spool->size_ = size;
  return spool;
}

Spool::Spool(std::string dir, int fd, uint64_t cursor)
    : dir_(std::move(dir)), fd_(fd), cursor_(cursor) {}

Spool::~Spool() {
  if (fd_ >= 0) {
    ::fdatasync(fd_);
    ::close(fd_);
  }
}

Result<void> Spool::append(const Json& record) {
  std::string line = dump_json(record);
  line += '\n';
  std::lock_guard lock(mutex_);
  FAB_TRY(write_all(fd_, line));
  size_ += line.size();
  return {};
}

Result<Spool::Batch> Spool::next(size_t max) {
  uint64_t from, to;
  {
    std::lock_guard lock(mutex_);
    from = cursor_;
    to = size_;
  }
  Batch batch{.end = from};
  if (from >= to) return batch;
  size_t want = static_cast<size_t>(std::min<uint64_t>(to - from, 8u << 20));
  std::string data(want, '\0');
  ssize_t n = ::pread(fd_, data.data(), want, static_cast<off_t>(from));
  if (n < 0) return fail(io_error("cannot read the usage spool"));
  data.resize(static_cast<size_t>(n));
  size_t at = 0;
  while (batch.lines.size() < max) {
    size_t nl = data.find('\n', at);
    if (nl == std::string::npos) break;
    batch.lines.push_back(data.substr(at, nl - at));
    at = nl + 1;
  }
  batch.end = from + at;
  return batch;
}

Result<void> Spool::write_cursor(uint64_t cursor) {
  // No directory fsync: a cursor lost to a power cut only re-ships records fabricad drops as
  // duplicates.
  auto written = write_file_atomically(dir_ + "/usage.cursor", std::to_string(cursor) + "\n",
                                       /*sync_directory=*/false);
  if (!written) return fail(io_error("cannot write the usage cursor"));
  return {};
}

Result<void> Spool::commit(uint64_t end) {
  std::lock_guard lock(mutex_);
  if (end <= cursor_) return {};
  if (end == size_) {
    // Everything is acknowledged: start the file again. A crash between the two steps leaves a
    // cursor past the end, which open() reads as "nothing pending".
    if (::ftruncate(fd_, 0) != 0) return fail(io_error("cannot empty the usage spool"));
    size_ = 0;
    cursor_ = 0;
    return write_cursor(0);
  }
  FAB_TRY(write_cursor(end));
  cursor_ = end;
  return {};
}

Result<void> Spool::reject(const std::vector<std::string>& lines) {
  std::string path = dir_ + "/usage.rejected";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return fail(io_error("cannot open " + path));
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  auto written = write_all(fd, text);
  ::fsync(fd);
  ::close(fd);
  return written;
}

void Spool::sync() { ::fdatasync(fd_); }

uint64_t Spool::pending_bytes() {
  std::lock_guard lock(mutex_);
  return size_ - cursor_;
}

Shipper::Shipper(Spool& spool, ShipperOptions options)
    : spool_(spool), options_(std::move(options)) {}

Shipper::~Shipper() { stop(std::chrono::milliseconds(0)); }

void Shipper::start() {
  thread_ = std::thread([this] { run(); });
}

void Shipper::wake() {
  std::lock_guard lock(mutex_);
  woken_ = true;
  wake_.notify_one();
}

void Shipper::stop(std::chrono::milliseconds limit) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    drain_deadline_ = std::chrono::steady_clock::now() + limit;
    wake_.notify_one();
  }
  if (thread_.joinable()) thread_.join();
}

bool Shipper::ship_once(client::HttpClient& http) {
  auto batch = spool_.next(options_.batch);
  if (!batch) {
    spdlog::error("usage spool: {}", batch.error().message());
    return false;
  }
  if (batch->lines.empty()) return true;
  std::string body = "{\"records\":[";
  for (size_t i = 0; i < batch->lines.size(); ++i) {
    if (i) body += ',';
    body += batch->lines[i];
  }
  body += "]}";
  auto response = http.request(
      "POST", "/api/v1/gateway/usage", body,
      {{"Authorization",
        "Bearer " + (options_.token_source ? options_.token_source() : options_.token)},
       {"Content-Type", "application/json"}});
  if (!response || response->status >= 500 || response->status == 401 || response->status == 403 ||
      response->status == 429) {
    if (connected_.exchange(false)) {
      spdlog::warn(
          "usage: fabricad is not taking records ({}); they wait in the spool",
          response ? "HTTP " + std::to_string(response->status) : response.error().message());
    }
    return false;
  }
  if (!connected_.exchange(true)) spdlog::info("usage: shipping to {}", options_.server);
  if (response->status >= 400) {
    spdlog::error("usage: fabricad refused {} records as ill-formed ({}); kept in usage.rejected",
                  batch->lines.size(), response->body.substr(0, 300));
    if (auto r = spool_.reject(batch->lines); !r) return false;
  } else {
    shipped_ += batch->lines.size();
  }
  auto committed = spool_.commit(batch->end);
  if (!committed) spdlog::error("usage: {}", committed.error().message());
  return static_cast<bool>(committed);
}

void Shipper::run() {
  auto http = client::HttpClient::create(options_.server, {.ca_file = options_.server_ca_file});
  if (!http) {
    spdlog::error("usage: {}", http.error().message());
    return;
  }
  (*http)->set_timeout(std::chrono::seconds(10));
  auto backoff = options_.interval;
  auto last_sync = std::chrono::steady_clock::now();
  while (true) {
    bool ok = true;
    while (ok && spool_.pending_bytes() > 0) ok = ship_once(**http);
    auto now = std::chrono::steady_clock::now();
    if (now - last_sync >= std::chrono::seconds(1)) {
      spool_.sync();
      last_sync = now;
    }
    backoff = ok ? options_.interval : std::min(backoff * 2, std::chrono::milliseconds(5000));
    std::unique_lock lock(mutex_);
    if (stopping_ && (spool_.pending_bytes() == 0 || now >= drain_deadline_)) break;
    wake_.wait_for(lock, stopping_ ? std::chrono::milliseconds(100) : backoff,
                   [&] { return woken_ || (stopping_ && ok); });
    woken_ = false;
  }
  spool_.sync();
}

RecordIds::RecordIds(std::string name)
    : name_(std::move(name)), prefix_(name_ + "-" + crypto::random_hex(6) + "-") {}

std::string RecordIds::next() { return prefix_ + std::to_string(++n_); }

}  // namespace fabrica::gateway
