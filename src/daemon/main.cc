// fabricad: the control plane. Builds the real backends, wires them, serves the API.
#include <fcntl.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <thread>

#include "api/api.h"
#include "api/http_server.h"
#include "auth/identity.h"
#include "auth/sessions.h"
#include "core/clock.h"
#include "core/files.h"
#include "core/version.h"
#include "crypto/crypto.h"
#include "crypto/tls.h"
#include "daemon/wiring.h"
#include "fleet/fleet.h"
#include "store/sqlite_store.h"

namespace fs = std::filesystem;
using namespace fabrica;

namespace {

// Requests that run Argon2id (a login with a password, a new password): they go to the
// server's offload pool so a flood of them never holds the threads that serve the API.
bool hashes_password(const api::HttpRequest& r) {
  std::string_view auth = r.authorization;
  if (auth.size() > 6 && strncasecmp(auth.data(), "Basic ", 6) == 0) return true;
  return r.method == "POST" &&
         (r.path == "/api/v1/users" ||
          (r.path.starts_with("/api/v1/users/") && r.path.ends_with("/password")));
}

struct Options {
  std::string data_dir = "/var/lib/fabrica";
  std::string listen = "127.0.0.1:8470";
  std::string sync = "full";
  std::string access_log = "-";
  std::string log_level = "info";
  size_t threads = 0;
  size_t body_limit = 1024 * 1024;
  int64_t host_offline_after = 30;
  int64_t heartbeat_interval = 10;
  int64_t login_failures_per_address = 30;  // In 5 minutes; a NAT in front may need more.
  std::string tls_cert;                     // PEM chain (server certificate first, then its CA)
  std::string tls_key;
  std::string tls_ca;  // The CA certificate whose pin join tokens carry.
  bool insecure_http = false;
  // The Hugging Face marketplace made at first start (HF_ENDPOINT's meaning: a mirror works).
  std::string hub_url =
      std::getenv("HF_ENDPOINT") ? std::getenv("HF_ENDPOINT") : "https://huggingface.co";
  // FABRICA_GUEST_URL in every VM's context: the agents' link-local relay by default.
  std::string guest_api_url = Wiring::kDefaultGuestApiUrl;
  int64_t import_parallel_files = 4;
};

// Reads a JSON config file whose keys mirror the flags (data_dir, listen, sync, ...).
Result<void> apply_config_file(const std::string& path, Options& o) {
  std::ifstream in(path);
  if (!in) return fail(ErrorCode::kInvalidArgument, "cannot read config file " + path, "config");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  FAB_ASSIGN_OR_RETURN(auto reader, JsonObjectReader::parse(text));
  FAB_ASSIGN_OR_RETURN(auto data_dir, reader.optional_string("data_dir"));
  FAB_ASSIGN_OR_RETURN(auto listen, reader.optional_string("listen"));
  FAB_ASSIGN_OR_RETURN(auto sync, reader.optional_string("sync"));
  FAB_ASSIGN_OR_RETURN(auto access_log, reader.optional_string("access_log"));
  FAB_ASSIGN_OR_RETURN(auto log_level, reader.optional_string("log_level"));
  FAB_ASSIGN_OR_RETURN(auto threads, reader.optional_int("threads"));
  FAB_ASSIGN_OR_RETURN(auto body_limit, reader.optional_int("body_limit"));
  FAB_ASSIGN_OR_RETURN(auto offline_after, reader.optional_int("host_offline_after"));
  FAB_ASSIGN_OR_RETURN(auto heartbeat, reader.optional_int("heartbeat_interval"));
  FAB_ASSIGN_OR_RETURN(auto login_failures, reader.optional_int("login_failures_per_address"));
  FAB_ASSIGN_OR_RETURN(auto tls_cert, reader.optional_string("tls_cert"));
  FAB_ASSIGN_OR_RETURN(auto tls_key, reader.optional_string("tls_key"));
  FAB_ASSIGN_OR_RETURN(auto tls_ca, reader.optional_string("tls_ca"));
  FAB_ASSIGN_OR_RETURN(auto insecure_http, reader.optional_bool("insecure_http"));
  FAB_ASSIGN_OR_RETURN(auto hub_url, reader.optional_string("hub_url"));
  FAB_ASSIGN_OR_RETURN(auto guest_api_url, reader.optional_string("guest_api_url"));
  FAB_ASSIGN_OR_RETURN(auto parallel_files, reader.optional_int("import_parallel_files"));
  FAB_TRY(reader.finish().map_error([&](Error e) { return e.with_context(path); }));
  if (data_dir) o.data_dir = *data_dir;
  if (listen) o.listen = *listen;
  if (sync) o.sync = *sync;
  if (access_log) o.access_log = *access_log;
  if (log_level) o.log_level = *log_level;
  if (threads) o.threads = static_cast<size_t>(*threads);
  if (body_limit) o.body_limit = static_cast<size_t>(*body_limit);
  if (offline_after) o.host_offline_after = *offline_after;
  if (heartbeat) o.heartbeat_interval = *heartbeat;
  if (hub_url) o.hub_url = *hub_url;
  if (guest_api_url) o.guest_api_url = *guest_api_url;
  if (parallel_files) {
    if (*parallel_files < 1 || *parallel_files > 64) {
      return fail(ErrorCode::kInvalidArgument, "must be 1-64", "import_parallel_files");
    }
    o.import_parallel_files = *parallel_files;
  }
  if (login_failures) {
    if (*login_failures < 1 || *login_failures > 1000000) {
      return fail(ErrorCode::kInvalidArgument, "must be 1-1000000", "login_failures_per_address");
    }
    o.login_failures_per_address = *login_failures;
  }
  if (tls_cert) o.tls_cert = *tls_cert;
  if (tls_key) o.tls_key = *tls_key;
  if (tls_ca) o.tls_ca = *tls_ca;
  if (insecure_http) o.insecure_http = *insecure_http;
  return {};
}

struct TlsSetup {
  std::shared_ptr<crypto::TlsServerContext> context;  // Null: plain HTTP.
  std::string ca_pin;
};

bool loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

// HTTPS with the given certificate, or plain HTTP only when asked for and only on loopback.
Result<TlsSetup> tls_setup(const Options& o, const std::string& host) {
  TlsSetup out;
  if (o.tls_cert.empty() != o.tls_key.empty()) {
    return fail(ErrorCode::kInvalidArgument, "--tls-cert and --tls-key go together",
                o.tls_cert.empty() ? "tls_cert" : "tls_key");
  }
  if (o.tls_cert.empty()) {
    if (!o.insecure_http) {
      return fail(ErrorCode::kInvalidArgument,
                  "fabricad serves HTTPS: give --tls-cert and --tls-key (scripts/quickstart makes "
                  "a CA and a certificate), or --insecure-http for development on loopback",
                  "tls_cert");
    }
    if (!loopback(host)) {
      return fail(ErrorCode::kInvalidArgument,
                  "--insecure-http serves on loopback only (127.0.0.1 or ::1), not " + host +
                      "; give --tls-cert and --tls-key",
                  "listen");
    }
    if (!o.tls_ca.empty()) {
      return fail(ErrorCode::kInvalidArgument, "--tls-ca goes with --tls-cert", "tls_ca");
    }
    return out;
  }
  FAB_ASSIGN_OR_RETURN(out.context, crypto::TlsServerContext::load(o.tls_cert, o.tls_key));
  if (!o.tls_ca.empty()) {
    FAB_ASSIGN_OR_RETURN(out.ca_pin, crypto::spki_sha256_of_file(o.tls_ca));
  }
  return out;
}

Result<std::pair<std::string, uint16_t>> parse_listen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return fail(ErrorCode::kInvalidArgument, "must be HOST:PORT", "listen");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  try {
    int port = std::stoi(listen.substr(colon + 1));
    if (port < 0 || port > 65535) throw std::out_of_range("port");
    return std::pair{host, static_cast<uint16_t>(port)};
  } catch (const std::exception&) {
    return fail(ErrorCode::kInvalidArgument, "port must be 0-65535", "listen");
  }
}

