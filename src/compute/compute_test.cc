// Compute against a real SQLite store: what the agent's reports of its domains and a host
// going OFFLINE do to VMs, and resizing stopped VMs.
#include "compute/compute.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "agent/discovery.h"
#include "core/operation_id.h"
#include "core/process.h"
#include "store/sqlite_store.h"
#include "testing/fake_clock.h"

namespace fabrica::compute {
namespace {

class ComputeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("fabrica-compute-" + crypto::random_hex(8));
    std::filesystem::create_directories(dir_);
    store_ = std::move(*store::SqliteStore::open((dir_ / "db").string()));
    authorizer_ = std::make_unique<auth::Authorizer>(*store_);
    identity_ =
        std::make_unique<auth::Identity>(*store_, *authorizer_, clock_, crypto::HashCost::kMinimum);
    ASSERT_TRUE(*identity_->bootstrap("admin-password"));
    quotas_ = std::make_unique<auth::Quotas>(*store_, *authorizer_, clock_);
    fleet_ = std::make_unique<fleet::Fleet>(*store_, *authorizer_, clock_, fleet::FleetOptions{});
    ASSERT_TRUE(fleet_->bootstrap());
    filesystem_ = storage::make_posix_filesystem();
    storage_ = std::make_unique<storage::Storage>(
        *store_, *authorizer_, *quotas_, *filesystem_, clock_,
        storage::StorageOptions{.datastores_root = (dir_ / "datastores").string()});
    ASSERT_TRUE(storage_->bootstrap());
    network_ = std::make_unique<network::Network>(*store_, *authorizer_, clock_);
    compute_ = std::make_unique<Compute>(*store_, *authorizer_, *identity_, *quotas_, *fleet_,
                                         *storage_, *network_, clock_);
    admin_ = *identity_->caller_for(0, "test");
    host_ = join("node-1");
    other_host_ = join("node-2");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  int64_t join(const std::string& name) {
    agent::SysfsSource source(std::string(FABRICA_FIXTURES) + "/cpu-only");
    auto inv = agent::discover(source);
    EXPECT_TRUE(inv.has_value());
    inv->hypervisor = "libvirt";
    inv->domain_type = "qemu";
    auto token = fleet_->create_fleet_token(admin_, fleet::kDefaultClusterId, 1);
    auto joined = fleet_->join(token->secret, name, *inv);
    EXPECT_TRUE(joined) << joined.error().message();
    return joined->host.header.id;
  }

  // Answers every command waiting for `host` as done; returns how many.
  int answer_all(int64_t host) {
    auto commands = compute_->agent_commands(host);
    EXPECT_TRUE(commands);
    for (const Json& c : *commands) {
      EXPECT_TRUE(compute_->operation_result(host, c["id"].get<std::string>(), true, "", ""));
    }
    return static_cast<int>(commands->size());
  }

  // A VM RUNNING on `host_` (placed, deployed and started).
  Vm running_vm(const std::string& name) {
    sched::VmRequest request;
    request.vcpus = 2;
    request.memory_mb = 1024;
    auto vm = compute_->create_vm(admin_, NewVm{.name = name, .request = request});
    EXPECT_TRUE(vm) << vm.error().message();
    EXPECT_TRUE(compute_->schedule_pass());
    while (answer_all(host_) > 0) {
    }
    return state(vm->header.id);
  }

  Vm state(int64_t id) { return *compute_->get_vm(admin_, id); }
  std::string name(int64_t id) {
    Vm vm = state(id);
    return vm_state_name(vm.state(), vm.lcm);
  }
  std::string last_op(const Vm& vm) { return operation_id(vm.header.id, vm.op_seq); }

