#include "crypto/crypto.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace fabrica::crypto
