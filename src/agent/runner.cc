#include "agent/runner.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "agent/nvidia_smi.h"
#include "client/http_client.h"
#include "core/files.h"
#include "crypto/crypto.h"

namespace fabrica::agent {
namespace {

namespace fs = std::filesystem;

// Sleeps up to `d`, waking early when `stop` turns true.
void nap(std::chrono::milliseconds d, const std::atomic<bool>& stop) {
  auto until = std::chrono::steady_clock::now() + d;
  while (!stop && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

Result<void> write_private(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  return write_file_atomically(path.string(), text);
}

// CPU use in permille since the previous call, from /proc/stat's first line.
class CpuMeter {
 public:
  int64_t sample(const HardwareSource& src) {
    std::istringstream in(src.read_file("/proc/stat").value_or(""));
    std::string cpu;
    int64_t v, total = 0, idle = 0;
    in >> cpu;
    for (int i = 0; in >> v && i < 10; ++i) {
      total += v;
      if (i == 3 || i == 4) idle += v;  // idle + iowait
    }
    int64_t dt = total - last_total_, di = idle - last_idle_;
    last_total_ = total;
    last_idle_ = idle;
    if (dt <= 0) return 0;
    return std::clamp<int64_t>(1000 * (dt - di) / dt, 0, 1000);
  }

 private:
  int64_t last_total_ = 0, last_idle_ = 0;
};

int64_t memory_used_kb(const HardwareSource& src) {
  std::istringstream in(src.read_file("/proc/meminfo").value_or(""));
  std::string key, unit;
  int64_t value = 0, total = 0, available = 0;
  while (in >> key >> value) {
    std::getline(in, unit);
    if (key == "MemTotal:") total = value;
    if (key == "MemAvailable:") available = value;
  }
  return std::max<int64_t>(0, total - available);
}

}  // namespace

JoinToken parse_join_token(const std::string& text) {
  constexpr std::string_view kPin = "@sha256:";
  size_t at = text.find(kPin);
  if (at == std::string::npos) return {.secret = text};
  return {.secret = text.substr(0, at), .pin = text.substr(at + kPin.size())};
}

crypto::TlsClientOptions AgentRunner::client_tls() const {
  if (!options_.ca_file.empty()) return {.ca_file = options_.ca_file};
  fs::path saved = fs::path(options_.state_dir) / "ca.pem";
  std::error_code ec;
  if (fs::exists(saved, ec)) return {.ca_file = saved.string()};
  return {};
}

Result<std::string> AgentRunner::credential() {
  fs::path path = fs::path(options_.state_dir) / "credential";
  std::ifstream in(path);
  std::string existing;
  if (in && std::getline(in, existing) && !existing.empty()) {
    if (options_.join_token.empty()) return existing;
    // STATE_DIR/host: the host's name, then the SHA-256 of the token it joined with. The same
    // command started again (a service unit holding the token) goes on with the credential;
    // another token beside this credential would join the wrong host or none: refused.
    std::ifstream named(fs::path(options_.state_dir) / "host");
    std::string host, joined_with;
    if (!named || !std::getline(named, host) || host.empty()) host = "of an earlier join";
    if (named) std::getline(named, joined_with);
    if (joined_with == crypto::sha256_hex(parse_join_token(options_.join_token).secret)) {
      return existing;
    }
    return fail(ErrorCode::kFailedPrecondition,
                "this --join-token is not the one " + options_.state_dir +
                    " joined with: it already holds the credential of host " + host +
                    "; give this agent its own --state-dir, or remove " + path.string() +
                    " to join this machine again");
  }
  if (options_.join_token.empty()) {
    return fail(ErrorCode::kFailedPrecondition,
                "no host credential in " + options_.state_dir + " and no --join-token given");
  }
  FAB_ASSIGN_OR_RETURN(auto inv, inventory());
  JoinToken token = parse_join_token(options_.join_token);
  // A pinned token: the first connection trusts the CA the token names, and nothing else;
  // the join (the token) is sent only after the server's chain verified under it.
  crypto::TlsClientOptions tls = client_tls();
  bool pinned = !token.pin.empty() && options_.server.starts_with("https://");
  if (pinned) tls = {.pin_sha256 = token.pin};
  FAB_ASSIGN_OR_RETURN(auto http, client::HttpClient::create(options_.server, tls));
  client::HttpClient* raw = http.get();
  client::ApiClient api(std::move(http), "");
  std::string hostname = options_.hostname.empty() ? inv.hostname : options_.hostname;
  if (inv.hostname.empty()) inv.hostname = hostname;
  FAB_ASSIGN_OR_RETURN(Json joined,
                       api.post("/api/v1/agent/join", Json{{"token", token.secret},
                                                           {"hostname", hostname},
                                                           {"inventory", inv.to_json()}}));
  std::string secret = joined["credential"].get<std::string>();
  if (pinned && !raw->pinned_ca().empty() && options_.ca_file.empty()) {
    FAB_TRY(write_private(fs::path(options_.state_dir) / "ca.pem", raw->pinned_ca()));
  }
  FAB_TRY(write_private(path, secret + "\n"));
  FAB_TRY(write_private(fs::path(options_.state_dir) / "host",
                        joined["name"].get<std::string>() + " (id " +
                            std::to_string(joined["host_id"].get<int64_t>()) + ")\n" +
                            crypto::sha256_hex(token.secret) + "\n"));
  std::fprintf(stderr, "joined as host %lld (%s)\n",
               static_cast<long long>(joined["host_id"].get<int64_t>()),
               joined["name"].get<std::string>().c_str());
  return secret;
}

Result<inventory::HostInventory> AgentRunner::inventory() {
  FAB_ASSIGN_OR_RETURN(auto inv, discover(source_));
  if (executor_) {
    inv.hypervisor = "libvirt";
    inv.domain_type = executor_->domain_type();
  }
  return inv;
}

CommandChannel::~CommandChannel() {
  executor_.stop();
  std::map<std::string, std::thread> running;
  {
    std::lock_guard lock(mutex_);
    running.swap(running_);
  }
  for (auto& [id, t] : running) t.join();
}

size_t CommandChannel::in_progress() {
  std::lock_guard lock(mutex_);
  return running_.size();
}

void CommandChannel::wait(std::chrono::milliseconds d) {
  std::unique_lock lock(mutex_);
  finished_.wait_for(lock, d, [&] { return !answers_.empty(); });
}

Result<int> CommandChannel::poll(client::ApiClient& api) {
  std::vector<Json> answers;
  std::vector<std::thread> ended;
  {
    std::lock_guard lock(mutex_);
    answers.swap(answers_);
    for (const Json& a : answers) {
      auto t = running_.find(a["id"].get<std::string>());
      if (t == running_.end()) continue;
      ended.push_back(std::move(t->second));
      running_.erase(t);
    }
  }
  for (auto& t : ended) t.join();
  int done = 0;
  for (size_t i = 0; i < answers.size(); ++i) {
    auto posted = api.post("/api/v1/agent/operations", hypervisor::operation_report(answers[i]));
    if (!posted) {  // Keep the rest for the next round.
      std::lock_guard lock(mutex_);
      answers_.insert(answers_.begin(), answers.begin() + static_cast<long>(i), answers.end());
      return fail(posted.error());
    }
    std::lock_guard lock(mutex_);
    busy_.erase(answers[i]["id"].get<std::string>());
    ++done;
  }
  FAB_ASSIGN_OR_RETURN(Json got, api.get("/api/v1/agent/commands"));
  for (const auto& command : got["commands"]) {
    std::string id = command.value("id", "");
    std::lock_guard lock(mutex_);
    if (!busy_.insert(id).second) continue;  // In progress, or its answer is on its way.
    running_.emplace(id, std::thread([this, command, id] {
                       Json answer = executor_.run(command);
                       std::lock_guard lock(mutex_);
                       answers_.push_back(std::move(answer));
                       finished_.notify_all();
                     }));
    ++done;
  }
  FAB_TRY(report_states(api));
  return done;
}

Result<void> CommandChannel::report_states(client::ApiClient& api) {
  auto now = std::chrono::steady_clock::now();
  if (now < next_observe_) return {};
  next_observe_ = now + options_.observe_every;
  FAB_ASSIGN_OR_RETURN(Json vms, executor_.observe());
  std::string states;  // What counts as a change: a VM's domain state or last operation.
  for (const Json& vm : vms) {
    states += dump_json(Json::array({vm["vm_id"], vm["state"], vm["last_operation"]}));
  }
  if (states == reported_ && now < next_report_) return {};
  FAB_TRY(api.post("/api/v1/agent/vms", Json{{"vms", vms}}));
  reported_ = std::move(states);
  next_report_ = now + options_.report_every;
  return {};
}

// How often an idle agent asks for commands: a VM's deploy and start are two steps, so the
// control plane's share of a VM's start stays under half a second.
constexpr std::chrono::milliseconds kCommandPoll{200};

std::string AgentRunner::secret() const {
  std::lock_guard lock(secret_mutex_);
  return secret_;
}

void AgentRunner::set_secret(std::string secret) {
  std::lock_guard lock(secret_mutex_);
  secret_ = std::move(secret);
}

Result<void> AgentRunner::rotate_credential(client::ApiClient& api) {
  FAB_ASSIGN_OR_RETURN(Json got, api.post("/api/v1/agent/credential", Json::object()));
  std::string fresh = got["credential"].get<std::string>();
  // Saved before it is used: until its first use the server keeps the old one working, so a
  // crash here loses nothing (the next heartbeat asks again).
  FAB_TRY(write_private(fs::path(options_.state_dir) / "credential", fresh + "\n"));
  set_secret(fresh);
  api.set_token(fresh);
  std::fprintf(stderr, "host credential rotated\n");
  return {};
}

void AgentRunner::serve_commands(const std::atomic<bool>& stop) {
  std::optional<client::ApiClient> api;
  std::string used;
  CommandChannel channel(*executor_);
  while (!stop) {
    if (!api) {
      auto http = client::HttpClient::create(options_.server, client_tls());
      if (!http) return;
      used = secret();
      api.emplace(std::move(*http), used);
    }
    if (std::string now = secret(); now != used) {  // Rotated by the heartbeat loop.
      used = now;
      api->set_token(used);
    }
    auto served = channel.poll(*api);
    if (!served) {
      // Refused with a credential rotated away meanwhile: the next round uses the new one.
      if (served.error().code() == ErrorCode::kUnauthenticated && secret() == used) return;
      api.reset();
      nap(std::chrono::seconds(1), stop);
    } else if (*served == 0) {
      channel.wait(kCommandPoll);
    }
  }
}

Json AgentRunner::gpu_samples() const {
  auto csv = source_.nvidia_smi(NvidiaSmiQuery::kMonitor);
  return csv ? parse_gpu_monitoring(*csv) : Json::array();
}

Result<void> AgentRunner::run(const std::atomic<bool>& stop) {
  std::mt19937 rng(std::random_device{}());
  std::chrono::milliseconds backoff(1000);
  std::optional<std::string> secret;
  std::optional<client::ApiClient> api;
  CpuMeter cpu;
  Json last_inventory;
  int64_t interval_s = 10;
  std::thread commands;
  if (!options_.libvirt_uri.empty()) {
    FAB_ASSIGN_OR_RETURN(hypervisor_, hypervisor::open_libvirt(options_.libvirt_uri));
    hypervisor::ExecutorOptions eo{.vm_root = options_.state_dir + "/vms",
                                   .journal = options_.state_dir + "/operations.jsonl",
                                   .domain_type = options_.domain_type};
    if (options_.guest_relay) {
      relay_ = std::make_unique<GuestRelay>(options_.server, client_tls());
      GuestRelay* relay = relay_.get();
      eo.bridge_used = [relay](const std::string& bridge) { return relay->serve(bridge); };
      eo.bridge_unused = [relay](const std::string& bridge) { relay->drop(bridge); };
    }
    executor_ = std::make_unique<hypervisor::Executor>(*hypervisor_, std::move(eo));
    if (relay_) {
      // VMs that ran on through an agent restart: their guests keep the guest API.
      for (const std::string& bridge : executor_->bridges_in_use()) {
        if (auto r = relay_->serve(bridge); !r) {
          std::fprintf(stderr, "%s\n", r.error().message().c_str());
        }
      }
    }
  }
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } joiner{commands};
  for (int beat = 0; !stop; ++beat) {
    auto step = [&]() -> Result<void> {
      if (!secret) {
        FAB_ASSIGN_OR_RETURN(secret, credential());
        set_secret(*secret);
        FAB_ASSIGN_OR_RETURN(auto http, client::HttpClient::create(options_.server, client_tls()));
        api.emplace(std::move(http), *secret);
        beat = 0;
        if (executor_ && !commands.joinable()) {
          commands = std::thread([this, &stop] { serve_commands(stop); });
        }
      }
      if (beat % options_.rediscover_every == 0) {
        FAB_ASSIGN_OR_RETURN(auto inv, inventory());
        Json now = inv.to_json();
        if (now != last_inventory) {
          if (!options_.hostname.empty()) now["hostname"] = options_.hostname;
          FAB_TRY(api->call("PUT", "/api/v1/agent/inventory", Json{{"inventory", now}}));
          last_inventory = inv.to_json();
        }
      }
      FAB_ASSIGN_OR_RETURN(Json reply, api->post("/api/v1/agent/heartbeat",
                                                 Json{{"cpu_used_permille", cpu.sample(source_)},
                                                      {"memory_used_kb", memory_used_kb(source_)},
                                                      {"gpus", gpu_samples()}}));
      interval_s = reply.value("heartbeat_interval_seconds", interval_s);
      if (reply.value("rotate_credential", false)) {
        auto rotated = rotate_credential(*api);
        if (!rotated) {  // The old credential still works; the next heartbeat asks again.
          std::fprintf(stderr, "credential rotation failed (%s); keeping the current one\n",
                       rotated.error().message().c_str());
        } else {
          secret = this->secret();
        }
      }
      return {};
    };
    auto result = step();
    if (result) {
      backoff = std::chrono::milliseconds(1000);
      nap(std::chrono::seconds(interval_s), stop);
      continue;
    }
    const Error& e = result.error();
    if (e.code() == ErrorCode::kUnauthenticated || e.code() == ErrorCode::kFailedPrecondition) {
      return fail(e);
    }
    std::fprintf(stderr, "server unreachable (%s); retrying in %lld ms\n", e.message().c_str(),
                 static_cast<long long>(backoff.count()));
    std::uniform_int_distribution<int64_t> jitter(0, backoff.count() / 4);
    nap(backoff + std::chrono::milliseconds(jitter(rng)), stop);
    backoff = std::min<std::chrono::milliseconds>(backoff * 2, options_.max_backoff);
    last_inventory = Json();  // Re-send after an outage: the server may have been restored.
  }
  return {};
}

}  // namespace fabrica::agent
