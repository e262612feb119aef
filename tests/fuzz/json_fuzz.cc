// The JSON reader every API body goes through: parse, then read it as a handler would.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = fabrica::parse_json(text);
  if (parsed) (void)fabrica::dump_json(*parsed);
  auto reader = fabrica::JsonObjectReader::parse(text);
  if (!reader) return 0;
  (void)reader->optional_string("name");
  (void)reader->optional_int("gid");
  (void)reader->optional_bool("persistent");
  (void)reader->optional_array("clusters");
  (void)reader->optional_object("request");
  (void)reader->finish();
  return 0;
}
