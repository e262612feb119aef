// Datastores and images against a real SQLite store, a real filesystem and the real
// qemu-img; copy failures injected through the Filesystem seam.
#include "storage/storage.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "auth/vdc.h"
#include "core/process.h"
#include "crypto/crypto.h"
#include "store/sqlite_store.h"
#include "testing/fake_clock.h"

namespace fabrica::storage {
namespace {

namespace fs = std::filesystem;

// The real filesystem, with copies that fail once they have copied `fail_copy_after` bytes.
class FaultyFilesystem : public Filesystem {
 public:
  explicit FaultyFilesystem(Filesystem& real) : real_(real) {}
  std::atomic<int64_t> fail_copy_after{-1};

  Result<Capacity> capacity(const std::string& p) override { return real_.capacity(p); }
  Result<void> make_dirs(const std::string& p) override { return real_.make_dirs(p); }
  Result<int64_t> file_size(const std::string& p) override { return real_.file_size(p); }
  Result<void> copy(const std::string& from, const std::string& to,
                    const std::function<bool(int64_t)>& progress) override {
    int64_t limit = fail_copy_after.load();
    if (limit < 0) return real_.copy(from, to, progress);
    FAB_ASSIGN_OR_RETURN(auto file, real_.open_at(to, 0));
    FAB_TRY(real_.read(from, limit, [&](std::string_view p) { (void)file->append(p); }));
    progress(limit);
    return fail(ErrorCode::kInternal, "cannot copy to " + to + ": No space left on device");
  }
  Result<std::unique_ptr<WritableFile>> open_at(const std::string& p, int64_t offset) override {
    return real_.open_at(p, offset);
  }
  Result<void> read(const std::string& p, int64_t length,
                    const std::function<void(std::string_view)>& piece) override {
    return real_.read(p, length, piece);
  }
  Result<void> rename(const std::string& a, const std::string& b) override {
    return real_.rename(a, b);
  }
  Result<void> remove(const std::string& p) override { return real_.remove(p); }
  Result<DiskInfo> inspect(const std::string& p) override { return real_.inspect(p); }
  Result<void> check(const std::string& p, const std::string& f) override {
    return real_.check(p, f);
  }
  Result<void> create_disk(const std::string& p, const std::string& f, int64_t b) override {
    return real_.create_disk(p, f, b);
  }

 private:
  Filesystem& real_;
};

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("fabrica-storage-" + crypto::random_hex(8));
    fs::create_directories(dir_);
    store_ = std::move(*store::SqliteStore::open((dir_ / "db").string()));
    authorizer_ = std::make_unique<auth::Authorizer>(*store_);
    identity_ =
        std::make_unique<auth::Identity>(*store_, *authorizer_, clock_, crypto::HashCost::kMinimum);
    ASSERT_TRUE(*identity_->bootstrap("admin-password"));
    quotas_ = std::make_unique<auth::Quotas>(*store_, *authorizer_, clock_);
    ASSERT_TRUE(store_->write([](store::Transaction& tx) -> Result<void> {
      return tx.insert({.type = "cluster", .id = 0, .name = "default", .body = "{}"});
    }));
    real_fs_ = make_posix_filesystem();
    faulty_ = std::make_unique<FaultyFilesystem>(*real_fs_);
    start();
    admin_ = *identity_->caller_for(0, "test");
    acme_ = group("acme");
    alice_ = user("alice", acme_);
    umbrella_ = group("umbrella");
    mallory_ = user("mallory", umbrella_);
    // Both tenants may use cluster 0 and its datastores, as a VDC grants them.
    auth::Vdcs vdcs(*store_, *authorizer_, clock_);
    auto vdc = vdcs.create(admin_, "shared-vdc", {});
    ASSERT_TRUE(vdc);
    for (int64_t g : {acme_, umbrella_}) ASSERT_TRUE(vdcs.add_group(admin_, vdc->header.id, g));
    ASSERT_TRUE(vdcs.add_resource(admin_, vdc->header.id, {"cluster", 0}));
  }
  void TearDown() override {
    storage_.reset();
    fs::remove_all(dir_);
  }

