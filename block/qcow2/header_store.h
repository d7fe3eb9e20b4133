// HeaderStore: the in-memory header and the one way to persist it. Only the
// fixed fields are rewritten (never the extension area or backing name), and
// a failed write (WritingHeader) is told apart from a failed sync
// (SyncingHeader).
#pragma once

#include "block/qcow2/format.h"
#include "block/qcow2/host_file.h"

namespace tern::block::qcow2 {

class HeaderStore {
 public:
  HeaderStore(HostFile& file, Header header) : file_(file), header_(std::move(header)) {}

  Header& get() { return header_; }
  const Header& get() const { return header_; }

  // Writable images get the corrupt bit when the engine finds corruption.
  void set_writable(bool writable) { writable_ = writable; }

  // Sets the corrupt bit (qcow2.txt: incompatible bit 1) on a writable v3
  // image and returns the CorruptImage error to fail the request with.
  // The request fails either way; when the bit could not be written, the
  // error says so (and why), so the host learns that the image on disk
  // is not marked.
  [[nodiscard]] Error mark_corrupt(std::string detail) {
    if (writable_ && header_.version >= 3 && !(header_.incompatible_features & kIncompatCorrupt)) {
      header_.incompatible_features |= kIncompatCorrupt;
      if (auto r = commit(); !r) {
        detail += "; the corrupt bit could not be set: " + r.error().message();
        return Error{Errc::CorruptImage, r.error().sys_errno, std::move(detail)};
      }
    }
    return Error{Errc::CorruptImage, 0, std::move(detail)};
  }

  [[nodiscard]] Result<void> commit() {
    auto bytes = encode_fixed_fields(header_);
    if (auto r = file_.write_at(0, bytes); !r) return fail(Errc::WritingHeader, r.error().sys_errno);
    if (auto r = file_.sync(); !r) return fail(Errc::SyncingHeader, r.error().sys_errno);
    return {};
  }

 private:
  HostFile& file_;
  Header header_;
  bool writable_ = false;
};

}  // namespace tern::block::qcow2
