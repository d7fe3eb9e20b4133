// A minimal HTTP/1.1 client over a Unix domain socket, for tern-remote and
// tests. Implemented with Boost.Beast in api/http_beast.cpp.
#pragma once

#include <chrono>
#include <expected>
#include <string>

namespace tern::api {

struct HttpReply {
  int status = 0;
  std::string body;
};

// Sends one request (Connection: close) and reads the answer, all within
// `timeout` (a server that accepts and never answers costs that much, not a
// hung client). The error is a message naming the socket and what failed.
[[nodiscard]] std::expected<HttpReply, std::string> http_request(
    const std::string& socket_path, const std::string& method, const std::string& target,
    const std::string& body = {}, std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace tern::api