  std::filesystem::path dir_;
  testing::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::unique_ptr<auth::Identity> identity_;
  std::unique_ptr<auth::Quotas> quotas_;
  std::unique_ptr<fleet::Fleet> fleet_;
  std::unique_ptr<storage::Filesystem> filesystem_;
  std::unique_ptr<storage::Storage> storage_;
  std::unique_ptr<network::Network> network_;
  std::unique_ptr<Compute> compute_;
  auth::Caller admin_;
  int64_t host_ = 0, other_host_ = 0;
};

TEST_F(ComputeTest, AGuestShutDownFromInsideIsPoweredOffAndComesBackWhenSeenRunning) {
  Vm vm = running_vm("svc");
  ASSERT_EQ(name(vm.header.id), "RUNNING");
  ASSERT_EQ(vm.allocation->host_id, host_);
  EXPECT_EQ(*compute_->observe(host_, {{vm.header.id, "shutoff", last_op(vm), 5'000, 1'048'576}}),
            1);
  Vm off = state(vm.header.id);
  EXPECT_EQ(name(vm.header.id), "POWEROFF");
  EXPECT_TRUE(off.allocation) << "poweroff keeps the devices";
  ASSERT_TRUE(off.monitoring.is_object());
  EXPECT_EQ(off.monitoring["domain_state"], "shutoff");
  EXPECT_EQ(off.monitoring["memory_kb"], 1'048'576);
  // Seen again (nothing changes) moves nothing.
  EXPECT_EQ(*compute_->observe(host_, {{vm.header.id, "shutoff", last_op(vm), 5'000, 0}}), 0);
  // Started by hand on the host: RUNNING again.
  EXPECT_EQ(*compute_->observe(host_, {{vm.header.id, "running", last_op(vm), 9'000, 0}}), 1);
  EXPECT_EQ(name(vm.header.id), "RUNNING");
}

TEST_F(ComputeTest, AStateReadBeforeTheLastOperationFinishedIsIgnored) {
  Vm vm = running_vm("svc");
  std::string before = std::to_string(vm.header.id) + "-" + std::to_string(vm.op_seq - 1);
  // Read while the start was still running: the domain was still shut off.
  EXPECT_EQ(*compute_->observe(host_, {{vm.header.id, "shutoff", before, 0, 0}}), 0);
  EXPECT_EQ(name(vm.header.id), "RUNNING");
  // An operation in flight: the agent's answer decides, not the report.
  ASSERT_TRUE(compute_->act(admin_, vm.header.id, Event::kPoweroff));
  EXPECT_EQ(name(vm.header.id), "SHUTDOWN_POWEROFF");
  EXPECT_EQ(*compute_->observe(host_, {{vm.header.id, "running", last_op(vm), 0, 0}}), 0);
  EXPECT_EQ(*compute_->observe(host_, {}), 0);
  EXPECT_EQ(name(vm.header.id), "SHUTDOWN_POWEROFF");
  EXPECT_EQ(answer_all(host_), 1);
  EXPECT_EQ(name(vm.header.id), "POWEROFF");
}

TEST_F(ComputeTest, AVanishedDomainIsUnknownUntilSeenAgain) {
  Vm vm = running_vm("svc");
  EXPECT_EQ(*compute_->observe(host_, {}), 1);
  EXPECT_EQ(name(vm.header.id), "UNKNOWN");
  EXPECT_EQ(state(vm.header.id).monitoring, Json()) << "no domain, no usage";
  EXPECT_EQ(*compute_->observe(host_, {}), 0);
  EXPECT_EQ(*compute_->observe(host_, {{vm.header.id, "running", last_op(vm), 0, 0}}), 1);
  EXPECT_EQ(name(vm.header.id), "RUNNING");
}

TEST_F(ComputeTest, AnOfflineHostsVmsAreUnknownUntilItsAgentReportsThemRunning) {
  Vm a = running_vm("a");
  Vm b = running_vm("b");
  ASSERT_TRUE(compute_->act(admin_, b.header.id, Event::kPoweroffHard));
  answer_all(host_);
  ASSERT_EQ(name(b.header.id), "POWEROFF");
  EXPECT_EQ(*compute_->host_lost(host_), 1);
  EXPECT_EQ(name(a.header.id), "UNKNOWN");
  EXPECT_EQ(name(b.header.id), "POWEROFF") << "a stopped VM stays stopped";
  EXPECT_TRUE(state(a.header.id).allocation) << "an UNKNOWN VM keeps its devices";
  EXPECT_EQ(*compute_->host_lost(host_), 0);
  // Back, with the guest still running under libvirt.
  b = state(b.header.id);
  EXPECT_EQ(*compute_->observe(host_, {{a.header.id, "running", last_op(a), 0, 0},
                                       {b.header.id, "shutoff", last_op(b), 0, 0}}),
            1);
  EXPECT_EQ(name(a.header.id), "RUNNING");
  EXPECT_EQ(name(b.header.id), "POWEROFF");
}

TEST_F(ComputeTest, AHostReportsOnlyOnItsOwnVms) {
  Vm vm = running_vm("svc");
  // Another host can neither stop nor lose this VM, nor see its usage recorded.
  EXPECT_EQ(*compute_->observe(other_host_, {{vm.header.id, "shutoff", last_op(vm), 1, 1}}), 0);
  EXPECT_EQ(*compute_->observe(other_host_, {}), 0);
  EXPECT_EQ(*compute_->host_lost(other_host_), 0);
  EXPECT_EQ(name(vm.header.id), "RUNNING");
  EXPECT_EQ(state(vm.header.id).monitoring, Json());
}

TEST_F(ComputeTest, APoweredOffVmIsResizedWhereItIsAndStartsWithItsNewShape) {
  Vm vm = running_vm("svc");
  auto refused = compute_->resize(admin_, vm.header.id, {.vcpus = 4});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message().find("poweroff or undeploy it first"), std::string::npos);

  ASSERT_TRUE(compute_->act(admin_, vm.header.id, Event::kPoweroffHard));
  answer_all(host_);
  ASSERT_EQ(name(vm.header.id), "POWEROFF");
  // More than the host has: refused, nothing changes.
  auto too_big = compute_->resize(admin_, vm.header.id, {.vcpus = 4000});
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code(), ErrorCode::kFailedPrecondition) << too_big.error().message();
  EXPECT_EQ(state(vm.header.id).request.vcpus, 2);

  auto resized = compute_->resize(admin_, vm.header.id, {.vcpus = 4, .memory_mb = 2048});
  ASSERT_TRUE(resized) << resized.error().message();
  Vm now = state(vm.header.id);
  EXPECT_EQ(name(vm.header.id), "POWEROFF");
  EXPECT_EQ(now.request.vcpus, 4);
  EXPECT_EQ(now.request.memory_mb, 2048);
  ASSERT_TRUE(now.allocation);
  EXPECT_EQ(now.allocation->host_id, host_);
  int64_t memory_kb = 0;
  for (const auto& node : now.allocation->numa) memory_kb += node.memory_kb;
  EXPECT_EQ(memory_kb, 2048 * 1024);

  // The start that follows carries the new shape, for the agent to define it again.
  ASSERT_TRUE(compute_->act(admin_, vm.header.id, Event::kResume));
  auto commands = compute_->agent_commands(host_);
  ASSERT_EQ(commands->size(), 1u);
  EXPECT_EQ((*commands)[0]["action"], "start");
  EXPECT_EQ((*commands)[0]["vm"]["request"]["vcpus"], 4);
  answer_all(host_);
  EXPECT_EQ(name(vm.header.id), "RUNNING");
}

TEST_F(ComputeTest, AnUndeployedVmIsResizedForTheSchedulerAndStrangersCannotResize) {
  Vm vm = running_vm("svc");
  ASSERT_TRUE(compute_->act(admin_, vm.header.id, Event::kUndeployHard));
  while (answer_all(host_) > 0) {
  }
  ASSERT_EQ(name(vm.header.id), "UNDEPLOYED");
  auto u = identity_->create_user(admin_, {.name = "eve", .password = "eve-password-1"});
  ASSERT_TRUE(u);
  auto eve = *identity_->caller_for(u->header.id, "test");
  auto stolen = compute_->resize(eve, vm.header.id, {.vcpus = 1});
  ASSERT_FALSE(stolen);
  EXPECT_EQ(stolen.error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(compute_->resize(admin_, vm.header.id, {.memory_mb = 4096}));
  EXPECT_EQ(state(vm.header.id).request.memory_mb, 4096);
  EXPECT_FALSE(state(vm.header.id).allocation);
  ASSERT_TRUE(compute_->act(admin_, vm.header.id, Event::kResume));
  ASSERT_TRUE(compute_->schedule_pass());
  while (answer_all(host_) > 0) {
  }
  EXPECT_EQ(name(vm.header.id), "RUNNING");
  Vm placed = state(vm.header.id);
  int64_t memory_kb = 0;
  for (const auto& node : placed.allocation->numa) memory_kb += node.memory_kb;
  EXPECT_EQ(memory_kb, 4096 * 1024);
}

}  // namespace
}  // namespace fabrica::compute

namespace fabrica::compute {
namespace {

TEST_F(ComputeTest, VmsHoldTheirImagesUntilDoneAndPersistentOnesOneAtATime) {
  auto shared = storage_->create_image(
      admin_, {.name = "ubuntu", .type = storage::ImageType::kDatablock, .blank_mb = 4});
  auto pers = storage_->create_image(admin_, {.name = "scratch",
                                              .type = storage::ImageType::kDatablock,
                                              .persistent = true,
                                              .blank_mb = 4});
  ASSERT_TRUE(shared && pers);
  int64_t s = shared->header.id, p = pers->header.id;
  GuestSpec guest;
  guest.disks = Json::array(
      {Json{{"image_id", s}}, Json{{"image_id", p}}, Json{{"size_mb", 64}, {"format", "raw"}}});
  sched::VmRequest request;
  request.vcpus = 1;
  request.memory_mb = 512;
  auto a = compute_->create_vm(admin_, NewVm{.name = "a", .request = request, .guest = guest});
  ASSERT_TRUE(a) << a.error().message();
  ASSERT_EQ(a->disks.size(), 3u);
  EXPECT_EQ(a->disks[0]["target"], "vda");
  EXPECT_EQ(a->disks[0]["source"], shared->path);
  EXPECT_EQ(a->disks[1]["persistent"], true);
  EXPECT_EQ(a->disks[2]["volatile"], true);
  EXPECT_EQ(a->request.clusters, std::vector<int64_t>{0}) << "where datastore 1 is seen";
  EXPECT_EQ(storage_->get_image(admin_, s)->state(), storage::ImageState::kUsed);
  EXPECT_EQ(storage_->get_image(admin_, p)->state(), storage::ImageState::kUsedPers);

  // A second VM shares the non-persistent image, never the persistent one; the refusal
  // leaves nothing behind.
  GuestSpec second;
  second.disks = Json::array({Json{{"image_id", s}}, Json{{"image_id", p}}});
  auto b = compute_->create_vm(admin_, NewVm{.name = "b", .request = request, .guest = second});
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(b.error().field(), "disks[1].image_id");
  EXPECT_EQ(storage_->get_image(admin_, s)->vms, std::vector<int64_t>{a->header.id});
  second.disks = Json::array({Json{{"image_id", s}}});
  auto c = compute_->create_vm(admin_, NewVm{.name = "c", .request = request, .guest = second});
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(storage_->get_image(admin_, s)->vms.size(), 2u);
  auto busy = storage_->delete_image(admin_, s);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), ErrorCode::kFailedPrecondition);

  // The deploy command carries the disks; terminating gives the images back.
  ASSERT_TRUE(compute_->schedule_pass());
  auto commands = compute_->agent_commands(host_);
  ASSERT_TRUE(commands);
  bool seen = false;
  for (const Json& command : *commands) {
    if (command["vm_id"] == a->header.id) {
      EXPECT_EQ(command["vm"]["disks"], a->disks);
      seen = true;
    }
  }
  EXPECT_TRUE(seen);
  while (answer_all(host_) > 0) {
  }
  ASSERT_TRUE(compute_->act(admin_, a->header.id, Event::kTerminateHard));
  while (answer_all(host_) > 0) {
  }
  EXPECT_EQ(name(a->header.id), "DONE");
  EXPECT_EQ(storage_->get_image(admin_, p)->state(), storage::ImageState::kReady);
  EXPECT_EQ(storage_->get_image(admin_, s)->vms, std::vector<int64_t>{c->header.id});
  ASSERT_TRUE(compute_->act(admin_, c->header.id, Event::kTerminateHard));
  while (answer_all(host_) > 0) {
  }
  EXPECT_EQ(storage_->get_image(admin_, s)->state(), storage::ImageState::kReady);
  EXPECT_TRUE(storage_->delete_image(admin_, s));
}

storage::Image wait_settled(storage::Storage& storage, const auth::Caller& caller, int64_t id) {
  for (int i = 0; i < 2000; ++i) {
    auto image = storage.get_image(caller, id);
    if (image && image->state() != storage::ImageState::kLocked) return *image;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ADD_FAILURE() << "image " << id << " stayed LOCKED";
  return *storage.get_image(caller, id);
}

TEST_F(ComputeTest, DisksOfAStoppedVmAreAttachedDetachedAndGrown) {
  auto os = storage_->create_image(
      admin_, {.name = "os", .type = storage::ImageType::kDatablock, .blank_mb = 4});
  auto data = storage_->create_image(
      admin_, {.name = "data", .type = storage::ImageType::kDatablock, .blank_mb = 2});
  ASSERT_TRUE(os && data);
  GuestSpec guest;
  guest.disks =
      Json::array({Json{{"image_id", os->header.id}}, Json{{"size_mb", 16}, {"format", "raw"}}});
  sched::VmRequest request;
  request.memory_mb = 512;
  auto created =
      compute_->create_vm(admin_, NewVm{.name = "db", .request = request, .guest = guest});
  ASSERT_TRUE(created) << created.error().message();
  int64_t id = created->header.id;
  EXPECT_EQ(created->disks[0]["size_mb"], 4) << "an image disk has the image's size";
  ASSERT_TRUE(compute_->schedule_pass());
  while (answer_all(host_) > 0) {
  }
  ASSERT_EQ(name(id), "RUNNING");
  auto running = compute_->attach_disk(admin_, id, Json{{"image_id", data->header.id}});
  ASSERT_FALSE(running);
  EXPECT_EQ(running.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(running.error().message().find("poweroff or undeploy it first"), std::string::npos);

  ASSERT_TRUE(compute_->act(admin_, id, Event::kPoweroffHard));
  answer_all(host_);
  ASSERT_EQ(name(id), "POWEROFF");
  // Detach the volatile vdb; the next disk takes a new id and the free target.
  auto detached = compute_->detach_disk(admin_, id, 1);
  ASSERT_TRUE(detached) << detached.error().message();
  ASSERT_EQ(detached->disks.size(), 1u);
  auto attached = compute_->attach_disk(admin_, id, Json{{"image_id", data->header.id}});
  ASSERT_TRUE(attached) << attached.error().message();
  ASSERT_EQ(attached->disks.size(), 2u);
  EXPECT_EQ(attached->disks[1]["disk_id"], 2);
  EXPECT_EQ(attached->disks[1]["target"], "vdb");
  EXPECT_EQ(storage_->get_image(admin_, data->header.id)->vms, std::vector<int64_t>{id});
  auto bad = compute_->attach_disk(admin_, id, Json{{"size_mb", 0}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().field(), "size_mb");
  auto missing = compute_->attach_disk(admin_, id, Json{{"image_id", 999}});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().field(), "image_id");

  // Disks only grow.
  auto grown = compute_->resize_disk(admin_, id, 0, 64);
  ASSERT_TRUE(grown) << grown.error().message();
  EXPECT_EQ(grown->disks[0]["size_mb"], 64);
  EXPECT_EQ(grown->disks[0]["resized"], true);
  auto shrink = compute_->resize_disk(admin_, id, 0, 8);
  ASSERT_FALSE(shrink);
  EXPECT_EQ(shrink.error().field(), "size_mb");
  EXPECT_NE(shrink.error().message().find("disks only grow"), std::string::npos);
  // The system datastore keeps the VM's own disks: more than it has free is refused.
  auto huge = compute_->resize_disk(admin_, id, 0, int64_t{1} << 30);
  ASSERT_FALSE(huge);
  EXPECT_EQ(huge.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(huge.error().message().find("system datastore"), std::string::npos)
      << huge.error().message();
  auto too_big = compute_->create_vm(
      admin_, NewVm{.name = "greedy",
                    .guest = GuestSpec{.disks = Json::array({Json{{"size_mb", int64_t{1} << 30},
                                                                  {"format", "qcow2"}}})}});
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().field(), "disks");
  auto nowhere = compute_->resize_disk(admin_, id, 7, 80);
  ASSERT_FALSE(nowhere);
  EXPECT_EQ(nowhere.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(nowhere.error().field(), "disk_id");

  // Another user sees no such VM.
  auto u = identity_->create_user(admin_, {.name = "eve", .password = "eve-password-1"});
  auto eve = *identity_->caller_for(u->header.id, "test");
  auto stolen = compute_->detach_disk(eve, id, 0);
  ASSERT_FALSE(stolen);
  EXPECT_EQ(stolen.error().code(), ErrorCode::kNotFound);

  // The start carries the new disks, survives a restart of fabricad (read back from the store).
  Compute restarted(*store_, *authorizer_, *identity_, *quotas_, *fleet_, *storage_, *network_,
                    clock_);
  EXPECT_EQ(restarted.get_vm(admin_, id)->disks, grown->disks);
  ASSERT_TRUE(compute_->act(admin_, id, Event::kResume));
  auto commands = compute_->agent_commands(host_);
  ASSERT_EQ(commands->size(), 1u);
  EXPECT_EQ((*commands)[0]["action"], "start");
  EXPECT_EQ((*commands)[0]["vm"]["disks"], grown->disks);

  // Detached for good: the image is free again.
  answer_all(host_);
  ASSERT_TRUE(compute_->act(admin_, id, Event::kPoweroffHard));
  answer_all(host_);
  ASSERT_TRUE(compute_->detach_disk(admin_, id, 2));
  EXPECT_EQ(storage_->get_image(admin_, data->header.id)->state(), storage::ImageState::kReady);
}

TEST_F(ComputeTest, DiskSaveasMakesAnImageFromWhatTheHostWrites) {
  auto os = storage_->create_image(
      admin_, {.name = "os", .type = storage::ImageType::kDatablock, .blank_mb = 4});
  ASSERT_TRUE(os) << os.error().message();
  GuestSpec guest;
  guest.disks = Json::array({Json{{"image_id", os->header.id}}});
  auto created = compute_->create_vm(admin_, NewVm{.name = "golden", .guest = guest});
  ASSERT_TRUE(created);
  int64_t id = created->header.id;
  ASSERT_TRUE(compute_->schedule_pass());
  while (answer_all(host_) > 0) {
  }
  auto running = compute_->saveas_disk(admin_, id, {.disk_id = 0, .name = "snap"});
  ASSERT_FALSE(running);
  EXPECT_EQ(running.error().code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(compute_->act(admin_, id, Event::kPoweroffHard));
  answer_all(host_);

  auto saved = compute_->saveas_disk(admin_, id, {.disk_id = 0, .name = "snap"});
  ASSERT_TRUE(saved) << saved.error().message();
  EXPECT_EQ(saved->image.state(), storage::ImageState::kLocked);
  EXPECT_EQ(saved->image.type, storage::ImageType::kDatablock);
  EXPECT_EQ(saved->image.datastore_id, os->datastore_id);
  EXPECT_EQ(name(id), "HOTPLUG_SAVEAS_POWEROFF");
  auto twice = compute_->saveas_disk(admin_, id, {.disk_id = 0, .name = "again"});
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code(), ErrorCode::kFailedPrecondition);

  // The host is asked to write the staging file; it does (as qemu-img convert would).
  auto commands = compute_->agent_commands(host_);
  ASSERT_EQ(commands->size(), 1u);
  const Json& c = (*commands)[0];
  EXPECT_EQ(c["action"], "saveas");
  EXPECT_EQ(c["args"]["disk_id"], 0);
  std::string dest = saved->image.path + ".part";
  EXPECT_EQ(c["args"]["dest"], dest);
  ASSERT_TRUE(run_process({"qemu-img", "create", "-q", "-f", "qcow2", dest, "4M"}));
  ASSERT_TRUE(compute_->operation_result(host_, c["id"].get<std::string>(), true, "", ""));
  EXPECT_EQ(name(id), "POWEROFF");
  auto ready = wait_settled(*storage_, admin_, saved->image.header.id);
  EXPECT_EQ(ready.state(), storage::ImageState::kReady) << ready.error;
  EXPECT_EQ(ready.format, "qcow2");
  EXPECT_EQ(ready.virtual_size, 4 << 20);
  EXPECT_EQ(ready.sha256.size(), 64u);

  // A host that fails: the image is ERROR with its reason, the VM POWEROFF.
  auto failing = compute_->saveas_disk(admin_, id, {.disk_id = 0, .name = "broken"});
  ASSERT_TRUE(failing) << failing.error().message();
  commands = compute_->agent_commands(host_);
  ASSERT_TRUE(compute_->operation_result(host_, (*commands)[0]["id"].get<std::string>(), false,
                                         "no space left on device", ""));
  EXPECT_EQ(name(id), "POWEROFF");
  auto broken = wait_settled(*storage_, admin_, failing->image.header.id);
  EXPECT_EQ(broken.state(), storage::ImageState::kError);
  EXPECT_NE(broken.error.find("no space left on device"), std::string::npos) << broken.error;
  EXPECT_FALSE(std::filesystem::exists(failing->image.path + ".part"));

  // Only into a shared datastore the host's cluster mounts.
  auto other = storage_->create_datastore(admin_, {.name = "local",
                                                   .kind = storage::DatastoreKind::kImage,
                                                   .driver = storage::DatastoreDriver::kLocal});
  ASSERT_TRUE(other) << other.error().message();
  auto unreachable = compute_->saveas_disk(
      admin_, id, {.disk_id = 0, .name = "lost", .datastore_id = other->header.id});
  ASSERT_FALSE(unreachable);
  EXPECT_EQ(unreachable.error().field(), "datastore_id");
  EXPECT_EQ(name(id), "POWEROFF") << "nothing changed";
}

TEST_F(ComputeTest, AnSriovNicAsksTheSchedulerForAVfOfItsVnetsPort) {
  auto vnet = network_->create(admin_, {.name = "fabric",
                                        .mode = network::VnetMode::kSriov,
                                        .phydev = "ibp23s0",
                                        .ranges = {{.type = "IP4", .ip = "10.20.0.1", .size = 4}}});
  ASSERT_TRUE(vnet) << vnet.error().message();
  GuestSpec guest;
  guest.nics = Json::array({Json{{"vnet_id", vnet->header.id}}});
  auto vm = compute_->create_vm(admin_, NewVm{.name = "trainer", .guest = guest});
  ASSERT_TRUE(vm) << vm.error().message();
  ASSERT_EQ(vm->request.vfs.size(), 1u);
  EXPECT_EQ(vm->request.vfs[0].pf, "ibp23s0");
  EXPECT_EQ(vm->request.vfs[0].nic, 0);
  EXPECT_EQ(vm->nics[0]["mode"], "sriov");
  // This cloud's hosts have no VFs: the VM waits, and says why.
  ASSERT_TRUE(compute_->schedule_pass());
  Vm waiting = state(vm->header.id);
  EXPECT_EQ(name(vm->header.id), "PENDING");
  EXPECT_NE(waiting.explanation.find("VF"), std::string::npos) << waiting.explanation;
  EXPECT_EQ(state(vm->header.id).request.vfs[0].pf, "ibp23s0") << "kept in the record";
}

TEST_F(ComputeTest, ImagesOfOtherTenantsAndWrongKindsAreRefused) {
  auto group = identity_->create_group(admin_, {.name = "acme"});
  auto user = identity_->create_user(
      admin_, {.name = "alice", .password = "alice-password", .gid = group->header.id});
  ASSERT_TRUE(group && user);
  auto alice = *identity_->caller_for(user->header.id, "test");
  auto secret = storage_->create_image(
      admin_, {.name = "secret", .type = storage::ImageType::kDatablock, .blank_mb = 1});
  GuestSpec guest;
  guest.disks = Json::array({Json{{"image_id", secret->header.id}}});
  auto stolen = compute_->create_vm(alice, NewVm{.name = "x", .guest = guest});
  ASSERT_FALSE(stolen);
  EXPECT_EQ(stolen.error().code(), ErrorCode::kNotFound);
  GuestSpec as_kernel;
  as_kernel.kernel_image = secret->header.id;
  auto wrong = compute_->create_vm(admin_, NewVm{.name = "y", .guest = as_kernel});
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().field(), "os.kernel_image_id");
  EXPECT_EQ(storage_->get_image(admin_, secret->header.id)->state(), storage::ImageState::kReady);
}

TEST_F(ComputeTest, NicsLeaseAddressesIntoTheContextAndGiveThemBackAtDone) {
  auto vnet = network_->create(admin_, {.name = "lab",
                                        .bridge = "br-lab",
                                        .mtu = 1400,
                                        .gateway = "10.1.0.1",
                                        .ranges = {{.type = "IP4", .ip = "10.1.0.10", .size = 2}}});
  ASSERT_TRUE(vnet) << vnet.error().message();
  int64_t net = vnet->header.id;
  GuestSpec guest;
  guest.context = {{"ETH0_DNS", "9.9.9.9"}};
  guest.nics = Json::array({Json{{"vnet_id", net}}, Json{{"vnet_id", net}, {"ip", "10.1.0.10"}}});
  sched::VmRequest request;
  auto vm = compute_->create_vm(admin_, NewVm{.name = "a", .request = request, .guest = guest});
  ASSERT_TRUE(vm) << vm.error().message();
  ASSERT_EQ(vm->nics.size(), 2u);
  EXPECT_EQ(vm->nics[0]["ip"], "10.1.0.11") << "10.1.0.10 was asked for by the second NIC";
  EXPECT_EQ(vm->nics[1]["ip"], "10.1.0.10");
  EXPECT_EQ(vm->nics[0]["bridge"], "br-lab");
  EXPECT_EQ(vm->guest.context["ETH0_IP"], "10.1.0.11");
  EXPECT_EQ(vm->guest.context["ETH1_IP"], "10.1.0.10");
  EXPECT_EQ(vm->guest.context["ETH0_GATEWAY"], "10.1.0.1");
  EXPECT_EQ(vm->guest.context["ETH0_MTU"], "1400");
  EXPECT_EQ(vm->guest.context["ETH0_DNS"], "9.9.9.9") << "the user's value wins";
  // The vnet is full: the next VM is refused and leaves nothing behind.
  GuestSpec one;
  one.nics = Json::array({Json{{"vnet_id", net}}});
  auto full = compute_->create_vm(admin_, NewVm{.name = "b", .request = request, .guest = one});
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().field(), "nics[0].vnet_id");
  EXPECT_EQ(network_->get(admin_, net)->leases.size(), 2u);
  // The deploy command carries the NICs; DONE gives the leases back.
  ASSERT_TRUE(compute_->schedule_pass());
  auto commands = compute_->agent_commands(host_);
  ASSERT_TRUE(commands);
  ASSERT_EQ(commands->size(), 1u);
  EXPECT_EQ((*commands)[0]["vm"]["nics"], vm->nics);
  while (answer_all(host_) > 0) {
  }
  ASSERT_TRUE(compute_->act(admin_, vm->header.id, Event::kTerminateHard));
  while (answer_all(host_) > 0) {
  }
  EXPECT_TRUE(network_->get(admin_, net)->leases.empty());
  EXPECT_TRUE(compute_->create_vm(admin_, NewVm{.name = "c", .request = request, .guest = one}));
}

}  // namespace
}  // namespace fabrica::compute