// The superuser's first password: FABRICA_ADMIN_PASSWORD, else the one written earlier by an
// interrupted bootstrap, else a new random one written once to DATA/admin-password (0600).
Result<std::string> admin_password(const fs::path& data_dir, bool& generated) {
  fs::path file = data_dir / "admin-password";
  if (const char* env = std::getenv("FABRICA_ADMIN_PASSWORD"); env && *env) return std::string(env);
  std::ifstream in(file);
  std::string existing;
  if (in && std::getline(in, existing) && !existing.empty()) return existing;
  std::string password = crypto::random_hex(12);
  FAB_TRY(write_file_atomically(file.string(), password + "\n"));
  generated = true;
  return password;
}

std::shared_ptr<spdlog::logger> make_access_log(const Options& o) {
  if (o.access_log == "off") return nullptr;
  std::shared_ptr<spdlog::logger> logger;
  if (o.access_log == "-") {
    logger = spdlog::stderr_logger_mt("access");
  } else {
    logger = spdlog::basic_logger_mt("access", o.access_log);
  }
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ access %v", spdlog::pattern_time_type::utc);
  logger->flush_on(spdlog::level::info);
  return logger;
}

int fatal(const Error& e) {
  spdlog::critical("{}", e.message());
  return 1;
}

int serve(const Options& o) {
  fs::path data_dir = o.data_dir;
  std::error_code ec;
  fs::create_directories(data_dir, ec);
  ::chmod(data_dir.c_str(), 0700);
  int lock = ::open((data_dir / "fabricad.lock").c_str(), O_RDWR | O_CREAT, 0600);
  if (lock < 0 || ::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    return fatal(Error(ErrorCode::kUnavailable,
                       "data directory " + o.data_dir + " is in use by another fabricad"));
  }
  auto listen = parse_listen(o.listen);
  if (!listen) return fatal(listen.error());
  auto tls = tls_setup(o, listen->first);
  if (!tls) return fatal(tls.error());
  if (o.sync != "full" && o.sync != "normal") {
    return fatal(Error(ErrorCode::kInvalidArgument, "--sync must be full or normal"));
  }
  auto store = store::SqliteStore::open(
      (data_dir / "fabrica.db").string(),
      {.sync = o.sync == "full" ? store::Sync::kFull : store::Sync::kNormal});
  if (!store) return fatal(store.error());

  // Backend credentials of AI endpoints are sealed under a key kept beside the database.
  auto sealer = crypto::Sealer::from_file((data_dir / "sealing.key").string());
  if (!sealer) return fatal(sealer.error());
  SystemClock clock;
  Wiring wiring(**store, clock, kVersion,
                {.offline_after = std::chrono::seconds(o.host_offline_after),
                 .heartbeat_interval = std::chrono::seconds(o.heartbeat_interval)},
                {.datastores_root = (data_dir / "datastores").string()}, std::move(*sealer),
                {.per_address = static_cast<size_t>(o.login_failures_per_address)},
                {.parallel_files = static_cast<int>(o.import_parallel_files)});
  auth::Identity& identity = wiring.identity;
  api::Api& api = wiring.api;
  api.services().ca_pin = tls->ca_pin;
  // A sealing-key rotation cut short (a crash between its steps) ends now: every secret opens
  // under one of the ring's keys, so nothing was lost; this re-seals and drops the old keys.
  if (wiring.sealer.keys() > 1) {
    auto finished = wiring.sealer.finish([&] { return wiring.reseal_secrets(); });
    if (!finished) return fatal(finished.error().with_context("finishing a sealing-key rotation"));
    spdlog::info("finished an interrupted sealing-key rotation: {} secrets re-sealed under key {}",
                 *finished, wiring.sealer.key_id());
  }

  auto bootstrapped = identity.bootstrapped();
  if (!bootstrapped) return fatal(bootstrapped.error());
  if (!*bootstrapped) {
    bool generated = false;
    auto password = admin_password(data_dir, generated);
    if (!password) return fatal(password.error());
    auto done = identity.bootstrap(*password);
    if (!done) return fatal(done.error().with_context("bootstrap"));
    spdlog::info("bootstrapped superuser \"admin\" (uid 0) in group \"admins\" (gid 0)");
    if (generated) {
      std::cout << "admin password: " << *password << " (also in "
                << (data_dir / "admin-password").string() << ", mode 0600)" << std::endl;
    }
  }

  if (auto r = wiring.fleet.bootstrap(); !r) return fatal(r.error().with_context("bootstrap"));
  if (auto r = wiring.storage.bootstrap(); !r) {
    return fatal(r.error().with_context("datastores"));
  }
  if (auto r = endpoints::validate_backend_url(o.guest_api_url, "guest_api_url"); !r) {
    return fatal(r.error().with_context("--guest-api-url"));
  }
  wiring.compute.set_guest_api(wiring.sealer, o.guest_api_url);
  if (auto r = wiring.marketplaces.bootstrap(o.hub_url); !r) {
    return fatal(r.error().with_context("marketplaces (--hub-url)"));
  }
  // Model imports a stop or crash interrupted resume from their partial files.
  if (auto r = wiring.models.bootstrap(); !r) return fatal(r.error().with_context("models"));

  // Marks silent hosts OFFLINE, once a second, and their running VMs UNKNOWN; releases
  // expired quota holds every ten seconds, until shutdown.
  std::mutex sweep_mutex;
  std::condition_variable sweep_wake;
  bool stopping = false;
  auto lose_hosts = [&](const std::vector<int64_t>& hosts) {
    for (int64_t host : hosts) {
      auto lost = wiring.compute.host_lost(host);
      if (!lost) spdlog::warn("host {} went OFFLINE: {}", host, lost.error().message());
      if (lost && *lost > 0) spdlog::info("host {} went OFFLINE: {} VMs UNKNOWN", host, *lost);
    }
  };
  // Hosts that went OFFLINE before a crash still owe their VMs the move.
  if (auto hosts = wiring.fleet.host_changes(0); hosts) {
    std::vector<int64_t> offline;
    for (const auto& h : hosts->changed) {
      if (h.state == fleet::HostState::kOffline) offline.push_back(h.id);
    }
    lose_hosts(offline);
  }
  std::thread sweeper([&] {
    std::unique_lock lock(sweep_mutex);
    uint64_t ticks = 0;
    while (!sweep_wake.wait_for(lock, std::chrono::seconds(1), [&] { return stopping; })) {
      lock.unlock();
      auto marked = wiring.fleet.sweep_offline();
      if (!marked) spdlog::warn("offline sweep failed: {}", marked.error().message());
      if (marked && !marked->empty()) {
        spdlog::info("{} hosts went OFFLINE", marked->size());
        lose_hosts(*marked);
      }
      if (++ticks % 10 == 0) {
        auto expired = wiring.quotas.expire();
        if (!expired) spdlog::warn("quota hold expiry failed: {}", expired.error().message());
        if (expired && *expired > 0) spdlog::info("released {} expired quota holds", *expired);
      }
      if (ticks % 3600 == 0) {
        auto tokens = wiring.sessions.prune(std::chrono::hours(24 * 7));
        if (!tokens) spdlog::warn("token pruning failed: {}", tokens.error().message());
        auto joins = wiring.fleet.prune_join_tokens();
        if (!joins) spdlog::warn("join token pruning failed: {}", joins.error().message());
      }
      if (ticks % 60 == 0) {
        auto uploads = wiring.storage.expire_uploads();
        if (!uploads) spdlog::warn("upload expiry failed: {}", uploads.error().message());
        if (uploads && *uploads > 0) spdlog::info("gave up {} abandoned uploads", *uploads);
      }
      lock.lock();
    }
  });
  // The scheduler: a pass whenever a VM is created or deleted (Compute::notify), and at least
  // every two seconds for host changes.
  std::atomic<bool> scheduler_stopping{false};
  std::thread scheduler([&] {
    while (!scheduler_stopping) {
      // A create wakes the scheduler at once; the next few milliseconds of creates join the
      // same pass, which commits them all in one transaction.
      if (wiring.compute.wait(std::chrono::seconds(2))) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      if (scheduler_stopping) break;
      auto pass = wiring.compute.schedule_pass();
      if (!pass) {
        spdlog::warn("scheduler pass failed: {}", pass.error().message());
      } else if (pass->conflicts > 0) {
        spdlog::info("scheduler placed {} of {} pending VMs ({} conflicts)", pass->placed,
                     pass->pending, pass->conflicts);
      } else if (pass->placed > 0) {
        spdlog::debug("scheduler placed {} of {} pending VMs", pass->placed, pass->pending);
      }
    }
  });
  auto stop_sweeper = [&] {
    {
      std::lock_guard lock(sweep_mutex);
      stopping = true;
    }
    sweep_wake.notify_all();
    if (sweeper.joinable()) sweeper.join();
    scheduler_stopping = true;
    wiring.compute.notify();
    if (scheduler.joinable()) scheduler.join();
    wiring.models.stop();
    wiring.storage.stop();
  };

  size_t threads = o.threads ? o.threads : std::max(2u, std::thread::hardware_concurrency());
  api::HttpServer server(
      {.host = listen->first,
       .port = listen->second,
       .threads = threads,
       .body_limit = o.body_limit,
       .access_log = make_access_log(o),
       .stream_opener = [&api](const api::HttpRequest& head) { return api.open_stream(head); },
       .offload = hashes_password,
       .offload_threads = std::max<size_t>(1, threads / 2),
       .tls = tls->context},
      [&api](const api::HttpRequest& r) { return api.handle(r); });
  auto port = server.listen();
  if (!port) {
    stop_sweeper();
    return fatal(port.error());
  }
  std::string address = listen->first + ":" + std::to_string(*port);
  if (auto w = write_file_atomically((data_dir / "fabricad.addr").string(), address + "\n"); !w) {
    return fatal(w.error());
  }
  spdlog::info("fabricad {} listening on {}://{} (data {}, {} threads)", kVersion,
               tls->context ? "https" : "http", address, o.data_dir, threads);
  server.run([&api] {
    spdlog::info("shutting down: finishing in-flight requests");
    api.set_draining();
  });
  stop_sweeper();
  if (auto flushed = wiring.fleet.flush(); !flushed) {
    spdlog::warn("final heartbeat flush failed: {}", flushed.error().message());
  }
  spdlog::info("fabricad stopped");
  return 0;
}

