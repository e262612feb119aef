#include "crypto/crypto.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "crypto/sealer.h"

namespace fabrica::crypto {
namespace {

TEST(CryptoTest, Argon2idHashVerifiesOnlyTheRightPassword) {
  auto hash = hash_password("correct horse battery staple");
  ASSERT_TRUE(hash);
  EXPECT_EQ(hash->rfind("$argon2id$", 0), 0u) << *hash;
  EXPECT_TRUE(verify_password(*hash, "correct horse battery staple"));
  EXPECT_FALSE(verify_password(*hash, "correct horse battery stapler"));
  EXPECT_FALSE(verify_password(*hash, ""));
  EXPECT_FALSE(verify_password("not a hash", "x"));
  auto again = hash_password("correct horse battery staple");
  EXPECT_NE(*again, *hash);  // Salted.
}

TEST(CryptoTest, TokenSecretsAreLongRandomAndUrlSafe) {
  auto a = new_token_secret();
  auto b = new_token_secret();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.size(), 47u);
  EXPECT_EQ(a.substr(0, 4), "fab_");
  EXPECT_EQ(
      a.find_first_not_of("fab_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"),
      std::string::npos);
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(CryptoTest, Base64RoundTrip) {
  EXPECT_EQ(base64_encode("admin:secret"), "YWRtaW46c2VjcmV0");
  EXPECT_EQ(base64_decode("YWRtaW46c2VjcmV0"), "admin:secret");
  EXPECT_EQ(base64_decode("!!!"), std::nullopt);
}

TEST(CryptoTest, PasswordLengthIsValidated) {
  EXPECT_FALSE(validate_password("short"));
  EXPECT_TRUE(validate_password("long enough"));
  EXPECT_FALSE(validate_password(std::string(1025, 'x')));
}

// A rotation: what was sealed before opens after (re-sealed), the key file ends with one key,
// and a rotation cut short between its steps loses nothing and is finished at the next start.
TEST(SealerTest, RotationResealsEverythingAndSurvivesAnInterruption) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("fabrica-sealer-" + random_hex(8));
  fs::create_directories(dir);
  std::string path = (dir / "sealing.key").string();
  auto sealer = Sealer::from_file(path);
  ASSERT_TRUE(sealer) << sealer.error().message();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string first_id = sealer->key_id();
  EXPECT_EQ(first_id.size(), 16u);

  // The "store": two secrets; the re-seal opens and seals each (all or nothing).
  std::vector<std::string> stored = {sealer->seal("sk-one"), sealer->seal("sk-two")};
  auto reseal = [&]() -> Result<size_t> {
    std::vector<std::string> next;
    for (const auto& s : stored) {
      FAB_ASSIGN_OR_RETURN(auto plain, sealer->open(s));
      next.push_back(sealer->seal(plain));
    }
    stored = next;
    return stored.size();
  };
  std::string before = stored[0];
  auto done = sealer->rotate(reseal);
  ASSERT_TRUE(done) << done.error().message();
  EXPECT_EQ(done->previous_key_id, first_id);
  EXPECT_NE(done->key_id, first_id);
  EXPECT_EQ(done->resealed, 2u);
  EXPECT_EQ(sealer->keys(), 1u);
  EXPECT_EQ(fs::file_size(path), Sealer::kKeyBytes);
  EXPECT_EQ(*sealer->open(stored[0]), "sk-one");
  EXPECT_FALSE(sealer->open(before)) << "the old key is gone";
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  // A re-seal that fails (a crash before its commit): both keys stay, in memory and on disk,
  // and every stored secret still opens, after a restart too.
  std::string rotated_id = sealer->key_id();
  auto failed = sealer->rotate(
      []() -> Result<size_t> { return fail(ErrorCode::kUnavailable, "the store went away"); });
  EXPECT_FALSE(failed);
  EXPECT_EQ(sealer->keys(), 2u);
  EXPECT_EQ(fs::file_size(path), 2 * Sealer::kKeyBytes);
  auto restarted = Sealer::from_file(path);
  ASSERT_TRUE(restarted);
  EXPECT_EQ(restarted->keys(), 2u);
  EXPECT_NE(restarted->key_id(), rotated_id) << "the new key seals";
  EXPECT_EQ(*restarted->open(stored[1]), "sk-two");
  std::string under_new = restarted->seal("sk-three");
  // fabricad's start finishes it: one key, and what either key sealed opens.
  sealer = std::move(restarted);
  stored.push_back(under_new);
  auto finished = sealer->finish(reseal);
  ASSERT_TRUE(finished) << finished.error().message();
  EXPECT_EQ(*finished, 3u);
  EXPECT_EQ(sealer->keys(), 1u);
  EXPECT_EQ(fs::file_size(path), Sealer::kKeyBytes);
  EXPECT_EQ(*sealer->open(stored[2]), "sk-three");
  EXPECT_EQ(*Sealer::from_file(path)->open(stored[0]), "sk-one");
  EXPECT_EQ(*sealer->finish(reseal), 0u) << "nothing left to finish";

  // A damaged file is refused, not replaced.
  { std::ofstream(path, std::ios::trunc) << std::string(40, 'x'); }
  EXPECT_FALSE(Sealer::from_file(path));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fabrica::crypto

TEST(CryptoTest, GitBlobHashIsGitsObjectId) {
  // `printf 'hello\n' | git hash-object --stdin`
  fabrica::crypto::GitBlobHash hash(6);
  hash.update("hel");
  hash.update("lo\n");
  EXPECT_EQ(hash.finish(), "ce013625030ba8dba906f756967f9e9ca394464a");
  EXPECT_EQ(fabrica::crypto::GitBlobHash(0).finish(), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
}
