// Scheduler requirement and rank expressions, parsed against the host attributes and evaluated
// on a host whose every attribute holds something.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "sched/host.h"

namespace {

class Everything : public fabrica::sched::AttributeSource {
 public:
  double number(int attr) const override { return attr * 1.5 - 3; }
  std::span<const std::string> strings(int) const override { return values_; }

 private:
  std::vector<std::string> values_ = {"H100", "gpu-west", "", "NVIDIA H100 80GB HBM3"};
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Everything host;
  auto attributes = fabrica::sched::host_attributes();
  if (auto r = fabrica::sched::Requirement::parse(text, attributes)) (void)r->matches(host);
  if (auto r = fabrica::sched::Rank::parse(text, attributes)) (void)r->score(host);
  (void)fabrica::sched::glob_match(text.substr(0, size / 2), text.substr(size / 2));
  return 0;
}
