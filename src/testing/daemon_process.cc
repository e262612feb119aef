#include "testing/daemon_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <thread>

extern char** environ;

namespace fabrica::testing {

std::string binary_path(const std::string& name) {
  return std::string(FABRICA_BIN_DIR) + "/" + name;
}
std::filesystem::path source_dir() { return FABRICA_SOURCE_DIR; }

std::string node_binary() {
  auto r = run_command("command -v node");
  return r.output.substr(0, r.output.find('\n'));
}

CommandResult run_command(const std::string& command) {
  FILE* pipe = popen((command + " 2>&1 </dev/null").c_str(), "r");
  if (pipe == nullptr) return {};
  CommandResult result;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) result.output.append(buf, n);
  int status = pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

namespace {

int exit_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

ChildProcess::ChildProcess(std::vector<std::string> argv, std::string log_path)
    : log_path_(std::move(log_path)) {
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&actions);
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) stop(SIGKILL);
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int ChildProcess::stop(int signal) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return exit_status(status);
}

std::optional<int> ChildProcess::wait_for(std::chrono::seconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pid_ > 0 && std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return exit_status(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return std::nullopt;
}

std::string ChildProcess::log() const {
  std::ifstream in(log_path_);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

DaemonProcess::DaemonProcess(std::vector<std::string> extra_args)
    : extra_args_(std::move(extra_args)) {
  std::random_device rd;
  data_dir_ = std::filesystem::temp_directory_path() /
              ("fabricad-test-" + std::to_string(rd()) + std::to_string(rd()));
  std::filesystem::create_directories(data_dir_);
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) stop(SIGKILL);
  std::error_code ec;
  std::filesystem::remove_all(data_dir_, ec);
}

bool DaemonProcess::start() {
  std::filesystem::remove(data_dir_ / "fabricad.addr");
  // A restart keeps the port, as clients (agents) remember it.
  tls_ = std::find(extra_args_.begin(), extra_args_.end(), "--tls-cert") != extra_args_.end();
  std::string listen = url_.empty() ? "127.0.0.1:0" : url_.substr(url_.find("//") + 2);
  std::vector<std::string> args = {binary_path("fabricad"),
                                   "--data-dir",
                                   data_dir_.string(),
                                   "--listen",
                                   listen,
                                   "--access-log",
                                   (data_dir_ / "access.log").string()};
  if (!tls_) args.push_back("--insecure-http");
  args.insert(args.end(), extra_args_.begin(), extra_args_.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_storage = {std::string("FABRICA_ADMIN_PASSWORD=") + kAdminPassword};
  for (char** e = environ; *e; ++e) {
    if (std::string_view(*e).starts_with("FABRICA_ADMIN_PASSWORD=")) continue;
    env_storage.emplace_back(*e);
  }
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  std::string log_path = (data_dir_ / "fabricad.log").string();
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return false;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return false;
    }
    std::ifstream addr(data_dir_ / "fabricad.addr");
    std::string line;
    if (addr && std::getline(addr, line) && !line.empty()) {
      url_ = (tls_ ? "https://" : "http://") + line;
      auto client = http();
      auto health = client->request("GET", "/healthz");
      if (health && health->status == 200) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void DaemonProcess::send_signal(int signal) {
  if (pid_ > 0) ::kill(pid_, signal);
}

int DaemonProcess::wait() {
  int status = 0;
  if (pid_ <= 0) return -1;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

int DaemonProcess::stop(int signal) {
  send_signal(signal);
  return wait();
}

std::string DaemonProcess::log() const {
  std::ifstream in(data_dir_ / "fabricad.log");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::unique_ptr<client::HttpClient> DaemonProcess::http() const {
  return std::move(*client::HttpClient::create(url_, client_tls_));
}

client::ApiClient DaemonProcess::login(const std::string& user, const std::string& password) const {
  client::ApiClient api(http(), "");
  auto token = api.login(user, password, Json{{"name", "test"}});
  if (token) api.set_token((*token)["token"].get<std::string>());
  return api;
}

}  // namespace fabrica::testing
