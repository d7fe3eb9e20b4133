// The API's routes, as cloud-hypervisor names them, independent of the HTTP
// library: a parsed request in, a status and JSON body out.
//   GET /api/v1/vmm.ping        -> 200 {"version": ...}
//   GET /api/v1/vm.info         -> 200 config, state and disks
//   GET /api/v1/vm.counters     -> 200 per-disk counters
//   PUT /api/v1/vm.resize-disk  {"id": "...", "desired_size": BYTES} -> 204
//   PUT /api/v1/vm.shutdown     -> 204
//   PUT /api/v1/vmm.shutdown    -> 204
// Errors: {"error": "..."} with 400, 404, 405 (+ Allow), 409, 413, 500, 503.
#pragma once

#include <string>

#include "api/vmm_control.h"

namespace tern::api {

inline constexpr const char* kTernVersion = "0.1.0";

struct ApiRequest {
  std::string method;  // "GET", "PUT", ...
  std::string target;  // "/api/v1/vmm.ping" (a query string is ignored)
  std::string body;
};

struct ApiResponse {
  int status = 200;
  std::string body;   // JSON, empty for 204
  std::string allow;  // the Allow header for 405 answers
};

ApiResponse handle_request(const ApiRequest& request, VmmControl& control);
ApiResponse error_response(int status, const std::string& message);

}  // namespace tern::api
