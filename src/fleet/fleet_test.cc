#include "fleet/fleet.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "store/sqlite_store.h"
#include "testing/fake_clock.h"

namespace fabrica::fleet {
namespace {

inventory::HostInventory h100_inventory(int gpus) {
  inventory::HostInventory inv;
  inv.hostname = "ignored";
  inv.cpu = {"Intel(R) Xeon(R) Platinum 8480C", "x86_64", 2, 112, 224};
  for (int i = 0; i < gpus; ++i) {
    inv.gpus.push_back(inventory::Gpu{.pci_address = "0000:1" + std::to_string(i) + ":00.0",
                                      .model = "H100 SXM5 80GB"});
  }
  return inv;
}

class FleetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("fabrica-fleet-" + crypto::random_hex(8));
    std::filesystem::create_directories(dir_);
    store_ = std::move(*store::SqliteStore::open((dir_ / "db").string()));
    authorizer_ = std::make_unique<auth::Authorizer>(*store_);
    identity_ =
        std::make_unique<auth::Identity>(*store_, *authorizer_, clock_, crypto::HashCost::kMinimum);
    ASSERT_TRUE(*identity_->bootstrap("admin-password"));
    fleet_ = std::make_unique<Fleet>(*store_, *authorizer_, clock_,
                                     FleetOptions{.offline_after = std::chrono::seconds(30)});
    ASSERT_TRUE(fleet_->bootstrap());
    admin_ = *identity_->caller_for(0, "test");
    auto u = identity_->create_user(admin_, {.name = "tenant", .password = "tenant-password"});
    tenant_ = *identity_->caller_for(u->header.id, "test");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  testing::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::unique_ptr<auth::Identity> identity_;
  std::unique_ptr<Fleet> fleet_;
  auth::Caller admin_, tenant_;
};

TEST_F(FleetTest, AddedHostJoinsOnceWithItsToken) {
  auto added = fleet_->add_host(admin_, "gpu-node-01", kDefaultClusterId);
  ASSERT_TRUE(added) << added.error().message();
  EXPECT_EQ(added->first.state(), HostState::kInit);
  EXPECT_TRUE(added->second.secret.starts_with("fjt_"));
  auto joined = fleet_->join(added->second.secret, "whatever-hostname", h100_inventory(8));
  ASSERT_TRUE(joined) << joined.error().message();
  EXPECT_EQ(joined->host.header.id, added->first.header.id);
  EXPECT_EQ(joined->host.header.name, "gpu-node-01");
  EXPECT_EQ(joined->host.state(), HostState::kMonitored);
  EXPECT_EQ(joined->host.inventory->gpus.size(), 8u);
  EXPECT_EQ(*fleet_->authenticate_agent(joined->credential), added->first.header.id);
  // Single use: a stolen token is worthless afterwards.
  EXPECT_EQ(fleet_->join(added->second.secret, "x", h100_inventory(1)).error().code(),
            ErrorCode::kUnauthenticated);
  EXPECT_EQ(fleet_->join("fjt_forged", "x", h100_inventory(1)).error().code(),
            ErrorCode::kUnauthenticated);
  EXPECT_EQ(fleet_->authenticate_agent("fah_forged").error().code(), ErrorCode::kUnauthenticated);
}

TEST_F(FleetTest, ExpiredTokensAreRefusedAndFleetTokensCountDown) {
  auto added = fleet_->add_host(admin_, "late", kDefaultClusterId);
  clock_.advance(std::chrono::hours(25));
  EXPECT_EQ(fleet_->join(added->second.secret, "late", h100_inventory(1)).error().code(),
            ErrorCode::kUnauthenticated);
  auto token = fleet_->create_fleet_token(admin_, kDefaultClusterId, 2);
  ASSERT_TRUE(token);
  EXPECT_TRUE(fleet_->join(token->secret, "sim-1", h100_inventory(8)));
  EXPECT_TRUE(fleet_->join(token->secret, "sim-2", h100_inventory(8)));
  EXPECT_FALSE(fleet_->join(token->secret, "sim-3", h100_inventory(8)));
  EXPECT_EQ(fleet_->list_hosts(admin_, {})->size(), 3u);  // late (INIT) + sim-1 + sim-2.
}

TEST_F(FleetTest, RejoinRetiresTheOldCredential) {
  auto added = fleet_->add_host(admin_, "node", kDefaultClusterId);
  auto first = fleet_->join(added->second.secret, "node", h100_inventory(8));
  auto again = fleet_->rejoin_token(admin_, added->first.header.id);
  ASSERT_TRUE(again);
  auto second = fleet_->join(again->secret, "node", h100_inventory(8));
  ASSERT_TRUE(second);
  EXPECT_EQ(second->host.header.id, added->first.header.id);
  EXPECT_FALSE(fleet_->authenticate_agent(first->credential));
  EXPECT_TRUE(fleet_->authenticate_agent(second->credential));
}

TEST_F(FleetTest, ACredentialRotatesWithoutAMomentWhenNeitherWorks) {
  auto added = fleet_->add_host(admin_, "node", kDefaultClusterId);
  auto joined = fleet_->join(added->second.secret, "node", h100_inventory(8));
  ASSERT_TRUE(joined);
  int64_t id = added->first.header.id;
  std::string old = joined->credential;
  EXPECT_FALSE(fleet_->authenticate_credential(old)->rotate);

  // Only whoever administers the host asks (a tenant does not even see it); the agent learns
  // it from its credential.
  EXPECT_EQ(fleet_->request_credential_rotation(tenant_, id).error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(fleet_->request_credential_rotation(admin_, id));
  EXPECT_TRUE(fleet_->authenticate_credential(old)->rotate);

  // A rotation whose answer never reached the agent: its credential dies with the next one.
  auto lost = fleet_->rotate_credential(old);
  ASSERT_TRUE(lost) << lost.error().message();
  auto fresh = fleet_->rotate_credential(old);
  ASSERT_TRUE(fresh);
  EXPECT_NE(*fresh, *lost);
  EXPECT_FALSE(fleet_->authenticate_agent(*lost));
  // Both work until the new one is used; then the old one is gone, and so is the request.
  EXPECT_EQ(*fleet_->authenticate_agent(old), id);
  auto now = fleet_->authenticate_credential(*fresh);
  ASSERT_TRUE(now);
  EXPECT_EQ(now->host_id, id);
  EXPECT_FALSE(now->rotate);
  EXPECT_EQ(fleet_->authenticate_agent(old).error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(fleet_->rotate_credential(old).error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(*fleet_->authenticate_agent(*fresh), id);

  // A host that never joined has nothing to rotate.
  auto waiting = fleet_->add_host(admin_, "waiting", kDefaultClusterId);
  EXPECT_EQ(fleet_->request_credential_rotation(admin_, waiting->first.header.id).error().code(),
            ErrorCode::kFailedPrecondition);
}

TEST_F(FleetTest, SilentHostsGoOfflineAndComeBack) {
  auto token = fleet_->create_fleet_token(admin_, kDefaultClusterId, 2);
  auto a = fleet_->join(token->secret, "a", h100_inventory(8));
  auto b = fleet_->join(token->secret, "b", h100_inventory(8));
  clock_.advance(std::chrono::seconds(20));
  ASSERT_TRUE(fleet_->heartbeat(a->host.header.id, Monitoring{.cpu_used_percent = 12.5}));
  clock_.advance(std::chrono::seconds(15));
  EXPECT_EQ(fleet_->sweep_offline()->size(), 1u);  // b was last seen 35 s ago.
  EXPECT_EQ(fleet_->get_host(admin_, b->host.header.id)->state(), HostState::kOffline);
  EXPECT_EQ(fleet_->get_host(admin_, a->host.header.id)->state(), HostState::kMonitored);
  EXPECT_EQ(fleet_->get_host(admin_, a->host.header.id)->monitoring.cpu_used_percent, 12.5);
  ASSERT_TRUE(fleet_->heartbeat(b->host.header.id, {}));
  EXPECT_EQ(fleet_->get_host(admin_, b->host.header.id)->state(), HostState::kMonitored);
  ASSERT_TRUE(fleet_->set_enabled(admin_, b->host.header.id, false));
  ASSERT_TRUE(fleet_->heartbeat(b->host.header.id, {}));
  EXPECT_EQ(fleet_->get_host(admin_, b->host.header.id)->state(), HostState::kDisabled);
}

TEST_F(FleetTest, TenantsSeeNoInfrastructureUnlessAnAclGrantsIt) {
  auto added = fleet_->add_host(admin_, "node", kDefaultClusterId);
  int64_t id = added->first.header.id;
  EXPECT_TRUE(fleet_->list_hosts(tenant_, {})->empty());
  EXPECT_EQ(fleet_->get_host(tenant_, id).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(fleet_->add_host(tenant_, "mine", kDefaultClusterId).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(fleet_->get_cluster(tenant_, 0).error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(authorizer_->create_rule(admin_, *auth::AclRule::parse("@1 HOST/%0 USE")));
  EXPECT_EQ(fleet_->list_hosts(tenant_, {})->size(), 1u);
  EXPECT_EQ(fleet_->set_enabled(tenant_, id, false).error().code(), ErrorCode::kPermissionDenied);
  auto other = fleet_->create_cluster(admin_, "west");
  ASSERT_TRUE(fleet_->move_host(admin_, id, other->header.id));
  EXPECT_TRUE(fleet_->list_hosts(tenant_, {})->empty());  // %0 no longer covers it.
}

TEST_F(FleetTest, DeleteRefusesWhileVmsAreAllocatedUnlessForced) {
  auto added = fleet_->add_host(admin_, "busy", kDefaultClusterId);
  ASSERT_TRUE(store_->write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(auto r, tx.get("host", added->first.header.id));
    FAB_ASSIGN_OR_RETURN(Host h, host_from_record(r));
    h.allocated_vms = 2;
    return tx.update(host_record(h)).map([](int64_t) {});
  }));
  auto refused = fleet_->delete_host(admin_, added->first.header.id, false);
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message().find("2 VMs"), std::string::npos);
  EXPECT_TRUE(fleet_->delete_host(admin_, added->first.header.id, true));
  EXPECT_EQ(fleet_->delete_cluster(admin_, kDefaultClusterId).error().code(),
            ErrorCode::kFailedPrecondition);
}

TEST_F(FleetTest, ListsReflectEveryCommittedChangeAndNothingElse) {
  auto token = fleet_->create_fleet_token(admin_, kDefaultClusterId, 2);
  auto a = fleet_->join(token->secret, "a", h100_inventory(8));
  ASSERT_EQ(fleet_->list_hosts(admin_, {})->size(), 1u);  // Index loaded here.
  auto b = fleet_->join(token->secret, "b", h100_inventory(4));
  ASSERT_EQ(fleet_->list_hosts(admin_, {})->size(), 2u);
  ASSERT_TRUE(fleet_->set_enabled(admin_, a->host.header.id, false));
  EXPECT_EQ(fleet_->list_hosts(admin_, {.state = HostState::kDisabled})->size(), 1u);
  auto west = fleet_->create_cluster(admin_, "west");
  ASSERT_TRUE(fleet_->move_host(admin_, b->host.header.id, west->header.id));
  EXPECT_EQ(fleet_->list_hosts(admin_, {.cluster_id = west->header.id})->size(), 1u);
  EXPECT_FALSE(fleet_->add_host(admin_, "a", kDefaultClusterId));  // Rolled back: no trace.
  EXPECT_EQ(fleet_->list_hosts(admin_, {})->size(), 2u);
  ASSERT_TRUE(fleet_->heartbeat(b->host.header.id, Monitoring{.cpu_used_percent = 50}));
  EXPECT_EQ(fleet_->list_hosts(admin_, {.cluster_id = west->header.id})
                ->front()
                .monitoring.cpu_used_percent,
            50);
  ASSERT_TRUE(fleet_->flush());
  ASSERT_TRUE(fleet_->delete_host(admin_, b->host.header.id, false));
  EXPECT_EQ(fleet_->list_hosts(admin_, {})->size(), 1u);
  // A fresh Fleet over the same store rebuilds the same view from the records.
  Fleet reopened(*store_, *authorizer_, clock_);
  auto listed = reopened.list_hosts(admin_, {});
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().state(), HostState::kDisabled);
}

// Join tokens are listed (never their secrets) and revoked by administrators; spent and
// expired ones are pruned.
TEST_F(FleetTest, JoinTokensAreListedRevokedAndPruned) {
  auto fleet_token = fleet_->create_fleet_token(admin_, kDefaultClusterId, 3);
  auto single = fleet_->add_host(admin_, "gpu-a", kDefaultClusterId);
  ASSERT_TRUE(fleet_token && single);
  auto listed = fleet_->list_join_tokens(admin_, -1, 100);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->items.size(), 2u);
  EXPECT_EQ(listed->items[0]["remaining"], 3);
  EXPECT_EQ(listed->items[1]["host_id"], single->first.header.id);
  EXPECT_EQ(listed->items[0].dump().find("fjt_"), std::string::npos);
  auto paged = fleet_->list_join_tokens(admin_, -1, 1);
  ASSERT_EQ(paged->items.size(), 1u);
  ASSERT_TRUE(paged->next_cursor);
  EXPECT_EQ(fleet_->list_join_tokens(tenant_, -1, 100).error().code(),
            ErrorCode::kPermissionDenied);
  EXPECT_EQ(fleet_->revoke_join_token(tenant_, fleet_token->id).error().code(),
            ErrorCode::kPermissionDenied);

  ASSERT_TRUE(fleet_->join(fleet_token->secret, "n1", h100_inventory(8)));
  ASSERT_TRUE(fleet_->revoke_join_token(admin_, fleet_token->id));
  auto refused = fleet_->join(fleet_token->secret, "n2", h100_inventory(8));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kUnauthenticated);
  EXPECT_EQ(fleet_->revoke_join_token(admin_, fleet_token->id).error().code(),
            ErrorCode::kNotFound);
  EXPECT_EQ(fleet_->list_join_tokens(admin_, -1, 100)->items.size(), 1u);

  ASSERT_TRUE(fleet_->join(single->second.secret, "gpu-a", h100_inventory(8)));  // Spent.
  auto spare = fleet_->create_fleet_token(admin_, kDefaultClusterId, 1);
  EXPECT_TRUE(fleet_->list_join_tokens(admin_, -1, 100)->items.size() == 1u);
  clock_.advance(std::chrono::hours(25));  // The spare one expires.
  EXPECT_EQ(*fleet_->prune_join_tokens(), 2);
  EXPECT_EQ(*fleet_->prune_join_tokens(), 0);
  (void)spare;
}

// Hosts page like every other list: `limit` hosts after `cursor`, filters applied first.
TEST_F(FleetTest, HostsPageByLimitAndCursor) {
  auto token = fleet_->create_fleet_token(admin_, kDefaultClusterId, 5);
  for (std::string name : {"a", "b", "c", "d", "e"}) {
    ASSERT_TRUE(fleet_->join(token->secret, name, h100_inventory(8)));
  }
  std::vector<std::string> seen;
  HostFilter page{.limit = 2};
  for (int guard = 0; guard < 10; ++guard) {
    auto got = fleet_->list_hosts_json(admin_, page);
    ASSERT_TRUE(got);
    auto items = parse_json(got->items);
    ASSERT_TRUE(items);
    EXPECT_LE(items->size(), 2u);
    for (const Json& h : *items) seen.push_back(h["name"]);
    if (!got->next_cursor) break;
    page.after_id = *got->next_cursor;
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  auto c = fleet_->list_hosts(admin_, {});
  ASSERT_TRUE(fleet_->set_enabled(admin_, (*c)[2].header.id, false));
  auto disabled = fleet_->list_hosts_json(admin_, {.state = HostState::kDisabled, .limit = 1});
  EXPECT_NE(disabled->items.find("\"c\""), std::string::npos) << disabled->items;
  EXPECT_TRUE(fleet_->list_hosts_json(admin_, {.after_id = (*c)[4].header.id})->items == "[]");
}

// The scheduler reads only what changed since its last pass.
TEST_F(FleetTest, HostChangesReportOnlyWhatChangedSinceTheLastRead) {
  auto token = fleet_->create_fleet_token(admin_, kDefaultClusterId, 3);
  auto a = fleet_->join(token->secret, "a", h100_inventory(8));
  auto b = fleet_->join(token->secret, "b", h100_inventory(8));
  auto c = fleet_->join(token->secret, "c", h100_inventory(8));
  ASSERT_TRUE(fleet_->heartbeat(a->host.header.id, {}));
  ASSERT_TRUE(fleet_->heartbeat(b->host.header.id, {}));
  ASSERT_TRUE(fleet_->heartbeat(c->host.header.id, {}));
  ASSERT_TRUE(fleet_->flush());
  auto all = fleet_->host_changes(0);
  ASSERT_TRUE(all) << all.error().message();
  ASSERT_EQ(all->changed.size(), 3u);
  EXPECT_EQ(all->changed[0].state, HostState::kMonitored);
  EXPECT_EQ(all->changed[0].inventory_version, a->host.inventory_version);
  auto none = fleet_->host_changes(all->seq);
  EXPECT_TRUE(none->changed.empty());
  EXPECT_TRUE(none->removed.empty());
  EXPECT_EQ(none->seq, all->seq);

  ASSERT_TRUE(fleet_->set_enabled(admin_, b->host.header.id, false));
  ASSERT_TRUE(fleet_->delete_host(admin_, c->host.header.id, false));
  auto some = fleet_->host_changes(all->seq);
  ASSERT_EQ(some->changed.size(), 1u);
  EXPECT_EQ(some->changed[0].id, b->host.header.id);
  EXPECT_EQ(some->changed[0].state, HostState::kDisabled);
  EXPECT_EQ(some->removed, std::vector<int64_t>{c->host.header.id});

  // An OFFLINE host that heartbeats is MONITORED before the heartbeat is flushed.
  clock_.advance(std::chrono::seconds(60));
  ASSERT_EQ(fleet_->sweep_offline()->size(), 1u);  // b is DISABLED and stays so.
  auto offline = fleet_->host_changes(some->seq);
  ASSERT_EQ(offline->changed.size(), 1u);
  EXPECT_EQ(offline->changed[0].state, HostState::kOffline);
  ASSERT_TRUE(fleet_->heartbeat(a->host.header.id, Monitoring{.cpu_used_percent = 7}));
  auto back = fleet_->host_changes(offline->seq);
  ASSERT_EQ(back->changed.size(), 1u);
  EXPECT_EQ(back->changed[0].state, HostState::kMonitored);
  EXPECT_EQ(back->changed[0].cpu_used_percent, 7);
}

TEST_F(FleetTest, FiltersByGpuModelAndFreeGpus) {
  auto token = fleet_->create_fleet_token(admin_, kDefaultClusterId, 3);
  ASSERT_TRUE(fleet_->join(token->secret, "eight", h100_inventory(8)));
  ASSERT_TRUE(fleet_->join(token->secret, "four", h100_inventory(4)));
  ASSERT_TRUE(fleet_->join(token->secret, "none", h100_inventory(0)));
  EXPECT_EQ(fleet_->list_hosts(admin_, {.gpu_model = "H100"})->size(), 2u);
  auto eight = fleet_->list_hosts(admin_, {.gpu_model = "H100", .free_gpus = 8});
  ASSERT_EQ(eight->size(), 1u);
  EXPECT_EQ(eight->front().header.name, "eight");
  EXPECT_TRUE(fleet_->list_hosts(admin_, {.gpu_model = "A100"})->empty());
  // GPUs the scheduler has allocated are not free.
  auto eight_id = eight->front().header.id;
  ASSERT_TRUE(store_->write([&](store::Transaction& tx) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(auto r, tx.get("host", eight_id));
    FAB_ASSIGN_OR_RETURN(Host h, host_from_record(r));
    h.gpus_allocated["H100 SXM5 80GB"] = 2;
    return tx.update(host_record(h)).map([](int64_t) {});
  }));
  Fleet fresh(*store_, *authorizer_, clock_);
  EXPECT_TRUE(fresh.list_hosts(admin_, {.gpu_model = "H100", .free_gpus = 8})->empty());
  EXPECT_EQ(fresh.list_hosts(admin_, {.gpu_model = "H100", .free_gpus = 6})->size(), 1u);
}

}  // namespace
}  // namespace fabrica::fleet