  void start() {
    storage_.reset();
    storage_ = std::make_unique<Storage>(*store_, *authorizer_, *quotas_, *faulty_, clock_,
                                         StorageOptions{.datastores_root = (dir_ / "ds").string()});
    ASSERT_TRUE(storage_->bootstrap());
  }

  int64_t group(const std::string& name) {
    auto g = identity_->create_group(admin_, {.name = name});
    EXPECT_TRUE(g) << g.error().message();
    return g->header.id;
  }
  auth::Caller user(const std::string& name, int64_t gid) {
    auto u =
        identity_->create_user(admin_, {.name = name, .password = "password-" + name, .gid = gid});
    EXPECT_TRUE(u) << u.error().message();
    return *identity_->caller_for(u->header.id, "test");
  }

  // A file of `size` deterministic bytes; returns its path.
  std::string data_file(const std::string& name, size_t size) {
    std::string data(size, '\0');
    for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 131 + 7) % 251);
    std::ofstream((dir_ / name).string(), std::ios::binary) << data;
    return (dir_ / name).string();
  }
  std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  // Uploads `data` as pieces of at most `piece` bytes; returns the last finish().
  Result<Image> upload(const auth::Caller& who, int64_t id, const std::string& data, size_t piece) {
    Result<Image> last = fail(ErrorCode::kInternal, "nothing sent");
    for (size_t at = 0; at < data.size(); at += piece) {
      size_t n = std::min(piece, data.size() - at);
      FAB_ASSIGN_OR_RETURN(auto session, storage_->begin_upload(who, id, at, n));
      FAB_TRY(session->write(std::string_view(data).substr(at, n)));
      last = session->finish(true);
      if (!last) return last;
    }
    return last;
  }

  Image wait_settled(int64_t id) {
    for (int i = 0; i < 2000; ++i) {
      auto image = storage_->get_image(admin_, id);
      if (image && image->state() != ImageState::kLocked) return *image;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "image " << id << " stayed LOCKED";
    return *storage_->get_image(admin_, id);
  }

  int64_t usage(const auth::Caller& who, const std::string& key) {
    auto q = quotas_->get(admin_, auth::QuotaOwner::kUser, who.uid);
    EXPECT_TRUE(q);
    auto it = q->global.usage.find(key);
    return it == q->global.usage.end() ? 0 : it->second;
  }

  fs::path dir_;
  testing::FakeClock clock_;
  std::unique_ptr<store::SqliteStore> store_;
  std::unique_ptr<auth::Authorizer> authorizer_;
  std::unique_ptr<auth::Identity> identity_;
  std::unique_ptr<auth::Quotas> quotas_;
  std::unique_ptr<Filesystem> real_fs_;
  std::unique_ptr<FaultyFilesystem> faulty_;
  std::unique_ptr<Storage> storage_;
  auth::Caller admin_, alice_, mallory_;
  int64_t acme_ = 0, umbrella_ = 0;
};

TEST(ImageStateTest, TableCoversEveryStateAndEvent) {
  using S = ImageState;
  using E = ImageEvent;
  // Every allowed move, for (state, event, persistent); everything else is refused.
  struct Move {
    S from;
    E event;
    std::optional<bool> persistent;  // nullopt: either.
    S to;
  };
  const std::vector<Move> allowed = {
      {S::kLocked, E::kDataReady, std::nullopt, S::kReady},
      {S::kLocked, E::kDataFailed, std::nullopt, S::kError},
      {S::kReady, E::kAttach, false, S::kUsed},
      {S::kReady, E::kAttach, true, S::kUsedPers},
      {S::kUsed, E::kAttach, false, S::kUsed},
      {S::kUsed, E::kDetach, std::nullopt, S::kReady},  // Its only user.
      {S::kUsedPers, E::kDetach, std::nullopt, S::kReady},
      {S::kReady, E::kDisable, std::nullopt, S::kDisabled},
      {S::kDisabled, E::kEnable, std::nullopt, S::kReady},
  };
  for (S s : {S::kReady, S::kUsed, S::kDisabled, S::kLocked, S::kError, S::kUsedPers}) {
    for (E e : {E::kDataReady, E::kDataFailed, E::kAttach, E::kDetach, E::kDisable, E::kEnable}) {
      for (bool persistent : {false, true}) {
        int users = (s == S::kUsed || s == S::kUsedPers) ? 1 : 0;
        std::optional<S> want;
        for (const auto& m : allowed) {
          if (m.from == s && m.event == e && (!m.persistent || *m.persistent == persistent)) {
            want = m.to;
          }
        }
        auto got = image_next(s, e, persistent, users);
        std::string what = std::string(image_state_name(s)) + " event " +
                           std::to_string(static_cast<int>(e)) + (persistent ? " persistent" : "");
        if (want) {
          ASSERT_TRUE(got) << what << ": " << got.error().message();
          EXPECT_EQ(*got, *want) << what;
        } else {
          ASSERT_FALSE(got) << what;
          EXPECT_EQ(got.error().code(), ErrorCode::kFailedPrecondition) << what;
        }
      }
    }
  }
  // A non-persistent image stays USED while another VM still holds it.
  EXPECT_EQ(*image_next(S::kUsed, E::kDetach, false, 2), S::kUsed);
}

