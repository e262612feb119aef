// A VM's images and NICs: attaching, detaching, resizing and saving disks, and the leases of
// its NICs (split from compute.cc).
#include <algorithm>

#include "auth/restricted.h"
#include "compute/compute.h"
#include "compute/internal.h"

namespace fabrica::compute {

using namespace internal;

// ---- Images ----

namespace {

// Keeps in `clusters` only those in `seen` (all of `seen` the first time).
void narrow_clusters(std::optional<std::set<int64_t>>& clusters, const std::vector<int64_t>& seen) {
  std::set<int64_t> here(seen.begin(), seen.end());
  if (!clusters) {
    clusters = std::move(here);
  } else {
    std::erase_if(*clusters, [&](int64_t c) { return !here.contains(c); });
  }
}

// The first target "<prefix><letter>" from `first` that none of `disks` has.
Result<std::string> free_target(const Json& disks, const std::string& prefix, char first,
                                const std::string& field) {
  for (char c = first; c <= 'z'; ++c) {
    std::string target = prefix + c;
    if (std::none_of(disks.begin(), disks.end(),
                     [&](const Json& d) { return d.value("target", "") == target; })) {
      return target;
    }
  }
  return fail(ErrorCode::kInvalidArgument, "no free " + prefix + "* target is left", field);
}

// Keeps the VM where every datastore and vnet it uses is seen: `clusters` (nullopt: no
// constraint). A placed VM's host must be in one of them; an unplaced VM's clusters narrow.
Result<void> keep_to_clusters(Vm& vm, const std::optional<std::set<int64_t>>& clusters,
                              const std::string& field) {
  if (!clusters) return {};
  if (vm.allocation) {
    if (clusters->contains(vm.allocation->cluster_id)) return {};
    return fail(ErrorCode::kFailedPrecondition,
                "host " + vm.allocation->host_name + " (cluster " +
                    std::to_string(vm.allocation->cluster_id) +
                    ") does not mount that datastore; undeploy the VM first so that the "
                    "scheduler places it where it does",
                field);
  }
  std::vector<int64_t> allowed;
  for (int64_t c : *clusters) {
    if (vm.request.clusters.empty() ||
        std::find(vm.request.clusters.begin(), vm.request.clusters.end(), c) !=
            vm.request.clusters.end()) {
      allowed.push_back(c);
    }
  }
  if (allowed.empty()) {
    return fail(ErrorCode::kInvalidArgument,
                "no cluster the VM may use has hosts that see the datastores of all its images and "
                "all its vnets",
                field);
  }
  vm.request.clusters = allowed;
  return {};
}

}  // namespace

Result<Json> Compute::attach_one(store::Transaction& tx, const auth::Caller& caller, const Vm& vm,
                                 const Json& asked, int64_t disk_id, const std::string& field,
                                 std::optional<std::set<int64_t>>& clusters) {
  using storage::ImageType;
  Json disk{{"disk_id", disk_id}};
  if (asked.contains("size_mb")) {
    FAB_ASSIGN_OR_RETURN(disk["target"], free_target(vm.disks, "vd", 'a', field));
    disk["volatile"] = true;
    disk["size_mb"] = asked["size_mb"];
    disk["format"] = asked["format"];
    return disk;
  }
  FAB_ASSIGN_OR_RETURN(
      auto a,
      storage_.attach_image(
          tx, caller, asked["image_id"].get<int64_t>(), vm.header.id,
          {ImageType::kOs, ImageType::kDatablock, ImageType::kCdrom, ImageType::kModel}, field));
  if (a.type == ImageType::kModel && a.format != "raw") {
    // Gives the image back: the transaction is rolled back with this error.
    return fail(ErrorCode::kFailedPrecondition,
                "MODEL image " + std::to_string(a.image_id) +
                    " is a directory tree on a shared datastore; a VM mounts a model as a raw "
                    "ext4 volume: import it into a local datastore",
                field);
  }
  narrow_clusters(clusters, a.clusters);
  bool cdrom = a.type == ImageType::kCdrom;
  // sda is the context CD-ROM.
  FAB_ASSIGN_OR_RETURN(disk["target"], cdrom ? free_target(vm.disks, "sd", 'b', field)
                                             : free_target(vm.disks, "vd", 'a', field));
  disk["image_id"] = a.image_id;
  disk["image_name"] = a.name;
  disk["type"] = storage::image_type_name(a.type);
  disk["source"] = a.path;
  disk["format"] = a.format;
  disk["persistent"] = a.persistent;
  if (a.type == ImageType::kModel) disk["readonly"] = true;
  disk["driver"] = storage::datastore_driver_name(a.driver);
  disk["datastore_id"] = a.datastore_id;
  disk["size_mb"] = (a.virtual_size + (1 << 20) - 1) >> 20;
  return disk;
}

Result<void> Compute::attach_images(store::Transaction& tx, const auth::Caller& caller, Vm& vm) {
  using storage::ImageType;
  std::optional<std::set<int64_t>> clusters;  // Where every image's datastore is seen.
  vm.disks = Json::array();
  for (size_t i = 0; i < vm.guest.disks.size(); ++i) {
    FAB_ASSIGN_OR_RETURN(Json disk,
                         attach_one(tx, caller, vm, vm.guest.disks[i], static_cast<int64_t>(i),
                                    "disks[" + std::to_string(i) + "].image_id", clusters));
    vm.disks.push_back(std::move(disk));
    vm.last_disk_id = static_cast<int64_t>(i);
  }
  for (auto [image, path, type, field] : {std::tuple{vm.guest.kernel_image, &vm.guest.kernel,
                                                     ImageType::kKernel, "os.kernel_image_id"},
                                          std::tuple{vm.guest.initrd_image, &vm.guest.initrd,
                                                     ImageType::kRamdisk, "os.initrd_image_id"}}) {
    if (image < 0) continue;
    FAB_ASSIGN_OR_RETURN(auto a,
                         storage_.attach_image(tx, caller, image, vm.header.id, {type}, field));
    narrow_clusters(clusters, a.clusters);
    *path = a.path;
  }
  FAB_TRY(lease_nics(tx, caller, vm, clusters));
  return keep_to_clusters(vm, clusters, "clusters");
}

Result<Vm> Compute::change_disks(
    const auth::Caller& caller, int64_t id, const std::string& verb,
    const std::function<Result<void>(store::Transaction&, Vm&)>& change) {
  int64_t now = unix_seconds(clock_.now());
  FAB_ASSIGN_OR_RETURN(Vm vm, store_.write_value<Vm>([&](store::Transaction& tx) -> Result<Vm> {
    FAB_ASSIGN_OR_RETURN(Vm vm, load_vm(tx, caller, id, Right::kManage));
    VmState s = vm.state();
    if (s != VmState::kPoweroff && s != VmState::kUndeployed && s != VmState::kPending &&
        s != VmState::kHold) {
      bool saving = vm.lcm == static_cast<int>(Lcm::kHotplugSaveasPoweroff);
      return fail(ErrorCode::kFailedPrecondition,
                  "cannot " + verb + " a VM that is " + vm_state_name(s, vm.lcm) +
                      (saving ? "; wait until its disk-saveas is done"
                              : "; poweroff or undeploy it first") +
                      " (disks change while a VM is POWEROFF, UNDEPLOYED, PENDING or HOLD)",
                  "state");
    }
    int64_t before = own_disk_mb(vm.disks);
    Json shape_before = vm_shape(vm.request, vm.guest);
    FAB_TRY(change(tx, vm));
    FAB_TRY(storage_.check_system_room(tx, own_disk_mb(vm.disks) - before, "disks"));
    vm.guest.disks = asked_disks(vm.disks);
    FAB_TRY(auth::check_restricted(caller, "vm", vm_shape(vm.request, vm.guest), shape_before));
    vm.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(vm.version, tx.update(vm_record(vm)));
    return vm;
  }));
  notify();  // A pending VM's clusters may have changed.
  return vm;
}

Result<Vm> Compute::attach_disk(const auth::Caller& caller, int64_t id, const Json& disk) {
  FAB_ASSIGN_OR_RETURN(Json asked, read_disk(disk));
  return change_disks(
      caller, id, "attach a disk to", [&](store::Transaction& tx, Vm& vm) -> Result<void> {
        if (vm.disks.size() >= kMaxDisks) {
          return fail(ErrorCode::kInvalidArgument,
                      vm_noun(id) + " has 16 disks, the most a VM may have", "disks");
        }
        // Never an id used before: the host may still hold a detached disk's file under it.
        int64_t disk_id = vm.last_disk_id + 1;
        for (const Json& d : vm.disks) {
          disk_id = std::max(disk_id, d.value("disk_id", int64_t{0}) + 1);
        }
        vm.last_disk_id = disk_id;
        std::optional<std::set<int64_t>> clusters;
        FAB_ASSIGN_OR_RETURN(Json attached,
                             attach_one(tx, caller, vm, asked, disk_id, "image_id", clusters));
        FAB_TRY(keep_to_clusters(vm, clusters, "image_id"));
        vm.disks.push_back(std::move(attached));
        return {};
      });
}

namespace {

// The VM's disk `disk_id`, or kNotFound.
Result<Json*> find_disk(Vm& vm, int64_t disk_id) {
  for (Json& d : vm.disks) {
    if (d.value("disk_id", int64_t{-1}) == disk_id) return &d;
  }
  return fail(ErrorCode::kNotFound,
              vm_noun(vm.header.id) + " has no disk " + std::to_string(disk_id), "disk_id");
}

}  // namespace

Result<Vm> Compute::detach_disk(const auth::Caller& caller, int64_t id, int64_t disk_id) {
  return change_disks(
      caller, id, "detach a disk from", [&](store::Transaction& tx, Vm& vm) -> Result<void> {
        FAB_ASSIGN_OR_RETURN(Json * disk, find_disk(vm, disk_id));
        Json gone = *disk;
        vm.disks.erase(vm.disks.begin() + (disk - &vm.disks[0]));
        if (!gone.contains("image_id")) return {};
        int64_t image = gone["image_id"].get<int64_t>();
        bool still = image == vm.guest.kernel_image || image == vm.guest.initrd_image;
        for (const Json& d : vm.disks) still = still || d.value("image_id", int64_t{-1}) == image;
        if (still) return {};
        return storage_.detach_image(tx, image, vm.header.id);
      });
}

Result<Vm> Compute::resize_disk(const auth::Caller& caller, int64_t id, int64_t disk_id,
                                int64_t size_mb) {
  if (size_mb < 1 || size_mb > (int64_t{1} << 30)) {
    return fail(ErrorCode::kInvalidArgument, "must be 1 to 2^30 MiB", "size_mb");
  }
  return change_disks(
      caller, id, "resize a disk of", [&](store::Transaction&, Vm& vm) -> Result<void> {
        FAB_ASSIGN_OR_RETURN(Json * disk, find_disk(vm, disk_id));
        std::string what = "disk " + std::to_string(disk_id);
        if (disk->value("type", "") == "CDROM") {
          return fail(ErrorCode::kInvalidArgument, what + " is a CD-ROM; it has no size to change",
                      "disk_id");
        }
        if (disk->value("persistent", false)) {
          return fail(ErrorCode::kFailedPrecondition,
                      what + " is persistent image " + disk->value("image_name", "") +
                          ", whose size is the image's; save it as a new image or use a "
                          "non-persistent clone to grow it",
                      "disk_id");
        }
        int64_t now_mb = disk->value("size_mb", int64_t{0});
        if (size_mb <= now_mb) {
          return fail(
              ErrorCode::kInvalidArgument,
              "must be more than the disk's " + std::to_string(now_mb) + " MiB: disks only grow",
              "size_mb");
        }
        (*disk)["size_mb"] = size_mb;
        (*disk)["resized"] = true;  // The agent grows the VM's own file at the next deploy.
        return {};
      });
}

Result<Compute::Saved> Compute::saveas_disk(const auth::Caller& caller, int64_t id,
                                            const SaveAs& request) {
  int64_t now = unix_seconds(clock_.now());
  std::optional<sched::Allocation> released;
  Saved saved;
  FAB_TRY(fleet_.write_with_hosts([&](store::Transaction& tx) -> Result<void> {
    released.reset();
    FAB_ASSIGN_OR_RETURN(saved.vm, load_vm(tx, caller, id, Right::kManage));
    Vm& vm = saved.vm;
    FAB_TRY(next(Phase{static_cast<VmStatus>(vm.header.state), static_cast<Lcm>(vm.lcm)},
                 Event::kSaveas));
    FAB_ASSIGN_OR_RETURN(Json * disk, find_disk(vm, request.disk_id));
    if (disk->value("type", "") == "CDROM") {
      return fail(ErrorCode::kInvalidArgument,
                  "disk " + std::to_string(request.disk_id) +
                      " is a CD-ROM, an image already; clone the image instead",
                  "disk_id");
    }
    storage::Storage::SaveAs image{.name = request.name,
                                   .datastore_id = request.datastore_id,
                                   .type = disk->value("type", "") == "OS"
                                               ? storage::ImageType::kOs
                                               : storage::ImageType::kDatablock,
                                   .bytes = disk->value("size_mb", int64_t{0}) << 20,
                                   .cluster_id = vm.allocation->cluster_id,
                                   .vm_id = id,
                                   .disk_id = request.disk_id};
    if (!image.datastore_id && disk->contains("datastore_id")) {
      image.datastore_id = (*disk)["datastore_id"].get<int64_t>();
    }
    FAB_ASSIGN_OR_RETURN(saved.image, storage_.create_saveas(tx, caller, image));
    return apply(tx, vm, Event::kSaveas, now, "", released,
                 Json{{"disk_id", request.disk_id},
                      {"image_id", saved.image.header.id},
                      {"dest", storage::Storage::staged_path(saved.image)}});
  }));
  settle(saved.vm, released);
  return saved;
}

Result<void> Compute::detach_images(store::Transaction& tx, const Vm& vm) {
  std::set<int64_t> held;
  for (const Json& d : vm.disks) {
    if (d.contains("image_id")) held.insert(d["image_id"].get<int64_t>());
  }
  if (vm.guest.kernel_image >= 0) held.insert(vm.guest.kernel_image);
  if (vm.guest.initrd_image >= 0) held.insert(vm.guest.initrd_image);
  for (int64_t image : held) FAB_TRY(storage_.detach_image(tx, image, vm.header.id));
  std::set<int64_t> vnets;
  for (const Json& n : vm.nics) vnets.insert(n.value("vnet_id", int64_t{-1}));
  for (int64_t vnet : vnets) FAB_TRY(network_.release_vm(tx, vnet, vm.header.id));
  return {};
}

Result<void> Compute::lease_nics(store::Transaction& tx, const auth::Caller& caller, Vm& vm,
                                 std::optional<std::set<int64_t>>& clusters) {
  size_t n = vm.guest.nics.size();
  std::vector<std::optional<network::NicLease>> leases(n);
  // NICs that ask for an address first, so a free-choice NIC never takes it from them.
  for (bool asked_ip : {true, false}) {
    for (size_t i = 0; i < n; ++i) {
      const Json& asked = vm.guest.nics[i];
      if (asked.contains("ip") != asked_ip) continue;
      std::optional<std::string> ip;
      if (asked_ip) ip = asked["ip"].get<std::string>();
      FAB_ASSIGN_OR_RETURN(leases[i], network_.lease(tx, caller, asked["vnet_id"].get<int64_t>(),
                                                     vm.header.id, static_cast<int>(i), ip,
                                                     "nics[" + std::to_string(i) + "].vnet_id"));
    }
  }
  vm.nics = Json::array();
  for (const auto& lease : leases) {
    narrow_clusters(clusters, lease->clusters);
    // The NIC's variables, unless the user set one of the same name.
    Json context = lease->context();
    for (const auto& [name, value] : context.items()) {
      if (!vm.guest.context.contains(name)) vm.guest.context[name] = value;
    }
    vm.nics.push_back(lease->to_json());
    // An SR-IOV NIC is a VF of the vnet's physical function on whichever host the VM lands.
    if (lease->mode == network::VnetMode::kSriov) {
      vm.request.vfs.push_back(
          sched::VfRequest{.count = 1, .pf = lease->phydev, .nic = lease->nic_id});
    }
  }
  return {};
}

}  // namespace fabrica::compute
