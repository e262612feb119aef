#include "agent/simulator.h"

#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "agent/hypervisor/executor.h"
#include "agent/hypervisor/simulated.h"
#include "agent/runner.h"
#include "client/http_client.h"

namespace fabrica::agent {

Result<SimulationReport> simulate(const SimulationOptions& o, const std::atomic<bool>& stop) {
  if (o.hosts < 1 || o.threads < 1) {
    return fail(ErrorCode::kInvalidArgument, "need at least one host and one thread", "simulate");
  }
  FAB_TRY(simulated_inventory(o.profile, 0));
  SimulationReport report;
  // A pinned token is honoured as the real agent does: only a server whose chain holds that CA.
  JoinToken token = parse_join_token(o.join_token);
  crypto::TlsClientOptions tls{.ca_file = o.ca_file};
  if (!token.pin.empty() && o.server.starts_with("https://")) tls = {.pin_sha256 = token.pin};
  std::vector<std::string> credentials(o.hosts);
  std::atomic<int64_t> interval_ms{o.interval.count() > 0 ? o.interval.count() : 10000};
  std::mutex error_mutex;
  std::optional<Error> first_error;
  auto record_error = [&](const Error& e) {
    std::lock_guard lock(error_mutex);
    if (!first_error) first_error = e;
  };
  // Each thread drives the hosts i with i % threads == its index.
  auto run_threads = [&](auto&& body) {
    std::vector<std::thread> threads;
    for (int t = 0; t < o.threads; ++t) threads.emplace_back([&, t] { body(t); });
    for (auto& th : threads) th.join();
  };
  auto start = std::chrono::steady_clock::now();
  std::atomic<int> joined{0};
  run_threads([&](int t) {
    auto http = client::HttpClient::create(o.server, tls);
    if (!http) return record_error(http.error());
    client::ApiClient api(std::move(*http), "");
    for (int i = t; i < o.hosts && !stop; i += o.threads) {
      auto inv = simulated_inventory(o.profile, i);
      std::string name = o.name_prefix + "-" + o.profile + "-" + std::to_string(i);
      inv->hostname = name;
      if (o.hypervisor) {
        inv->hypervisor = "simulated";
        inv->domain_type = "qemu";
      }
      auto r = api.post(
          "/api/v1/agent/join",
          Json{{"token", token.secret}, {"hostname", name}, {"inventory", inv->to_json()}});
      if (!r) return record_error(r.error());
      credentials[i] = (*r)["credential"].get<std::string>();
      if (o.interval.count() == 0) {
        interval_ms = (*r).value("heartbeat_interval_seconds", int64_t{10}) * 1000;
      }
      joined++;
    }
  });
  report.joined = joined;
  report.join_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (first_error) return fail(first_error->with_context("join"));

  std::atomic<int64_t> beats{0}, failures{0};
  start = std::chrono::steady_clock::now();
  std::vector<std::thread> executors;
  if (o.hypervisor) {
    // Each thread serves the commands of its hosts, each host with its own hypervisor.
    for (int t = 0; t < o.threads; ++t) {
      executors.emplace_back([&, t] {
        auto http = client::HttpClient::create(o.server, tls);
        if (!http) return record_error(http.error());
        client::ApiClient api(std::move(*http), "");
        struct SimHost {
          std::unique_ptr<hypervisor::Hypervisor> hv;
          std::unique_ptr<hypervisor::Executor> ex;
          std::unique_ptr<CommandChannel> channel;
        };
        std::map<int, SimHost> mine;
        for (int i = t; i < o.hosts; i += o.threads) {
          SimHost h{hypervisor::make_simulated_hypervisor(), nullptr, nullptr};
          h.ex = std::make_unique<hypervisor::Executor>(
              *h.hv, hypervisor::ExecutorOptions{
                         .vm_root = o.vm_root + "/" + o.name_prefix + "-" + std::to_string(i),
                         .domain_type = "qemu",
                         .shutdown_timeout = std::chrono::seconds(5),
                         .host_files = false});
          h.channel = std::make_unique<CommandChannel>(*h.ex);
          mine.emplace(i, std::move(h));
        }
        while (!stop) {
          bool any = false;
          for (auto& [i, h] : mine) {
            api.set_token(credentials[i]);
            auto served = h.channel->poll(api);
            any = any || (served && *served > 0);
          }
          if (!any) std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      });
    }
  }
  run_threads([&](int t) {
    auto http = client::HttpClient::create(o.server, tls);
    if (!http) return record_error(http.error());
    std::vector<client::ApiClient> hosts;
    client::ApiClient api(std::move(*http), "");
    for (int round = 0; !stop && (o.rounds == 0 || round < o.rounds); ++round) {
      auto round_start = std::chrono::steady_clock::now();
      for (int i = t; i < o.hosts && !stop; i += o.threads) {
        api.set_token(credentials[i]);
        auto r = api.post("/api/v1/agent/heartbeat",
                          Json{{"cpu_used_permille", (i * 37 + round * 11) % 1000},
                               {"memory_used_kb", int64_t{1} << 30}});
        if (r) {
          beats++;
        } else {
          failures++;
          if (r.error().code() == ErrorCode::kUnauthenticated) return record_error(r.error());
        }
      }
      if (o.rounds != 0 && round + 1 == o.rounds) break;
      auto next = round_start + std::chrono::milliseconds(interval_ms.load());
      while (!stop && std::chrono::steady_clock::now() < next) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  });
  for (auto& th : executors) th.join();
  report.heartbeats = beats;
  report.failures = failures;
  report.heartbeat_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (first_error) return fail(first_error->with_context("heartbeat"));
  return report;
}

}  // namespace fabrica::agent
