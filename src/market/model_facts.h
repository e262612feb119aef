#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/json.h"

namespace fabrica::market {

// What one safetensors file's header says: parameters per dtype ("BF16", "F32", ...).
struct SafetensorsSummary {
  int64_t parameters = 0;
  int64_t bytes = 0;  // Of tensor data, from the offsets.
  std::map<std::string, int64_t> dtypes;
};
// `header` is the JSON after the file's 8-byte little-endian length. kInvalidArgument when it
// is not a safetensors header (a tensor without dtype, shape or data_offsets).
Result<SafetensorsSummary> parse_safetensors_header(std::string_view header);
// The header's length from a file's first 8 bytes; kInvalidArgument past 100 MB (the format's
// own limit).
Result<int64_t> safetensors_header_length(std::string_view first8);

// A GPU, or a MIG slice of one, a model may be placed on.
struct GpuMemory {
  std::string name;  // "H100", "MIG 1g.10gb", ...
  int64_t mib = 0;
};
// The GPU models and MIG profiles Fabrica sizes models against (NVIDIA's published memory).
const std::vector<GpuMemory>& known_gpus();

// The facts a model's config.json and safetensors headers give, as stored in a MODEL image:
// architecture, model_type, parameters, dtype, layers, heads, kv_heads, head_dim,
// context_length, weight_bytes, weight_gib, kv_bytes_per_token, tensor_parallel_sizes (the
// divisors of the attention heads up to 64: vLLM refuses others), and fits: the GPUs and MIG
// profiles whose memory holds the weights, a KV cache for min(context, 4096) tokens and 1 GiB
// of runtime, at 90% utilisation. kInvalidArgument naming config.json when it is not a
// transformers config (no heads or layers).
Result<Json> model_facts(const Json& config, const std::vector<SafetensorsSummary>& shards);

// The largest tensor-parallel size in `sizes` that is at most `gpus` (1 when none is).
int largest_tensor_parallel(const std::vector<int>& sizes, int gpus);

}  // namespace fabrica::market