TEST_F(StorageTest, DefaultDatastoresReportTheirFilesystem) {
  auto all = storage_->list_datastores(admin_);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[0].kind, DatastoreKind::kSystem);
  EXPECT_EQ((*all)[1].header.name, "default");
  EXPECT_EQ((*all)[2].kind, DatastoreKind::kFiles);
  for (const auto& ds : *all) {
    EXPECT_TRUE(fs::is_directory(ds.path)) << ds.path;
    ASSERT_TRUE(ds.capacity);
    EXPECT_GT(ds.capacity->total, 0);
    EXPECT_LE(ds.capacity->free, ds.capacity->total);
  }
  // A tenant sees them through its VDC's cluster; the capacity is the real filesystem's.
  auto seen = storage_->list_datastores(alice_);
  ASSERT_TRUE(seen);
  EXPECT_EQ(seen->size(), 3u);
  auto json = (*seen)[1].to_api_json();
  EXPECT_GT(json["capacity"]["total_mb"].get<int64_t>(), 0);
}

TEST_F(StorageTest, OnlyAdministratorsCreateDatastoresAndPathsNeverOverlap) {
  NewDatastore request{.name = "weka", .path = (dir_ / "weka").string()};
  auto denied = storage_->create_datastore(alice_, request);
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().code(), ErrorCode::kPermissionDenied);

  auto relative = storage_->create_datastore(admin_, {.name = "rel", .path = "mnt/weka"});
  ASSERT_FALSE(relative);
  EXPECT_EQ(relative.error().field(), "path");
  // README finding: a path that is not there meant a filesystem not mounted yet; an empty
  // directory made in its place would fill the root disk.
  auto unmounted = storage_->create_datastore(admin_, request);
  ASSERT_FALSE(unmounted);
  EXPECT_EQ(unmounted.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(unmounted.error().field(), "path");
  EXPECT_NE(unmounted.error().message().find("does not exist on fabricad's machine"),
            std::string::npos)
      << unmounted.error().message();
  EXPECT_FALSE(fs::exists(request.path.value()));
  for (const char* d : {"weka", "ds/1/sub", "nc", "w2"}) fs::create_directories(dir_ / d);
  auto inside = storage_->create_datastore(
      admin_, {.name = "inside", .path = (dir_ / "ds" / "1" / "sub").string()});
  ASSERT_FALSE(inside);
  EXPECT_EQ(inside.error().field(), "path");
  EXPECT_NE(inside.error().message().find("overlaps datastore 1"), std::string::npos);
  auto no_cluster = storage_->create_datastore(
      admin_, {.name = "nc", .path = (dir_ / "nc").string(), .clusters = {42}});
  ASSERT_FALSE(no_cluster);
  EXPECT_EQ(no_cluster.error().field(), "clusters");

  auto weka = storage_->create_datastore(admin_, request);
  ASSERT_TRUE(weka) << weka.error().message();
  EXPECT_EQ(weka->header.id, 100);
  EXPECT_TRUE(fs::is_directory(request.path.value()));
  ASSERT_TRUE(weka->capacity);
  EXPECT_FALSE(weka->capacity->type.empty()) << "the filesystem type is reported";
  auto again = storage_->create_datastore(admin_, {.name = "weka", .path = (dir_ / "w2").string()});
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists);

  // Images keep a datastore alive.
  auto image = storage_->create_image(
      alice_, {.name = "blank", .datastore_id = 100, .type = ImageType::kDatablock, .blank_mb = 1});
  ASSERT_TRUE(image) << image.error().message();
  auto busy = storage_->delete_datastore(admin_, 100);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(storage_->delete_image(alice_, image->header.id));
  EXPECT_TRUE(storage_->delete_datastore(admin_, 100));
}

