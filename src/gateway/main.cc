// fabrica-gateway: the OpenAI-compatible endpoint for end users. Builds its parts, wires
// them, serves until SIGTERM.
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>

#include "gateway/balancer.h"
#include "gateway/directory.h"
#include "gateway/limits.h"
#include "gateway/metering.h"
#include "gateway/metrics.h"
#include "gateway/proxy.h"
#include "gateway/sync.h"

using namespace fabrica;
using namespace fabrica::gateway;

namespace {

Result<std::pair<std::string, uint16_t>> host_port(const std::string& text,
                                                   const std::string& field) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos)
    return fail(ErrorCode::kInvalidArgument, "must be HOST:PORT", field);
  std::string host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  try {
    int port = std::stoi(text.substr(colon + 1));
    if (port < 0 || port > 65535) throw std::out_of_range("port");
    return std::pair{host, static_cast<uint16_t>(port)};
  } catch (const std::exception&) {
    return fail(ErrorCode::kInvalidArgument, "port must be 0-65535", field);
  }
}

// The token: --token-file, else FABRICA_TOKEN.
// The token in --token-file, read again when the file changes (at most once a second), so an
// operator rotates it by writing the new one and then revoking the old: no restart, no gap.
class TokenFile {
 public:
  TokenFile(std::string path, std::string token)
      : path_(std::move(path)), token_(std::move(token)) {
    stamp_ = stamp();
  }
  std::string current() {
    std::lock_guard lock(mutex_);
    auto now = std::chrono::steady_clock::now();
    if (now - checked_ < std::chrono::seconds(1)) return token_;
    checked_ = now;
    std::string seen = stamp();
    if (seen.empty() || seen == stamp_) return token_;
    stamp_ = seen;
    std::ifstream in(path_);
    std::string token;
    if (in && std::getline(in, token)) {
      while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
      if (!token.empty() && token != token_) {
        token_ = token;
        spdlog::info("token file {} changed: using the new token", path_);
      }
    }
    return token_;
  }

 private:
  std::string stamp() const {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) return "";
    return std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
           std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino);
  }
  std::string path_;
  std::mutex mutex_;
  std::string token_;
  std::string stamp_;
  std::chrono::steady_clock::time_point checked_ = std::chrono::steady_clock::now();
};

Result<std::string> read_token(const std::string& file) {
  std::string token;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in || !std::getline(in, token)) {
      return fail(ErrorCode::kInvalidArgument, "cannot read " + file, "token-file");
    }
  } else if (const char* env = std::getenv("FABRICA_TOKEN"); env != nullptr) {
    token = env;
  }
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
    token.pop_back();
  }
  if (token.empty()) {
    return fail(ErrorCode::kInvalidArgument,
                "a fabricad token of an administrator is needed: --token-file or FABRICA_TOKEN",
                "token-file");
  }
  return token;
}

// Many idle keep-alive connections need many descriptors: raise the soft limit to the hard.
void raise_fd_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
  }
}

