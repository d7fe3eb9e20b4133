// The one translation unit that compiles Boost.Beast and Asio: the API
// server (api/http_server.h) and the client (api/client.h).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <utility>  // std::exchange, which Asio 1.18's awaitable.hpp uses without including
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <thread>

#include "api/client.h"
#include "api/http_server.h"
#include "api/routes.h"
#include "base/error.h"
#include "base/thread_sandbox.h"
#include "base/unique_fd.h"

namespace tern::api {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Local = asio::local::stream_protocol;
using Stream = beast::basic_stream<Local>;

std::expected<sockaddr_un, ServerErrc> unix_address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof addr.sun_path) return std::unexpected(ServerErrc::PathTooLong);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// A socket file at `path` that nobody accepts on is stale; one that answers
// belongs to a live server.
std::expected<void, ServerError> clear_stale_socket(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return std::unexpected(ServerError{ServerErrc::Bind, errno, path});
  }
  if (!S_ISSOCK(st.st_mode)) return std::unexpected(ServerError{ServerErrc::NotASocket, 0, path});
  auto addr = unix_address(path);
  if (!addr) return std::unexpected(ServerError{addr.error(), 0, path});
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!probe) return std::unexpected(ServerError{ServerErrc::Socket, errno, path});
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) == 0) {
    return std::unexpected(ServerError{ServerErrc::InUse, 0, path});
  }
  if (errno != ECONNREFUSED) return std::unexpected(ServerError{ServerErrc::InUse, errno, path});
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return std::unexpected(ServerError{ServerErrc::Bind, errno, path});
  }
  return {};
}

}  // namespace

std::string ServerError::message() const {
  std::string what;
  switch (code) {
    case ServerErrc::InUse: what = "another server is already listening on the API socket"; break;
    case ServerErrc::NotASocket: what = "API socket path exists and is not a socket"; break;
    case ServerErrc::PathTooLong: what = "API socket path is empty or too long"; break;
    case ServerErrc::Socket: what = "cannot create the API socket"; break;
    case ServerErrc::Bind: what = "cannot bind the API socket"; break;
    case ServerErrc::Chmod: what = "cannot restrict the API socket to mode 0600"; break;
    case ServerErrc::Listen: what = "cannot listen on the API socket"; break;
    case ServerErrc::Start: what = "cannot start the API server"; break;
  }
  std::string text = what + ": " + path;
  if (sys_errno != 0) text += ": " + errno_text(sys_errno);
  return text;
}

struct HttpServer::Impl {
  Impl(std::string p, VmmControl& c, HttpServerOptions o, dev_t dev, ino_t ino)
      : path(std::move(p)), control(c), options(o), socket_dev(dev), socket_ino(ino) {}

  const std::string path;
  VmmControl& control;
  const HttpServerOptions options;
  const dev_t socket_dev;
  const ino_t socket_ino;
  asio::io_context ioc{1};
  Local::acceptor acceptor{ioc};
  std::atomic<size_t> connections{0};  // touched only by the server thread; atomic for tests
  std::jthread thread;
};

namespace {

// Every reply goes out asynchronously under the write deadline, so a client
// that stops reading (say, after pipelining many requests) costs its own
// connection only: the API thread keeps serving everyone else and the
// server can stop at any time.
asio::awaitable<beast::error_code> write_reply(HttpServer::Impl& impl, Stream& stream,
                                               http::response<http::string_body>& res) {
  stream.expires_after(impl.options.write_timeout);
  beast::error_code ec;
  co_await http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
  co_return ec;
}

// Best effort: the client sent something we cannot parse, so it may not read.
asio::awaitable<void> write_error_and_close(HttpServer::Impl& impl, Stream& stream, int status,
                                            const std::string& message) {
  ApiResponse r = error_response(status, message);
  http::response<http::string_body> res{static_cast<http::status>(status), 11};
  res.set(http::field::server, "tern");
  res.set(http::field::content_type, "application/json");
  res.body() = r.body;
  res.keep_alive(false);
  res.prepare_payload();
  co_await write_reply(impl, stream, res);
}

// One client connection: requests are read with a deadline (slow or partial
// senders are dropped), answered in order, kept alive when asked.
asio::awaitable<void> serve_connection(HttpServer::Impl& impl, Local::socket socket) {
  Stream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<uint32_t>(impl.options.header_limit));
    parser.body_limit(impl.options.body_limit);
    stream.expires_after(impl.options.read_timeout);
    beast::error_code ec;
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      break;
    }
    if (ec == http::error::body_limit) {
      co_await write_error_and_close(impl, stream, 413, "request body larger than " +
                                             std::to_string(impl.options.body_limit) + " bytes");
      break;
    }
    if (ec == http::error::header_limit) {
      co_await write_error_and_close(impl, stream, 431, "request headers too large");
      break;
    }
    if (ec) {
      co_await write_error_and_close(impl, stream, 400, "malformed HTTP request: " + ec.message());
      break;
    }
    const auto& req = parser.get();
    // The control call may block this thread briefly while the VMM's
    // control thread runs the command; it is bounded by the channel timeout.
    ApiResponse r = handle_request(
        ApiRequest{std::string(req.method_string()), std::string(req.target()), req.body()},
        impl.control);
    http::response<http::string_body> res{static_cast<http::status>(r.status), req.version()};
    res.set(http::field::server, "tern");
    if (!r.body.empty()) {
      res.set(http::field::content_type, "application/json");
      res.body() = std::move(r.body);
    }
    if (!r.allow.empty()) res.set(http::field::allow, r.allow);
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    ec = co_await write_reply(impl, stream, res);
    if (ec || !res.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(Local::socket::shutdown_both, ignored);
  impl.connections.fetch_sub(1);
}

