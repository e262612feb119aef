#include "core/attributes.h"

#include <algorithm>

namespace fabrica {
namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

std::string join(const std::string& path, std::string_view name) {
  return path.empty() ? std::string(name) : path + "/" + std::string(name);
}

}  // namespace

bool valid_attribute_name(std::string_view name) {
  if (name.empty() || name.size() > AttributeTree::kMaxNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

Result<AttributeTree> AttributeTree::scalar(const Json& json, const std::string& path) {
  AttributeTree leaf;
  leaf.is_value_ = true;
  if (json.is_string()) {
    leaf.value_ = json.get<std::string>();
  } else if (json.is_number() || json.is_boolean()) {
    leaf.value_ = json.dump();
  } else {
    return fail(ErrorCode::kInvalidArgument,
                "attribute value must be a string, number, "
                "boolean or object",
                "template/" + path);
  }
  if (leaf.value_.size() > kMaxValueLength) {
    return fail(ErrorCode::kInvalidArgument, "attribute value longer than 65536 bytes",
                "template/" + path);
  }
  return leaf;
}

Result<AttributeTree> AttributeTree::from_json(const Json& json) {
  size_t count = 0;
  if (!json.is_object()) return fail(ErrorCode::kInvalidArgument, "must be an object", "template");
  return from_json_at(json, "", 0, count);
}

Result<AttributeTree> AttributeTree::from_json_at(const Json& json, const std::string& path,
                                                  size_t depth, size_t& count) {
  if (!json.is_object()) return scalar(json, path);
  if (depth >= kMaxDepth) {
    return fail(ErrorCode::kInvalidArgument, "attributes nested deeper than 8 levels",
                "template/" + path);
  }
  AttributeTree tree;
  for (auto it = json.begin(); it != json.end(); ++it) {
    std::string child_path = join(path, it.key());
    if (!valid_attribute_name(it.key())) {
      return fail(ErrorCode::kInvalidArgument,
                  "attribute names are 1-128 characters of A-Z a-z 0-9 _ . -",
                  "template/" + child_path);
    }
    std::vector<const Json*> items;
    if (it->is_array()) {
      for (const Json& item : *it) {
        if (item.is_array()) {
          return fail(ErrorCode::kInvalidArgument, "nested arrays are not allowed",
                      "template/" + child_path);
        }
        items.push_back(&item);
      }
    } else {
      items.push_back(&*it);
    }
    for (const Json* item : items) {
      if (++count > kMaxAttributes) {
        return fail(ErrorCode::kInvalidArgument, "more than 4096 attributes", "template");
      }
      FAB_ASSIGN_OR_RETURN(AttributeTree child, from_json_at(*item, child_path, depth + 1, count));
      tree.children_.emplace_back(it.key(), std::move(child));
    }
  }
  tree.sort_children();
  return tree;
}

void AttributeTree::sort_children() {
  std::stable_sort(children_.begin(), children_.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
}

Json AttributeTree::to_json() const {
  if (is_value_) return value_;
  Json out = Json::object();
  for (const auto& [name, child] : children_) {
    Json value = child.to_json();
    auto it = out.find(name);
    if (it == out.end()) {
      out[name] = std::move(value);
    } else if (it->is_array()) {
      it->push_back(std::move(value));
    } else {
      Json first = std::move(*it);
      *it = Json::array({std::move(first), std::move(value)});
    }
  }
  return out;
}

std::optional<std::string> AttributeTree::get(std::string_view path) const {
  const AttributeTree* node = this;
  for (std::string_view part : split_path(path)) {
    const AttributeTree* next = nullptr;
    for (const auto& [name, child] : node->children_) {
      if (name == part) {
        next = &child;
        break;
      }
    }
    if (next == nullptr) return std::nullopt;
    node = next;
  }
  if (!node->is_value_) return std::nullopt;
  return node->value_;
}

Result<void> AttributeTree::set(std::string_view path, std::string value) {
  if (value.size() > kMaxValueLength) {
    return fail(ErrorCode::kInvalidArgument, "attribute value longer than 65536 bytes",
                "template/" + std::string(path));
  }
  auto parts = split_path(path);
  if (parts.size() > kMaxDepth) {
    return fail(ErrorCode::kInvalidArgument, "attributes nested deeper than 8 levels",
                "template/" + std::string(path));
  }
  AttributeTree* node = this;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!valid_attribute_name(parts[i])) {
      return fail(ErrorCode::kInvalidArgument,
                  "attribute names are 1-128 characters of A-Z a-z 0-9 _ . -",
                  "template/" + std::string(path));
    }
    if (node->is_value_) {
      return fail(ErrorCode::kInvalidArgument, "a prefix of the path is a value",
                  "template/" + std::string(path));
    }
    AttributeTree* next = nullptr;
    for (auto& [name, child] : node->children_) {
      if (name == parts[i]) {
        next = &child;
        break;
      }
    }
    if (next == nullptr) {
      node->children_.emplace_back(std::string(parts[i]), AttributeTree());
      node->sort_children();
      for (auto& [name, child] : node->children_) {
        if (name == parts[i]) next = &child;
      }
    }
    node = next;
  }
  if (!node->children_.empty()) {
    return fail(ErrorCode::kInvalidArgument, "the path names a vector attribute",
                "template/" + std::string(path));
  }
  node->is_value_ = true;
  node->value_ = std::move(value);
  return {};
}

size_t AttributeTree::remove(std::string_view path) {
  auto slash = path.rfind('/');
  AttributeTree* parent = this;
  std::string_view leaf = path;
  if (slash != std::string_view::npos) {
    std::string_view prefix = path.substr(0, slash);
    leaf = path.substr(slash + 1);
    for (std::string_view part : split_path(prefix)) {
      AttributeTree* next = nullptr;
      for (auto& [name, child] : parent->children_) {
        if (name == part) {
          next = &child;
          break;
        }
      }
      if (next == nullptr) return 0;
      parent = next;
    }
  }
  return std::erase_if(parent->children_, [&](const auto& c) { return c.first == leaf; });
}

}  // namespace fabrica
