#include "crypto/sealer.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "crypto/crypto.h"

namespace fabrica::crypto {
namespace {

void ensure_sodium() {
  static const bool ready = sodium_init() >= 0;
  (void)ready;
}

}  // namespace

Result<Sealer> Sealer::with_key(std::string key) {
  if (key.size() != kKeyBytes) {
    return fail(ErrorCode::kInvalidArgument, "a sealing key is 32 bytes", "key");
  }
  return Sealer(std::move(key));
}

Sealer Sealer::random() {
  ensure_sodium();
  std::string key(kKeyBytes, '\0');
  randombytes_buf(key.data(), key.size());
  return Sealer(std::move(key));
}

Result<Sealer> Sealer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (in) {
    std::stringstream bytes;
    bytes << in.rdbuf();
    auto sealer = with_key(bytes.str());
    if (!sealer) {
      return fail(ErrorCode::kInternal, path + " does not hold a 32-byte sealing key");
    }
    return sealer;
  }
  Sealer made = random();
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return fail(ErrorCode::kInternal, "cannot create " + path);
  bool written =
      ::write(fd, made.key_.data(), made.key_.size()) == static_cast<ssize_t>(made.key_.size()) &&
      ::fsync(fd) == 0;
  ::close(fd);
  if (!written) {
    ::unlink(path.c_str());
    return fail(ErrorCode::kInternal, "cannot write " + path);
  }
  return made;
}

std::string Sealer::seal(std::string_view plaintext) const {
  ensure_sodium();
  std::string box(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plaintext.size(), '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(box.data());
  randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(nonce + crypto_secretbox_NONCEBYTES,
                        reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
                        nonce, reinterpret_cast<const unsigned char*>(key_.data()));
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
  if (crypto_secretbox_open_easy(reinterpret_cast<unsigned char*>(plain.data()),
                                 nonce + crypto_secretbox_NONCEBYTES, length, nonce,
                                 reinterpret_cast<const unsigned char*>(key_.data())) != 0) {
    return fail(ErrorCode::kInternal,
                "a sealed secret does not open with this server's key (was the key file "
                "replaced?)");
  }
  return plain;
}

}  // namespace fabrica::crypto
