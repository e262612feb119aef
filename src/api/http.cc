#include "api/http.h"

namespace fabrica::api {

HttpResponse json_response(int status, const Json& body) {
  return HttpResponse{.status = status, .body = dump_json(body)};
}

HttpResponse error_response(const Error& error, const std::string& request_id) {
  Json e{{"code", error_code_name(error.code())},
         {"message", error.message()},
         {"field", error.field().empty() ? Json(nullptr) : Json(error.field())},
         {"request_id", request_id}};
  HttpResponse response = json_response(http_status(error.code()), Json{{"error", e}});
  if (error.retry_after_seconds()) {
    response.headers.emplace_back("Retry-After", std::to_string(*error.retry_after_seconds()));
  }
  if (error.code() == ErrorCode::kUnauthenticated) {
    response.headers.emplace_back("WWW-Authenticate", "Bearer realm=\"fabrica\"");
  }
  return response;
}

}  // namespace fabrica::api
