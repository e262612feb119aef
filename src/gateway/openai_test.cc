// The OpenAI protocol pieces: request checks, usage in answers and streams, error shapes.
#include "gateway/openai.h"

#include <gtest/gtest.h>

namespace fabrica::gateway {
namespace {

TEST(OpenAiTest, ErrorsHaveOpenAisShape) {
  Json body = Json::parse(model_not_found("gpt-x").body());
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["code"], "model_not_found");
  EXPECT_EQ(body["error"]["param"], "model");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("gpt-x"), std::string::npos);
  Json key = Json::parse(invalid_api_key().body());
  EXPECT_TRUE(key["error"]["param"].is_null());
  EXPECT_EQ(invalid_api_key().status, 401);
  EXPECT_EQ(model_not_allowed("m").status, 403);
  EXPECT_EQ(rate_limited("slow down", "rate_limit_exceeded").status, 429);
}

TEST(OpenAiTest, ReadsModelStreamAndMaxTokens) {
  Json parsed;
  auto info = inspect_request(
      Operation::kChat,
      R"({"model":"llama","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"hi"}]})",
      parsed);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->model, "llama");
  EXPECT_TRUE(info->stream);
  EXPECT_FALSE(info->include_usage);
  EXPECT_EQ(*info->max_tokens, 64);
  EXPECT_GT(info->prompt_estimate, 0);
  auto usage = inspect_request(
      Operation::kChat,
      R"({"model":"m","stream":true,"stream_options":{"include_usage":true},"max_completion_tokens":5})",
      parsed);
  ASSERT_TRUE(usage);
  EXPECT_TRUE(usage->include_usage);
  EXPECT_EQ(*usage->max_tokens, 5);
}

TEST(OpenAiTest, RefusesBadBodiesNamingTheField) {
  Json parsed;
  EXPECT_EQ(inspect_request(Operation::kChat, "{not json", parsed).error().status, 400);
  EXPECT_EQ(inspect_request(Operation::kChat, "[1]", parsed).error().status, 400);
  EXPECT_EQ(inspect_request(Operation::kChat, R"({"messages":[]})", parsed).error().param, "model");
  EXPECT_EQ(inspect_request(Operation::kChat, R"({"model":7})", parsed).error().param, "model");
  EXPECT_EQ(
      inspect_request(Operation::kChat, R"({"model":"m","stream":"yes"})", parsed).error().param,
      "stream");
  EXPECT_EQ(
      inspect_request(Operation::kChat, R"({"model":"m","max_tokens":-1})", parsed).error().param,
      "max_tokens");
  EXPECT_EQ(inspect_request(Operation::kEmbeddings, R"({"model":"m","stream":true})", parsed)
                .error()
                .param,
            "stream");
}

TEST(OpenAiTest, AsksForStreamUsageWithoutChangingTheRest) {
  Json parsed = Json::parse(R"({"model":"m","stream":true,"temperature":0.5})");
  Json sent = Json::parse(with_stream_usage(parsed));
  EXPECT_EQ(sent["stream_options"]["include_usage"], true);
  EXPECT_EQ(sent["temperature"], 0.5);
  EXPECT_EQ(sent["model"], "m");
}

TEST(OpenAiTest, UsageOfAWholeAnswer) {
  auto u = usage_of(
      R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input, 12);
  EXPECT_EQ(u->output, 30);
  auto embeddings = usage_of(R"({"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}})");
  EXPECT_EQ(embeddings->input, 8);
  EXPECT_EQ(embeddings->output, 0);
  EXPECT_FALSE(usage_of(R"({"choices":[]})"));
  EXPECT_FALSE(usage_of("garbage"));
}

TEST(OpenAiTest, ScannerForwardsEventsWholeAcrossPiecesAndFindsUsage) {
  SseScanner scanner;
  std::string stream =
      "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n"
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n"
      "data: [DONE]\n\n";
  std::string out;
  for (size_t i = 0; i < stream.size(); i += 7) out += scanner.feed(stream.substr(i, 7));
  out += scanner.flush();
  EXPECT_EQ(out, stream);
  ASSERT_TRUE(scanner.usage());
  EXPECT_EQ(scanner.usage()->input, 3);
  EXPECT_EQ(scanner.usage()->output, 2);
  EXPECT_TRUE(scanner.saw_done());
}

TEST(OpenAiTest, ScannerDropsOnlyTheUsageChunkItAskedFor) {
  SseScanner scanner;
  scanner.set_drop_usage_event(true);
  std::string content = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":null}\n\n";
  std::string usage =
      "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n";
  std::string done = "data: [DONE]\n\n";
  std::string out = scanner.feed(content + usage + done);
  EXPECT_EQ(out, "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n" + done);
  EXPECT_EQ(scanner.usage()->input, 4);
}

TEST(OpenAiTest, ScannerHandlesCrlfEvents) {
  SseScanner scanner;
  std::string out = scanner.feed("data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n");
  EXPECT_EQ(out, "data: {\"a\":1}\r\n\r\ndata: [DONE]\r\n\r\n");
  EXPECT_TRUE(scanner.saw_done());
}

TEST(OpenAiTest, StreamErrorEventIsAnOpenAiError) {
  std::string e = stream_error_event("cut");
  ASSERT_TRUE(e.starts_with("data: "));
  ASSERT_TRUE(e.ends_with("\n\n"));
  Json body = Json::parse(e.substr(6));
  EXPECT_EQ(body["error"]["message"], "cut");
}

}  // namespace
}  // namespace fabrica::gateway
