// tern-img commit [-q] [-d] [-f FMT] IMG: writes what the overlay IMG holds
// into its backing file, then empties IMG (unless -d), as qemu-img commit.
// The chain is opened with the rules of every open (loops, depth, block
// devices: block/chain.h).
#include <algorithm>
#include <cstdio>
#include <vector>

#include "block/chain.h"
#include "block/io/wait.h"
#include "block/image.h"
#include "block/new_image.h"
#include "block/open.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

constexpr uint64_t kChunk = 1 << 20;

struct CommitArgs {
  bool quiet = false;
  bool keep = false;  // -d: leave the overlay as it is
  std::string format;
  std::string file;
};

// Empties a QCOW2 overlay: a new image with the same header settings, as
// qemu's make_empty leaves it (no cluster allocated, same backing file),
// built beside it and renamed over it, so a failure leaves the overlay as
// it was (block/new_image.h).
block::Result<void> empty_overlay(const std::string& path) {
  auto info = block::read_image_info(path);
  if (!info) return std::unexpected(info.error());
  auto image = block::NewImage::prepare(path);
  if (!image) return std::unexpected(image.error());
  block::CreateOptions c;
  c.path = image->path();
  c.size = info->virtual_size;
  c.cluster_size = static_cast<uint32_t>(info->cluster_size);
  c.refcount_bits = info->refcount_bits;
  c.version = info->compat == "0.10" ? 2 : 3;
  c.compression_type = info->compression_type == "zstd" ? block::CompressionType::Zstd
                                                        : block::CompressionType::Zlib;
  c.backing_file = info->backing_file;
  c.backing_format = info->backing_format;
  if (auto r = block::create_image(c); !r) return std::unexpected(image->named_for_destination(r.error()));
  return image->commit();
}

// Copies the overlay's clusters into its backing file; 0 or an exit status.
// `qcow2_top` tells whether the overlay can be emptied afterwards.
int commit_data(const CommitArgs& a, bool& qcow2_top) {
  block::ChainOptions co;
  co.top_type = block::parse_image_type(a.format).value_or(block::ImageType::Auto);
  auto chain = block::Chain::open(a.file, co);
  if (!chain) return report_error("Could not open '" + a.file + "': " + chain.error().message());
  if (chain->layers() < 2) return report_error("Image does not have a backing file");
  const std::string base_path = chain->path(1);
  // The backing file, writable, with the files under it for its own
  // copy-on-write reads.
  block::OpenOptions bo;
  bo.path = base_path;
  bo.type = block::parse_image_type(chain->format(1)).value_or(block::ImageType::Raw);
  bo.allow_backing = true;
  bo.aio = block::AioMode::Sync;
  auto base = block::open_disk(bo);
  if (!base) return report_error("Could not open backing file '" + base_path + "': " + base.error().message());
  const uint64_t size = chain->size(0);
  if ((*base)->size() < size) {
    if (auto r = (*base)->resize(size); !r) return report_error(base_path + ": " + r.error().message());
  }
  auto io = (*base)->make_io_context(1);
  if (!io) return report_error(io.error().message());

  std::vector<uint8_t> buf;
  for (uint64_t offset = 0; offset < size;) {
    auto e = chain->layer_status(0, offset, size - offset);
    if (!e) return report_error(a.file + ": " + e.error().message());
    // Unallocated ranges are skipped whole; data goes a buffer's worth at
    // a time, zeros a request's worth.
    if (e->present) e->length = std::min(e->length, e->zero ? block::kMaxTransferBytes : kChunk);
    if (e->present) {
      block::Request r;
      iovec v{};
      r.offset = offset;
      if (e->zero) {
        r.op = block::Op::WriteZeroes;
        r.length = e->length;
      } else {
        buf.resize(e->length);
        if (auto s = chain->read(0, offset, buf); !s) return report_error(a.file + ": " + s.error().message());
        v = {buf.data(), buf.size()};
        r.op = block::Op::Write;
        r.iov = std::span<const iovec>(&v, 1);
      }
      if (auto s = block::io::run_to_completion(**io, r); !s) return report_error(base_path + ": " + s.error().message());
    }
    offset += e->length;
  }
  io->reset();  // the context goes before its disk
  if (auto r = (*base)->close(); !r) return report_error(base_path + ": " + r.error().message());
  if (auto r = chain->close(); !r) return report_error(a.file + ": " + r.error().message());
  qcow2_top = chain->format(0) == "qcow2";
  return 0;
}

int run_commit(const CommitArgs& a) {
  bool qcow2_top = false;
  // The overlay's descriptors and lock are gone before it is emptied.
  if (int status = commit_data(a, qcow2_top); status != 0) return status;
  if (!a.keep && qcow2_top) {
    if (auto r = empty_overlay(a.file); !r) return report_error(a.file + ": emptying: " + r.error().message());
  }
  if (!a.quiet) std::printf("Image committed.\n");
  return 0;
}

}  // namespace

void add_commit(CLI::App& app, int& status) {
  auto args = std::make_shared<CommitArgs>();
  auto* cmd = app.add_subcommand("commit", "write an overlay's data into its backing file, then empty it");
  cmd->add_flag("-q", args->quiet, "print nothing on success");
  cmd->add_flag("-d", args->keep, "do not empty the overlay");
  cmd->add_option("-f", args->format, "image format (probed)")->check(CLI::IsMember({"raw", "qcow2"}));
  cmd->add_option("file", args->file)->required();
  cmd->callback([args, &status] { status = run_commit(*args); });
}

}  // namespace tern::img
