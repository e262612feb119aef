#pragma once

#include <string>
#include <string_view>

#include "core/error.h"

namespace fabrica::crypto {

// Seals secrets at rest (libsodium secretbox: XSalsa20-Poly1305 with a random nonce) under
// one 256-bit key that lives beside the database, never in it.
class Sealer {
 public:
  static constexpr size_t kKeyBytes = 32;
  // kInvalidArgument unless `key` is kKeyBytes bytes.
  static Result<Sealer> with_key(std::string key);
  // The key in `path`, made (mode 0600, random) when the file does not exist yet.
  static Result<Sealer> from_file(const std::string& path);
  // A fresh random key, for tests and in-memory daemons.
  static Sealer random();

  // base64(nonce || ciphertext).
  std::string seal(std::string_view plaintext) const;
  // kInternal when `sealed` was not sealed under this key or was altered.
  Result<std::string> open(std::string_view sealed) const;

 private:
  explicit Sealer(std::string key) : key_(std::move(key)) {}
  std::string key_;
};

}  // namespace fabrica::crypto
