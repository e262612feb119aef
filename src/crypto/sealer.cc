#include "crypto/sealer.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <fstream>
#include <mutex>
#include <shared_mutex>
#include <sstream>
#include <vector>

#include "core/files.h"
#include "crypto/crypto.h"

namespace fabrica::crypto {

struct Sealer::Ring {
  std::string path;  // "" for an in-memory ring.
  mutable std::shared_mutex mutex;
  std::vector<std::string> keys;  // keys[0] seals.
  std::mutex rotating;            // One rotation at a time.
};

namespace {

void ensure_sodium() {
  static const bool ready = sodium_init() >= 0;
  (void)ready;
}

std::string random_key() {
  ensure_sodium();
  std::string key(Sealer::kKeyBytes, '\0');
  randombytes_buf(key.data(), key.size());
  return key;
}

std::string id_of(const std::string& key) {
  return sha256_hex("fabrica sealing key id" + key).substr(0, 16);
}

bool write_all(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Replaces `path` with `keys` whole: a reader (or a restart after a crash) sees the old ring
// or the new one, never a mix.
Result<void> write_ring(const std::string& path, const std::vector<std::string>& keys) {
  std::string bytes;
  for (const auto& k : keys) bytes += k;
  return write_file_atomically(path, bytes);
}

}  // namespace

Result<Sealer> Sealer::with_key(std::string key) {
  if (key.size() != kKeyBytes) {
    return fail(ErrorCode::kInvalidArgument, "a sealing key is 32 bytes", "key");
  }
  auto ring = std::make_shared<Ring>();
  ring->keys.push_back(std::move(key));
  return Sealer(std::move(ring));
}

Sealer Sealer::random() {
  auto ring = std::make_shared<Ring>();
  ring->keys.push_back(random_key());
  return Sealer(std::move(ring));
}

Result<Sealer> Sealer::from_file(const std::string& path) {
  auto ring = std::make_shared<Ring>();
  ring->path = path;
  std::ifstream in(path, std::ios::binary);
  if (in) {
    std::stringstream bytes;
    bytes << in.rdbuf();
    std::string all = bytes.str();
    if (all.empty() || all.size() % kKeyBytes != 0 || all.size() > kMaxKeys * kKeyBytes) {
      return fail(ErrorCode::kInternal,
                  path + " does not hold sealing keys (1 to 16 keys of 32 bytes)");
    }
    for (size_t at = 0; at < all.size(); at += kKeyBytes) {
      ring->keys.push_back(all.substr(at, kKeyBytes));
    }
    return Sealer(std::move(ring));
  }
  std::string key = random_key();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fail(ErrorCode::kInternal, "cannot create " + path);
  bool written = write_all(fd, key) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written) {
    ::unlink(path.c_str());
    return fail(ErrorCode::kInternal, "cannot write " + path);
  }
  ring->keys.push_back(std::move(key));
  return Sealer(std::move(ring));
}

std::string Sealer::seal(std::string_view plaintext) const {
  ensure_sodium();
  std::string box(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plaintext.size(), '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(box.data());
  randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
  std::shared_lock lock(ring_->mutex);
  crypto_secretbox_easy(nonce + crypto_secretbox_NONCEBYTES,
                        reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
                        nonce, reinterpret_cast<const unsigned char*>(ring_->keys[0].data()));
  return base64_encode(box);
}

Result<std::string> Sealer::open(std::string_view sealed) const {
  ensure_sodium();
  auto box = base64_decode(sealed);
  if (!box || box->size() < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) {
    return fail(ErrorCode::kInternal, "a sealed secret is malformed");
  }
  const auto* nonce = reinterpret_cast<const unsigned char*>(box->data());
  size_t length = box->size() - crypto_secretbox_NONCEBYTES;
  std::string plain(length - crypto_secretbox_MACBYTES, '\0');
  std::shared_lock lock(ring_->mutex);
  // The MAC tells the right key: a wrong one never opens.
  for (const auto& key : ring_->keys) {
    if (crypto_secretbox_open_easy(reinterpret_cast<unsigned char*>(plain.data()),
                                   nonce + crypto_secretbox_NONCEBYTES, length, nonce,
                                   reinterpret_cast<const unsigned char*>(key.data())) == 0) {
      return plain;
    }
  }
  return fail(ErrorCode::kInternal,
              "a sealed secret does not open with this server's keys (was the key file "
              "replaced?)");
}

std::string Sealer::key_id() const {
  std::shared_lock lock(ring_->mutex);
  return id_of(ring_->keys[0]);
}

size_t Sealer::keys() const {
  std::shared_lock lock(ring_->mutex);
  return ring_->keys.size();
}

Result<size_t> Sealer::finish(const std::function<Result<size_t>()>& reseal_all) {
  std::lock_guard rotating(ring_->rotating);
  return finish_locked(reseal_all);
}

Result<size_t> Sealer::finish_locked(const std::function<Result<size_t>()>& reseal_all) {
  if (keys() == 1) return 0;
  FAB_ASSIGN_OR_RETURN(size_t resealed, reseal_all());
  std::vector<std::string> kept;
  {
    std::shared_lock lock(ring_->mutex);
    kept.push_back(ring_->keys[0]);
  }
  if (!ring_->path.empty()) FAB_TRY(write_ring(ring_->path, kept));
  std::unique_lock lock(ring_->mutex);
  ring_->keys = std::move(kept);
  return resealed;
}

Result<Rotation> Sealer::rotate(const std::function<Result<size_t>()>& reseal_all) {
  std::lock_guard rotating(ring_->rotating);
  Rotation done;
  std::vector<std::string> staged{random_key()};
  {
    std::shared_lock lock(ring_->mutex);
    done.previous_key_id = id_of(ring_->keys[0]);
    // The keys of rotations that failed before their re-seal committed stay: secrets may
    // still be sealed under any of them.
    if (ring_->keys.size() >= kMaxKeys) {
      return fail(ErrorCode::kFailedPrecondition,
                  "the sealing keyring holds " + std::to_string(ring_->keys.size()) +
                      " keys: earlier rotations failed; see the server log");
    }
    staged.insert(staged.end(), ring_->keys.begin(), ring_->keys.end());
  }
  if (!ring_->path.empty()) FAB_TRY(write_ring(ring_->path, staged));
  {
    std::unique_lock lock(ring_->mutex);
    ring_->keys = std::move(staged);
    done.key_id = id_of(ring_->keys[0]);
  }
  FAB_ASSIGN_OR_RETURN(done.resealed, finish_locked(reseal_all));
  return done;
}

}  // namespace fabrica::crypto