TEST_F(StorageTest, UploadResumesAfterABrokenTransferAndVerifies) {
  std::string data = read_file(data_file("disk.raw", 3 * 1024 * 1024 + 17));
  auto image = storage_->create_image(alice_, {.name = "ubuntu",
                                               .format = "raw",
                                               .upload_size = static_cast<int64_t>(data.size()),
                                               .upload_sha256 = crypto::sha256_hex(data)});
  ASSERT_TRUE(image) << image.error().message();
  int64_t id = image->header.id;
  EXPECT_EQ(image->state(), ImageState::kLocked);
  EXPECT_EQ(usage(alice_, "images"), 1);
  EXPECT_EQ(usage(alice_, "image_mb"), 4);

  // The client goes away after 1 MiB + 5 bytes: that much counts.
  {
    auto session = storage_->begin_upload(alice_, id, 0, std::nullopt);
    ASSERT_TRUE(session);
    ASSERT_TRUE((*session)->write(std::string_view(data).substr(0, (1 << 20) + 5)));
    auto broken = (*session)->finish(false);
    ASSERT_TRUE(broken) << broken.error().message();
  }
  EXPECT_EQ(storage_->get_image(alice_, id)->progress["bytes_done"], (1 << 20) + 5);

  // Starting over at 0 is refused with the byte to resume from.
  auto wrong = storage_->begin_upload(alice_, id, 0, std::nullopt);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(wrong.error().message().find("continues at byte 1048581"), std::string::npos);

  // Another tenant cannot even see it.
  auto stranger = storage_->begin_upload(mallory_, id, (1 << 20) + 5, std::nullopt);
  ASSERT_FALSE(stranger);
  EXPECT_EQ(stranger.error().code(), ErrorCode::kNotFound);

  // fabricad restarts: the hash of what arrived is rebuilt from the file.
  start();
  size_t at = (1 << 20) + 5;
  {
    auto over = storage_->begin_upload(alice_, id, static_cast<int64_t>(at), std::nullopt);
    ASSERT_TRUE(over) << over.error().message();
    auto too_much = (*over)->write(std::string(data.size(), 'x'));
    ASSERT_FALSE(too_much);
    EXPECT_EQ(too_much.error().field(), "upload");
  }
  auto rest = storage_->begin_upload(alice_, id, static_cast<int64_t>(at), std::nullopt);
  ASSERT_TRUE(rest) << rest.error().message();
  ASSERT_TRUE((*rest)->write(std::string_view(data).substr(at)));
  auto done = (*rest)->finish(true);
  ASSERT_TRUE(done) << done.error().message();
  EXPECT_EQ(done->state(), ImageState::kReady);
  EXPECT_EQ(done->sha256, crypto::sha256_hex(data));
  EXPECT_EQ(done->format, "raw");
  EXPECT_EQ(done->size, static_cast<int64_t>(data.size()));
  EXPECT_TRUE(read_file(done->path) == data);
  EXPECT_FALSE(fs::exists(done->path + ".part"));
  auto ds = storage_->get_datastore(admin_, 1);
  EXPECT_EQ(ds->images, 1);
  EXPECT_EQ(ds->images_bytes, static_cast<int64_t>(data.size()));
}

