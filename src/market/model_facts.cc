#include "market/model_facts.h"

#include <algorithm>
#include <cmath>

namespace fabrica::market {
namespace {

int64_t dtype_bytes(std::string_view dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F8_E4M3" || dtype == "F8_E5M2" || dtype == "I8" || dtype == "U8" ||
      dtype == "BOOL") {
    return 1;
  }
  return 0;
}

// torch_dtype names in config.json.
int64_t torch_dtype_bytes(std::string_view dtype) {
  if (dtype == "float32") return 4;
  if (dtype == "float16" || dtype == "bfloat16") return 2;
  if (dtype.starts_with("float8")) return 1;
  return 2;
}

// A positive size from config.json; values past 2^24 (no real model has them) count as absent.
int64_t int_of(const Json& config, std::initializer_list<const char*> keys, int64_t fallback) {
  for (const char* key : keys) {
    auto it = config.find(key);
    if (it != config.end() && it->is_number_integer() && it->get<int64_t>() > 0 &&
        it->get<int64_t>() <= (int64_t{1} << 24)) {
      return it->get<int64_t>();
    }
  }
  return fallback;
}

}  // namespace

Result<int64_t> safetensors_header_length(std::string_view first8) {
  if (first8.size() != 8) {
    return fail(ErrorCode::kInvalidArgument, "a safetensors file is shorter than 8 bytes");
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(first8[i]);
  if (n < 2 || n > 100'000'000) {
    return fail(ErrorCode::kInvalidArgument, "a safetensors header length is out of range");
  }
  return static_cast<int64_t>(n);
}

Result<SafetensorsSummary> parse_safetensors_header(std::string_view header) {
  auto bad = [](const std::string& why) {
    return fail(ErrorCode::kInvalidArgument, "not a safetensors header: " + why);
  };
  auto parsed = parse_json(header);
  if (!parsed || !parsed->is_object()) return bad("not a JSON object");
  SafetensorsSummary out;
  for (const auto& [name, tensor] : parsed->items()) {
    if (name == "__metadata__") continue;
    if (!tensor.is_object() || !tensor.contains("dtype") || !tensor["dtype"].is_string() ||
        !tensor.contains("shape") || !tensor["shape"].is_array() ||
        !tensor.contains("data_offsets") || !tensor["data_offsets"].is_array() ||
        tensor["data_offsets"].size() != 2) {
      return bad("tensor \"" + name.substr(0, 100) + "\" lacks dtype, shape or data_offsets");
    }
    int64_t count = 1;
    for (const Json& d : tensor["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (int64_t{1} << 40)) {
        return bad("tensor \"" + name.substr(0, 100) + "\" has a bad shape");
      }
      int64_t n = d.get<int64_t>();
      if (n > 0 && count > (int64_t{1} << 50) / n) return bad("a tensor is impossibly large");
      count *= n;
    }
    const Json& off = tensor["data_offsets"];
    if (!off[0].is_number_integer() || !off[1].is_number_integer() || off[0].get<int64_t>() < 0 ||
        off[1].get<int64_t>() > (int64_t{1} << 50) ||
        off[1].get<int64_t>() < off[0].get<int64_t>()) {
      return bad("tensor \"" + name.substr(0, 100) + "\" has bad data_offsets");
    }
    std::string dtype = tensor["dtype"].get<std::string>();
    if (out.parameters > (int64_t{1} << 60) || out.bytes > (int64_t{1} << 60)) {
      return bad("the tensors add up to an impossible size");
    }
    out.parameters += count;
    out.bytes += off[1].get<int64_t>() - off[0].get<int64_t>();
    out.dtypes[dtype] += count;
  }
  return out;
}

const std::vector<GpuMemory>& known_gpus() {
  static const std::vector<GpuMemory> gpus = {
      {"GB200", 189'471},      {"H200", 143'771},       {"GH200", 97'871},
      {"H100", 81'559},        {"A100-80GB", 81'920},   {"L40S", 46'068},
      {"A100-40GB", 40'960},   {"MIG 7g.80gb", 81'559}, {"MIG 4g.40gb", 40'448},
      {"MIG 3g.40gb", 40'448}, {"MIG 2g.20gb", 20'096}, {"MIG 1g.20gb", 20'096},
      {"MIG 1g.10gb", 9'856},
  };
  return gpus;
}

int largest_tensor_parallel(const std::vector<int>& sizes, int gpus) {
  int best = 1;
  for (int s : sizes) {
    if (s <= gpus) best = std::max(best, s);
  }
  return best;
}

Result<Json> model_facts(const Json& config, const std::vector<SafetensorsSummary>& shards) {
  if (!config.is_object()) {
    return fail(ErrorCode::kInvalidArgument, "config.json is not a JSON object", "config.json");
  }
  // Multimodal configs keep the language model's numbers under text_config.
  const Json& text = config.contains("text_config") && config["text_config"].is_object()
                         ? config["text_config"]
                         : config;
  int64_t heads = int_of(text, {"num_attention_heads", "n_head"}, 0);
  int64_t layers = int_of(text, {"num_hidden_layers", "n_layer"}, 0);
  if (heads == 0 || layers == 0) {
    return fail(ErrorCode::kInvalidArgument,
                "config.json names no num_attention_heads or num_hidden_layers: not a "
                "transformers language model",
                "config.json");
  }
  int64_t kv_heads = int_of(text, {"num_key_value_heads"}, heads);
  int64_t hidden = int_of(text, {"hidden_size", "n_embd"}, 0);
  int64_t head_dim = int_of(text, {"head_dim"}, hidden > 0 ? hidden / heads : 0);
  int64_t context = int_of(text, {"max_position_embeddings", "n_positions"}, 0);
  std::string torch_dtype = text.value("torch_dtype", config.value("torch_dtype", ""));

  int64_t parameters = 0, weight_bytes = 0;
  std::map<std::string, int64_t> dtypes;
  for (const auto& s : shards) {
    if (parameters > (int64_t{1} << 60) || weight_bytes > (int64_t{1} << 60)) {
      return fail(ErrorCode::kInvalidArgument,
                  "the safetensors files add up to an impossible size");
    }
    parameters += s.parameters;
    weight_bytes += s.bytes;
    for (const auto& [d, n] : s.dtypes) dtypes[d] += n;
  }
  std::string dtype = torch_dtype;
  if (!dtypes.empty()) {
    dtype = std::max_element(dtypes.begin(), dtypes.end(), [](auto& a, auto& b) {
              return a.second < b.second;
            })->first;
  }
  int64_t kv_element =
      dtypes.empty() ? torch_dtype_bytes(torch_dtype) : std::max<int64_t>(1, dtype_bytes(dtype));
  // Each factor is at most 2^24 (int_of), so the product fits in a double exactly enough.
  double kv = 2.0 * static_cast<double>(layers) * static_cast<double>(kv_heads) *
              static_cast<double>(head_dim) * static_cast<double>(kv_element);
  if (kv > 1e15) {
    return fail(ErrorCode::kInvalidArgument, "config.json describes an impossibly large KV cache",
                "config.json");
  }
  int64_t kv_per_token = static_cast<int64_t>(kv);
  std::vector<int> tp;
  for (int s = 1; s <= 64 && s <= heads; ++s) {
    if (heads % s == 0) tp.push_back(s);
  }
  int64_t kv_tokens = context > 0 ? std::min<int64_t>(context, 4096) : 4096;
  int64_t need = weight_bytes + kv_per_token * kv_tokens + (int64_t{1} << 30);
  Json fits = Json::array();
  for (const auto& gpu : known_gpus()) {
    if (static_cast<double>(need) <= 0.9 * static_cast<double>(gpu.mib) * 1048576.0) {
      fits.push_back(gpu.name);
    }
  }
  Json j = {
      {"architecture",
       text.contains("architectures") && text["architectures"].is_array() &&
               !text["architectures"].empty() && text["architectures"][0].is_string()
           ? text["architectures"][0]
           : (config.contains("architectures") && config["architectures"].is_array() &&
                      !config["architectures"].empty()
                  ? config["architectures"][0]
                  : Json(""))},
      {"model_type", config.value("model_type", "")},
      {"parameters", parameters},
      {"dtype", dtype},
      {"layers", layers},
      {"heads", heads},
      {"kv_heads", kv_heads},
      {"head_dim", head_dim},
      {"context_length", context},
      {"weight_bytes", weight_bytes},
      {"weight_gib", std::round(static_cast<double>(weight_bytes) / 1073741824.0 * 100) / 100},
      {"kv_bytes_per_token", kv_per_token},
      {"tensor_parallel_sizes", tp},
      {"memory_needed_bytes", need},
      {"fits", fits}};
  return j;
}

}  // namespace fabrica::market
