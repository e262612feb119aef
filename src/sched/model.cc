#include "sched/model.h"

#include <algorithm>
#include <array>
#include <charconv>

#include "core/object.h"
#include "sched/host.h"

namespace fabrica::sched {
namespace {

constexpr int kMaxVcpus = 4096;
constexpr int64_t kMaxMemoryMb = 64LL * 1024 * 1024;  // 64 TiB.
constexpr int kMaxDevices = 64;
constexpr size_t kMaxList = 16;

template <typename E, size_t N>
std::optional<E> enum_from(const std::array<std::pair<std::string_view, E>, N>& names,
                           std::string_view text) {
  for (auto [name, value] : names) {
    if (name == text) return value;
  }
  return std::nullopt;
}

template <typename E, size_t N>
std::string_view enum_name(const std::array<std::pair<std::string_view, E>, N>& names, E value) {
  for (auto [name, v] : names) {
    if (v == value) return name;
  }
  return "?";
}

template <size_t N, typename E>
std::string choices(const std::array<std::pair<std::string_view, E>, N>& names) {
  std::string out;
  for (auto [name, v] : names) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

constexpr std::array<std::pair<std::string_view, CpuPolicy>, 3> kCpuPolicies{
    {{"shared", CpuPolicy::kShared}, {"core", CpuPolicy::kCore}, {"thread", CpuPolicy::kThread}}};
constexpr std::array<std::pair<std::string_view, NumaPolicy>, 2> kNumaPolicies{
    {{"preferred", NumaPolicy::kPreferred}, {"strict", NumaPolicy::kStrict}}};
constexpr std::array<std::pair<std::string_view, Policy>, 5> kPolicies{
    {{"packing", Policy::kPacking},
     {"striping", Policy::kStriping},
     {"load-aware", Policy::kLoadAware},
     {"rank", Policy::kRank},
     {"first-fit", Policy::kFirstFit}}};
constexpr std::array<std::pair<std::string_view, HostAffinity>, 3> kAffinities{
    {{"none", HostAffinity::kNone},
     {"same-host", HostAffinity::kSameHost},
     {"different-hosts", HostAffinity::kDifferentHosts}}};
constexpr std::array<std::pair<std::string_view, GpuTopology>, 2> kTopologies{
    {{"any", GpuTopology::kAny}, {"same-domain", GpuTopology::kSameDomain}}};

template <typename E, size_t N>
Result<E> read_enum(JsonObjectReader& r, std::string_view key,
                    const std::array<std::pair<std::string_view, E>, N>& names, E fallback,
                    const std::string& field) {
  FAB_ASSIGN_OR_RETURN(auto text, r.optional_string(key));
  if (!text) return fallback;
  auto value = enum_from(names, *text);
  if (!value) return fail(ErrorCode::kInvalidArgument, "must be one of " + choices(names), field);
  return *value;
}

Error bad(const std::string& field, const std::string& message) {
  return Error(ErrorCode::kInvalidArgument, message, field);
}

Result<int> read_count(JsonObjectReader& r, std::string_view key, int max,
                       const std::string& field) {
  FAB_ASSIGN_OR_RETURN(auto n, r.optional_int(key));
  if (!n) return fail(bad(field, "is required"));
  if (*n < 1 || *n > max) return fail(bad(field, "must be between 1 and " + std::to_string(max)));
  return static_cast<int>(*n);
}

Result<GpuRequest> read_gpus(const Json& json, const std::string& prefix) {
  FAB_ASSIGN_OR_RETURN(auto r, JsonObjectReader::wrap(json, prefix + "."));
  GpuRequest g;
  FAB_ASSIGN_OR_RETURN(g.count, read_count(r, "count", kMaxDevices, prefix + ".count"));
  FAB_ASSIGN_OR_RETURN(auto model, r.optional_string("model"));
  FAB_ASSIGN_OR_RETURN(auto ids, r.optional_string("vendor_device"));
  FAB_ASSIGN_OR_RETURN(
      g.topology, read_enum(r, "topology", kTopologies, GpuTopology::kAny, prefix + ".topology"));
  FAB_TRY(r.finish());
  if (model && ids) return fail(bad(prefix + ".model", "give model or vendor_device, not both"));
  if (model) {
    if (model->empty() || model->size() > 64) {
      return fail(bad(prefix + ".model", "must be 1 to 64 characters"));
    }
    g.model = *model;
  }
  if (ids) {
    unsigned vendor = 0, device = 0;
    auto colon = ids->find(':');
    bool ok = ids->size() == 9 && colon == 4;
    if (ok) {
      auto v = std::from_chars(ids->data(), ids->data() + 4, vendor, 16);
      auto d = std::from_chars(ids->data() + 5, ids->data() + 9, device, 16);
      ok = v.ec == std::errc() && v.ptr == ids->data() + 4 && d.ec == std::errc() &&
           d.ptr == ids->data() + 9;
    }
    if (!ok) return fail(bad(prefix + ".vendor_device", "must look like \"10de:2330\""));
    g.vendor = static_cast<int>(vendor);
    g.device = static_cast<int>(device);
  }
  return g;
}

Result<std::vector<MigRequest>> read_mig(const Json& json, const std::string& field) {
  if (!json.is_array() || json.size() > kMaxList) {
    return fail(bad(field, "must be an array of at most 16 {profile, count}"));
  }
  std::vector<MigRequest> out;
  for (size_t i = 0; i < json.size(); ++i) {
    std::string prefix = field + "[" + std::to_string(i) + "]";
    FAB_ASSIGN_OR_RETURN(auto r, JsonObjectReader::wrap(json[i], prefix + "."));
    MigRequest m;
    FAB_ASSIGN_OR_RETURN(m.profile, r.required_string("profile"));
    FAB_ASSIGN_OR_RETURN(m.count, read_count(r, "count", kMaxDevices, prefix + ".count"));
    FAB_TRY(r.finish());
    auto dot = m.profile.find('.');
    bool ok = m.profile.size() <= 32 && dot != std::string::npos && dot > 1 &&
              m.profile[dot - 1] == 'g' && std::isdigit(static_cast<unsigned char>(m.profile[0]));
    if (!ok) return fail(bad(prefix + ".profile", "must be a MIG profile such as \"1g.10gb\""));
    for (const auto& other : out) {
      if (other.profile == m.profile) return fail(bad(prefix + ".profile", "is listed twice"));
    }
    out.push_back(std::move(m));
  }
  return out;
}

Result<std::vector<VfRequest>> read_vfs(const Json& json, const std::string& field) {
  if (!json.is_array() || json.size() > kMaxList) {
    return fail(bad(field, "must be an array of at most 16 {fabric, count}"));
  }
  std::vector<VfRequest> out;
  for (size_t i = 0; i < json.size(); ++i) {
    std::string prefix = field + "[" + std::to_string(i) + "]";
    FAB_ASSIGN_OR_RETURN(auto r, JsonObjectReader::wrap(json[i], prefix + "."));
    VfRequest v;
    FAB_ASSIGN_OR_RETURN(auto fabric, r.optional_string("fabric"));
    v.fabric = fabric.value_or("");
    FAB_ASSIGN_OR_RETURN(v.count, read_count(r, "count", kMaxDevices, prefix + ".count"));
    FAB_ASSIGN_OR_RETURN(auto near, r.optional_bool("near_gpus"));
    FAB_ASSIGN_OR_RETURN(auto pf, r.optional_string("pf"));
    FAB_ASSIGN_OR_RETURN(auto nic, r.optional_int("nic"));
    FAB_TRY(r.finish());
    if (pf && (pf->empty() || pf->size() > 15)) {
      return fail(bad(prefix + ".pf", "must be an interface name of 1 to 15 characters"));
    }
    if (nic && (*nic < 0 || *nic > 64)) return fail(bad(prefix + ".nic", "must be 0-64"));
    v.pf = pf.value_or("");
    v.nic = static_cast<int>(nic.value_or(-1));
    if (v.fabric != "infiniband" && v.fabric != "ethernet" && !(v.fabric.empty() && pf)) {
      return fail(bad(prefix + ".fabric", "must be infiniband or ethernet (or left out with pf)"));
    }
    v.near_gpus = near.value_or(true);
    out.push_back(std::move(v));
  }
  return out;
}

Result<std::vector<int64_t>> read_ids(const Json& json, const std::string& field) {
  if (!json.is_array() || json.size() > 256) {
    return fail(bad(field, "must be an array of at most 256 ids"));
  }
  std::vector<int64_t> out;
  for (const Json& v : json) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0) {
      return fail(bad(field, "must hold non-negative integers"));
    }
    out.push_back(v.get<int64_t>());
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Result<int64_t> read_hugepages(JsonObjectReader& r, const std::string& field) {
  FAB_ASSIGN_OR_RETURN(auto text, r.optional_string("hugepages"));
  if (!text || *text == "none") return int64_t{0};
  if (*text == "2M") return kHugepage2M;
  if (*text == "1G") return kHugepage1G;
  return fail(bad(field, "must be none, 2M or 1G"));
}

std::string hugepage_name(int64_t kb) {
  return kb == kHugepage1G ? "1G" : kb == kHugepage2M ? "2M" : "none";
}

}  // namespace

std::string_view cpu_policy_name(CpuPolicy p) { return enum_name(kCpuPolicies, p); }
std::string_view numa_policy_name(NumaPolicy p) { return enum_name(kNumaPolicies, p); }
std::string_view policy_name(Policy p) { return enum_name(kPolicies, p); }
std::string_view host_affinity_name(HostAffinity a) { return enum_name(kAffinities, a); }

std::string GpuRequest::vendor_device() const {
  if (vendor < 0) return "";
  char ids[16];
  std::snprintf(ids, sizeof ids, "%04x:%04x", vendor, device);
  return ids;
}

std::string gpu_family(std::string_view model) {
  std::string out;
  for (char c : model) {
    if (c == ' ') break;
    if (c != '*' && c != '?') out += c;
  }
  return out;
}

Result<void> VmRequest::validate() {
  if (vcpus < 1 || vcpus > kMaxVcpus) {
    return fail(bad("vcpus", "must be between 1 and " + std::to_string(kMaxVcpus)));
  }
  if (memory_mb < 1 || memory_mb > kMaxMemoryMb) {
    return fail(bad("memory_mb", "must be between 1 and 67108864 (64 TiB)"));
  }
  if (hugepage_kb != 0 && memory_mb * 1024 % hugepage_kb != 0) {
    return fail(bad("memory_mb", "must be a multiple of the hugepage size"));
  }
  if (!vm_group.empty()) {
    FAB_TRY(validate_name(vm_group).map_error(
        [](Error e) { return Error(e.code(), e.message(), "vm_group"); }));
  }
  if (vm_group.empty() && (host_affinity != HostAffinity::kNone || same_cluster)) {
    return fail(bad("vm_group", "is required for host_affinity and same_cluster"));
  }
  if (policy == Policy::kRank && rank.empty()) {
    return fail(bad("rank", "is required with policy rank"));
  }
  if (priority < -1000 || priority > 1000) {
    return fail(bad("priority", "must be between -1000 and 1000"));
  }
  FAB_ASSIGN_OR_RETURN(auto req, Requirement::parse(requirements, host_attributes()));
  FAB_ASSIGN_OR_RETURN(auto rk, Rank::parse(rank, host_attributes()));
  compiled_requirements = std::make_shared<const Requirement>(std::move(req));
  compiled_rank = std::make_shared<const Rank>(std::move(rk));
  return {};
}

std::vector<std::pair<std::string, int64_t>> VmRequest::quota_amounts() const {
  std::vector<std::pair<std::string, int64_t>> out = {
      {"vms", 1}, {"vcpus", vcpus}, {"memory_mb", memory_mb}};
  if (gpus.count > 0) {
    std::string family = !gpus.model.empty() ? gpu_family(gpus.model) : "";
    if (gpus.vendor >= 0) {
      family = gpus.vendor_device();
      family[4] = '-';  // Quota keys take no colon: "gpu:10de-2330".
    }
    out.emplace_back("gpu:" + (family.empty() ? std::string("any") : family), gpus.count);
  }
  for (const auto& m : mig) out.emplace_back("mig:" + m.profile, m.count);
  return out;
}

Json VmRequest::to_json() const {
  Json j{{"vcpus", vcpus},
         {"memory_mb", memory_mb},
         {"cpu_policy", cpu_policy_name(cpu_policy)},
         {"numa_policy", numa_policy_name(numa_policy)},
         {"hugepages", hugepage_name(hugepage_kb)},
         {"requirements", requirements},
         {"rank", rank},
         {"policy", policy_name(policy)},
         {"priority", priority},
         {"clusters", clusters}};
  if (gpus.count > 0) {
    Json g{{"count", gpus.count}, {"topology", enum_name(kTopologies, gpus.topology)}};
    if (gpus.vendor >= 0) {
      g["vendor_device"] = gpus.vendor_device();
    } else if (!gpus.model.empty()) {
      g["model"] = gpus.model;
    }
    j["gpus"] = g;
  }
  Json m = Json::array();
  for (const auto& x : mig) m.push_back({{"profile", x.profile}, {"count", x.count}});
  j["mig"] = m;
  Json v = Json::array();
  for (const auto& x : vfs) {
    Json one{{"fabric", x.fabric}, {"count", x.count}, {"near_gpus", x.near_gpus}};
    if (!x.pf.empty()) one["pf"] = x.pf;
    if (x.nic >= 0) one["nic"] = x.nic;
    v.push_back(std::move(one));
  }
  j["vfs"] = v;
  if (!vm_group.empty()) {
    j["vm_group"] = vm_group;
    j["host_affinity"] = host_affinity_name(host_affinity);
    j["same_cluster"] = same_cluster;
  }
  return j;
}

Result<VmRequest> VmRequest::from_json(const Json& json, std::string_view field_prefix) {
  std::string p(field_prefix);
  FAB_ASSIGN_OR_RETURN(auto r, JsonObjectReader::wrap(json, p));
  VmRequest q;
  FAB_ASSIGN_OR_RETURN(auto vcpus, r.optional_int("vcpus"));
  FAB_ASSIGN_OR_RETURN(auto memory, r.optional_int("memory_mb"));
  FAB_ASSIGN_OR_RETURN(
      q.cpu_policy, read_enum(r, "cpu_policy", kCpuPolicies, CpuPolicy::kShared, p + "cpu_policy"));
  FAB_ASSIGN_OR_RETURN(q.numa_policy, read_enum(r, "numa_policy", kNumaPolicies,
                                                NumaPolicy::kPreferred, p + "numa_policy"));
  FAB_ASSIGN_OR_RETURN(q.hugepage_kb, read_hugepages(r, p + "hugepages"));
  FAB_ASSIGN_OR_RETURN(auto gpus, r.optional_object("gpus"));
  FAB_ASSIGN_OR_RETURN(auto mig, r.optional_array("mig"));
  FAB_ASSIGN_OR_RETURN(auto vfs, r.optional_array("vfs"));
  FAB_ASSIGN_OR_RETURN(auto requirements, r.optional_string("requirements"));
  FAB_ASSIGN_OR_RETURN(auto rank, r.optional_string("rank"));
  FAB_ASSIGN_OR_RETURN(q.policy, read_enum(r, "policy", kPolicies, Policy::kPacking, p + "policy"));
  FAB_ASSIGN_OR_RETURN(auto priority, r.optional_int("priority"));
  FAB_ASSIGN_OR_RETURN(auto group, r.optional_string("vm_group"));
  FAB_ASSIGN_OR_RETURN(q.host_affinity, read_enum(r, "host_affinity", kAffinities,
                                                  HostAffinity::kNone, p + "host_affinity"));
  FAB_ASSIGN_OR_RETURN(auto same_cluster, r.optional_bool("same_cluster"));
  FAB_ASSIGN_OR_RETURN(auto clusters, r.optional_array("clusters"));
  FAB_TRY(r.finish());
  if (vcpus && (*vcpus < 1 || *vcpus > kMaxVcpus)) {
    return fail(bad(p + "vcpus", "must be between 1 and " + std::to_string(kMaxVcpus)));
  }
  q.vcpus = static_cast<int>(vcpus.value_or(1));
  q.memory_mb = memory.value_or(1024);
  if (gpus && !gpus->is_null()) {
    FAB_ASSIGN_OR_RETURN(q.gpus, read_gpus(*gpus, p + "gpus"));
  }
  if (mig) {
    FAB_ASSIGN_OR_RETURN(q.mig, read_mig(*mig, p + "mig"));
  }
  if (vfs) {
    FAB_ASSIGN_OR_RETURN(q.vfs, read_vfs(*vfs, p + "vfs"));
  }
  if (clusters) {
    FAB_ASSIGN_OR_RETURN(q.clusters, read_ids(*clusters, p + "clusters"));
  }
  q.requirements = requirements.value_or("");
  q.rank = rank.value_or("");
  if (priority && (*priority < -1000 || *priority > 1000)) {
    return fail(bad(p + "priority", "must be between -1000 and 1000"));
  }
  q.priority = static_cast<int>(priority.value_or(0));
  q.vm_group = group.value_or("");
  q.same_cluster = same_cluster.value_or(false);
  auto valid = q.validate();
  if (!valid) {
    const Error& e = valid.error();
    return fail(Error(e.code(), e.message(), p + e.field()));
  }
  return q;
}

std::vector<int> Allocation::pinned_cpus() const {
  std::vector<int> out;
  for (const auto& n : numa) out.insert(out.end(), n.cpus.begin(), n.cpus.end());
  return out;
}

Json Allocation::to_json() const {
  Json numa_json = Json::array();
  for (const auto& n : numa) {
    numa_json.push_back({{"node", n.node},
                         {"cpus", n.cpus},
                         {"memory_kb", n.memory_kb},
                         {"hugepages", n.hugepages}});
  }
  Json gpus_json = Json::array();
  for (const auto& g : gpus) {
    gpus_json.push_back({{"pci_address", g.pci_address},
                         {"uuid", g.uuid},
                         {"model", g.model},
                         {"numa_node", g.numa_node},
                         {"nvlink_domain", g.nvlink_domain}});
  }
  Json mig_json = Json::array();
  for (const auto& m : mig) {
    mig_json.push_back({{"uuid", m.uuid},
                        {"profile", m.profile},
                        {"gpu_pci_address", m.gpu_pci_address},
                        {"gpu_uuid", m.gpu_uuid}});
  }
  Json vfs_json = Json::array();
  for (const auto& v : vfs) {
    vfs_json.push_back({{"pci_address", v.pci_address},
                        {"pf_pci_address", v.pf_pci_address},
                        {"pf_name", v.pf_name},
                        {"fabric", v.fabric},
                        {"numa_node", v.numa_node},
                        {"nic", v.nic}});
  }
  return Json{{"host_id", host_id},
              {"host_name", host_name},
              {"cluster_id", cluster_id},
              {"inventory_version", inventory_version},
              {"cpu_policy", cpu_policy_name(cpu_policy)},
              {"shared_vcpus", shared_vcpus},
              {"pinned_cpus", pinned_cpus()},
              {"hugepages", hugepage_name(hugepage_kb)},
              {"numa", numa_json},
              {"gpus", gpus_json},
              {"mig", mig_json},
              {"vfs", vfs_json}};
}

Result<Allocation> Allocation::from_json(const Json& j) {
  Allocation a;
  try {
    a.host_id = j.at("host_id").get<int64_t>();
    a.host_name = j.at("host_name").get<std::string>();
    a.cluster_id = j.at("cluster_id").get<int64_t>();
    a.inventory_version = j.at("inventory_version").get<int64_t>();
    a.cpu_policy =
        enum_from(kCpuPolicies, j.at("cpu_policy").get<std::string>()).value_or(CpuPolicy::kShared);
    a.shared_vcpus = j.at("shared_vcpus").get<int>();
    std::string huge = j.at("hugepages").get<std::string>();
    a.hugepage_kb = huge == "1G" ? kHugepage1G : huge == "2M" ? kHugepage2M : 0;
    for (const Json& n : j.at("numa")) {
      a.numa.push_back(NumaAssignment{.node = n.at("node").get<int>(),
                                      .cpus = n.at("cpus").get<std::vector<int>>(),
                                      .memory_kb = n.at("memory_kb").get<int64_t>(),
                                      .hugepages = n.at("hugepages").get<int64_t>()});
    }
    for (const Json& g : j.at("gpus")) {
      a.gpus.push_back(GpuAssignment{g.at("pci_address").get<std::string>(),
                                     g.at("uuid").get<std::string>(),
                                     g.at("model").get<std::string>(), g.at("numa_node").get<int>(),
                                     g.at("nvlink_domain").get<std::string>()});
    }
    for (const Json& m : j.at("mig")) {
      a.mig.push_back(MigAssignment{
          m.at("uuid").get<std::string>(), m.at("profile").get<std::string>(),
          m.at("gpu_pci_address").get<std::string>(), m.at("gpu_uuid").get<std::string>()});
    }
    for (const Json& v : j.at("vfs")) {
      a.vfs.push_back(VfAssignment{
          v.at("pci_address").get<std::string>(), v.at("pf_pci_address").get<std::string>(),
          v.at("pf_name").get<std::string>(), v.at("fabric").get<std::string>(),
          v.at("numa_node").get<int>(), v.value("nic", -1)});
    }
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInternal, std::string("malformed allocation: ") + e.what());
  }
  return a;
}

}  // namespace fabrica::sched
