// tern-img create [-f raw|qcow2] [-o key=value,...] [-b BACKING] [-F FMT] FILE [SIZE]
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "base/unique_fd.h"
#include "block/image.h"
#include "block/new_image.h"
#include "tools/tern_img/verbs.h"

namespace tern::img {
namespace {

struct CreateArgs {
  std::string format = "raw";
  std::string options;
  std::string backing;
  std::string backing_format;
  std::string file;
  std::string size;
};

// Writes the new raw image into `path` (NewImage's file for it).
block::Result<void> create_raw(const std::string& path, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return block::fail(block::Errc::OpenFailed, errno);
  UniqueFd owned(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) return block::fail(block::Errc::ResizeFailed, errno);
  if (::fsync(fd) != 0) return block::fail(block::Errc::FlushFailed, errno);
  return {};
}

// Creates the image `file` through `make` (given the file to write), under
// a temporary name renamed into place once complete (block/new_image.h): a
// failure leaves no partial image, and a file it was to replace as it was.
template <class Make>
int create_new(const std::string& file, Make&& make) {
  auto image = block::NewImage::prepare(file);
  if (!image) {
    std::fprintf(stderr, "tern-img: %s: %s\n", file.c_str(), image.error().message().c_str());
    return 1;
  }
  block::Result<void> r = make(image->path());
  if (r) r = image->commit();
  if (!r) {
    std::fprintf(stderr, "tern-img: %s: %s\n", file.c_str(),
                 image->named_for_destination(r.error()).message().c_str());
    return 1;
  }
  return 0;
}

int run_create(const CreateArgs& a) {
  uint64_t size = 0;
  if (!a.size.empty()) {
    auto parsed = parse_size(a.size);
    if (!parsed) {
      std::fprintf(stderr, "tern-img: invalid image size '%s'\n", a.size.c_str());
      return 1;
    }
    size = *parsed;
  }
  if (a.format == "raw") {
    if (!a.options.empty() || !a.backing.empty()) {
      std::fprintf(stderr, "tern-img: raw images take no -o options or backing file\n");
      return 1;
    }
    return create_new(a.file, [&](const std::string& path) { return create_raw(path, size); });
  }
  if (a.format != "qcow2") {
    std::fprintf(stderr, "tern-img: unknown format '%s' (raw or qcow2)\n", a.format.c_str());
    return 1;
  }
  block::CreateOptions c;
  c.size = size;
  c.backing_file = a.backing;
  c.backing_format = a.backing_format;
  if (!parse_qcow2_options(a.options, c)) return 1;
  if (size == 0 && c.backing_file.empty()) {
    std::fprintf(stderr, "tern-img: image size required\n");
    return 1;
  }
  return create_new(a.file, [&](const std::string& path) {
    c.path = path;
    return block::create_image(c);
  });
}

}  // namespace

bool parse_qcow2_options(const std::string& options, block::CreateOptions& c) {
  std::stringstream list(options);
  std::string item;
  while (std::getline(list, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    std::string key = item.substr(0, eq);
    std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
    auto number = parse_size(value);
    if (key == "cluster_size" && number) {
      c.cluster_size = static_cast<uint32_t>(*number);
    } else if (key == "refcount_bits" && number) {
      c.refcount_bits = static_cast<uint32_t>(*number);
    } else if (key == "compat" && (value == "0.10" || value == "v2")) {
      c.version = 2;
    } else if (key == "compat" && (value == "1.1" || value == "v3")) {
      c.version = 3;
    } else if (key == "compression_type" && (value == "zlib" || value == "zstd")) {
      c.compression_type = value == "zstd" ? block::CompressionType::Zstd
                                           : block::CompressionType::Zlib;
    } else if (key == "backing_file") {
      c.backing_file = value;
    } else if (key == "backing_fmt") {
      c.backing_format = value;
    } else {
      std::fprintf(stderr, "tern-img: invalid option '%s'\n", item.c_str());
      return false;
    }
  }
  return true;
}

void add_create(CLI::App& app, int& status) {
  auto args = std::make_shared<CreateArgs>();
  auto* cmd = app.add_subcommand("create", "create a new image");
  cmd->add_option("-f", args->format, "format: raw or qcow2");
  cmd->add_option("-o", args->options,
                  "qcow2: cluster_size=,refcount_bits=,compat=0.10|1.1,compression_type=zlib|zstd,"
                  "backing_file=,backing_fmt=");
  cmd->add_option("-b", args->backing, "backing file");
  cmd->add_option("-F", args->backing_format, "backing file format");
  cmd->add_option("file", args->file)->required();
  cmd->add_option("size", args->size, "e.g. 10G");
  cmd->callback([args, &status] { status = run_create(*args); });
}

}  // namespace tern::img
