// The guest API's side of Compute (OneGate's role): each VM's own token, what its guest
// reports (ready, attributes, metrics), and an appliance VM's backend following both.
#include <boost/url/parse.hpp>
#include <charconv>

#include "compute/compute.h"
#include "compute/internal.h"
#include "crypto/crypto.h"

namespace fabrica::compute {

using namespace internal;

namespace {

constexpr std::string_view kTokenPrefix = "fgt_";
constexpr size_t kMaxAttributes = 64;
constexpr size_t kMaxAttribute = 4096;
constexpr size_t kMaxLogTail = 16384;

Error bad_token() { return Error(ErrorCode::kUnauthenticated, "guest token is not valid"); }

// The VM id in "fgt_<id>_<hex>"; nullopt when malformed.
std::optional<int64_t> token_vm(std::string_view token) {
  if (!token.starts_with(kTokenPrefix) || token.size() > 256) return std::nullopt;
  token.remove_prefix(kTokenPrefix.size());
  size_t cut = token.find('_');
  if (cut == std::string_view::npos || cut == 0 || cut + 1 == token.size()) return std::nullopt;
  int64_t id = 0;
  auto [end, ec] = std::from_chars(token.data(), token.data() + cut, id);
  if (ec != std::errc() || end != token.data() + cut || id < 0) return std::nullopt;
  return id;
}

bool attribute_name_ok(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (unsigned char c : name) {
    if (!std::isalnum(c) && c != '_' && c != '-' && c != '.') return false;
  }
  return true;
}

// An appliance's URL must be one of the VM's own addresses: a guest can never point the
// gateway (and its end users' requests) anywhere else.
Result<void> check_own_url(const Vm& vm, const std::string& url) {
  const std::string field = "attributes.url";
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed || parsed->scheme() != "http" || !parsed->has_port() || parsed->has_userinfo() ||
      parsed->has_query() || parsed->has_fragment() ||
      (!parsed->encoded_path().empty() && parsed->encoded_path() != "/")) {
    return fail(ErrorCode::kInvalidArgument, "must be http://<address of this VM>:<port>", field);
  }
  std::string host(parsed->encoded_host());
  for (const Json& nic : vm.nics) {
    if (nic.value("ip", "") == host) return {};
  }
  return fail(ErrorCode::kPermissionDenied,
              "must be on one of this VM's own addresses (its NICs' leases)", field);
}

}  // namespace

void Compute::set_guest_api(const crypto::Sealer& sealer, std::string url) {
  sealer_ = &sealer;
  guest_url_ = std::move(url);
}

void Compute::mint_guest_secrets(Vm& vm, const std::string& backend_key) {
  if (!sealer_) return;
  std::string token =
      std::string(kTokenPrefix) + std::to_string(vm.header.id) + "_" + crypto::random_hex(32);
  vm.guest_token_hash = crypto::sha256_hex(token);
  vm.sealed_guest_token = sealer_->seal(token);
  if (!backend_key.empty()) vm.sealed_backend_key = sealer_->seal(backend_key);
}

Json Compute::deploy_context(const Vm& vm) const {
  Json context = vm.guest.context;
  if (!sealer_) return context;
  // The guest API's own variables win over any of the same name the user set.
  if (!vm.sealed_guest_token.empty()) {
    if (auto token = sealer_->open(vm.sealed_guest_token)) {
      context["FABRICA_GUEST_TOKEN"] = *token;
      context["FABRICA_GUEST_URL"] = guest_url_;
      context["FABRICA_VM_ID"] = vm.header.id;
    }
  }
  if (!vm.sealed_backend_key.empty()) {
    if (auto key = sealer_->open(vm.sealed_backend_key)) context["FABRICA_BACKEND_KEY"] = *key;
  }
  return context;
}

bool Compute::serving(const Vm& vm) {
  return vm.app.is_object() && vm.state() == VmState::kActive &&
         vm.lcm == static_cast<int>(Lcm::kRunning) && vm.guest_report.value("ready", false) &&
         vm.guest_report.contains("attributes") &&
         vm.guest_report["attributes"].value("url", "") != "";
}

Result<void> Compute::sync_backend(store::Transaction& tx, Vm& vm, bool was_serving) {
  if (!backend_hook_ || !vm.app.is_object()) return {};
  if (serving(vm)) {
    return backend_hook_(
        tx, vm,
        std::pair{vm.guest_report["attributes"]["url"].get<std::string>(), vm.sealed_backend_key});
  }
  if (was_serving) return backend_hook_(tx, vm, std::nullopt);
  return {};
}

Result<Vm> Compute::load_guest(store::Transaction& tx, std::string_view token) {
  auto id = token_vm(token);
  if (!id) return fail(bad_token());
  auto record = tx.get(kVmType, *id);
  if (!record) {
    if (record.error().code() == ErrorCode::kNotFound) return fail(bad_token());
    return fail(record.error());
  }
  FAB_ASSIGN_OR_RETURN(Vm vm, vm_from_record(*record));
  if (vm.guest_token_hash.empty() || vm.guest_token_hash != crypto::sha256_hex(token) ||
      vm.state() == VmState::kDone) {
    return fail(bad_token());
  }
  return vm;
}

