#include "block/convert.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "base/unique_fd.h"
#include "block/qcow2/create.h"

namespace tern::block {
namespace {

constexpr uint64_t kChunk = 1 << 20;
constexpr uint64_t kZeroGranule = 64 << 10;

// Runs one request on `ctx` and waits for it.
Result<void> run(IoContext& ctx, const Request& req) {
  if (auto r = ctx.submit(req); !r) return r;
  std::vector<Completion> done;
  for (;;) {
    ctx.drain(done);
    if (!done.empty()) return done.front().status;
    pollfd pfd{ctx.completion_fd(), POLLIN, 0};
    if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) return fail(Errc::ReadFailed, errno, "poll");
  }
}

bool all_zero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::equal(p, p + n - 1, p + 1));
}

// Where converted data goes: a plain file or a disk.
class Sink {
 public:
  virtual ~Sink() = default;
  virtual Result<void> write(uint64_t offset, std::span<const uint8_t> data) = 0;
  virtual Result<void> finish() = 0;
};

class RawSink final : public Sink {
 public:
  explicit RawSink(UniqueFd fd) : fd_(std::move(fd)) {}
  Result<void> write(uint64_t offset, std::span<const uint8_t> data) override {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::pwrite(fd_.get(), data.data() + done, data.size() - done,
                           static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return fail(Errc::WriteFailed, n < 0 ? errno : 0);
      done += static_cast<size_t>(n);
    }
    return {};
  }
  Result<void> finish() override {
    while (::fsync(fd_.get()) != 0) {
      if (errno != EINTR) return fail(Errc::FlushFailed, errno);
    }
    return {};
  }

 private:
  UniqueFd fd_;
};

class DiskSink final : public Sink {
 public:
  DiskSink(std::unique_ptr<DiskFile> disk, std::unique_ptr<IoContext> ctx)
      : disk_(std::move(disk)), ctx_(std::move(ctx)) {}
  Result<void> write(uint64_t offset, std::span<const uint8_t> data) override {
    iovec v{const_cast<uint8_t*>(data.data()), data.size()};
    Request r;
    r.op = Op::Write;
    r.offset = offset;
    r.iov = std::span<const iovec>(&v, 1);
    return run(*ctx_, r);
  }
  Result<void> finish() override {
    ctx_.reset();
    return disk_->close();
  }

 private:
  std::unique_ptr<DiskFile> disk_;
  std::unique_ptr<IoContext> ctx_;
};

}  // namespace

Result<void> convert_image(const ConvertOptions& options) {
  OpenOptions in_options;
  in_options.path = options.input;
  in_options.read_only = true;
  in_options.allow_backing = true;  // like qemu-img, follow backing files
  auto in = open_disk(in_options);
  if (!in) return std::unexpected(in.error());
  auto in_ctx = (*in)->make_io_context(1);
  if (!in_ctx) return std::unexpected(in_ctx.error());
  const uint64_t size = (*in)->size();

  std::unique_ptr<Sink> sink;
  if (options.output_type == ImageType::Qcow2) {
    qcow2::CreateOptions create;
    create.path = options.output;
    create.size = size;
    if (auto r = qcow2::create_image(create); !r) return r;
    OpenOptions out_options;
    out_options.path = options.output;
    out_options.type = ImageType::Qcow2;
    auto out = open_disk(out_options);
    if (!out) return std::unexpected(out.error());
    auto ctx = (*out)->make_io_context(1);
    if (!ctx) return std::unexpected(ctx.error());
    sink = std::make_unique<DiskSink>(std::move(*out), std::move(*ctx));
  } else {
    int fd = ::open(options.output.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return fail(Errc::OpenFailed, errno, options.output);
    UniqueFd owned(fd);
    while (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      if (errno != EINTR) return fail(Errc::ResizeFailed, errno, options.output);
    }
    sink = std::make_unique<RawSink>(std::move(owned));
  }

  std::vector<uint8_t> buf(kChunk);
  for (uint64_t offset = 0; offset < size; offset += kChunk) {
    uint64_t n = std::min(kChunk, size - offset);
    iovec v{buf.data(), n};
    Request r;
    r.op = Op::Read;
    r.offset = offset;
    r.iov = std::span<const iovec>(&v, 1);
    if (auto s = run(**in_ctx, r); !s) return s;
    for (uint64_t g = 0; g < n; g += kZeroGranule) {
      uint64_t len = std::min(kZeroGranule, n - g);
      if (all_zero(buf.data() + g, len)) continue;
      if (auto s = sink->write(offset + g, std::span<const uint8_t>(buf.data() + g, len)); !s) return s;
    }
    if (options.progress) options.progress(static_cast<double>(offset + n) / static_cast<double>(size));
  }
  if (size == 0 && options.progress) options.progress(1.0);
  return sink->finish();
}

}  // namespace tern::block
