// NewImage: where a command writes an image it creates (tern-img create,
// convert, and commit's emptied overlay). The image is built in a
// temporary file beside its destination and renamed over it by commit()
// once complete and synced; otherwise the destructor removes it. A failed
// command so leaves no partial image behind, and a file it was to replace
// stays as it was. A destination that exists and is not a regular file (a
// block device, a symbolic link, ...) is written in place, as qemu-img
// does: it is not ours to replace or remove.
#pragma once

#include <string>

#include "block/error.h"

namespace tern::block {

class NewImage {
 public:
  // Errc::LockConflict when another process has the destination open
  // (its image lock, docs/SECURITY.md): an image in use is not replaced.
  [[nodiscard]] static Result<NewImage> prepare(const std::string& destination);
  NewImage(NewImage&& other) noexcept;
  NewImage& operator=(NewImage&&) = delete;
  NewImage(const NewImage&) = delete;
  ~NewImage();

  // The file to write the image into (created empty; open it by name).
  const std::string& path() const { return path_; }
  // Renames the image into place and syncs the directory that holds it.
  [[nodiscard]] Result<void> commit();
  // `e` with the temporary file's name in its detail replaced by the
  // destination's, for messages that name what the user asked for.
  Error named_for_destination(Error e) const;

 private:
  NewImage(std::string destination, std::string path, bool temporary)
      : destination_(std::move(destination)), path_(std::move(path)), pending_(temporary) {}

  std::string destination_;
  std::string path_;
  bool pending_;  // path_ is a temporary file of ours, not yet renamed
};

}  // namespace tern::block
