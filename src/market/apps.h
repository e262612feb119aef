#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "auth/authorizer.h"
#include "compute/compute.h"
#include "core/clock.h"
#include "core/object.h"
#include "endpoints/endpoints.h"
#include "storage/storage.h"
#include "store/store.h"

namespace fabrica::market {

// What an app makes: a VM from a template, an image, or a service (the services work).
enum class AppKind { kVmTemplate, kImage, kServiceTemplate };
std::string_view app_kind_name(AppKind kind);

// What the app asks of a host's GPUs, for people choosing where to run it.
struct AppGpus {
  int count = 0;
  int64_t min_memory_mib = 0;
  std::vector<std::string> mig_profiles;
};

// An app in the built-in local catalogue, published by an administrator from a template or
// an image of the cloud. `appliance` names what instantiating it does besides making the VM:
// "vllm" serves a MODEL image and registers the VM as a backend of the tenant's endpoint.
struct App {
  ObjectHeader header;  // Owned by its publisher; permissions 0604 public, 0600 per VDC.
  AppKind kind = AppKind::kVmTemplate;
  int64_t template_id = -1;  // kVmTemplate.
  int64_t image_id = -1;     // kImage.
  Json service;              // kServiceTemplate: the service's roles, kept for the services work.
  std::string appliance;     // "" or "vllm".
  std::string publisher;
  std::string version;
  std::string description;
  std::string licence;
  AppGpus gpus;
  int64_t version_counter = 0;
  bool is_public() const { return header.permissions.bits() == 0604; }
  Json to_api_json() const;
};

struct NewApp {
  std::string name;
  AppKind kind = AppKind::kVmTemplate;
  std::optional<int64_t> template_id;
  std::optional<int64_t> image_id;
  Json service;
  std::string appliance;
  std::string publisher;
  std::string version;
  std::string description;
  std::string licence;
  AppGpus gpus;
  bool is_public = false;
};

// The inputs of the vLLM appliance (and the name of the VM).
struct Instantiate {
  std::string name;
  std::optional<int64_t> gid;
  std::optional<int64_t> model_id;               // A READY MODEL image (raw ext4 volume).
  int gpus = -1;                                 // -1: the template's count.
  std::optional<std::string> served_model_name;  // Default: the model's repository.
  std::optional<int64_t> max_model_len;
  std::optional<double> gpu_memory_utilization;
  std::optional<std::string> dtype;
  std::optional<std::string> quantization;
  std::optional<std::string> extra_args;
};

struct Instantiated {
  compute::Vm vm;
  int64_t endpoint_id = -1;  // The appliance's endpoint; -1 for other apps.
};

// Apps: administrators publish templates and images as apps (`fabrica app create`); tenants
// see the public ones and those their VDC lists (`fabrica vdc addapp`), and instantiate them.
// Thread-safe.
class Apps {
 public:
  Apps(store::Store& store, auth::Authorizer& authorizer, const Clock& clock,
       compute::Compute& compute, storage::Storage& storage, endpoints::Endpoints& endpoints)
      : store_(store),
        authorizer_(authorizer),
        clock_(clock),
        compute_(compute),
        storage_(storage),
        endpoints_(endpoints) {}

  // Superusers only; the template or image must exist (and not be another tenant's secret:
  // publishing makes it usable through the app).
  Result<App> create(const auth::Caller& caller, const NewApp& request);
  Result<App> get(const auth::Caller& caller, int64_t id);
  Result<auth::Page<App>> list(const auth::Caller& caller, const auth::ListOptions& options);
  Result<void> remove(const auth::Caller& caller, int64_t id);
  // A VM from a kVmTemplate app. For "vllm": the MODEL disk read-only, the appliance's
  // context (served name, tensor-parallel sizes the heads allow, vLLM settings, a fresh backend
  // secret) and the tenant's endpoint for the served name, made or joined.
  Result<Instantiated> instantiate(const auth::Caller& caller, int64_t id,
                                   const Instantiate& request);

 private:
  Result<App> load(store::Transaction& tx, const auth::Caller& caller, int64_t id, Right right);

  store::Store& store_;
  auth::Authorizer& authorizer_;
  const Clock& clock_;
  compute::Compute& compute_;
  storage::Storage& storage_;
  endpoints::Endpoints& endpoints_;
};

inline constexpr std::string_view kAppType = "app";

}  // namespace fabrica::market
