#pragma once

#include <map>
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
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
};

HttpResponse json_response(int status, const Json& body);
// The one error body: {"error":{"code","message","field","request_id"}}, the status from
// http_status(), and Retry-After when the error carries one.
HttpResponse error_response(const Error& error, const std::string& request_id);

}  // namespace fabrica::api
