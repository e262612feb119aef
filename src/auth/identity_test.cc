#include "auth/identity.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "auth/sessions.h"
#include "store/sqlite_store.h"
#include "testing/fake_clock.h"

namespace fabrica::auth {
namespace {

class IdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("fabrica-identity-" + crypto::random_hex(8));
    std::filesystem::create_directories(dir_);
    store_ = std::move(*store::SqliteStore::open((dir_ / "db").string()));
    authorizer_ = std::make_unique<Authorizer>(*store_);
    identity_ =
        std::make_unique<Identity>(*store_, *authorizer_, clock_, crypto::HashCost::kMinimum);
    ASSERT_TRUE(*identity_->bootstrap("admin-password"));
    admin_ = *identity_->caller_for(0, "test");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  Caller make_user(const std::string& name, int64_t gid = kUsersGroupId) {
    auto u =
        identity_->create_user(admin_, {.name = name, .password = "password-" + name, .gid = gid});
    EXPECT_TRUE(u) << u.error().message();
    return *identity_->caller_for(u->header.id, "test");
  }

  std::filesystem::path dir_;
  testing::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<Identity> identity_;
  Caller admin_;
};

TEST_F(IdentityTest, BootstrapCreatesSuperuserGroupsAndDefaultRuleOnce) {
  EXPECT_FALSE(*identity_->bootstrap("other-password"));
  auto admin = identity_->get_user(admin_, 0);
  ASSERT_TRUE(admin);
  EXPECT_EQ(admin->header.name, "admin");
  EXPECT_EQ(admin->header.gid, 0);
  EXPECT_TRUE(crypto::verify_password(admin->password_hash, "admin-password"));
  EXPECT_EQ(identity_->get_group(admin_, 0)->header.name, "admins");
  EXPECT_EQ(identity_->get_group(admin_, 1)->header.name, "users");
  auto rules = authorizer_->rules();
  ASSERT_EQ((*rules)->size(), 1u);
  EXPECT_EQ((*rules)->front().to_string(), "@1 VM+NET+IMAGE+TEMPLATE+DOCUMENT/@1 CREATE #0");
  EXPECT_FALSE(admin->to_api_json().contains("password_hash"));
}

TEST_F(IdentityTest, UsersSeeOnlyThemselvesUntilAnAclSaysOtherwise) {
  Caller alice = make_user("alice");
  Caller bob = make_user("bob");
  auto seen = identity_->list_users(alice, {});
  ASSERT_TRUE(seen);
  ASSERT_EQ(seen->items.size(), 1u);
  EXPECT_EQ(seen->items[0].header.name, "alice");
  auto hidden = identity_->get_user(alice, bob.uid);
  EXPECT_EQ(hidden.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(hidden.error().message(), "user " + std::to_string(bob.uid) + " not found");
  // An ACL lets group 1 see its users.
  ASSERT_TRUE(store_->write([](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(AclRule rule, AclRule::parse("@1 USER/@1 USE"));
    FAB_ASSIGN_OR_RETURN(rule.id, tx.allocate_id(kAclRecordType));
    return tx.insert(acl_record(rule));
  }));
  EXPECT_EQ(identity_->list_users(alice, {})->items.size(), 2u);
  // Seeing is not managing: 403, not 404.
  auto denied = identity_->set_password(alice, bob.uid, "new-password");
  EXPECT_EQ(denied.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(identity_->list_users(admin_, {})->items.size(), 3u);
}

TEST_F(IdentityTest, UsersManageThemselvesButNotTheirAdminRights) {
  Caller alice = make_user("alice");
  EXPECT_TRUE(identity_->set_password(alice, alice.uid, "a-new-password"));
  EXPECT_EQ(identity_->set_enabled(alice, alice.uid, false).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(identity_->chgrp_user(alice, alice.uid, 0).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(identity_->delete_user(alice, alice.uid).error().code(), ErrorCode::kPermissionDenied);
  EXPECT_EQ(identity_->chmod_user(alice, alice.uid, Permissions(0700)).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_TRUE(identity_->chmod_user(alice, alice.uid, Permissions(0640)));
  EXPECT_EQ(
      identity_->create_user(alice, {.name = "mallory", .password = "password1"}).error().code(),
      ErrorCode::kPermissionDenied);
}

TEST_F(IdentityTest, PaginatesWithACursor) {
  for (int i = 0; i < 7; ++i) make_user("u" + std::to_string(i));
  std::vector<std::string> names;
  ListOptions options{.limit = 3};
  while (true) {
    auto page = identity_->list_users(admin_, options);
    ASSERT_TRUE(page);
    for (const auto& u : page->items) names.push_back(u.header.name);
    if (!page->next_cursor) break;
    options.after_id = std::stoll(*page->next_cursor);
  }
  EXPECT_EQ(names.size(), 8u);  // admin + 7
  EXPECT_EQ(names.front(), "admin");
  EXPECT_EQ(names.back(), "u6");
}

TEST_F(IdentityTest, GroupsLifecycle) {
  auto ml = identity_->create_group(admin_, {.name = "acme-ml"});
  ASSERT_TRUE(ml);
  EXPECT_EQ(ml->header.id, 100);
  EXPECT_EQ(identity_->create_group(admin_, {.name = "acme-ml"}).error().code(),
            ErrorCode::kAlreadyExists);
  Caller carol = make_user("carol", ml->header.id);
  Caller dave = make_user("dave");
  EXPECT_TRUE(identity_->get_group(carol, ml->header.id));
  EXPECT_EQ(identity_->get_group(dave, ml->header.id).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(identity_->delete_group(admin_, ml->header.id).error().code(),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(identity_->delete_group(admin_, 1).error().code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(identity_->chgrp_user(admin_, carol.uid, 1));
  EXPECT_TRUE(identity_->delete_group(admin_, ml->header.id));
  EXPECT_EQ(identity_->create_user(admin_, {.name = "eve", .password = "password1", .gid = 555})
                .error()
                .field(),
            "gid");
}

TEST_F(IdentityTest, DisabledUsersCannotAuthenticate) {
  Caller alice = make_user("alice");
  ASSERT_TRUE(identity_->set_enabled(admin_, alice.uid, false));
  EXPECT_EQ(identity_->caller_for(alice.uid, "x").error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(identity_->set_enabled(admin_, 0, false).error().code(),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(identity_->delete_user(admin_, 0).error().code(), ErrorCode::kFailedPrecondition);
}

class SessionsTest : public IdentityTest {
 protected:
  void SetUp() override {
    IdentityTest::SetUp();
    limiter_ = std::make_unique<LoginLimiter>(clock_);
    sessions_ = std::make_unique<Sessions>(*store_, *identity_, clock_, *limiter_);
  }
  std::unique_ptr<LoginLimiter> limiter_;
  std::unique_ptr<Sessions> sessions_;
};

TEST_F(SessionsTest, TokensAuthenticateUntilExpiryOrRevocation) {
  auto issued = sessions_->login("admin", "admin-password", "10.0.0.1",
                                 {.name = "cli", .lifetime = std::chrono::hours(1)});
  ASSERT_TRUE(issued) << issued.error().message();
  auto caller = sessions_->authenticate(issued->secret, "10.0.0.1");
  ASSERT_TRUE(caller);
  EXPECT_EQ(caller->uid, 0);
  // Only the hash is stored.
  auto record = store_->read_value<store::Record>(
      [&](store::Transaction& tx) { return tx.get(kTokenType, issued->token.id); });
  EXPECT_EQ(record->body.find(issued->secret), std::string::npos);
  EXPECT_EQ(record->key, crypto::sha256_hex(issued->secret));
  clock_.advance(std::chrono::hours(1));
  EXPECT_EQ(sessions_->authenticate(issued->secret, "x").error().message(), "token has expired");

  auto second = sessions_->login("admin", "admin-password", "10.0.0.1", {});
  ASSERT_TRUE(sessions_->revoke(admin_, second->token.id));
  EXPECT_EQ(sessions_->authenticate(second->secret, "x").error().message(),
            "token has been revoked");
  std::string forged = second->secret;
  forged[10] = forged[10] == 'A' ? 'B' : 'A';
  EXPECT_EQ(sessions_->authenticate(forged, "x").error().message(), "invalid token");
}

TEST_F(SessionsTest, CachedCallersNeverOutliveACommittedChange) {
  Caller alice = make_user("alice");
  auto issued = sessions_->login("alice", "password-alice", "x", {});
  ASSERT_TRUE(sessions_->authenticate(issued->secret, "x"));  // Now cached.
  auto group = identity_->create_group(admin_, {.name = "ml"});
  ASSERT_TRUE(identity_->add_secondary_group(admin_, alice.uid, group->header.id));
  auto with_group = sessions_->authenticate(issued->secret, "y");
  ASSERT_TRUE(with_group);
  EXPECT_EQ(with_group->groups, (std::vector<int64_t>{1, group->header.id}));
  EXPECT_EQ(with_group->address, "y");
  ASSERT_TRUE(identity_->set_enabled(admin_, alice.uid, false));
  EXPECT_EQ(sessions_->authenticate(issued->secret, "x").error().message(), "user is disabled");
  ASSERT_TRUE(identity_->set_enabled(admin_, alice.uid, true));
  ASSERT_TRUE(sessions_->authenticate(issued->secret, "x"));
  ASSERT_TRUE(sessions_->revoke(admin_, issued->token.id));
  EXPECT_EQ(sessions_->authenticate(issued->secret, "x").error().message(),
            "token has been revoked");
  auto again = sessions_->login("alice", "password-alice", "x", {});
  ASSERT_TRUE(sessions_->authenticate(again->secret, "x"));
  ASSERT_TRUE(identity_->delete_user(admin_, alice.uid));
  EXPECT_EQ(sessions_->authenticate(again->secret, "x").error().code(),
            ErrorCode::kUnauthenticated);
}

TEST_F(SessionsTest, UsersSeeAndRevokeOnlyTheirOwnTokens) {
  make_user("alice");
  auto a = sessions_->login("alice", "password-alice", "x", {});
  auto root = sessions_->login("admin", "admin-password", "x", {});
  Caller alice = *sessions_->authenticate(a->secret, "x");
  EXPECT_EQ(sessions_->list(alice, std::nullopt)->size(), 1u);
  EXPECT_EQ(sessions_->list(alice, 0).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(sessions_->revoke(alice, root->token.id).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(sessions_->list(admin_, alice.uid)->size(), 1u);
}

TEST_F(SessionsTest, FailedLoginsAreRateLimitedPerUserAndAddress) {
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(sessions_->login("admin", "wrong-password", "10.0.0.9", {}).error().code(),
              ErrorCode::kUnauthenticated);
  }
  auto limited = sessions_->login("admin", "admin-password", "10.0.0.9", {});
  ASSERT_FALSE(limited);
  EXPECT_EQ(limited.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(limited.error().retry_after_seconds(), 300);
  // Another address is unaffected.
  EXPECT_TRUE(sessions_->login("admin", "admin-password", "10.0.0.10", {}));
  clock_.advance(std::chrono::seconds(301));
  EXPECT_TRUE(sessions_->login("admin", "admin-password", "10.0.0.9", {}));
  // Unknown users get the same answer as wrong passwords.
  EXPECT_EQ(sessions_->login("nobody", "whatever1", "10.0.0.11", {}).error().message(),
            "wrong user name or password");
}

// Revoked and expired tokens stay listed for a week, then are pruned; live ones stay.
TEST_F(SessionsTest, RevokedAndExpiredTokensArePrunedAfterAWeek) {
  auto live =
      sessions_->login("admin", "admin-password", "x", {.lifetime = std::chrono::hours(24 * 30)});
  auto revoked = sessions_->login("admin", "admin-password", "x", {});
  auto short_lived =
      sessions_->login("admin", "admin-password", "x", {.lifetime = std::chrono::seconds(60)});
  ASSERT_TRUE(live && revoked && short_lived);
  ASSERT_TRUE(sessions_->revoke(admin_, revoked->token.id));
  EXPECT_EQ(*sessions_->prune(std::chrono::hours(24 * 7)), 0);
  clock_.advance(std::chrono::hours(24 * 8));
  EXPECT_EQ(*sessions_->prune(std::chrono::hours(24 * 7)), 2);
  auto left = sessions_->list(admin_, std::nullopt);
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ(left->front().id, live->token.id);
  EXPECT_TRUE(sessions_->authenticate(live->secret, "x"));
}

// A guesser spread over many addresses slows down on the user, ever more, but never locks its
// owner out for longer than the backoff's cap.
TEST_F(SessionsTest, FailuresFromManyAddressesBackOffPerUserWithoutLockingTheOwnerOut) {
  for (int i = 0; i < 10; ++i) {
    auto wrong = sessions_->login("admin", "wrong-password", "10.1.0." + std::to_string(i), {});
    EXPECT_EQ(wrong.error().code(), ErrorCode::kUnauthenticated) << i;
  }
  auto slowed = sessions_->login("admin", "wrong-password", "10.1.1.1", {});
  ASSERT_FALSE(slowed);
  EXPECT_EQ(slowed.error().code(), ErrorCode::kResourceExhausted);
  EXPECT_EQ(slowed.error().retry_after_seconds(), 1);
  int expected = 1;
  for (int round = 0; round < 8; ++round) {
    clock_.advance(std::chrono::seconds(expected));
    EXPECT_EQ(sessions_->login("admin", "wrong-password", "10.2.0." + std::to_string(round), {})
                  .error()
                  .code(),
              ErrorCode::kUnauthenticated);
    expected = std::min(expected * 2, 60);
    auto next = sessions_->login("admin", "admin-password", "10.3.0.1", {});
    ASSERT_FALSE(next);
    EXPECT_EQ(next.error().retry_after_seconds(), expected) << round;
  }
  // After the cap the owner gets in, and that clears the guesser's count.
  clock_.advance(std::chrono::seconds(60));
  EXPECT_TRUE(sessions_->login("admin", "admin-password", "10.3.0.1", {}));
  EXPECT_EQ(sessions_->login("admin", "wrong-password", "10.4.0.1", {}).error().code(),
            ErrorCode::kUnauthenticated);
}

}  // namespace
}  // namespace fabrica::auth
