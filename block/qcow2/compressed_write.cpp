// Compressed cluster writes (tern-img convert -c), kept apart from the
// standard write path: qcow2.txt, "Compressed Clusters Descriptor".
//  - The data takes only the bytes it needs; consecutive compressed
//    clusters share host clusters, and a host cluster's refcount counts
//    the compressed clusters whose bytes touch it (QEMU's
//    qcow2_alloc_bytes), so one may span two host clusters.
//  - A compressed L2 entry never carries OFLAG_COPIED.
#include <algorithm>
#include <vector>

#include "block/qcow2/compression.h"
#include "block/qcow2/engine.h"

namespace tern::block::qcow2 {

Result<uint64_t> Engine::allocate_compressed_bytes(uint64_t length) {
  uint64_t offset = compressed_cursor_;
  if (offset != 0) {
    // The cluster is shared once more below; not past the refcount width.
    auto rc = refcounts_->get(offset);
    if (!rc) return std::unexpected(rc.error());
    if (*rc == 0 || *rc >= refcounts_->max_refcount()) offset = 0;
  }
  const uint64_t room = offset == 0 ? 0 : cluster_size_ - (offset & (cluster_size_ - 1));
  if (offset != 0 && room >= length) {
    if (auto r = refcounts_->adjust(offset, +1); !r) return std::unexpected(r.error());
  } else {
    bool fresh = false;
    auto at = refcounts_->allocate(1, fresh);  // refcount 1: this compressed cluster
    if (!at) return std::unexpected(at.error());
    if (*at == 0) return std::unexpected(header_.mark_corrupt("allocation at offset 0"));
    if (auto r = preallocate_for(*at + cluster_size_); !r) return std::unexpected(r.error());
    if (offset != 0 && offset + room == *at) {
      // Spills from the current cluster into the next one: both counted.
      if (auto r = refcounts_->adjust(offset, +1); !r) return std::unexpected(r.error());
    } else {
      offset = *at;
    }
  }
  compressed_cursor_ = (offset + length) & (cluster_size_ - 1) ? offset + length : 0;
  return offset;
}

Result<void> Engine::write_compressed(uint64_t guest, std::span<const uint8_t> data) {
  if (options_.read_only) return fail(Errc::ReadOnly);
  if ((guest & (cluster_size_ - 1)) != 0 || data.size() > cluster_size_ || guest >= size() ||
      (data.size() < cluster_size_ && guest + data.size() != size())) {
    return fail(Errc::InvalidArgument, 0, "a compressed write covers one whole cluster");
  }
  std::vector<uint8_t> cluster(data.begin(), data.end());
  cluster.resize(cluster_size_, 0);
  // QEMU keeps the compressed form only when it is at least a byte shorter.
  std::vector<uint8_t> packed(cluster_size_ - 1);
  auto length = compress_cluster(header_.get().compression_type, cluster, packed);
  if (!length) return std::unexpected(length.error());
  if (!*length) {
    iovec v{cluster.data(), cluster.size()};
    return write_cluster(guest, std::span<const iovec>(&v, 1), 0, cluster_size_, nullptr);
  }
  auto slot = l2_slot_for_write(guest);
  if (!slot) return std::unexpected(slot.error());
  auto entry = l2_entry(*slot);
  if (!entry) return std::unexpected(entry.error());
  auto old = classify(*entry);
  if (!old) return std::unexpected(old.error());
  // Release first: the bytes may then reuse what the old mapping held.
  if (auto r = set_l2_entry(*slot, 0); !r) return r;
  if (auto r = release_cluster(*old); !r) return r;

  auto host = allocate_compressed_bytes(**length);
  if (!host) return std::unexpected(host.error());
  if (auto r = file_->write_at(*host, std::span<const uint8_t>(packed.data(), **length)); !r) {
    return fail(Errc::WriteFailed, r.error().sys_errno, "compressed cluster");
  }
  return set_l2_entry(*slot, CompressedDescriptor::encode(*host, **length, cluster_bits_));
}

}  // namespace tern::block::qcow2
