#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "core/error.h"

namespace fabrica::crypto {

// What a finished sealing-key rotation did.
struct Rotation {
  std::string key_id;           // The new key's id.
  std::string previous_key_id;  // The key it replaced.
  size_t resealed = 0;          // Secrets sealed again under the new key.
};

// Seals secrets at rest (libsodium secretbox: XSalsa20-Poly1305 with a random nonce) under a
// 256-bit key that lives beside the database, never in it.
//
// The key file is a keyring: one or more 32-byte keys, the first seals, every one opens. It
// holds more than one key only while a rotation runs (or after one was interrupted), so a
// secret sealed under either key opens at every moment of it. Thread-safe; copies share the
// keyring.
class Sealer {
 public:
  static constexpr size_t kKeyBytes = 32;
  static constexpr size_t kMaxKeys = 16;
  // kInvalidArgument unless `key` is kKeyBytes bytes.
  static Result<Sealer> with_key(std::string key);
  // The keyring in `path`, made (mode 0600, one random key) when the file does not exist yet.
  static Result<Sealer> from_file(const std::string& path);
  // A fresh random key, for tests and in-memory daemons (rotations stay in memory).
  static Sealer random();

  // base64(nonce || ciphertext), under the first key.
  std::string seal(std::string_view plaintext) const;
  // kInternal when `sealed` was not sealed under a key of the ring or was altered.
  Result<std::string> open(std::string_view sealed) const;

  // The first 16 hex digits of SHA-256("fabrica sealing key id" || key): names the sealing
  // key in logs and answers without revealing it.
  std::string key_id() const;
  // How many keys the ring holds: more than one while a rotation is unfinished.
  size_t keys() const;

  // Replaces the key. `reseal_all` must seal every stored secret again with seal(), in one
  // transaction, and say how many it sealed. The file is written before and after it, each
  // time whole (a temporary file, fsync, rename, fsync of the directory):
  //   1. [new, old...]  the new key seals, every key still opens;
  //   2. reseal_all()   every secret is under the new key, or (rolled back) none moved;
  //   3. [new]          the old keys are gone.
  // A crash anywhere leaves a ring that opens every stored secret; finish() completes it.
  // Rotations are serialized. kFailedPrecondition when kMaxKeys keys are held already.
  Result<Rotation> rotate(const std::function<Result<size_t>()>& reseal_all);
  // Completes an interrupted rotation (steps 2 and 3 above); nothing when the ring holds one
  // key. fabricad calls it at start.
  Result<size_t> finish(const std::function<Result<size_t>()>& reseal_all);

 private:
  struct Ring;
  Result<size_t> finish_locked(const std::function<Result<size_t>()>& reseal_all);
  explicit Sealer(std::shared_ptr<Ring> ring) : ring_(std::move(ring)) {}
  std::shared_ptr<Ring> ring_;
};

}  // namespace fabrica::crypto