TEST_F(StorageTest, ChecksumMismatchLeavesNoHalfImage) {
  std::string data = read_file(data_file("disk.raw", 200000));
  auto image = storage_->create_image(
      alice_, {.name = "bad", .upload_size = 200000, .upload_sha256 = std::string(64, 'a')});
  ASSERT_TRUE(image);
  auto done = upload(alice_, image->header.id, data, 65536);
  ASSERT_FALSE(done);
  EXPECT_EQ(done.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(done.error().field(), "sha256");
  EXPECT_NE(done.error().message().find("checksum mismatch"), std::string::npos);
  auto after = storage_->get_image(alice_, image->header.id);
  EXPECT_EQ(after->state(), ImageState::kError);
  EXPECT_NE(after->error.find("checksum mismatch"), std::string::npos);
  EXPECT_FALSE(fs::exists(after->path));
  EXPECT_FALSE(fs::exists(after->path + ".part"));
  EXPECT_EQ(usage(alice_, "image_mb"), 0);
  EXPECT_EQ(usage(alice_, "images"), 1);
  EXPECT_EQ(storage_->get_datastore(admin_, 1)->images_bytes, 0);
  // A further PUT is refused; delete gives everything back.
  EXPECT_FALSE(storage_->begin_upload(alice_, image->header.id, 0, std::nullopt));
  ASSERT_TRUE(storage_->delete_image(alice_, image->header.id));
  EXPECT_EQ(usage(alice_, "images"), 0);
}

TEST_F(StorageTest, QemuImgRefusesLyingAndDangerousFiles) {
  // Raw bytes declared as qcow2.
  std::string raw = read_file(data_file("plain.raw", 65536));
  auto lying =
      storage_->create_image(alice_, {.name = "lying", .format = "qcow2", .upload_size = 65536});
  ASSERT_TRUE(lying);
  auto refused = upload(alice_, lying->header.id, raw, 65536);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("the data is raw, not qcow2"), std::string::npos);

  // A qcow2 whose backing file would read another file on the host.
  std::string backed = (dir_ / "backed.qcow2").string();
  ASSERT_TRUE(run_process(
      {"qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", backed}));
  std::string bytes = read_file(backed);
  auto sneaky = storage_->create_image(
      alice_, {.name = "sneaky", .upload_size = static_cast<int64_t>(bytes.size())});
  ASSERT_TRUE(sneaky);
  auto no = upload(alice_, sneaky->header.id, bytes, bytes.size());
  ASSERT_FALSE(no);
  EXPECT_NE(no.error().message().find("backing file"), std::string::npos);

  // A truncated qcow2: qemu-img cannot read it.
  std::string good = (dir_ / "good.qcow2").string();
  ASSERT_TRUE(run_process({"qemu-img", "create", "-q", "-f", "qcow2", good, "64M"}));
  std::string cut = read_file(good).substr(0, 300);
  auto broken = storage_->create_image(
      alice_,
      {.name = "broken", .format = "qcow2", .upload_size = static_cast<int64_t>(cut.size())});
  ASSERT_TRUE(broken);
  auto damaged = upload(alice_, broken->header.id, cut, cut.size());
  ASSERT_FALSE(damaged);
  EXPECT_EQ(storage_->get_image(alice_, broken->header.id)->state(), ImageState::kError);

  // A real qcow2, format detected.
  std::string qcow = read_file(good);
  auto fine = storage_->create_image(
      alice_, {.name = "fine", .upload_size = static_cast<int64_t>(qcow.size())});
  ASSERT_TRUE(fine);
  auto ok = upload(alice_, fine->header.id, qcow, 4096);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(ok->format, "qcow2");
  EXPECT_EQ(ok->virtual_size, 64 << 20);
}

