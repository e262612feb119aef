#include "core/json.h"

namespace fabrica {

Result<Json> parse_json(std::string_view text) {
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    std::string what = e.what();
    auto pos = what.find("] ");
    return fail(ErrorCode::kInvalidArgument,
                "malformed JSON: " + (pos == std::string::npos ? what : what.substr(pos + 2)));
  } catch (const std::exception& e) {
    return fail(ErrorCode::kInvalidArgument, std::string("malformed JSON: ") + e.what());
  }
}

std::string dump_json(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<JsonObjectReader> JsonObjectReader::parse(std::string_view body) {
  if (body.empty()) return fail(ErrorCode::kInvalidArgument, "request body must be a JSON object");
  FAB_ASSIGN_OR_RETURN(Json j, parse_json(body));
  return wrap(std::move(j));
}

Result<JsonObjectReader> JsonObjectReader::wrap(Json object, std::string prefix) {
  if (!object.is_object()) {
    return fail(ErrorCode::kInvalidArgument,
                prefix.empty() ? "request body must be a JSON object" : "must be a JSON object",
                prefix.empty() ? "" : prefix.substr(0, prefix.size() - 1));
  }
  return JsonObjectReader(std::move(object), std::move(prefix));
}

const Json* JsonObjectReader::find(std::string_view key) {
  seen_.emplace(key);
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) return nullptr;
  return &*it;
}

Result<std::optional<std::string>> JsonObjectReader::optional_string(std::string_view key) {
  const Json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return fail(ErrorCode::kInvalidArgument, "must be a string", field(key));
  return v->get<std::string>();
}

Result<std::string> JsonObjectReader::required_string(std::string_view key) {
  FAB_ASSIGN_OR_RETURN(auto v, optional_string(key));
  if (!v) return fail(ErrorCode::kInvalidArgument, "is required", field(key));
  return *v;
}

Result<std::optional<int64_t>> JsonObjectReader::optional_int(std::string_view key) {
  const Json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_unsigned() && v->get<uint64_t>() <= uint64_t(INT64_MAX)) {
    return static_cast<int64_t>(v->get<uint64_t>());
  }
  return fail(ErrorCode::kInvalidArgument, "must be an integer", field(key));
}

Result<int64_t> JsonObjectReader::required_int(std::string_view key) {
  FAB_ASSIGN_OR_RETURN(auto v, optional_int(key));
  if (!v) return fail(ErrorCode::kInvalidArgument, "is required", field(key));
  return *v;
}

Result<std::optional<bool>> JsonObjectReader::optional_bool(std::string_view key) {
  const Json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) return fail(ErrorCode::kInvalidArgument, "must be a boolean", field(key));
  return v->get<bool>();
}

Result<std::optional<double>> JsonObjectReader::optional_number(std::string_view key) {
  const Json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) return fail(ErrorCode::kInvalidArgument, "must be a number", field(key));
  return v->get<double>();
}

Result<std::optional<Json>> JsonObjectReader::optional_object(std::string_view key) {
  const Json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_object()) return fail(ErrorCode::kInvalidArgument, "must be an object", field(key));
  return *v;
}

Result<std::optional<Json>> JsonObjectReader::optional_array(std::string_view key) {
  const Json* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_array()) return fail(ErrorCode::kInvalidArgument, "must be an array", field(key));
  return *v;
}

Result<void> JsonObjectReader::finish() const {
  for (auto it = object_.begin(); it != object_.end(); ++it) {
    if (!seen_.contains(it.key())) {
      return fail(ErrorCode::kInvalidArgument, "unknown field", field(it.key()));
    }
  }
  return {};
}

}  // namespace fabrica
