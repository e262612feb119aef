#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "auth/authorizer.h"
#include "auth/identity.h"
#include "core/attributes.h"
#include "core/clock.h"
#include "core/object.h"
#include "store/store.h"

namespace fabrica::auth {

// The kinds of resource a VDC grants, by id. Each kind knows the object type it grants and,
// once its objects exist in this build, the store type that proves an id is real.
struct VdcResourceKind {
  std::string_view name;         // "cluster", "host", "datastore", "vnet", "marketplace"
  ObjectType type;               // CLUSTER, HOST, DATASTORE, NET, MARKETPLACE
  std::string_view record_type;  // Store type checked on add; empty until the type exists.
};
std::span<const VdcResourceKind> vdc_resource_kinds();
const VdcResourceKind* vdc_resource_kind(std::string_view name);

struct VdcResource {
  std::string kind;
  int64_t id = -1;
  friend bool operator==(const VdcResource&, const VdcResource&) = default;
};

// A Virtual Data Center: groups plus the resources they may use. Its ACL rules are
// generated from exactly these and nothing else, and change in the same transaction.
struct Vdc {
  ObjectHeader header;
  std::vector<int64_t> groups;
  std::vector<VdcResource> resources;
  std::vector<int64_t> rules;  // Ids of the ACL rules it owns.
  AttributeTree attributes;
  int64_t version = 0;
  Json to_api_json() const;
};

// The rules a VDC implies: for every group G, a cluster C gives `@G CLUSTER/#C USE`,
// `@G HOST/%C USE` and `@G DATASTORE+NET/%C USE`; a host, datastore, vnet or marketplace
// gives USE on itself (a marketplace's tenants may import through it).
std::vector<std::string> vdc_rule_texts(const Vdc& vdc);

// VDCs: the infrastructure administrators define them; members of a VDC's groups may read
// it (so a tenant sees what it was given). Thread-safe.
class Vdcs {
 public:
  Vdcs(store::Store& store, Authorizer& authorizer, const Clock& clock)
      : store_(store), authorizer_(authorizer), clock_(clock) {}

  Result<Vdc> create(const Caller& caller, const std::string& name, const AttributeTree& attrs);
  Result<Vdc> get(const Caller& caller, int64_t id);
  Result<std::vector<Vdc>> list(const Caller& caller);
  // Removes the VDC and every rule only it needed.
  Result<void> remove(const Caller& caller, int64_t id);
  Result<Vdc> add_group(const Caller& caller, int64_t id, int64_t gid);
  Result<Vdc> remove_group(const Caller& caller, int64_t id, int64_t gid);
  Result<Vdc> add_resource(const Caller& caller, int64_t id, const VdcResource& resource);
  Result<Vdc> remove_resource(const Caller& caller, int64_t id, const VdcResource& resource);

 private:
  template <typename Fn>
  Result<Vdc> mutate(const Caller& caller, int64_t id, Fn&& change);

  store::Store& store_;
  Authorizer& authorizer_;
  const Clock& clock_;
};

inline constexpr std::string_view kVdcType = "vdc";

// VDCs that include group `gid` (the identity service refuses to delete such a group).
Result<std::vector<int64_t>> vdcs_with_group(store::Transaction& tx, int64_t gid);
// Removes a deleted resource from every VDC (and the rules it implied), in the deleting
// transaction.
Result<void> vdc_forget_resource(store::Transaction& tx, std::string_view kind, int64_t id);

}  // namespace fabrica::auth
