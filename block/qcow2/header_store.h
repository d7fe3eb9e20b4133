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

  [[nodiscard]] Result<void> commit() {
    auto bytes = encode_fixed_fields(header_);
    if (auto r = file_.write_at(0, bytes); !r) return fail(Errc::WritingHeader, r.error().sys_errno);
    if (auto r = file_.sync(); !r) return fail(Errc::SyncingHeader, r.error().sys_errno);
    return {};
  }

 private:
  HostFile& file_;
  Header header_;
};

}  // namespace tern::block::qcow2
