// The gateway's request planning (the body checked and read before it is forwarded) and the
// SSE scanner that meters streams, fed the same bytes in pieces split where the input says.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "gateway/openai.h"

using namespace fabrica::gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  for (Operation op :
       {Operation::kChat, fabrica::gateway::Operation::kCompletions, Operation::kEmbeddings}) {
    fabrica::Json parsed;
    auto info = inspect_request(op, text, parsed);
    if (info && info->stream && !info->include_usage) (void)with_stream_usage(parsed);
  }
  (void)usage_of(text);
  // The stream: forwarded bytes must be the input, less only what the scanner may drop.
  size_t step = 1 + data[0] % 17;
  SseScanner plain;
  std::string out;
  for (size_t at = 0; at < text.size(); at += step) out += plain.feed(text.substr(at, step));
  out += plain.flush();
  if (out != text) std::abort();
  SseScanner dropping;
  dropping.set_drop_usage_event(true);
  std::string dropped;
  for (size_t at = 0; at < text.size(); at += step) dropped += dropping.feed(text.substr(at, step));
  dropped += dropping.flush();
  if (dropped.size() > text.size()) std::abort();
  return 0;
}
