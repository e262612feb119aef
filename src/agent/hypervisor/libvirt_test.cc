// The libvirt backend against libvirt's own test driver (test:///default): real XML parsing
// and the real domain state machine, no hypervisor.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "agent/hypervisor/domain.h"
#include "agent/hypervisor/hypervisor.h"
#include "agent/hypervisor/simulated.h"

namespace fabrica::hypervisor {
namespace {

std::string golden(const std::string& name) {
  std::ifstream in(std::string(FABRICA_FIXTURES) + "/domains/" + name + ".xml");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::unique_ptr<Hypervisor> test_driver() {
  auto h = open_libvirt("test:///default");
  EXPECT_TRUE(h) << h.error().message();
  return h ? std::move(*h) : nullptr;
}

TEST(LibvirtTest, LibvirtAcceptsEveryRenderedDomain) {
  auto h = test_driver();
  ASSERT_TRUE(h);
  for (const char* name :
       {"hgx-8xh100-pinned-1g", "mig-1g10gb", "infiniband-vfs", "plain-tcg-kernel"}) {
    auto defined = h->define(golden(name));
    EXPECT_TRUE(defined) << name << ": " << defined.error().message();
  }
  auto names = h->list();
  ASSERT_TRUE(names);
  EXPECT_EQ(names->size(), 4u);  // The driver's own "test" domain is not ours.
  auto xml = h->xml("fabrica-vm-12");
  ASSERT_TRUE(xml);
  EXPECT_NE(xml->find("<vcpupin vcpu='31' cpuset='71'/>"), std::string::npos) << *xml;
  EXPECT_NE(xml->find("<page size='1048576' unit='KiB' nodeset='0-1'/>"), std::string::npos);
}

// Both backends behave alike: the simulated fleet stands for real hosts.
struct Backend {
  std::string name;
  std::function<std::unique_ptr<Hypervisor>()> open;
};

class HypervisorConformance : public ::testing::TestWithParam<Backend> {};

INSTANTIATE_TEST_SUITE_P(Backends, HypervisorConformance,
                         ::testing::Values(Backend{"libvirt_test_driver", test_driver},
                                           Backend{"simulated", make_simulated_hypervisor}),
                         [](const auto& info) { return info.param.name; });

TEST_P(HypervisorConformance, EveryOperationIsIdempotent) {
  auto h = GetParam().open();
  ASSERT_TRUE(h);
  const std::string vm = "fabrica-vm-3";
  ASSERT_TRUE(h->define(golden("plain-tcg-kernel")));
  ASSERT_TRUE(h->define(golden("plain-tcg-kernel")));  // Same name and UUID: redefined.
  EXPECT_EQ(h->status(vm)->state, DomainState::kShutoff);
  ASSERT_TRUE(h->start(vm));
  ASSERT_TRUE(h->start(vm));
  auto running = h->status(vm);
  EXPECT_EQ(running->state, DomainState::kRunning);
  EXPECT_EQ(running->memory_kb, 524288);
  ASSERT_TRUE(h->suspend(vm));
  ASSERT_TRUE(h->suspend(vm));
  EXPECT_EQ(h->status(vm)->state, DomainState::kPaused);
  ASSERT_TRUE(h->resume(vm));
  ASSERT_TRUE(h->resume(vm));
  EXPECT_EQ(h->status(vm)->state, DomainState::kRunning);
  ASSERT_TRUE(h->reboot(vm));
  ASSERT_TRUE(h->reset(vm));
  auto busy = h->undefine(vm);
  ASSERT_FALSE(busy);
  EXPECT_EQ(busy.error().code(), ErrorCode::kFailedPrecondition);
  ASSERT_TRUE(h->destroy(vm));
  ASSERT_TRUE(h->destroy(vm));
  ASSERT_TRUE(h->shutdown(vm));
  EXPECT_EQ(h->status(vm)->state, DomainState::kShutoff);
  auto undefined = h->undefine(vm);
  ASSERT_TRUE(undefined) << undefined.error().message();
  ASSERT_TRUE(h->undefine(vm));
  EXPECT_EQ(h->status(vm)->state, DomainState::kMissing);
  ASSERT_TRUE(h->destroy(vm));  // Nothing to stop.
  auto missing = h->start(vm);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
}

TEST_P(HypervisorConformance, RefusalsMatch) {
  auto h = GetParam().open();
  ASSERT_TRUE(h);
  ASSERT_TRUE(h->define(golden("mig-1g10gb")));
  EXPECT_FALSE(h->suspend("fabrica-vm-7"));                // Not running.
  EXPECT_EQ(h->reboot("fabrica-vm-7").has_value(), true);  // Nothing to restart.
  std::string other = golden("mig-1g10gb");
  other.replace(other.find("fab1ca00"), 8, "00000000");  // Same name, another UUID.
  EXPECT_FALSE(h->define(other));
  EXPECT_EQ(h->xml("fabrica-vm-8").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(h->list()->size(), 1u);
}

TEST(LibvirtTest, LibvirtsRefusalIsTheError) {
  auto h = test_driver();
  ASSERT_TRUE(h);
  auto bad = h->define("<domain type='test'><name>fabrica-vm-1</name></domain>");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("define:"), std::string::npos) << bad.error().message();
  auto nowhere = open_libvirt("bogus:///nothing");
  EXPECT_FALSE(nowhere);
}

}  // namespace
}  // namespace fabrica::hypervisor
