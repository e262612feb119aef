#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/json.h"

namespace fabrica::gateway {

// The OpenAI API's error shape: {"error":{"message","type","param","code"}} and its status.
struct ApiError {
  int status = 500;
  std::string type;  // "invalid_request_error", "authentication_error", ...
  std::string code;  // "invalid_api_key", "model_not_found", ... ("" = null).
  std::string message;
  std::string param;  // "" = null.
  std::string body() const;
};

ApiError invalid_request(std::string message, std::string param = {});
ApiError invalid_api_key();
ApiError model_not_found(std::string_view model);
ApiError model_not_allowed(std::string_view model);
ApiError unknown_route(std::string_view method, std::string_view target);
ApiError body_too_large(size_t limit);
ApiError rate_limited(std::string message, std::string code);
ApiError upstream_error(int status, std::string message);

// Which OpenAI operation a request is.
enum class Operation { kChat, kCompletions, kEmbeddings };
std::string_view operation_name(Operation op);  // "chat", "completions", "embeddings".

// What the gateway reads of a request body before forwarding it unchanged.
struct RequestInfo {
  std::string model;
  bool stream = false;
  bool include_usage = false;         // stream_options.include_usage
  std::optional<int64_t> max_tokens;  // max_tokens or max_completion_tokens
  int64_t prompt_estimate = 0;        // Input tokens guessed from the body's size.
};

// The body as an OpenAI server would check it: a JSON object with a string "model"; a
// boolean "stream" when present (not for embeddings); max tokens >= 0. The ApiError says
// which field is wrong.
tl::expected<RequestInfo, ApiError> inspect_request(Operation op, std::string_view body,
                                                    Json& parsed);

// The body to send upstream for a stream that did not ask for usage: the same request with
// stream_options.include_usage = true, so every streamed request is metered exactly.
std::string with_stream_usage(Json parsed);

struct TokenCount {
  int64_t input = 0;
  int64_t output = 0;
};
// The "usage" of a complete (non-streamed) answer; nullopt when it has none.
std::optional<TokenCount> usage_of(std::string_view body);

// Reads a Server-Sent Events stream as it passes through, piece by piece, and keeps the last
// usage seen. When the gateway itself asked for usage (the client did not), it leaves out
// what that asking added: the usage-only chunk and "usage": null in the others.
class SseScanner {
 public:
  // Feeds the next bytes. Returns the bytes to forward: the input, less any usage-only
  // event when `drop_usage_event` was set. Events split across pieces are handled.
  std::string feed(std::string_view piece);
  const std::optional<TokenCount>& usage() const { return usage_; }
  bool saw_done() const { return done_; }
  bool saw_data() const { return data_events_ > 0; }
  void set_drop_usage_event(bool drop) { drop_usage_ = drop; }
  // Bytes held back because their event is not complete yet (forwarded by the next feed()).
  std::string flush();

 private:
  // One complete event as it is to be forwarded; nullopt to leave it out.
  std::optional<std::string> filter_event(std::string_view event);

  std::string pending_;
  std::optional<TokenCount> usage_;
  bool drop_usage_ = false;
  bool done_ = false;
  int64_t data_events_ = 0;
};

// An error event for a stream cut by the upstream: "data: {"error":{...}}\n\n".
std::string stream_error_event(std::string_view message);

}  // namespace fabrica::gateway