int fatal(const Error& e) {
  spdlog::critical("{}{}", e.field().empty() ? "" : "--" + e.field() + ": ", e.message());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fabrica-gateway: OpenAI-compatible, API-key-authenticated, metered model gateway"};
  std::string server = "http://127.0.0.1:8470";
  std::string listen = "127.0.0.1:8480";
  std::string admin_listen = "127.0.0.1:8481";
  std::string token_file;
  std::string server_ca_file;
  std::string tls_cert, tls_key, backend_ca_file;
  bool insecure_http = false;
  std::string spool_dir = "/var/lib/fabrica-gateway";
  std::string name;
  std::string log_level = "info";
  int64_t threads = 0, tenant_concurrency = 0, sync_ms = 1000, body_limit = 4 << 20;
  int64_t first_byte_s = 300, idle_stream_s = 60, request_s = 600, eject_after = 3, cooldown_s = 10,
          health_s = 5;
  app.add_option("--server", server, "fabricad's URL");
  app.add_option("--server-ca-file", server_ca_file,
                 "CA certificates (PEM) fabricad's https certificate is verified with (default: "
                 "the system's)");
  app.add_option("--listen", listen, "HOST:PORT for end users (port 0 picks one)");
  app.add_option("--tls-cert", tls_cert,
                 "PEM certificate chain end users are served HTTPS with (reloaded on change)");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_flag("--insecure-http", insecure_http,
               "Serve end users plain HTTP (development only; --listen must be loopback)");
  app.add_option("--backend-ca-file", backend_ca_file,
                 "CA certificates (PEM) https backends are verified with (default: the system's)");
  app.add_option("--admin-listen", admin_listen, "HOST:PORT for /metrics and /healthz");
  app.add_option("--token-file", token_file,
                 "File holding a fabricad token of an administrator (else FABRICA_TOKEN)");
  app.add_option("--spool-dir", spool_dir, "Usage spool and the last good snapshot");
  app.add_option("--name", name, "This replica's name in usage records (default: hostname)");
  app.add_option("--threads", threads, "Worker threads (default: cores)")
      ->check(CLI::Range(0, 256));
  app.add_option("--tenant-concurrency", tenant_concurrency,
                 "Requests in flight per tenant (0: no cap)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  app.add_option("--sync-interval-ms", sync_ms, "How often to ask fabricad for changes")
      ->check(CLI::Range(50, 60000));
  app.add_option("--body-limit", body_limit, "Largest request body in bytes (413 beyond)")
      ->check(CLI::Range(int64_t{1024}, int64_t{1} << 30));
  app.add_option("--first-byte-timeout", first_byte_s, "Seconds until a backend starts answering")
      ->check(CLI::Range(1, 86400));
  app.add_option("--idle-stream-timeout", idle_stream_s, "Seconds between two pieces of a stream")
      ->check(CLI::Range(1, 86400));
  app.add_option("--request-timeout", request_s, "Seconds for a whole non-streamed answer")
      ->check(CLI::Range(1, 86400));
  app.add_option("--eject-after", eject_after, "Consecutive failures that eject a backend")
      ->check(CLI::Range(1, 1000));
  app.add_option("--eject-for", cooldown_s, "Seconds an ejected backend rests")
      ->check(CLI::Range(1, 3600));
  app.add_option("--health-interval", health_s, "Seconds between active backend checks")
      ->check(CLI::Range(1, 3600));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));

  auto token = read_token(token_file);
  if (!token) return fatal(token.error());
  auto front = host_port(listen, "listen");
  if (!front) return fatal(front.error());
  auto admin = host_port(admin_listen, "admin-listen");
  if (!admin) return fatal(admin.error());
  std::shared_ptr<crypto::TlsServerContext> tls;
  if (tls_cert.empty() != tls_key.empty()) {
    return fatal(Error(ErrorCode::kInvalidArgument, "--tls-cert and --tls-key go together"));
  }
  if (!tls_cert.empty()) {
    auto loaded = crypto::TlsServerContext::load(tls_cert, tls_key);
    if (!loaded) return fatal(loaded.error());
    tls = std::move(*loaded);
  } else if (!insecure_http) {
    return fatal(Error(ErrorCode::kInvalidArgument,
                       "fabrica-gateway serves end users HTTPS: give --tls-cert and --tls-key, or "
                       "--insecure-http for development on loopback"));
  } else if (front->first != "::1" && front->first != "localhost" &&
             !front->first.starts_with("127.")) {
    return fatal(Error(ErrorCode::kInvalidArgument,
                       "--insecure-http serves on loopback only, not " + front->first));
  }
  if (name.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    name = host;
  }
  raise_fd_limit();

  SystemClock clock;
  auto spool = Spool::open(spool_dir);
  if (!spool) return fatal(spool.error());
  Directory directory;
  std::shared_ptr<TokenFile> token_file_source;
  std::function<std::string()> token_source;
  if (!token_file.empty()) {
    token_file_source = std::make_shared<TokenFile>(token_file, *token);
    token_source = [token_file_source] { return token_file_source->current(); };
  }
  Syncer syncer(directory, {.server = server,
                            .server_ca_file = server_ca_file,
                            .token = *token,
                            .token_source = token_source,
                            .interval = std::chrono::milliseconds(sync_ms),
                            .cache_path = spool_dir + "/snapshot.json"});
  Shipper shipper(**spool, {.server = server,
                            .server_ca_file = server_ca_file,
                            .token = *token,
                            .token_source = token_source});
  Limiter limiter(clock, {.tenant_concurrency = tenant_concurrency});
  Balancer balancer(clock, {.failures_to_eject = static_cast<int>(eject_after),
                            .cooldown = std::chrono::seconds(cooldown_s)});
  Metrics metrics;
  RecordIds ids(name);
  size_t workers = threads > 0 ? static_cast<size_t>(threads)
                               : std::max(1u, std::thread::hardware_concurrency());
  Proxy proxy({.host = front->first,
               .port = front->second,
               .admin_host = admin->first,
               .admin_port = admin->second,
               .threads = workers,
               .body_limit = static_cast<size_t>(body_limit),
               .first_byte_timeout = std::chrono::seconds(first_byte_s),
               .idle_stream_timeout = std::chrono::seconds(idle_stream_s),
               .request_timeout = std::chrono::seconds(request_s),
               .health_interval = std::chrono::seconds(health_s),
               .tls = tls,
               .backend_ca_file = backend_ca_file},
              {.directory = directory,
               .limiter = limiter,
               .balancer = balancer,
               .metrics = metrics,
               .spool = **spool,
               .shipper = &shipper,
               .ids = ids,
               .clock = clock});
  if (auto r = proxy.listen(); !r) return fatal(r.error());
  syncer.start();
  shipper.start();
  // Machine-readable first line, for scripts that start it on port 0.
  std::cout << "fabrica-gateway listening on " << front->first << ":" << proxy.port() << " admin "
            << admin->first << ":" << proxy.admin_port() << std::endl;
  spdlog::info("serving {} threads; fabricad {}; spool {}", workers, server, spool_dir);
  proxy.run();
  spdlog::info("stopped accepting; shipping pending usage records");
  syncer.stop();
  shipper.stop();
  spdlog::info("stopped");
  return 0;
}
