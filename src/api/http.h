#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "core/json.h"

namespace fabrica::api {

// A parsed request, free of the HTTP library's types so handlers compile fast.
struct HttpRequest {
  std::string method;
  std::string target;                             // As sent: path plus query.
  std::string path;                               // Decoded path.
  std::multimap<std::string, std::string> query;  // Decoded query parameters.
  std::string body;
  std::string authorization;
  std::string remote_address;
  std::string request_id;
  std::string content_range;               // The Content-Range header, for uploads.
  std::optional<uint64_t> content_length;  // The Content-Length header.
  std::string if_none_match;               // The If-None-Match header (ETag polling).
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
};

// A request body taken as it arrives instead of held in memory (image uploads of many GiB).
class BodySink {
 public:
  virtual ~BodySink() = default;
  // Each piece of the body, in order. An error ends the request: finish(false) runs, the
  // error is the answer and the connection closes.
  virtual Result<void> write(std::string_view piece) = 0;
  // After the last piece (`complete`), or when the body ended early (the client went away
  // or a write failed): the answer.
  virtual HttpResponse finish(bool complete) = 0;
};

HttpResponse json_response(int status, const Json& body);
// The one error body: {"error":{"code","message","field","request_id"}}, the status from
// http_status(), and Retry-After when the error carries one.
HttpResponse error_response(const Error& error, const std::string& request_id);

}  // namespace fabrica::api
