#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client/http_client.h"

namespace fabrica::testing {

// A real fabricad child process on 127.0.0.1 port 0 with its own temporary data directory
// (removed on destruction). The admin password is fixed through FABRICA_ADMIN_PASSWORD. Plain
// HTTP (--insecure-http) unless `extra_args` give --tls-cert: then https://, and the clients
// it makes trust what set_client_tls() says.
class DaemonProcess {
 public:
  static constexpr const char* kAdminPassword = "admin-test-password";

  explicit DaemonProcess(std::vector<std::string> extra_args = {});
  ~DaemonProcess();
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Starts fabricad and waits (up to 30 s) until /healthz answers; a restart reuses the port.
  // Returns false on failure.
  bool start();
  // Sends `signal` and waits for the process to exit; returns its exit status (or 128+sig).
  int stop(int signal);
  void send_signal(int signal);
  int wait();

  const std::filesystem::path& data_dir() const { return data_dir_; }
  const std::string& url() const { return url_; }
  pid_t pid() const { return pid_; }
  std::string log() const;

  std::unique_ptr<client::HttpClient> http() const;
  void set_client_tls(crypto::TlsClientOptions tls) { client_tls_ = std::move(tls); }
  // An ApiClient logged in as `user`.
  client::ApiClient login(const std::string& user = "admin",
                          const std::string& password = kAdminPassword) const;

 private:
  std::vector<std::string> extra_args_;
  std::filesystem::path data_dir_;
  std::string url_;
  pid_t pid_ = -1;
  bool tls_ = false;
  crypto::TlsClientOptions client_tls_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together.
};
// Runs `command` through the shell with stderr merged into stdout and stdin from /dev/null.
CommandResult run_command(const std::string& command);

// Any child process, with stdout and stderr appended to `log_path`. Killed on destruction.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, std::string log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  bool running();
  // Sends `signal` and waits; returns the exit status (or 128 + signal).
  int stop(int signal);
  // Waits up to `timeout` for the process to exit by itself; nullopt if it did not.
  std::optional<int> wait_for(std::chrono::seconds timeout);
  std::string log() const;

 private:
  std::string log_path_;
  pid_t pid_ = -1;
};

// Path of a built binary (fabricad, fabrica), from the FABRICA_BIN_DIR compile definition.
std::string binary_path(const std::string& name);
// The node executable on PATH ("" when there is none), for the test tree's Node servers.
std::string node_binary();
// Source tree root, from FABRICA_SOURCE_DIR.
std::filesystem::path source_dir();

// Polls `check` until it returns true or `limit` passes (50 ms between tries).
template <typename Fn>
bool eventually(Fn check, std::chrono::seconds limit = std::chrono::seconds(30)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (check()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace fabrica::testing
