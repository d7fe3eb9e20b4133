// HttpServer: HTTP/1.1 on a Unix domain socket (mode 0600), serving the API
// routes (api/routes.h) from one thread of its own. Boost.Beast lives only in
// api/http_beast.cpp; this header keeps it out of everything else.
//
// The socket: a live server already at the path is refused; a stale socket
// file is replaced; any other file is left alone and refused. The file is
// removed when the server is destroyed.
#pragma once

#include <chrono>
#include <cstddef>
#include <expected>
#include <memory>
#include <string>

#include "api/vmm_control.h"

namespace tern::api {

struct HttpServerOptions {
  std::chrono::milliseconds read_timeout{10'000};   // a whole request must arrive within this
  std::chrono::milliseconds write_timeout{10'000};  // a whole reply must be taken within this
  size_t body_limit = 64 * 1024;                   // larger bodies get 413
  size_t header_limit = 16 * 1024;
  size_t max_connections = 64;  // further clients are closed at once
};

enum class ServerErrc { InUse, NotASocket, PathTooLong, Socket, Bind, Chmod, Listen, Start };

struct ServerError {
  ServerErrc code = ServerErrc::Start;
  int sys_errno = 0;
  std::string path;
  std::string message() const;
};

class HttpServer {
 public:
  [[nodiscard]] static std::expected<std::unique_ptr<HttpServer>, ServerError> start(
      const std::string& socket_path, VmmControl& control, HttpServerOptions options = {});
  ~HttpServer();  // stops the thread, closes connections, removes the socket file
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern::api
