#include "agent/nvidia_smi.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <pugixml.hpp>
#include <sstream>

namespace fabrica::agent {
namespace {

std::string text_of(const pugi::xml_node& node, const char* path) {
  std::string value = node.first_element_by_path(path).child_value();
  if (value == "N/A" || value == "[N/A]") return "";
  return value;
}

// "81559 MiB" -> 81559; 0 when absent.
int64_t mib(const std::string& text) { return std::atoll(text.c_str()); }

// "00000000:18:00.0" -> "0000:18:00.0", lower case.
std::string normalise_pci(std::string id) {
  if (id.size() > 12) id = id.substr(id.size() - 12);
  std::transform(id.begin(), id.end(), id.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return id;
}

}  // namespace

Result<std::vector<SmiGpu>> parse_nvidia_smi_xml(std::string_view xml) {
  pugi::xml_document doc;
  auto parsed = doc.load_buffer(xml.data(), xml.size());  // No DTD or entity loading.
  if (!parsed) {
    return fail(ErrorCode::kInvalidArgument,
                std::string("nvidia-smi XML does not parse: ") + parsed.description());
  }
  pugi::xml_node log = doc.child("nvidia_smi_log");
  if (!log) return fail(ErrorCode::kInvalidArgument, "not nvidia-smi -q -x output");
  std::vector<SmiGpu> gpus;
  for (pugi::xml_node g : log.children("gpu")) {
    SmiGpu gpu;
    std::string id = g.attribute("id").value();
    if (id.empty()) id = text_of(g, "pci/pci_bus_id");
    gpu.pci_address = normalise_pci(id);
    gpu.product_name = text_of(g, "product_name");
    gpu.uuid = text_of(g, "uuid");
    gpu.memory_mib = mib(text_of(g, "fb_memory_usage/total"));
    gpu.mig_mode = text_of(g, "mig_mode/current_mig");
    for (pugi::xml_node m : g.child("mig_devices").children("mig_device")) {
      inventory::MigInstance mig;
      mig.gpu_instance_id = std::atoi(text_of(m, "gpu_instance_id").c_str());
      mig.compute_instance_id = std::atoi(text_of(m, "compute_instance_id").c_str());
      mig.memory_mib = mib(text_of(m, "fb_memory_usage/total"));
      gpu.mig_instances.push_back(std::move(mig));
    }
    std::string cluster = text_of(g, "fabric/clusterUuid");
    std::string clique = text_of(g, "fabric/cliqueId");
    if (!cluster.empty() && cluster != "00000000-0000-0000-0000-000000000000") {
      gpu.fabric = cluster + "/" + clique;
    }
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

std::map<std::string, std::vector<SmiMigDevice>> parse_nvidia_smi_list(std::string_view text) {
  std::map<std::string, std::vector<SmiMigDevice>> out;
  std::istringstream in{std::string(text)};
  std::string line, current;
  auto uuid_in = [](const std::string& l) {
    auto pos = l.find("(UUID: ");
    if (pos == std::string::npos) return std::string();
    auto end = l.find(')', pos);
    return l.substr(pos + 7, end == std::string::npos ? std::string::npos : end - pos - 7);
  };
  while (std::getline(in, line)) {
    auto start = line.find_first_not_of(' ');
    if (start == std::string::npos) continue;
    std::string trimmed = line.substr(start);
    if (trimmed.starts_with("GPU ")) {
      current = uuid_in(trimmed);
      out[current];
    } else if (trimmed.starts_with("MIG ") && !current.empty()) {
      std::istringstream words(trimmed.substr(4));
      SmiMigDevice device;
      words >> device.profile;
      device.uuid = uuid_in(trimmed);
      out[current].push_back(std::move(device));
    }
  }
  return out;
}

void merge_nvidia_smi(inventory::HostInventory& inv, const std::vector<SmiGpu>& gpus,
                      const std::map<std::string, std::vector<SmiMigDevice>>& mig_devices) {
  for (const SmiGpu& s : gpus) {
    auto it = std::find_if(inv.gpus.begin(), inv.gpus.end(),
                           [&](const inventory::Gpu& g) { return g.pci_address == s.pci_address; });
    if (it == inv.gpus.end()) {
      inv.gpus.push_back(inventory::Gpu{.pci_address = s.pci_address, .model = s.product_name});
      it = inv.gpus.end() - 1;
    }
    it->product_name = s.product_name;
    it->uuid = s.uuid;
    it->memory_mib = s.memory_mib;
    it->mig_mode = s.mig_mode;
    it->mig_instances = s.mig_instances;
    if (auto devices = mig_devices.find(s.uuid); devices != mig_devices.end()) {
      for (size_t i = 0; i < it->mig_instances.size() && i < devices->second.size(); ++i) {
        it->mig_instances[i].profile = devices->second[i].profile;
        it->mig_instances[i].uuid = devices->second[i].uuid;
      }
    }
    if (!s.fabric.empty()) it->nvlink_domain = s.fabric;
  }
}

Json parse_gpu_monitoring(std::string_view csv) {
  static const char* kFields[] = {
      "uuid",    "utilization_percent", "memory_used_mib", "temperature_c",
      "power_w", "ecc_uncorrected"};
  Json out = Json::array();
  std::istringstream in{std::string(csv)};
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::istringstream row(line);
    std::string cell;
    while (std::getline(row, cell, ',')) {
      auto b = cell.find_first_not_of(' ');
      auto e = cell.find_last_not_of(" \r");
      cells.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
    }
    if (cells.size() != std::size(kFields) || !cells[0].starts_with("GPU-")) continue;
    Json gpu = Json::object();
    gpu["uuid"] = cells[0];
    for (size_t i = 1; i < cells.size(); ++i) {
      char* end = nullptr;
      double v = std::strtod(cells[i].c_str(), &end);
      bool number = !cells[i].empty() && end && *end == '\0';
      gpu[kFields[i]] = number ? Json(v) : Json(nullptr);
    }
    out.push_back(std::move(gpu));
  }
  return out;
}

}  // namespace fabrica::agent
