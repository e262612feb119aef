#include "api/router.h"

#include <charconv>

#include "core/json.h"

namespace fabrica::api {

std::string_view auth_mode_name(AuthMode mode) {
  switch (mode) {
    case AuthMode::kNone:
      return "none";
    case AuthMode::kBearer:
      return "bearer";
    case AuthMode::kBasic:
      return "basic";
  }
  return "none";
}

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '/') {
      ++i;
      continue;
    }
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    out.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

Result<int64_t> Context::id_param(size_t index, std::string_view name) const {
  const std::string& text = params.at(index);
  int64_t value = -1;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || ptr != text.data() + text.size() || value < 0 ||
      value > (int64_t{1} << 53)) {
    return fail(ErrorCode::kInvalidArgument, "must be a non-negative integer id",
                std::string(name));
  }
  return value;
}

Result<void> Context::no_body_fields() const {
  if (request.body.empty()) return {};
  FAB_ASSIGN_OR_RETURN(auto body, JsonObjectReader::parse(request.body));
  return body.finish();
}

Result<void> Context::allow_query(std::initializer_list<std::string_view> names) const {
  for (const auto& [key, value] : request.query) {
    bool known = false;
    for (auto n : names) known = known || n == key;
    if (!known) return fail(ErrorCode::kInvalidArgument, "unknown query parameter", key);
    if (request.query.count(key) > 1) {
      return fail(ErrorCode::kInvalidArgument, "query parameter given more than once", key);
    }
  }
  return {};
}

std::optional<std::string> Context::query(std::string_view name) const {
  auto it = request.query.find(std::string(name));
  if (it == request.query.end()) return std::nullopt;
  return it->second;
}

Result<std::optional<int64_t>> Context::query_int(std::string_view name, int64_t min,
                                                  int64_t max) const {
  auto text = query(name);
  if (!text) return std::nullopt;
  int64_t value = 0;
  auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || ptr != text->data() + text->size() || value < min || value > max) {
    return fail(ErrorCode::kInvalidArgument,
                "must be an integer from " + std::to_string(min) + " to " + std::to_string(max),
                std::string(name));
  }
  return value;
}

void Router::add(std::string method, std::string pattern, AuthMode auth, Handler handler,
                 Audit audit) {
  auto segments = split_path(pattern);
  bool audited = audit == Audit::kWrites && method != "GET";
  entries_.push_back(Entry{.info = {std::move(method), std::move(pattern), auth, audited},
                           .segments = std::move(segments),
                           .handler = std::move(handler)});
}

void Router::add_stream(std::string method, std::string pattern, AuthMode auth,
                        StreamHandler handler) {
  Handler whole = [handler](const Context& ctx) -> Result<HttpResponse> {
    FAB_ASSIGN_OR_RETURN(auto sink, handler(ctx));
    auto written = sink->write(ctx.request.body);
    HttpResponse response = sink->finish(written.has_value());
    if (!written) return fail(written.error());
    return response;
  };
  add(std::move(method), std::move(pattern), auth, std::move(whole));
  entries_.back().info.streams = true;
  entries_.back().stream = std::move(handler);
}

Result<Router::Match> Router::match(std::string_view method, std::string_view path) const {
  auto segments = split_path(path);
  std::string allowed;
  for (const Entry& e : entries_) {
    if (e.segments.size() != segments.size()) continue;
    std::vector<std::string> params;
    bool ok = true;
    for (size_t i = 0; i < segments.size() && ok; ++i) {
      const std::string& s = e.segments[i];
      if (s.size() > 2 && s.front() == '{' && s.back() == '}') {
        params.push_back(segments[i]);
      } else {
        ok = s == segments[i];
      }
    }
    if (!ok) continue;
    if (e.info.method == method) {
      return Match{.route = &e.info,
                   .handler = &e.handler,
                   .stream = e.stream ? &e.stream : nullptr,
                   .params = std::move(params)};
    }
    allowed += (allowed.empty() ? "" : ", ") + e.info.method;
  }
  if (!allowed.empty()) {
    return fail(ErrorCode::kMethodNotAllowed,
                std::string(method) + " is not allowed here; allowed: " + allowed);
  }
  return fail(ErrorCode::kNotFound,
              "no such route: " + std::string(method) + " " + std::string(path));
}

std::vector<RouteInfo> Router::routes() const {
  std::vector<RouteInfo> out;
  for (const Entry& e : entries_) out.push_back(e.info);
  return out;
}

}  // namespace fabrica::api