TEST_F(StorageTest, PathImportCopiesInTheBackgroundAndFailuresLeaveNothing) {
  std::string file = data_file("import.raw", 5 << 20);
  auto denied = storage_->create_image(alice_, {.name = "x", .from_path = file});
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().code(), ErrorCode::kPermissionDenied);

  auto image = storage_->create_image(admin_, {.name = "imported", .from_path = file});
  ASSERT_TRUE(image) << image.error().message();
  EXPECT_EQ(image->state(), ImageState::kLocked);
  EXPECT_EQ(image->progress["bytes_total"], 5 << 20);
  Image ready = wait_settled(image->header.id);
  EXPECT_EQ(ready.state(), ImageState::kReady) << ready.error;
  EXPECT_EQ(ready.sha256, crypto::sha256_hex(read_file(file)));
  EXPECT_TRUE(ready.progress.is_null());

  // The disk fills up halfway through a copy.
  faulty_->fail_copy_after = 2 << 20;
  auto failing = storage_->create_image(admin_, {.name = "unlucky", .from_path = file});
  ASSERT_TRUE(failing);
  Image failed = wait_settled(failing->header.id);
  EXPECT_EQ(failed.state(), ImageState::kError);
  EXPECT_NE(failed.error.find("No space left on device"), std::string::npos);
  EXPECT_FALSE(fs::exists(failed.path + ".part"));
  EXPECT_FALSE(fs::exists(failed.path));
  EXPECT_EQ(storage_->get_datastore(admin_, 1)->images_bytes, 5 << 20);

  // Clone: a copy of the data, LOCKED until copied, READY with the same checksum.
  faulty_->fail_copy_after = -1;
  auto clone = storage_->clone_image(admin_, ready.header.id, "imported-2", std::nullopt);
  ASSERT_TRUE(clone) << clone.error().message();
  Image cloned = wait_settled(clone->header.id);
  EXPECT_EQ(cloned.state(), ImageState::kReady);
  EXPECT_EQ(cloned.sha256, ready.sha256);
  EXPECT_EQ(cloned.source["image_id"], ready.header.id);
  auto of_error = storage_->clone_image(admin_, failed.header.id, "nope", std::nullopt);
  ASSERT_FALSE(of_error);
  EXPECT_EQ(of_error.error().code(), ErrorCode::kFailedPrecondition);
}

TEST_F(StorageTest, ImagesBelongToTheirTenantUntilShared) {
  auto image = storage_->create_image(
      alice_, {.name = "weights", .type = ImageType::kDatablock, .blank_mb = 16});
  ASSERT_TRUE(image) << image.error().message();
  EXPECT_EQ(image->state(), ImageState::kReady);
  EXPECT_EQ(image->format, "qcow2");
  EXPECT_EQ(image->virtual_size, 16 << 20);
  int64_t id = image->header.id;

  for (auto result :
       {storage_->get_image(mallory_, id).map([](Image) {}), storage_->delete_image(mallory_, id),
        storage_->set_persistent(mallory_, id, true).map([](Image) {}),
        storage_->clone_image(mallory_, id, "stolen", std::nullopt).map([](Image) {})}) {
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().code(), ErrorCode::kNotFound);
    EXPECT_EQ(result.error().message(), "image " + std::to_string(id) + " not found");
  }
  EXPECT_TRUE(storage_->list_images(mallory_, {})->items.empty());
  EXPECT_EQ(storage_->list_images(alice_, {})->items.size(), 1u);

  // Shared with the group (640): a second acme user sees and clones it, never changes it.
  auto bob = user("bob", acme_);
  EXPECT_FALSE(storage_->get_image(bob, id));
  ASSERT_TRUE(storage_->chmod_image(alice_, id, Permissions(0640)));
  EXPECT_TRUE(storage_->get_image(bob, id));
  auto bobs = storage_->clone_image(bob, id, "bobs-copy", std::nullopt);
  ASSERT_TRUE(bobs) << bobs.error().message();
  EXPECT_EQ(bobs->header.uid, bob.uid);
  auto change = storage_->set_persistent(bob, id, true);
  ASSERT_FALSE(change);
  EXPECT_EQ(change.error().code(), ErrorCode::kPermissionDenied);
  EXPECT_FALSE(storage_->get_image(mallory_, id));

  auto persistent = storage_->set_persistent(alice_, id, true);
  ASSERT_TRUE(persistent);
  EXPECT_TRUE(persistent->persistent);
  auto disabled = storage_->set_enabled(alice_, id, false);
  ASSERT_TRUE(disabled);
  EXPECT_EQ(disabled->state(), ImageState::kDisabled);
}