Result<Vm> Compute::guest_self(std::string_view token) {
  FAB_ASSIGN_OR_RETURN(
      Vm vm, store_.read_value<Vm>([&](store::Transaction& tx) { return load_guest(tx, token); }));
  add_monitoring(vm);
  return vm;
}

Result<Vm> Compute::guest_report(std::string_view token, const GuestReport& report) {
  if (report.attributes) {
    if (!report.attributes->is_object()) {
      return fail(ErrorCode::kInvalidArgument, "must be an object", "attributes");
    }
    if (report.attributes->size() > kMaxAttributes) {
      return fail(ErrorCode::kInvalidArgument, "at most 64 attributes", "attributes");
    }
    for (const auto& [name, value] : report.attributes->items()) {
      if (!attribute_name_ok(name)) {
        return fail(ErrorCode::kInvalidArgument, "names are 1 to 64 of A-Z a-z 0-9 _ - .",
                    "attributes." + name.substr(0, 64));
      }
      if (!value.is_string()) {
        return fail(ErrorCode::kInvalidArgument, "must be a string", "attributes." + name);
      }
      FAB_TRY(validate_text(value.get<std::string>(), kMaxAttribute, "attributes." + name, true));
    }
  }
  if (report.error) FAB_TRY(validate_text(*report.error, kMaxAttribute, "error", true));
  if (report.log_tail) FAB_TRY(validate_text(*report.log_tail, kMaxLogTail, "log_tail", true));
  int64_t now = unix_seconds(clock_.now());
  return store_.write_value<Vm>([&](store::Transaction& tx) -> Result<Vm> {
    FAB_ASSIGN_OR_RETURN(Vm vm, load_guest(tx, token));
    bool was_serving = serving(vm);
    Json& g = vm.guest_report;
    if (!g.is_object()) g = Json::object();
    if (report.attributes) g["attributes"] = *report.attributes;
    if (report.error) g["error"] = *report.error;
    if (report.log_tail) g["log_tail"] = *report.log_tail;
    if (report.ready) {
      bool running = vm.state() == VmState::kActive && vm.lcm == static_cast<int>(Lcm::kRunning);
      if (*report.ready && !running) {
        return fail(
            ErrorCode::kFailedPrecondition,
            vm_noun(vm.header.id) + " is " + vm_state_name(vm.state(), vm.lcm) + ", not RUNNING",
            "ready");
      }
      g["ready"] = *report.ready;
      if (*report.ready) g["error"] = "";
    }
    if (vm.app.is_object() && g.value("ready", false)) {
      if (!g.contains("attributes") || g["attributes"].value("url", "") == "") {
        return fail(ErrorCode::kInvalidArgument,
                    "an appliance reports the URL it serves when it is ready", "attributes.url");
      }
      FAB_TRY(check_own_url(vm, g["attributes"]["url"].get<std::string>()));
    }
    g["reported_at"] = format_time(now);
    FAB_TRY(sync_backend(tx, vm, was_serving));
    vm.header.updated_at = now;
    FAB_ASSIGN_OR_RETURN(vm.version, tx.update(vm_record(vm)));
    return vm;
  });
}

Result<Vm> Compute::guest_metrics(std::string_view token, const Json& values) {
  if (!values.is_object() || values.size() > kMaxAttributes) {
    return fail(ErrorCode::kInvalidArgument, "must be an object of at most 64 numbers", "metrics");
  }
  for (const auto& [name, value] : values.items()) {
    if (!attribute_name_ok(name)) {
      return fail(ErrorCode::kInvalidArgument, "names are 1 to 64 of A-Z a-z 0-9 _ - .",
                  "metrics." + name.substr(0, 64));
    }
    if (!value.is_number()) {
      return fail(ErrorCode::kInvalidArgument, "must be a number", "metrics." + name);
    }
  }
  FAB_ASSIGN_OR_RETURN(
      Vm vm, store_.read_value<Vm>([&](store::Transaction& tx) { return load_guest(tx, token); }));
  {
    std::lock_guard lock(metrics_mutex_);
    guest_metrics_[vm.header.id] =
        Json{{"values", values}, {"at", format_time(unix_seconds(clock_.now()))}};
  }
  add_monitoring(vm);
  return vm;
}

Result<size_t> Compute::reseal_in(store::Transaction& tx) {
  if (!sealer_) return size_t{0};
  std::vector<Vm> sealed;
  FAB_TRY(store::for_each(tx, kVmType, [&](const store::Record& r) -> Result<void> {
    FAB_ASSIGN_OR_RETURN(Vm vm, vm_from_record(r));
    if (!vm.sealed_guest_token.empty() || !vm.sealed_backend_key.empty()) {
      sealed.push_back(std::move(vm));
    }
    return {};
  }));
  for (Vm& vm : sealed) {
    for (std::string* secret : {&vm.sealed_guest_token, &vm.sealed_backend_key}) {
      if (secret->empty()) continue;
      auto plain = sealer_->open(*secret);
      if (!plain) return fail(plain.error().with_context(vm_noun(vm.header.id)));
      *secret = sealer_->seal(*plain);
    }
    FAB_TRY(tx.update(vm_record(vm)));
  }
  return sealed.size();
}

}  // namespace fabrica::compute
