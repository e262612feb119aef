// Lease allocation on its own: Network::lease() in one durable SQLite transaction per lease
// (sync=full, as fabricad runs), on a vnet with one 65,536-address range, measured when the
// vnet is empty and when it already holds 2,000 and 10,000 leases (a lease rewrites the
// vnet's record, so its cost grows with the leases held). Prints leases/s.
//   build-release/bin/network_bench
#include <benchmark/benchmark.h>

#include <filesystem>

#include "crypto/crypto.h"
#include "auth/identity.h"
#include "core/clock.h"
#include "network/network.h"
#include "store/sqlite_store.h"

namespace fabrica::network {
namespace {

namespace fs = std::filesystem;

void BM_Lease(benchmark::State& state) {
  fs::path dir = fs::temp_directory_path() / ("fabrica-lease-" + crypto::random_hex(6));
  fs::create_directories(dir);
  {
    auto store = std::move(*store::SqliteStore::open((dir / "db").string()));
    SystemClock clock;
    auth::Authorizer authorizer(*store);
    auth::Identity identity(*store, authorizer, clock, crypto::HashCost::kMinimum);
    (void)identity.bootstrap("bench-password");
    (void)store->write([](store::Transaction& tx) {
      return tx.insert({.type = "cluster", .id = 0, .name = "default", .body = "{}"});
    });
    Network network(*store, authorizer, clock);
    auto admin = *identity.caller_for(0, "bench");
    auto vnet =
        network.create(admin, {.name = "bench",
                               .bridge = "br0",
                               .ranges = {{.type = "IP4", .ip = "10.0.0.1", .size = 65536}}});
    int64_t vm = 0;
    auto take = [&] {
      return store->write([&](store::Transaction& tx) -> Result<void> {
        FAB_TRY(network.lease(tx, admin, vnet->header.id, ++vm, 0, std::nullopt, "nic"));
        return {};
      });
    };
    for (int64_t i = 0; i < state.range(0); ++i) (void)take();
    for (auto _ : state) {
      if (!take()) state.SkipWithError("lease failed");
    }
    state.SetItemsProcessed(state.iterations());
    state.counters["held_before"] = static_cast<double>(state.range(0));
  }
  fs::remove_all(dir);
}
BENCHMARK(BM_Lease)->Arg(0)->Arg(2000)->Arg(10000)->Unit(benchmark::kMicrosecond)->MinTime(2);

}  // namespace
}  // namespace fabrica::network

BENCHMARK_MAIN();
