#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/json.h"

namespace fabrica {

// A free-form attribute tree (an OpenNebula "template"): each attribute is either a string
// value or a vector of named sub-attributes; a name may repeat (several DISK entries).
// JSON form: objects are vectors, arrays are repeated names, scalars are values (numbers
// and booleans are accepted on input and kept as their JSON text). Children are kept in
// name order, so to_json(from_json(x)) is stable. Not thread-safe; a plain value type.
class AttributeTree {
 public:
  static constexpr size_t kMaxDepth = 8;
  static constexpr size_t kMaxNameLength = 128;
  static constexpr size_t kMaxValueLength = 64 * 1024;
  static constexpr size_t kMaxAttributes = 4096;

  AttributeTree() = default;

  // Builds a tree from a JSON object. kInvalidArgument (with field = the attribute path)
  // for bad names, nulls, nested arrays, or a tree past the limits above.
  static Result<AttributeTree> from_json(const Json& json);
  Json to_json() const;

  bool is_value() const { return is_value_; }
  const std::string& value() const { return value_; }
  const std::vector<std::pair<std::string, AttributeTree>>& children() const { return children_; }
  bool empty() const { return !is_value_ && children_.empty(); }

  // First value at a '/'-separated path ("CONTEXT/HOSTNAME"), or nullopt.
  std::optional<std::string> get(std::string_view path) const;
  // Sets the value at `path`, creating vectors on the way and replacing the first match.
  // kInvalidArgument for a bad name or when a path prefix is a value.
  Result<void> set(std::string_view path, std::string value);
  // Removes every attribute named by `path`; returns how many were removed.
  size_t remove(std::string_view path);

  friend bool operator==(const AttributeTree&, const AttributeTree&) = default;

 private:
  static Result<AttributeTree> from_json_at(const Json& json, const std::string& path, size_t depth,
                                            size_t& count);
  static Result<AttributeTree> scalar(const Json& json, const std::string& path);
  void sort_children();

  bool is_value_ = false;
  std::string value_;
  std::vector<std::pair<std::string, AttributeTree>> children_;
};

// True when `name` is a valid attribute name: 1..128 of [A-Za-z0-9_.-].
bool valid_attribute_name(std::string_view name);

}  // namespace fabrica
