#include "api/routes.h"

#include <nlohmann/json.hpp>

namespace tern::api {
namespace {

using json = nlohmann::json;

int status_of(ControlErrc code) {
  switch (code) {
    case ControlErrc::BadRequest: return 400;
    case ControlErrc::NotFound: return 404;
    case ControlErrc::Refused: return 409;
    case ControlErrc::Unavailable: return 503;
    case ControlErrc::Internal: return 500;
  }
  return 500;
}

ApiResponse from_error(const ControlError& e) { return error_response(status_of(e.code), e.message); }

ApiResponse ok_json(const json& body) { return ApiResponse{200, body.dump(), {}}; }
ApiResponse no_content() { return ApiResponse{204, {}, {}}; }

json to_json(const VmInfo& info) {
  json disks = json::array();
  for (const DiskInfo& d : info.disks) {
    disks.push_back({{"id", d.id},
                     {"path", d.path},
                     {"format", d.format},
                     {"size", d.size},
                     {"readonly", d.read_only},
                     {"num_queues", d.num_queues},
                     {"queue_size", d.queue_size},
                     {"transport", d.transport}});
  }
  return {{"state", info.state},
          {"config",
           {{"cpus", {{"boot_vcpus", info.cpus}}},
            {"memory", {{"size", info.memory_bytes}}},
            {"payload", {{"kernel", info.kernel}, {"cmdline", info.cmdline}}},
            {"disks", disks}}}};
}

json to_json(const std::vector<DiskCounters>& counters) {
  json out = json::object();
  for (const DiskCounters& c : counters) {
    json disk = json::object();
    for_each_block_counter([&](std::string_view name, auto field) { disk[std::string(name)] = field(c.counters); });
    out[c.id] = std::move(disk);
  }
  return out;
}

// PUT vm.resize-disk: exactly {"id": string, "desired_size": unsigned}.
ApiResponse resize_disk(const std::string& body, VmmControl& control) {
  if (body.empty()) return error_response(400, "missing request body");
  json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return error_response(400, "malformed JSON body");
  if (!doc.is_object()) return error_response(400, "body must be a JSON object");
  for (const auto& [key, value] : doc.items()) {
    if (key != "id" && key != "desired_size") return error_response(400, "unknown field '" + key + "'");
  }
  auto id = doc.find("id");
  auto size = doc.find("desired_size");
  if (id == doc.end() || !id->is_string()) return error_response(400, "'id' must be a string");
  if (size == doc.end() || !size->is_number_unsigned()) {
    // A negative or fractional number, a string or a value past 2^64 - 1
    // (which the parser turns into a float) is not a size.
    return error_response(400, "'desired_size' must be a non-negative integer below 2^64");
  }
  uint64_t bytes = size->get<uint64_t>();
  if (bytes == 0 || bytes % 512 != 0) {
    return error_response(400, "'desired_size' must be a positive multiple of 512");
  }
  auto result = control.resize_disk(id->get<std::string>(), bytes);
  if (!result) return from_error(result.error());
  return no_content();
}

ApiResponse ping(const ApiRequest&, VmmControl&) { return ok_json({{"version", kTernVersion}}); }

ApiResponse vm_info(const ApiRequest&, VmmControl& control) {
  auto info = control.info();
  return info ? ok_json(to_json(*info)) : from_error(info.error());
}

ApiResponse vm_counters(const ApiRequest&, VmmControl& control) {
  auto counters = control.counters();
  return counters ? ok_json(to_json(*counters)) : from_error(counters.error());
}

ApiResponse vm_resize_disk(const ApiRequest& request, VmmControl& control) {
  return resize_disk(request.body, control);
}

ApiResponse vm_shutdown(const ApiRequest&, VmmControl& control) {
  auto done = control.shutdown_vm();
  return done ? no_content() : from_error(done.error());
}

ApiResponse vm_power_button(const ApiRequest&, VmmControl& control) {
  auto done = control.power_button();
  return done ? no_content() : from_error(done.error());
}

ApiResponse vmm_shutdown(const ApiRequest&, VmmControl& control) {
  auto done = control.shutdown_vmm();
  return done ? no_content() : from_error(done.error());
}

// The one route table: each path, the one method it takes, its handler.
struct Route {
  const char* path;
  const char* method;
  ApiResponse (*handler)(const ApiRequest&, VmmControl&);
};

constexpr Route kRoutes[] = {
    {"/api/v1/vmm.ping", "GET", ping},
    {"/api/v1/vm.info", "GET", vm_info},
    {"/api/v1/vm.counters", "GET", vm_counters},
    {"/api/v1/vm.resize-disk", "PUT", vm_resize_disk},
    {"/api/v1/vm.shutdown", "PUT", vm_shutdown},
    {"/api/v1/vm.power-button", "PUT", vm_power_button},
    {"/api/v1/vmm.shutdown", "PUT", vmm_shutdown},
};

}  // namespace

ApiResponse error_response(int status, const std::string& message) {
  return ApiResponse{status, json{{"error", message}}.dump(), {}};
}

ApiResponse handle_request(const ApiRequest& request, VmmControl& control) {
  std::string path = request.target.substr(0, request.target.find('?'));
  const Route* route = nullptr;
  for (const Route& r : kRoutes) {
    if (path == r.path) route = &r;
  }
  if (!route) return error_response(404, "unknown path '" + path + "'");
  if (request.method != route->method) {
    ApiResponse r = error_response(405, "method " + request.method + " not allowed on " + path);
    r.allow = route->method;
    return r;
  }

  return route->handler(request, control);
}

}  // namespace tern::api
