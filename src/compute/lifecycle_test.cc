#include "compute/lifecycle.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

namespace fabrica::compute {
namespace {

Phase step(Phase from, Event e, Action want_action = Action::kNone) {
  auto t = next(from, e);
  EXPECT_TRUE(t) << phase_name(from) << " + " << event_name(e) << ": " << t.error().message();
  if (!t) return from;
  EXPECT_EQ(t->action, want_action)
      << phase_name(from) << " + " << event_name(e) << " asked " << action_name(t->action);
  return t->to;
}

// The sequence the real-guest test drives: create, reboot, poweroff, resume, undeploy, resume,
// terminate.
TEST(LifecycleTest, TheWholeLifeOfAVmFollowsOpenNebulasStates) {
  Phase p{VmStatus::kPending};
  p = step(p, Event::kPlaced, Action::kDeploy);
  EXPECT_EQ(phase_name(p), "PROLOG");
  p = step(p, Event::kDone, Action::kStart);
  EXPECT_EQ(phase_name(p), "BOOT");
  p = step(p, Event::kDone);
  EXPECT_EQ(p, (Phase{VmStatus::kActive, Lcm::kRunning}));
  EXPECT_EQ(static_cast<int>(p.status), 3);  // OpenNebula's ACTIVE / RUNNING.
  EXPECT_EQ(static_cast<int>(p.lcm), 3);
  p = step(p, Event::kReboot, Action::kReboot);
  EXPECT_EQ(phase_name(p), "RUNNING");
  p = step(p, Event::kPoweroff, Action::kShutdown);
  EXPECT_EQ(phase_name(p), "SHUTDOWN_POWEROFF");
  auto off = next(p, Event::kDone);
  EXPECT_FALSE(off->releases_host);  // POWEROFF keeps the devices.
  p = off->to;
  EXPECT_EQ(static_cast<int>(p.status), 8);
  p = step(p, Event::kResume, Action::kStart);
  EXPECT_EQ(phase_name(p), "BOOT_POWEROFF");
  p = step(p, Event::kDone);
  p = step(p, Event::kUndeploy, Action::kShutdown);
  p = step(p, Event::kDone, Action::kCleanup);
  EXPECT_EQ(phase_name(p), "EPILOG_UNDEPLOY");
  auto undeployed = next(p, Event::kDone);
  EXPECT_TRUE(undeployed->releases_host);
  EXPECT_FALSE(undeployed->deletes);
  p = undeployed->to;
  EXPECT_EQ(static_cast<int>(p.status), 9);
  p = step(p, Event::kResume);
  EXPECT_EQ(phase_name(p), "PENDING");
  p = step(step(step(p, Event::kPlaced, Action::kDeploy), Event::kDone, Action::kStart),
           Event::kDone);
  p = step(p, Event::kTerminate, Action::kShutdown);
  p = step(p, Event::kDone, Action::kCleanup);
  auto done = next(p, Event::kDone);
  EXPECT_TRUE(done->releases_host);
  EXPECT_TRUE(done->deletes);
  EXPECT_EQ(phase_name(done->to), "DONE");
}

TEST(LifecycleTest, BootFailureCanBeRetriedSettledOrDeleted) {
  Phase boot = step(Phase{VmStatus::kPending}, Event::kPlaced, Action::kDeploy);
  boot = step(boot, Event::kDone, Action::kStart);
  Phase failed = step(boot, Event::kFailed);
  EXPECT_EQ(phase_name(failed), "BOOT_FAILURE");
  EXPECT_EQ(static_cast<int>(failed.lcm), 36);
  EXPECT_EQ(step(failed, Event::kRecoverRetry, Action::kStart), boot);
  EXPECT_EQ(phase_name(step(failed, Event::kRecoverSuccess)), "RUNNING");
  Phase cleanup = step(failed, Event::kRecoverDelete, Action::kCleanup);
  EXPECT_EQ(phase_name(cleanup), "CLEANUP_DELETE");
  auto gone = next(cleanup, Event::kDone);
  EXPECT_TRUE(gone->releases_host && gone->deletes);
  // A graceful stop that the guest ignores can be forced.
  Phase running{VmStatus::kActive, Lcm::kRunning};
  Phase stopping = step(running, Event::kTerminate, Action::kShutdown);
  EXPECT_EQ(step(stopping, Event::kTerminateHard, Action::kDestroy), stopping);
  EXPECT_EQ(step(stopping, Event::kFailed), running);  // Still running: nothing lost.
}

TEST(LifecycleTest, MonitoringKeepsTheControlPlanesViewTrue) {
  Phase running{VmStatus::kActive, Lcm::kRunning};
  Phase unknown = step(running, Event::kHostLost);
  EXPECT_EQ(phase_name(unknown), "UNKNOWN");
  EXPECT_EQ(step(unknown, Event::kSeenRunning), running);
  EXPECT_EQ(phase_name(step(running, Event::kSeenPoweredOff)), "POWEROFF");
  EXPECT_EQ(step(running, Event::kSeenMissing), unknown);
  EXPECT_FALSE(next(running, Event::kHostLost)->releases_host);
}

TEST(LifecycleTest, RefusalsSayWhatThePhaseAllows) {
  auto r = next(Phase{VmStatus::kPoweroff}, Event::kSuspend);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(r.error().field(), "state");
  EXPECT_NE(r.error().message().find("cannot suspend a VM that is POWEROFF; it allows: resume"),
            std::string::npos)
      << r.error().message();
  EXPECT_FALSE(next(Phase{VmStatus::kDone}, Event::kResume));
  EXPECT_FALSE(next(Phase{VmStatus::kActive, Lcm::kRunning}, Event::kRecoverRetry));
}

// README finding: "cannot resume a VM that is SHUTDOWN_POWEROFF; it allows: poweroff --hard,
// done, ... failed" offered the agent's reports as if they were commands.
TEST(LifecycleTest, RefusalsOfferOnlyWhatAUserCanTypeAndSayAnOperationIsInProgress) {
  auto r = next(Phase{VmStatus::kActive, Lcm::kShutdownPoweroff}, Event::kResume);
  ASSERT_FALSE(r);
  const std::string& m = r.error().message();
  EXPECT_NE(m.find("cannot resume a VM that is SHUTDOWN_POWEROFF (its shutdown is in progress: "
                   "wait for it, e.g. with --wait); it allows: poweroff --hard"),
            std::string::npos)
      << m;
  for (const char* internal : {"done", "failed", "placed", "seen ", "host lost"}) {
    EXPECT_EQ(m.find(std::string(", ") + internal), std::string::npos) << internal << ": " << m;
  }
  auto running = next(Phase{VmStatus::kActive, Lcm::kRunning}, Event::kRelease);
  ASSERT_FALSE(running);
  EXPECT_EQ(running.error().message().find("in progress"), std::string::npos);
}

std::set<std::pair<int, int>> phases() {
  std::set<std::pair<int, int>> out;
  for (const auto& row : lifecycle_table()) {
    out.insert({static_cast<int>(row.from.status), static_cast<int>(row.from.lcm)});
    out.insert(
        {static_cast<int>(row.transition.to.status), static_cast<int>(row.transition.to.lcm)});
  }
  return out;
}

bool on_host(Phase p) {
  return p.status == VmStatus::kActive || p.status == VmStatus::kPoweroff ||
         p.status == VmStatus::kSuspended;
}

TEST(LifecycleTest, TheTableHasNoDuplicatesNoDeadEndsAndNoLeaks) {
  std::set<std::pair<std::pair<int, int>, int>> seen;
  std::map<std::pair<int, int>, std::vector<std::pair<int, int>>> edges;
  for (const auto& row : lifecycle_table()) {
    std::pair<int, int> from{static_cast<int>(row.from.status), static_cast<int>(row.from.lcm)};
    EXPECT_TRUE(seen.insert({from, static_cast<int>(row.event)}).second)
        << phase_name(row.from) << " + " << event_name(row.event) << " is listed twice";
    EXPECT_NE(row.from.status, VmStatus::kDone) << "DONE is final";
    // Devices are released exactly when a VM leaves its host.
    EXPECT_EQ(row.transition.releases_host, on_host(row.from) && !on_host(row.transition.to))
        << phase_name(row.from) << " + " << event_name(row.event);
    edges[from].push_back(
        {static_cast<int>(row.transition.to.status), static_cast<int>(row.transition.to.lcm)});
  }
  // Every phase is reachable from PENDING, and DONE from every phase: nothing is stuck.
  auto reach = [&](std::pair<int, int> start) {
    std::set<std::pair<int, int>> out{start};
    std::vector<std::pair<int, int>> todo{start};
    while (!todo.empty()) {
      auto p = todo.back();
      todo.pop_back();
      for (auto q : edges[p]) {
        if (out.insert(q).second) todo.push_back(q);
      }
    }
    return out;
  };
  auto from_pending = reach({static_cast<int>(VmStatus::kPending), 0});
  std::pair<int, int> done{static_cast<int>(VmStatus::kDone), 0};
  for (auto p : phases()) {
    Phase phase{static_cast<VmStatus>(p.first), static_cast<Lcm>(p.second)};
    EXPECT_TRUE(from_pending.contains(p)) << phase_name(phase) << " is unreachable";
    EXPECT_TRUE(reach(p).contains(done)) << "a VM in " << phase_name(phase) << " can never end";
  }
}

// Random walks: the host is held from placement until a release, and only then.
TEST(LifecycleTest, RandomWalksHoldTheHostExactlyWhileOnIt) {
  std::mt19937 rng(7);
  for (int walk = 0; walk < 2000; ++walk) {
    Phase p{VmStatus::kPending};
    bool holding = false;
    for (int n = 0; n < 60 && p.status != VmStatus::kDone; ++n) {
      std::vector<const TableRow*> options;
      for (const auto& row : lifecycle_table()) {
        if (row.from == p) options.push_back(&row);
      }
      ASSERT_FALSE(options.empty()) << phase_name(p);
      const TableRow* row = options[rng() % options.size()];
      if (row->event == Event::kPlaced) holding = true;
      if (row->transition.releases_host) {
        ASSERT_TRUE(holding) << "released twice leaving " << phase_name(p);
        holding = false;
      }
      p = row->transition.to;
      ASSERT_EQ(holding, on_host(p)) << phase_name(p);
    }
  }
}

}  // namespace
}  // namespace fabrica::compute