asio::awaitable<void> accept_loop(HttpServer::Impl& impl) {
  for (;;) {
    beast::error_code ec;
    Local::socket socket = co_await impl.acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted || !impl.acceptor.is_open()) co_return;
    if (ec) continue;  // e.g. EMFILE: keep serving the clients we have
    if (impl.connections.load() >= impl.options.max_connections) continue;  // closed on scope exit
    impl.connections.fetch_add(1);
    asio::co_spawn(impl.ioc, serve_connection(impl, std::move(socket)), asio::detached);
  }
}

}  // namespace

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() {
  asio::post(impl_->ioc, [impl = impl_.get()] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
    impl->ioc.stop();
  });
  impl_->thread.request_stop();  // ends a wait at the thread's sandbox entry (base/thread_sandbox.h)
  if (impl_->thread.joinable()) impl_->thread.join();
  // Remove the socket file only if it is still ours.
  struct stat st{};
  if (::lstat(impl_->path.c_str(), &st) == 0 && st.st_dev == impl_->socket_dev &&
      st.st_ino == impl_->socket_ino) {
    ::unlink(impl_->path.c_str());
  }
}

std::expected<std::unique_ptr<HttpServer>, ServerError> HttpServer::start(
    const std::string& socket_path, VmmControl& control, HttpServerOptions options) {
  auto addr = unix_address(socket_path);
  if (!addr) return std::unexpected(ServerError{addr.error(), 0, socket_path});
  if (auto cleared = clear_stale_socket(socket_path); !cleared) return std::unexpected(cleared.error());

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return std::unexpected(ServerError{ServerErrc::Socket, errno, socket_path});
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof *addr) != 0) {
    return std::unexpected(ServerError{ServerErrc::Bind, errno, socket_path});
  }
  // Nobody can connect before listen(), so tightening the mode here leaves
  // no window in which another user could reach the API.
  if (::chmod(socket_path.c_str(), 0600) != 0) {
    int err = errno;
    ::unlink(socket_path.c_str());
    return std::unexpected(ServerError{ServerErrc::Chmod, err, socket_path});
  }
  struct stat st{};
  if (::lstat(socket_path.c_str(), &st) != 0 || ::listen(fd.get(), 64) != 0) {
    int err = errno;
    ::unlink(socket_path.c_str());
    return std::unexpected(ServerError{ServerErrc::Listen, err, socket_path});
  }

  auto impl = std::make_unique<Impl>(socket_path, control, options, st.st_dev, st.st_ino);
  beast::error_code ec;
  impl->acceptor.assign(Local(), fd.get(), ec);
  if (ec) {
    ::unlink(socket_path.c_str());
    return std::unexpected(ServerError{ServerErrc::Start, ec.value(), socket_path});
  }
  fd.release();  // the acceptor owns it now
  asio::co_spawn(impl->ioc, accept_loop(*impl), asio::detached);
  // The API thread: runs the accept loop and every client connection; it
  // owns no VM state (commands go through VmmControl). Stopped by the
  // destructor, which closes the acceptor and stops the io_context.
  impl->thread = start_thread(ThreadKind::Api, [impl = impl.get()](std::stop_token) { impl->ioc.run(); });
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

std::expected<HttpReply, std::string> http_request(const std::string& socket_path,
                                                    const std::string& method,
                                                    const std::string& target,
                                                    const std::string& body,
                                                    std::chrono::milliseconds timeout) {
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, "localhost");
  req.set(http::field::user_agent, "tern-remote");
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.keep_alive(false);
  req.prepare_payload();

  // Asynchronous under one deadline for the whole exchange: blocking
  // socket calls would wait forever on a server that accepts but never
  // answers (SO_RCVTIMEO does not bound Asio's synchronous operations).
  asio::io_context ioc{1};
  Stream stream(ioc);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::expected<HttpReply, std::string> result = std::unexpected("no answer from " + socket_path);
  auto exchange = [&]() -> asio::awaitable<void> {
    beast::error_code ec;
    stream.expires_at(deadline);
    co_await stream.async_connect(Local::endpoint(socket_path), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      result = std::unexpected("cannot connect to " + socket_path + ": " + ec.message());
      co_return;
    }
    stream.expires_at(deadline);
    co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      result = std::unexpected("cannot send the request to " + socket_path + ": " + ec.message());
      co_return;
    }
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    stream.expires_at(deadline);
    co_await http::async_read(stream, buffer, res, asio::redirect_error(asio::use_awaitable, ec));
    if (ec && ec != http::error::end_of_stream) {
      result = std::unexpected("cannot read the answer from " + socket_path + ": " + ec.message());
      co_return;
    }
    result = HttpReply{static_cast<int>(res.result_int()), res.body()};
  };
  asio::co_spawn(ioc, exchange(), asio::detached);
  ioc.run();
  return result;
}

}  // namespace tern::api
