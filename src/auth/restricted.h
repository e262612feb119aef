#pragma once

#include <span>
#include <string_view>

#include "auth/authorizer.h"
#include "core/json.h"

namespace fabrica::auth {

// Input fields only infrastructure administrators may set: everything that names a file,
// device, bridge or raw hypervisor setting of a host (OpenNebula's RESTRICTED_ATTR). One list
// for every object, enforced by check_restricted() wherever such a body is accepted, so a
// new host-facing field is added here once and is closed everywhere.
struct RestrictedField {
  // The body a field lives in: "vm" (VM create, templates, instantiate overrides, resize,
  // disk and NIC changes all carry the VM shape), "image", "datastore", "vnet".
  std::string_view object;
  // The field as the API names it; "[]" stands for every element of an array
  // ("request.vfs[].pf" covers request.vfs[0].pf, request.vfs[1].pf, ...).
  std::string_view field;
  std::string_view names;  // What it names on the host, for the refusal ("a file on the host").
};

// The declared list (docs/architecture.md prints it for operators).
std::span<const RestrictedField> restricted_fields();

// Whether `caller` may submit `proposed`, an `object` body in API form. Infrastructure
// administrators may set anything. Anyone else may only leave each restricted field unset
// (absent, null, "" or an empty array) or exactly as it is in `base`: the stored object being
// changed, or an administrator's template being instantiated (null base: a new object).
// kPermissionDenied naming the first field set or changed ("os.initrd", "request.vfs[0].pf").
Result<void> check_restricted(const Caller& caller, std::string_view object, const Json& proposed,
                              const Json& base = Json());

}  // namespace fabrica::auth