// The served routes, for the test that checks docs/api/openapi.yaml covers each of them.
int print_route_table() {
  auto store = store::SqliteStore::open(":memory:");
  if (!store) return fatal(store.error());
  SystemClock clock;
  Wiring wiring(**store, clock, kVersion);
  Json routes = Json::array();
  for (const auto& r : wiring.api.routes()) {
    routes.push_back(Json{{"method", r.method},
                          {"path", r.pattern},
                          {"auth", api::auth_mode_name(r.auth)},
                          {"audited", r.audited}});
  }
  std::cout << routes.dump(1) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fabricad: the Fabrica AI Factory control plane"};
  Options o;
  std::string config;
  app.add_option("--config", config, "JSON config file (keys as the flags, with _)");
  app.add_option("--data-dir", o.data_dir, "State directory (SQLite file, admin password)");
  app.add_option("--listen", o.listen, "HOST:PORT to serve on (port 0 picks one)");
  app.add_option("--sync", o.sync, "SQLite durability: full (fsync each commit) or normal");
  app.add_option("--threads", o.threads, "Server threads (default: cores, at least 2)");
  app.add_option("--body-limit", o.body_limit, "Largest request body in bytes");
  app.add_option("--access-log", o.access_log, "Access log file, - for stderr, off");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error");
  app.add_option("--host-offline-after", o.host_offline_after,
                 "Seconds without a heartbeat before a host is OFFLINE")
      ->check(CLI::Range(1, 86400));
  app.add_option("--heartbeat-interval", o.heartbeat_interval,
                 "Seconds between agent heartbeats (told to agents)")
      ->check(CLI::Range(1, 3600));
  app.add_option("--tls-cert", o.tls_cert,
                 "PEM certificate chain to serve HTTPS with (reloaded when the file changes)");
  app.add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-ca", o.tls_ca,
                 "PEM certificate of the CA that signed --tls-cert; join tokens carry its pin");
  app.add_flag("--insecure-http", o.insecure_http,
               "Serve plain HTTP (development only; refused unless --listen is loopback)");
  app.add_option("--hub-url", o.hub_url,
                 "Hugging Face Hub (or mirror) URL of the marketplace made at first start "
                 "(default: $HF_ENDPOINT, else https://huggingface.co)");
  app.add_option("--guest-api-url", o.guest_api_url,
                 "Where guests reach the guest API (FABRICA_GUEST_URL on their context CD-ROM; "
                 "default: the link-local relay of their host's agent, http://169.254.169.254)");
  app.add_option("--import-parallel-files", o.import_parallel_files,
                 "Files of one model import fetched at once (1-64)")
      ->check(CLI::Range(1, 64));
  app.add_option("--login-failures-per-address", o.login_failures_per_address,
                 "Failed logins one address may make in 5 minutes before 429")
      ->check(CLI::Range(1, 1000000));
  bool print_routes = false;
  app.add_flag("--print-routes", print_routes, "Print the API's route table as JSON and exit");
  app.set_version_flag("--version", kVersion);
  // The config file is read first; flags given on the command line override it.
  app.parse_complete_callback([&] {
    if (config.empty()) return;
    Options from_file;
    if (auto r = apply_config_file(config, from_file); !r) {
      const Error& e = r.error();
      throw CLI::ValidationError(
          "--config", e.message() + (e.field().empty() ? "" : ": \"" + e.field() + "\""));
    }
    for (auto* opt : app.get_options()) {
      if (opt->count() > 0) continue;
      std::string name = opt->get_name();
      if (name == "--data-dir") o.data_dir = from_file.data_dir;
      if (name == "--listen") o.listen = from_file.listen;
      if (name == "--sync") o.sync = from_file.sync;
      if (name == "--threads") o.threads = from_file.threads;
      if (name == "--body-limit") o.body_limit = from_file.body_limit;
      if (name == "--access-log") o.access_log = from_file.access_log;
      if (name == "--log-level") o.log_level = from_file.log_level;
      if (name == "--host-offline-after") o.host_offline_after = from_file.host_offline_after;
      if (name == "--heartbeat-interval") o.heartbeat_interval = from_file.heartbeat_interval;
      if (name == "--tls-cert") o.tls_cert = from_file.tls_cert;
      if (name == "--tls-key") o.tls_key = from_file.tls_key;
      if (name == "--tls-ca") o.tls_ca = from_file.tls_ca;
      if (name == "--insecure-http") o.insecure_http = from_file.insecure_http;
      if (name == "--hub-url") o.hub_url = from_file.hub_url;
      if (name == "--guest-api-url") o.guest_api_url = from_file.guest_api_url;
      if (name == "--import-parallel-files") {
        o.import_parallel_files = from_file.import_parallel_files;
      }
      if (name == "--login-failures-per-address") {
        o.login_failures_per_address = from_file.login_failures_per_address;
      }
    }
  });
  CLI11_PARSE(app, argc, argv);
  if (print_routes) return print_route_table();
  spdlog::set_default_logger(spdlog::stderr_logger_mt("fabricad"));
  spdlog::set_level(spdlog::level::from_str(o.log_level));
  return serve(o);
}
