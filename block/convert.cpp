#include "block/convert.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "base/unique_fd.h"
#include "block/chain.h"
#include "block/io/transfer.h"
#include "block/io/wait.h"
#include "block/new_image.h"
#include "block/qcow2/engine.h"
#include "block/qcow2/qcow2_disk.h"

namespace tern::block {
namespace {

constexpr uint64_t kChunk = 1 << 20;
constexpr uint64_t kZeroGranule = 64 << 10;

bool all_zero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::equal(p, p + n - 1, p + 1));
}

Request single(Op op, uint64_t offset, iovec& v) {
  Request r;
  r.op = op;
  r.offset = offset;
  r.iov = std::span<const iovec>(&v, 1);
  return r;
}

// Where converted data goes: a plain file or a disk.
class Sink {
 public:
  virtual ~Sink() = default;
  // The granule of write(): writes cover it whole (the image's end aside).
  virtual uint64_t granule() const { return kZeroGranule; }
  virtual Result<void> write(uint64_t offset, std::span<const uint8_t> data) = 0;
  virtual Result<void> finish() = 0;
};

class RawSink final : public Sink {
 public:
  explicit RawSink(UniqueFd fd) : fd_(std::move(fd)) {}
  Result<void> write(uint64_t offset, std::span<const uint8_t> data) override {
    if (all_zero(data.data(), data.size())) return {};  // the file is sparse
    return io::write_all(fd_.get(), data, offset);
  }
  Result<void> finish() override { return io::sync_file(fd_.get(), false); }

 private:
  UniqueFd fd_;
};

// A new QCOW2 image. Without a backing file it starts all zeros, so zero
// granules are skipped; with one, a granule is written (zeros included)
// only where it differs from what the backing file shows.
class Qcow2Sink final : public Sink {
 public:
  Qcow2Sink(std::unique_ptr<DiskFile> disk, std::unique_ptr<IoContext> ctx, uint64_t cluster_size,
            bool compress, bool backed)
      : disk_(std::move(disk)),
        ctx_(std::move(ctx)),
        cluster_size_(cluster_size),
        compress_(compress),
        backed_(backed) {}
  uint64_t granule() const override { return std::max(cluster_size_, compress_ ? cluster_size_ : kZeroGranule); }
  Result<void> write(uint64_t offset, std::span<const uint8_t> data) override {
    const bool zero = all_zero(data.data(), data.size());
    if (backed_) {
      below_.resize(data.size());
      iovec v{below_.data(), below_.size()};
      if (auto r = io::run_to_completion(*ctx_, single(Op::Read, offset, v)); !r) return r;
      if (std::equal(data.begin(), data.end(), below_.begin())) return {};
      if (zero) {
        Request z;
        z.op = Op::WriteZeroes;
        z.offset = offset;
        z.length = data.size();
        return io::run_to_completion(*ctx_, z);
      }
    } else if (zero) {
      return {};
    }
    if (compress_) {
      auto* q = static_cast<qcow2::Qcow2Disk*>(disk_.get());
      for (uint64_t done = 0; done < data.size(); done += cluster_size_) {
        auto piece = data.subspan(done, std::min<uint64_t>(cluster_size_, data.size() - done));
        auto r = q->with_engine([&](qcow2::Engine& e) { return e.write_compressed(offset + done, piece); });
        if (!r) return r;
      }
      return {};
    }
    iovec v{const_cast<uint8_t*>(data.data()), data.size()};
    return io::run_to_completion(*ctx_, single(Op::Write, offset, v));
  }
  Result<void> finish() override {
    ctx_.reset();
    return disk_->close();
  }

 private:
  std::unique_ptr<DiskFile> disk_;
  std::unique_ptr<IoContext> ctx_;
  uint64_t cluster_size_;
  bool compress_;
  bool backed_;
  std::vector<uint8_t> below_;
};

// The sink writes into `path`, the file NewImage gave for options.output.
Result<std::unique_ptr<Sink>> make_sink(const ConvertOptions& options, const std::string& path, uint64_t size) {
  if (options.output_type == ImageType::Qcow2) {
    qcow2::CreateOptions create = options.qcow2;
    create.path = path;
    create.size = size;
    if (auto r = qcow2::create_image(create); !r) return std::unexpected(r.error());
    OpenOptions out_options;
    out_options.path = path;
    out_options.type = ImageType::Qcow2;
    out_options.allow_backing = !create.backing_file.empty();
    out_options.aio = AioMode::Sync;
    auto out = open_disk(out_options);
    if (!out) return std::unexpected(out.error());
    if ((*out)->size() != size) {
      return fail(Errc::InvalidArgument, 0, options.output + ": the backing file sets another size");
    }
    auto ctx = (*out)->make_io_context(1);
    if (!ctx) return std::unexpected(ctx.error());
    return std::make_unique<Qcow2Sink>(std::move(*out), std::move(*ctx), create.cluster_size, options.compress,
                                       !create.backing_file.empty());
  }
  if (options.compress || !options.qcow2.backing_file.empty()) {
    return fail(Errc::InvalidArgument, 0, "compression and backing files need a qcow2 output");
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return fail(Errc::OpenFailed, errno, options.output);
  UniqueFd owned(fd);
  while (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    if (errno != EINTR) return fail(Errc::ResizeFailed, errno, options.output);
  }
  return std::make_unique<RawSink>(std::move(owned));
}

}  // namespace

Result<void> convert_image(const ConvertOptions& options) {
  OpenOptions in_options;
  in_options.path = options.input;
  in_options.type = options.input_type;
  in_options.read_only = true;
  in_options.allow_backing = true;  // like qemu-img, follow backing files
  in_options.aio = AioMode::Sync;
  auto in = open_disk(in_options);
  if (!in) return std::unexpected(in.error());
  auto in_ctx = (*in)->make_io_context(1);
  if (!in_ctx) return std::unexpected(in_ctx.error());
  const uint64_t size = (*in)->size();

  // Written under a temporary name and renamed into place when complete:
  // a failure leaves no partial output (block/new_image.h).
  auto output = NewImage::prepare(options.output);
  if (!output) return std::unexpected(output.error());
  auto copied = [&]() -> Result<void> {
    auto sink = make_sink(options, output->path(), size);
    if (!sink) return std::unexpected(sink.error());
    const uint64_t granule = (*sink)->granule();
    const uint64_t chunk = std::max(kChunk, granule);
    std::vector<uint8_t> buf(chunk);
    for (uint64_t offset = 0; offset < size; offset += chunk) {
      uint64_t n = std::min(chunk, size - offset);
      iovec v{buf.data(), n};
      if (auto s = io::run_to_completion(**in_ctx, single(Op::Read, offset, v)); !s) return s;
      for (uint64_t g = 0; g < n; g += granule) {
        uint64_t len = std::min(granule, n - g);
        if (auto s = (*sink)->write(offset + g, std::span<const uint8_t>(buf.data() + g, len)); !s) return s;
      }
      if (options.progress) options.progress(static_cast<double>(offset + n) / static_cast<double>(size));
    }
    if (size == 0 && options.progress) options.progress(1.0);
    return (*sink)->finish();
  }();
  if (!copied) return std::unexpected(output->named_for_destination(copied.error()));
  return output->commit();
}

}  // namespace tern::block
