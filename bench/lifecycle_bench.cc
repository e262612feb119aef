// VM starts through the whole control plane, against a fabricad whose hosts run VMs on
// simulated hypervisors (fabrica-agent --simulate N --sim-hypervisor; bench/lifecycle starts
// both). Two measurements at once:
//   - throughput: CONNECTIONS clients create VMS VMs as fast as fabricad takes them; VMs/s from
//     the first create until no VM is PENDING, PROLOG or BOOT any more (all RUNNING);
//   - latency: meanwhile, one probe at a time creates a VM and follows it every 2 ms until it
//     is RUNNING, timing each step. The simulated hypervisor takes no time, so the steps are
//     the control plane's share of a VM's start plus the agents' polling.
//   lifecycle_bench URL VMS CONNECTIONS REQUEST-JSON   (token in FABRICA_TOKEN)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/http_client.h"

using namespace fabrica;
using Clock = std::chrono::steady_clock;

namespace {

client::ApiClient connect(const std::string& url) {
  auto http = client::HttpClient::create(url);
  if (!http) {
    std::fprintf(stderr, "%s\n", http.error().message().c_str());
    std::exit(1);
  }
  const char* token = std::getenv("FABRICA_TOKEN");
  return client::ApiClient(std::move(*http), token ? token : "");
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// One probe VM's steps, in ms.
struct Probe {
  double create = 0;    // POST /api/v1/vms answered (durable PENDING).
  double placed = 0;    // Then: the scheduler gave it a host (PROLOG, deploy queued).
  double deployed = 0;  // Then: the agent's deploy answer took it to BOOT (start queued).
  double running = 0;   // Then: the start answer took it to RUNNING.
  double total = 0;     // POST sent to RUNNING.
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: lifecycle_bench URL VMS CONNECTIONS REQUEST-JSON\n");
    return 2;
  }
  std::string url = argv[1];
  int vms = std::atoi(argv[2]);
  int connections = std::atoi(argv[3]);
  auto request = parse_json(argv[4]);
  if (!request || vms < 1 || connections < 1) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  std::atomic<int> next{0}, failed{0};
  std::atomic<bool> flooding{true};
  auto start = Clock::now();
  std::vector<std::thread> flood;
  for (int c = 0; c < connections; ++c) {
    flood.emplace_back([&, c] {
      auto api = connect(url);
      for (int i; (i = next++) < vms;) {
        auto r = api.post("/api/v1/vms",
                          Json{{"name", "flood-" + std::to_string(c) + "-" + std::to_string(i)},
                               {"request", *request}});
        if (!r) {
          if (failed++ == 0) std::fprintf(stderr, "create: %s\n", r.error().message().c_str());
        }
      }
    });
  }
  std::vector<Probe> probes;
  std::thread prober([&] {
    auto api = connect(url);
    for (int n = 0; flooding || n < 50; ++n) {
      Probe p;
      auto t0 = Clock::now();
      auto vm = api.post("/api/v1/vms",
                         Json{{"name", "probe-" + std::to_string(n)}, {"request", *request}});
      if (!vm) break;
      auto t1 = Clock::now();
      p.create = ms(t1 - t0);
      std::string path = "/api/v1/vms/" + std::to_string((*vm)["id"].get<int64_t>());
      auto last = t1;
      bool placed = false, deployed = false;
      while (true) {
        auto got = api.get(path);
        auto now = Clock::now();
        if (!got) break;
        std::string state = (*got)["state_name"].get<std::string>();
        bool has_host = (*got)["allocation"].is_object();
        if (!placed && has_host) {
          placed = true;
          p.placed = ms(now - last);
          last = now;
        }
        if (placed && !deployed && state != "PROLOG") {
          deployed = true;
          p.deployed = ms(now - last);
          last = now;
        }
        if (state == "RUNNING" && (*got)["operation"].is_null()) {
          p.running = ms(now - last);
          p.total = ms(now - t0);
          probes.push_back(p);
          break;
        }
        if (now - t0 > std::chrono::seconds(60)) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
  });
  for (auto& t : flood) t.join();
  auto created = Clock::now();
  flooding = false;
  // Until nothing waits for a host or for its agent.
  auto api = connect(url);
  auto busy = [&] {
    for (const char* s : {"PENDING", "PROLOG", "BOOT"}) {
      auto page = api.get(std::string("/api/v1/vms?limit=1&state=") + s);
      if (!page || !(*page)["items"].empty()) return true;
    }
    return false;
  };
  while (busy() && Clock::now() - created < std::chrono::minutes(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto settled = Clock::now();
  prober.join();
  int running = 0;
  for (std::string cursor;;) {
    auto page = api.get("/api/v1/vms?state=RUNNING&limit=1000" + cursor);
    if (!page) break;
    running += static_cast<int>((*page)["items"].size());
    if (!(*page)["next_cursor"].is_string()) break;
    cursor = "&cursor=" + (*page)["next_cursor"].get<std::string>();
  }

  double create_s = std::chrono::duration<double>(created - start).count();
  double all_s = std::chrono::duration<double>(settled - start).count();
  std::printf("%-46s %s\n", "VMs requested / RUNNING / failed creates",
              (std::to_string(vms + static_cast<int>(probes.size())) + " / " +
               std::to_string(running) + " / " + std::to_string(failed.load()))
                  .c_str());
  std::printf("%-46s %.0f\n", "creates/s (flood)", vms / create_s);
  std::printf("%-46s %.2f s\n", "RUNNING lag after the last create", all_s - create_s);
  std::printf("%-46s %.0f\n", "create-to-RUNNING VMs/s (whole run)", running / all_s);
  std::printf("\n%-46s %8s %8s %8s   (%zu probe VMs under the flood)\n", "step (ms)", "p50", "p99",
              "max", probes.size());
  auto row = [&](const char* name, double Probe::*field) {
    std::vector<double> v;
    for (const Probe& p : probes) v.push_back(p.*field);
    std::printf("%-46s %8.1f %8.1f %8.1f\n", name, percentile(v, 0.5), percentile(v, 0.99),
                v.empty() ? 0 : *std::max_element(v.begin(), v.end()));
  };
  row("POST /api/v1/vms (durable PENDING)", &Probe::create);
  row("PENDING -> placed (scheduler, deploy queued)", &Probe::placed);
  row("PROLOG -> BOOT (deploy delivered + answered)", &Probe::deployed);
  row("BOOT -> RUNNING (start delivered + answered)", &Probe::running);
  row("create -> RUNNING", &Probe::total);
  return running == vms + static_cast<int>(probes.size()) ? 0 : 1;
}
