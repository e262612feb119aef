#include "core/attributes.h"

#include <gtest/gtest.h>

namespace fabrica {
namespace {

TEST(AttributeTreeTest, RoundTripsNestedAndRepeatedAttributes) {
  Json in = Json::parse(R"({
    "CPU": "4", "MEMORY": 8192, "PINNED": true,
    "CONTEXT": {"HOSTNAME": "vm-1", "SSH_PUBLIC_KEY": "ssh-ed25519 AAAA"},
    "DISK": [{"IMAGE_ID": "3"}, {"IMAGE_ID": "5", "SIZE": "10G"}]
  })");
  auto tree = AttributeTree::from_json(in);
  ASSERT_TRUE(tree) << tree.error().message();
  EXPECT_EQ(tree->get("MEMORY"), "8192");
  EXPECT_EQ(tree->get("PINNED"), "true");
  EXPECT_EQ(tree->get("CONTEXT/HOSTNAME"), "vm-1");
  EXPECT_EQ(tree->get("DISK/IMAGE_ID"), "3");
  Json out = tree->to_json();
  EXPECT_EQ(out["DISK"].size(), 2u);
  EXPECT_EQ(out["DISK"][1]["SIZE"], "10G");
  EXPECT_EQ(out["MEMORY"], "8192");
  auto again = AttributeTree::from_json(out);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *tree);
  EXPECT_EQ(again->to_json(), out);
}

TEST(AttributeTreeTest, RejectsBadNamesNullsNestedArraysAndDepth) {
  struct Case {
    const char* json;
    const char* field;
  };
  const Case cases[] = {
      {R"({"bad name": "x"})", "template/bad name"},
      {R"({"A": null})", "template/A"},
      {R"({"A": [[1]]})", "template/A"},
      {R"({"A": {"B": {"C": {"D": {"E": {"F": {"G": {"H": {"I": "x"}}}}}}}}})",
       "template/A/B/C/D/E/F/G/H"},
  };
  for (const Case& c : cases) {
    auto tree = AttributeTree::from_json(Json::parse(c.json));
    ASSERT_FALSE(tree) << c.json;
    EXPECT_EQ(tree.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(tree.error().field(), c.field);
  }
  EXPECT_FALSE(AttributeTree::from_json(Json::array()));
  Json big = Json::object();
  big["V"] = std::string(AttributeTree::kMaxValueLength + 1, 'x');
  EXPECT_FALSE(AttributeTree::from_json(big));
}

TEST(AttributeTreeTest, SetGetAndRemoveByPath) {
  AttributeTree tree;
  ASSERT_TRUE(tree.set("CONTEXT/HF_MODEL_ID", "meta-llama/Llama-3.1-8B"));
  ASSERT_TRUE(tree.set("CONTEXT/VLLM_PORT", "8000"));
  ASSERT_TRUE(tree.set("CONTEXT/VLLM_PORT", "8001"));
  EXPECT_EQ(tree.get("CONTEXT/VLLM_PORT"), "8001");
  EXPECT_FALSE(tree.set("CONTEXT/VLLM_PORT/X", "1"));
  EXPECT_FALSE(tree.set("CONTEXT", "flat"));
  EXPECT_FALSE(tree.set("bad name", "1"));
  EXPECT_EQ(tree.remove("CONTEXT/VLLM_PORT"), 1u);
  EXPECT_EQ(tree.get("CONTEXT/VLLM_PORT"), std::nullopt);
  EXPECT_EQ(tree.remove("NOPE/X"), 0u);
}

}  // namespace
}  // namespace fabrica