TEST_F(StorageTest, ImageQuotasAndDatastoreLimitsRefuseBeforeAnythingIsWritten) {
  ASSERT_TRUE(quotas_->set(admin_, auth::QuotaOwner::kGroup, acme_,
                           {.limits = {{"images", 2}, {"image_mb", 10}}}));
  auto big = storage_->create_image(alice_, {.name = "big", .upload_size = 11 << 20});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), ErrorCode::kQuotaExceeded);
  ASSERT_TRUE(storage_->create_image(alice_, {.name = "a", .upload_size = 4 << 20}));
  ASSERT_TRUE(storage_->create_image(alice_, {.name = "b", .upload_size = 4 << 20}));
  auto third = storage_->create_image(alice_, {.name = "c", .upload_size = 1});
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code(), ErrorCode::kQuotaExceeded);
  EXPECT_EQ(storage_->list_images(admin_, {})->items.size(), 2u);

  fs::create_directories(dir_ / "small");
  auto small = storage_->create_datastore(
      admin_, {.name = "small", .path = (dir_ / "small").string(), .limit_mb = 1});
  ASSERT_TRUE(small);
  auto over = storage_->create_image(
      admin_, {.name = "over", .datastore_id = small->header.id, .upload_size = 2 << 20});
  ASSERT_FALSE(over);
  EXPECT_EQ(over.error().field(), "datastore_id");
  auto wrong_kind = storage_->create_image(
      admin_, {.name = "kernel", .datastore_id = 1, .type = ImageType::kKernel, .upload_size = 10});
  ASSERT_FALSE(wrong_kind);
  EXPECT_EQ(wrong_kind.error().field(), "datastore_id");
  auto files = storage_->create_image(
      admin_, {.name = "kernel", .datastore_id = 2, .type = ImageType::kKernel, .upload_size = 10});
  ASSERT_TRUE(files) << files.error().message();
  auto two_sources =
      storage_->create_image(admin_, {.name = "two", .upload_size = 10, .blank_mb = 1});
  ASSERT_FALSE(two_sources);
}

TEST_F(StorageTest, AnAbandonedUploadIsGivenUpAndItsSpaceComesBack) {
  std::string data = read_file(data_file("slow.raw", 3 << 20));
  auto idle = storage_->create_image(alice_, {.name = "idle", .upload_size = 3 << 20});
  auto busy = storage_->create_image(alice_, {.name = "busy", .upload_size = 3 << 20});
  ASSERT_TRUE(idle && busy);
  for (int64_t id : {idle->header.id, busy->header.id}) {
    auto s = storage_->begin_upload(alice_, id, 0, std::nullopt);
    ASSERT_TRUE(s);
    ASSERT_TRUE((*s)->write(std::string_view(data).substr(0, 1 << 20)));
    ASSERT_TRUE((*s)->finish(false));
  }
  EXPECT_EQ(usage(alice_, "image_mb"), 6);
  EXPECT_EQ(*storage_->expire_uploads(), 0) << "nothing is idle yet";
  clock_.advance(std::chrono::hours(23));
  {  // The busy one gets a piece.
    auto s = storage_->begin_upload(alice_, busy->header.id, 1 << 20, std::nullopt);
    ASSERT_TRUE(s);
    ASSERT_TRUE((*s)->write(std::string_view(data).substr(1 << 20, 1 << 20)));
    ASSERT_TRUE((*s)->finish(false));
  }
  clock_.advance(std::chrono::hours(2));
  EXPECT_EQ(*storage_->expire_uploads(), 1);
  auto gone = storage_->get_image(alice_, idle->header.id);
  EXPECT_EQ(gone->state(), ImageState::kError);
  EXPECT_NE(gone->error.find("abandoned"), std::string::npos) << gone->error;
  EXPECT_FALSE(fs::exists(gone->path + ".part"));
  EXPECT_EQ(usage(alice_, "image_mb"), 3);
  EXPECT_EQ(storage_->get_image(alice_, busy->header.id)->state(), ImageState::kLocked);
  auto rest = storage_->begin_upload(alice_, busy->header.id, 2 << 20, std::nullopt);
  ASSERT_TRUE(rest);
  ASSERT_TRUE((*rest)->write(std::string_view(data).substr(2 << 20)));
  EXPECT_EQ((*rest)->finish(true)->state(), ImageState::kReady);
}

}  // namespace
}  // namespace fabrica::storage
