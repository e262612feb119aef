#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "core/error.h"

namespace fabrica {

using Json = nlohmann::json;

// Parses JSON text without throwing. Invalid JSON or invalid UTF-8 is kInvalidArgument.
Result<Json> parse_json(std::string_view text);

// Serialises without throwing; invalid UTF-8 in strings is replaced, never passed through.
std::string dump_json(const Json& value);

// Reads a request body object field by field with strict validation: wrong types and
// unknown fields are kInvalidArgument naming the field. Call finish() after the last read.
class JsonObjectReader {
 public:
  // kInvalidArgument unless `body` is a JSON object.
  static Result<JsonObjectReader> parse(std::string_view body);
  static Result<JsonObjectReader> wrap(Json object, std::string prefix = {});

  Result<std::string> required_string(std::string_view key);
  Result<std::optional<std::string>> optional_string(std::string_view key);
  Result<std::optional<int64_t>> optional_int(std::string_view key);
  Result<int64_t> required_int(std::string_view key);
  Result<std::optional<bool>> optional_bool(std::string_view key);
  // Any JSON number (integer or not).
  Result<std::optional<double>> optional_number(std::string_view key);
  // Any JSON object (not validated further here).
  Result<std::optional<Json>> optional_object(std::string_view key);
  Result<std::optional<Json>> optional_array(std::string_view key);
  // kInvalidArgument naming the first field that was never read.
  Result<void> finish() const;

 private:
  JsonObjectReader(Json object, std::string prefix)
      : object_(std::move(object)), prefix_(std::move(prefix)) {}
  const Json* find(std::string_view key);
  std::string field(std::string_view key) const { return prefix_ + std::string(key); }

  Json object_;
  std::string prefix_;
  std::set<std::string, std::less<>> seen_;
};

}  // namespace fabrica
