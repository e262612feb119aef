#include "auth/restricted.h"

#include <optional>
#include <string>

namespace fabrica::auth {
namespace {

constexpr RestrictedField kFields[] = {
    {"vm", "os.kernel", "a kernel file on the host (boot a KERNEL image: os.kernel_image_id)"},
    {"vm", "os.initrd", "an initrd file on the host (boot a RAMDISK image: os.initrd_image_id)"},
    {"vm", "request.vfs[].pf", "a physical network interface of the host"},
    {"image", "path", "a file on fabricad's machine"},
    {"datastore", "path", "a directory on the hosts"},
    {"vnet", "bridge", "a bridge on the hosts"},
    {"vnet", "phydev", "a physical network interface of the hosts"},
};

bool unset(const Json* value) {
  return value == nullptr || value->is_null() ||
         (value->is_string() && value->get_ref<const std::string&>().empty()) ||
         (value->is_array() && value->empty()) || (value->is_object() && value->empty());
}

const Json* member(const Json* object, std::string_view key) {
  if (object == nullptr || !object->is_object()) return nullptr;
  auto it = object->find(std::string(key));
  return it == object->end() ? nullptr : &*it;
}

// Walks `path` ("a.b[].c") in `proposed` and `base` side by side; the first element of
// `proposed` that is set and differs from the same element of `base`, as its API name.
std::optional<std::string> first_change(std::string_view path, const Json* proposed,
                                        const Json* base, const std::string& shown) {
  if (path.empty()) {
    if (unset(proposed)) return std::nullopt;
    if (base != nullptr && *proposed == *base) return std::nullopt;
    return shown;
  }
  size_t end = path.find_first_of(".[");
  std::string_view key = path.substr(0, end);
  std::string_view rest = end == std::string_view::npos ? "" : path.substr(end);
  std::string name = shown.empty() ? std::string(key) : shown + "." + std::string(key);
  const Json* p = member(proposed, key);
  const Json* b = member(base, key);
  if (rest.starts_with("[]")) {
    rest.remove_prefix(2);
    if (rest.starts_with(".")) rest.remove_prefix(1);
    if (p == nullptr || !p->is_array()) return first_change(rest, p, b, name);
    for (size_t i = 0; i < p->size(); ++i) {
      const Json* bi = b != nullptr && b->is_array() && i < b->size() ? &(*b)[i] : nullptr;
      auto found = first_change(rest, &(*p)[i], bi, name + "[" + std::to_string(i) + "]");
      if (found) return found;
    }
    return std::nullopt;
  }
  if (rest.starts_with(".")) rest.remove_prefix(1);
  return first_change(rest, p, b, name);
}

}  // namespace

std::span<const RestrictedField> restricted_fields() { return kFields; }

Result<void> check_restricted(const Caller& caller, std::string_view object, const Json& proposed,
                              const Json& base) {
  if (caller.is_superuser()) return {};
  for (const RestrictedField& f : kFields) {
    if (f.object != object) continue;
    auto changed = first_change(f.field, &proposed, base.is_null() ? nullptr : &base, "");
    if (!changed) continue;
    return fail(ErrorCode::kPermissionDenied,
                *changed + " names " + std::string(f.names) +
                    "; only infrastructure administrators may set it",
                *changed);
  }
  return {};
}

}  // namespace fabrica::auth
