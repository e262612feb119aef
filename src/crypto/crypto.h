#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"

namespace fabrica::crypto {

// Cost of an Argon2id password hash. kInteractive is libsodium's interactive setting
// (2 passes, 64 MiB); kMinimum exists only for tests that hash many passwords.
enum class HashCost { kInteractive, kMinimum };

// Hashes `password` with Argon2id into libsodium's self-describing encoded string.
// kInternal when memory cannot be allocated.
Result<std::string> hash_password(std::string_view password,
                                  HashCost cost = HashCost::kInteractive);
// True when `password` matches `encoded` (any cost; the encoding carries its parameters).
bool verify_password(std::string_view encoded, std::string_view password);
// kInvalidArgument (field "password") unless 8..1024 bytes.
Result<void> validate_password(std::string_view password);

// A new bearer secret: "fab_" + 43 base64url characters (256 random bits).
std::string new_token_secret();
// Lower-case hex SHA-256, how token secrets are stored.
std::string sha256_hex(std::string_view data);
// Random lower-case hex of `bytes` random bytes.
std::string random_hex(size_t bytes);
// Standard base64 decoding (for HTTP Basic); nullopt when malformed.
std::optional<std::string> base64_decode(std::string_view text);
std::string base64_encode(std::string_view data);

// SHA-256 over pieces of data (OpenSSL, hardware-accelerated where the CPU can). Movable,
// not copyable.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;
  void update(std::string_view data);
  // Lower-case hex; the object is spent afterwards.
  std::string finish();

 private:
  void* ctx_ = nullptr;
};

// Git's object id of a blob of `size` bytes: SHA-1 over "blob <size>\0" and the content, the
// id the Hugging Face Hub lists for files kept in git (not LFS).
class GitBlobHash {
 public:
  explicit GitBlobHash(int64_t size);
  ~GitBlobHash();
  GitBlobHash(GitBlobHash&& other) noexcept;
  GitBlobHash& operator=(GitBlobHash&& other) noexcept;
  void update(std::string_view data);
  // Lower-case hex (40 digits); the object is spent afterwards.
  std::string finish();

 private:
  void* ctx_ = nullptr;
};

// Whether `text` is 64 lower- or upper-case hex digits.
bool is_sha256_hex(std::string_view text);

}  // namespace fabrica::crypto
