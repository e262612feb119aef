#include "market/model_facts.h"

#include <gtest/gtest.h>

namespace fabrica::market {
namespace {

// A Qwen3-0.6B-like config: 16 heads, 8 KV heads, 28 layers, head_dim 128.
Json qwen_config() {
  return Json{{"architectures", {"Qwen3ForCausalLM"}},
              {"model_type", "qwen3"},
              {"num_attention_heads", 16},
              {"num_key_value_heads", 8},
              {"num_hidden_layers", 28},
              {"hidden_size", 1024},
              {"head_dim", 128},
              {"max_position_embeddings", 40960},
              {"torch_dtype", "bfloat16"}};
}

TEST(ModelFactsTest, SafetensorsHeadersCountParametersPerDtype) {
  auto summary = parse_safetensors_header(
      R"({"__metadata__":{"format":"pt"},
          "a":{"dtype":"BF16","shape":[1024,16],"data_offsets":[0,32768]},
          "b":{"dtype":"F32","shape":[8],"data_offsets":[32768,32800]}})");
  ASSERT_TRUE(summary) << summary.error().message();
  EXPECT_EQ(summary->parameters, 1024 * 16 + 8);
  EXPECT_EQ(summary->bytes, 32800);
  EXPECT_EQ(summary->dtypes.at("BF16"), 1024 * 16);
  EXPECT_FALSE(parse_safetensors_header(R"({"a":{"dtype":"BF16"}})"));
  EXPECT_FALSE(parse_safetensors_header("not json"));
  EXPECT_FALSE(parse_safetensors_header(
      R"({"a":{"dtype":"BF16","shape":[1099511627776,1099511627776,1099511627776],"data_offsets":[0,2]}})"));
  EXPECT_FALSE(
      parse_safetensors_header(R"({"a":{"dtype":"BF16","shape":[2],"data_offsets":[8,4]}})"));
  std::string eight("\x10\x00\x00\x00\x00\x00\x00\x00", 8);
  EXPECT_EQ(*safetensors_header_length(eight), 16);
  EXPECT_FALSE(safetensors_header_length(std::string(8, '\xff')));
}

TEST(ModelFactsTest, TensorParallelSizesDivideTheHeadsAndSizingNamesTheGpusThatHoldIt) {
  // 0.6 B parameters in BF16: 1.2 GB of weights.
  SafetensorsSummary shard{
      .parameters = 600'000'000, .bytes = 1'200'000'000, .dtypes = {{"BF16", 600'000'000}}};
  auto facts = model_facts(qwen_config(), {shard});
  ASSERT_TRUE(facts) << facts.error().message();
  EXPECT_EQ((*facts)["tensor_parallel_sizes"], Json({1, 2, 4, 8, 16}));
  EXPECT_EQ((*facts)["heads"], 16);
  EXPECT_EQ((*facts)["kv_heads"], 8);
  EXPECT_EQ((*facts)["dtype"], "BF16");
  EXPECT_EQ((*facts)["architecture"], "Qwen3ForCausalLM");
  EXPECT_EQ((*facts)["parameters"], 600'000'000);
  // 2 (K and V) x 28 layers x 8 KV heads x 128 x 2 bytes.
  EXPECT_EQ((*facts)["kv_bytes_per_token"], 2 * 28 * 8 * 128 * 2);
  auto fits = (*facts)["fits"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(fits.begin(), fits.end(), "H100"), fits.end());
  EXPECT_NE(std::find(fits.begin(), fits.end(), "MIG 1g.10gb"), fits.end());

  // 70 B in BF16 (140 GB) fits no single 80 GB GPU, but a GB200 or H200 does not either.
  SafetensorsSummary big{
      .parameters = 70'000'000'000, .bytes = 140'000'000'000, .dtypes = {{"BF16", 70'000'000'000}}};
  Json llama = qwen_config();
  llama["num_attention_heads"] = 64;
  auto large = model_facts(llama, {big});
  ASSERT_TRUE(large);
  auto large_fits = (*large)["fits"].get<std::vector<std::string>>();
  EXPECT_EQ(std::find(large_fits.begin(), large_fits.end(), "H100"), large_fits.end());
  EXPECT_NE(std::find(large_fits.begin(), large_fits.end(), "GB200"), large_fits.end());
}

TEST(ModelFactsTest, TheLargestLegalTensorParallelSizeNeverExceedsTheGpus) {
  std::vector<int> sizes = {1, 2, 4, 8, 16};
  EXPECT_EQ(largest_tensor_parallel(sizes, 1), 1);
  EXPECT_EQ(largest_tensor_parallel(sizes, 3), 2);
  EXPECT_EQ(largest_tensor_parallel(sizes, 6), 4);
  EXPECT_EQ(largest_tensor_parallel(sizes, 8), 8);
  EXPECT_EQ(largest_tensor_parallel({1, 2, 3, 4, 6, 12}, 5), 4);
}

TEST(ModelFactsTest, AConfigWithoutHeadsIsNotALanguageModel) {
  auto facts = model_facts(Json{{"model_type", "bert"}}, {});
  ASSERT_FALSE(facts);
  EXPECT_EQ(facts.error().field(), "config.json");
}

}  // namespace
}  // namespace fabrica::market
