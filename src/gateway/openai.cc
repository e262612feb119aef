#include "gateway/openai.h"

namespace fabrica::gateway {
namespace {

Json null_or(const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); }

ApiError error(int status, std::string type, std::string code, std::string message,
               std::string param = {}) {
  return ApiError{.status = status,
                  .type = std::move(type),
                  .code = std::move(code),
                  .message = std::move(message),
                  .param = std::move(param)};
}

std::optional<TokenCount> read_usage(const Json& j) {
  auto u = j.find("usage");
  if (u == j.end() || !u->is_object()) return std::nullopt;
  TokenCount t;
  auto number = [&](const char* name) -> int64_t {
    auto v = u->find(name);
    return v != u->end() && v->is_number_integer() ? v->get<int64_t>() : 0;
  };
  t.input = number("prompt_tokens");
  t.output = number("completion_tokens");
  if (t.output == 0 && t.input == 0) t.input = number("total_tokens");
  return t;
}

// Finds the end of the first complete event in `text`: the offset just past its blank line.
size_t event_end(std::string_view text) {
  size_t lf = text.find("\n\n");
  size_t crlf = text.find("\r\n\r\n");
  if (lf == std::string_view::npos && crlf == std::string_view::npos) return std::string_view::npos;
  if (crlf != std::string_view::npos && (lf == std::string_view::npos || crlf < lf)) {
    return crlf + 4;
  }
  return lf + 2;
}

}  // namespace

std::string ApiError::body() const {
  return dump_json(Json{{"error",
                         {{"message", message},
                          {"type", type},
                          {"param", null_or(param)},
                          {"code", null_or(code)}}}});
}

ApiError invalid_request(std::string message, std::string param) {
  return error(400, "invalid_request_error", "", std::move(message), std::move(param));
}
ApiError invalid_api_key() {
  return error(401, "invalid_request_error", "invalid_api_key",
               "Incorrect API key provided. Keys are issued by your tenant administrator "
               "(fabrica apikey create).");
}
ApiError model_not_found(std::string_view model) {
  return error(
      404, "invalid_request_error", "model_not_found",
      "The model `" + std::string(model) + "` does not exist or you do not have access to it.",
      "model");
}
ApiError model_not_allowed(std::string_view model) {
  return error(403, "permission_error", "model_not_allowed",
               "This API key may not use the model `" + std::string(model) + "`.", "model");
}
ApiError unknown_route(std::string_view method, std::string_view target) {
  return error(
      404, "invalid_request_error", "unknown_url",
      "Unrecognized request URL (" + std::string(method) + ": " + std::string(target) + ").");
}
ApiError body_too_large(size_t limit) {
  return error(413, "invalid_request_error", "request_too_large",
               "The request body is larger than " + std::to_string(limit) + " bytes.");
}
ApiError rate_limited(std::string message, std::string code) {
  return error(429, "rate_limit_error", std::move(code), std::move(message));
}
ApiError upstream_error(int status, std::string message) {
  return error(status, "api_error", "upstream_error", std::move(message));
}

std::string_view operation_name(Operation op) {
  switch (op) {
    case Operation::kChat:
      return "chat";
    case Operation::kCompletions:
      return "completions";
    case Operation::kEmbeddings:
      return "embeddings";
  }
  return "chat";
}

tl::expected<RequestInfo, ApiError> inspect_request(Operation op, std::string_view body,
                                                    Json& parsed) {
  parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return tl::unexpected(invalid_request(
        "We could not parse the JSON body of your request. The body must be a JSON object."));
  }
  RequestInfo info;
  auto model = parsed.find("model");
  if (model == parsed.end() || !model->is_string() || model->get<std::string>().empty()) {
    return tl::unexpected(invalid_request("you must provide a model parameter", "model"));
  }
  info.model = model->get<std::string>();
  if (auto s = parsed.find("stream"); s != parsed.end() && !s->is_null()) {
    if (!s->is_boolean() || op == Operation::kEmbeddings) {
      return tl::unexpected(invalid_request("'stream' must be a boolean", "stream"));
    }
    info.stream = s->get<bool>();
  }
  if (auto o = parsed.find("stream_options"); o != parsed.end() && o->is_object()) {
    auto u = o->find("include_usage");
    info.include_usage = u != o->end() && u->is_boolean() && u->get<bool>();
  }
  for (const char* name : {"max_completion_tokens", "max_tokens"}) {
    auto m = parsed.find(name);
    if (m == parsed.end() || m->is_null()) continue;
    if (!m->is_number_integer() || m->get<int64_t>() < 0) {
      return tl::unexpected(
          invalid_request(std::string("'") + name + "' must be a non-negative integer", name));
    }
    info.max_tokens = m->get<int64_t>();
    break;
  }
  // About four bytes of JSON per token: a guess for admission, settled from the answer.
  info.prompt_estimate = static_cast<int64_t>(body.size() / 4) + 1;
  return info;
}

std::string with_stream_usage(Json parsed) {
  parsed["stream_options"]["include_usage"] = true;
  return dump_json(parsed);
}

std::optional<TokenCount> usage_of(std::string_view body) {
  Json j = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return read_usage(j);
}

std::optional<std::string> SseScanner::filter_event(std::string_view event) {
  size_t at = event.find("data:");
  if (at == std::string_view::npos) return std::string(event);
  std::string_view data = event.substr(at + 5);
  while (!data.empty() && data.front() == ' ') data.remove_prefix(1);
  while (!data.empty() && (data.back() == '\n' || data.back() == '\r')) data.remove_suffix(1);
  if (data == "[DONE]") {
    done_ = true;
    return std::string(event);
  }
  ++data_events_;
  if (data.find("\"usage\"") == std::string_view::npos) return std::string(event);
  Json j = Json::parse(data, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::string(event);
  auto usage = read_usage(j);
  if (usage) usage_ = usage;
  if (!drop_usage_) return std::string(event);
  // The client did not ask for usage: leave out the usage-only chunk and the "usage": null
  // that asking added to every other chunk.
  auto choices = j.find("choices");
  if (usage && choices != j.end() && choices->is_array() && choices->empty()) return std::nullopt;
  if (!j.contains("usage") || !j["usage"].is_null()) return std::string(event);
  j.erase("usage");
  return "data: " + dump_json(j) + "\n\n";
}

std::string SseScanner::feed(std::string_view piece) {
  pending_.append(piece);
  std::string out;
  std::string_view rest = pending_;
  for (size_t end = event_end(rest); end != std::string_view::npos; end = event_end(rest)) {
    if (auto kept = filter_event(rest.substr(0, end))) out.append(*kept);
    rest.remove_prefix(end);
  }
  pending_.erase(0, pending_.size() - rest.size());
  return out;
}

std::string SseScanner::flush() {
  std::string rest = std::move(pending_);
  pending_.clear();
  if (rest.empty()) return rest;
  return filter_event(rest).value_or("");
}

std::string stream_error_event(std::string_view message) {
  ApiError e = upstream_error(502, std::string(message));
  return "data: " + e.body() + "\n\n";
}

}  // namespace fabrica::gateway
