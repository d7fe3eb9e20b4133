// Engine: the QCOW2 image state machine (L1/L2 mapping, allocation,
// compressed clusters, backing file, resize, metadata write-back). It is
// synchronous and NOT thread-safe: its caller holds a reader/writer lock
// (Qcow2Disk, block/qcow2/qcow2_disk.h), exclusive around every call except
// map_shared(), which may run under the shared side beside other
// map_shared() calls. Guest data of clusters that are already allocated is
// handed back as host extents so the caller transfers it outside the lock.
#pragma once

#include <sys/uio.h>

#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "block/error.h"
#include "block/image.h"
#include "block/qcow2/backing.h"
#include "block/qcow2/format.h"
#include "block/qcow2/header_store.h"
#include "block/qcow2/host_file.h"
#include "block/io/iov.h"
#include "block/qcow2/refcounts.h"
#include "block/qcow2/table_cache.h"
#include "block/qcow2/transfers.h"

namespace tern::block::qcow2 {

struct EngineOptions {
  bool read_only = false;
  bool allow_backing = false;
  bool allow_block_backing = false;  // a block device as a backing file
  // The images above this one when it is opened as a backing file.
  BackingChain chain;
  size_t l2_cache_bytes = 32ull << 20;
  size_t refcount_cache_bytes = 4ull << 20;
  // Open a corrupt image writable, to repair it (tern-img check -r).
  bool repair = false;
  // Where warnings go (stderr when empty).
  std::function<void(const std::string&)> warn;
};

// Engine::check()'s terms (block/image.h); tests name them qcow2::.
using block::CheckResult;
using block::kMaxCheckMessages;
using block::Repair;

// A piece of a request whose data lives at `host_offset` in the image file.
struct HostExtent {
  uint64_t host_offset = 0;
  uint64_t request_offset = 0;  // byte offset inside the request's iovecs
  uint64_t length = 0;
};

// What one guest cluster maps to in this image alone (tern-img map,
// compare, commit, rebase and measure look at layers one by one).
enum class ClusterKind { Unallocated, Zero, Compressed, Data };
struct ClusterStatus {
  ClusterKind kind = ClusterKind::Unallocated;
  uint64_t host_offset = 0;  // Data; Zero when it keeps its allocation; else 0
};
// A run of clusters mapped alike: the status of its first cluster and the
// bytes it spans (Data, and Zero with an allocation: at consecutive host
// offsets).
struct ExtentStatus {
  ClusterStatus status;
  uint64_t length = 0;
};

class Engine {
 public:
  [[nodiscard]] static Result<std::unique_ptr<Engine>> open(std::unique_ptr<HostFile> file,
                                                            const std::string& path,
                                                            const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const Header& header() const { return header_.get(); }
  uint64_t size() const { return header_.get().size; }
  bool read_only() const { return options_.read_only; }
  bool has_backing() const { return backing_ != nullptr; }
  HostFile& file() { return *file_; }
  // The image's descriptor and those of its backing chain (DiskFile::image_fds).
  void image_fds(std::vector<int>& out) const;

  // Reads [offset, offset + iov_length(iov)). With `deferred`, data of
  // allocated standard clusters is left for the caller (the extents are
  // appended; host-contiguous pieces merged); everything else is filled in.
  [[nodiscard]] Result<void> read(uint64_t offset, std::span<const iovec> iov,
                                  std::vector<HostExtent>* deferred);
  // Writes; with `deferred`, in-place writes into allocated clusters are
  // left for the caller, everything needing metadata or copy-on-write is done.
  [[nodiscard]] Result<void> write(uint64_t offset, std::span<const iovec> iov,
                                   std::vector<HostExtent>* deferred);
  // The shared-lock fast path of read() and write() with deferral: maps a
  // request that changes no metadata. Reads: standard clusters become
  // extents, zero and unallocated ones are filled (the backing file read,
  // itself thread-safe). Writes: every cluster must be standard with
  // OFLAG_COPIED in its L1 and L2 entries and clear of metadata. Only
  // cached L2 tables are used. Returns false, with nothing to keep, when
  // the request needs the exclusive path (a table not cached, compressed
  // clusters, allocation or copy-on-write, or anything that looks corrupt:
  // the exclusive path reports it and sets the corrupt bit).
  [[nodiscard]] Result<bool> map_shared(bool is_write, uint64_t offset, std::span<const iovec> iov,
                                        std::vector<HostExtent>& extents);
  [[nodiscard]] Result<void> discard(uint64_t offset, uint64_t length);
  // Writes the whole guest cluster at `guest_offset` (aligned) compressed,
  // into bytes of its own (block/qcow2/compressed_write.cpp); `data` is
  // one cluster, or less for the image's last cluster (zeros follow). When
  // compressing does not make it smaller it is written as a standard
  // cluster, as QEMU does.
  [[nodiscard]] Result<void> write_compressed(uint64_t guest_offset, std::span<const uint8_t> data);
  // The mapping of the cluster holding `guest_offset` (below size()).
  [[nodiscard]] Result<ClusterStatus> cluster_status(uint64_t guest_offset);
  // The mapping from `guest_offset` (below size()) on, for at most
  // `max_length` bytes: as far as the clusters after the first are mapped
  // the same way, read from the L1/L2 tables, so the cost follows the
  // tables rather than the clusters (an unallocated L1 entry answers for
  // its whole L2 range at once).
  [[nodiscard]] Result<ExtentStatus> extent_status(uint64_t guest_offset, uint64_t max_length);
  [[nodiscard]] Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap);
  // Writes back dirty metadata (refcounts, L2, L1), then syncs the file.
  [[nodiscard]] Result<void> flush();
  [[nodiscard]] Result<void> resize(uint64_t new_size);
  // flush(), then gives back the space preallocated past the last cluster.
  [[nodiscard]] Result<void> close();
  // Recomputes every refcount from the L1/L2 tables and compares (and with
  // `repair`, fixes leaks, or leaks, refcounts and OFLAG_COPIED flags).
  [[nodiscard]] Result<CheckResult> check(Repair repair);

  // Tickets of the deferred transfers (extents handed back by read() and
  // write()) still in flight: the caller takes one under the same lock as
  // the read()/write() that produced the extents and gives it back when
  // the transfer is over. Freed clusters stay out of allocation until the
  // transfers that were out when they were freed are back (transfers.h).
  TransferTracker& transfers() { return transfers_; }
  // Freed clusters held back from allocation now.
  uint64_t held_clusters() const { return refcounts_->held_clusters(); }

 private:
  Engine(std::unique_ptr<HostFile> file, Header header, const EngineOptions& options);

  struct Mapping {
    enum Kind { Unallocated, Zero, Compressed, Standard } kind = Unallocated;
    uint64_t entry = 0;        // the raw L2 entry
    uint64_t host_offset = 0;  // Standard: start of the host cluster
  };
  struct L2Slot {
    uint64_t table = 0;  // host offset of the L2 table
    uint64_t index = 0;  // entry index in it
  };

  Result<Mapping> lookup(uint64_t guest_offset);
  // lookup() without side effects, for map_shared(): nullopt when the
  // exclusive path is needed.
  std::optional<Mapping> lookup_shared(uint64_t guest_offset, bool for_write);
  Result<Mapping> classify(uint64_t entry);
  // classify() without marking corruption: nullopt for an unaligned offset.
  std::optional<Mapping> decode(uint64_t entry) const;
  Result<L2Slot> l2_slot_for_write(uint64_t guest_offset);
  Result<uint64_t> l2_entry(const L2Slot& slot);
  Result<void> set_l2_entry(const L2Slot& slot, uint64_t entry);
  Result<void> read_compressed(uint64_t entry, std::span<uint8_t> out);
  Result<void> drop_reference(uint64_t host_offset);
  Result<void> release_cluster(const Mapping& mapping);
  Result<void> fill_cluster(uint64_t guest_cluster, const Mapping& old, std::span<uint8_t> out);
  // `iov` is the request's cursor: clusters are written front to back.
  Result<void> write_cluster(uint64_t guest_offset, IovCursor& iov,
                             uint64_t request_offset, uint64_t length,
                             std::vector<HostExtent>* deferred);
  Result<void> write_cluster(uint64_t guest_offset, std::span<const iovec> iov,
                             uint64_t request_offset, uint64_t length,
                             std::vector<HostExtent>* deferred) {
    IovCursor cursor(iov);
    return write_cluster(guest_offset, cursor, request_offset, length, deferred);
  }
  Result<void> zero_cluster(uint64_t guest_offset, bool may_unmap, bool discard);
  // `length` bytes for compressed data, packed after the previous ones.
  Result<uint64_t> allocate_compressed_bytes(uint64_t length);
  Result<void> flush_metadata();
  bool overlaps_metadata(uint64_t host_cluster) const;
  Result<void> preallocate_for(uint64_t host_end);
  Result<void> rebuild_refcounts();
  void warn(const std::string& message) const;
  uint64_t l1_entry(uint64_t index) const;
  void set_l1_entry(uint64_t index, uint64_t value);
  bool v3() const { return header_.get().version >= 3; }

  std::unique_ptr<HostFile> file_;
  HeaderStore header_;
  EngineOptions options_;
  uint32_t cluster_bits_;
  uint64_t cluster_size_;
  std::vector<uint8_t> l1_;  // on-disk (big-endian) form, written as is
  bool l1_dirty_ = false;
  std::unique_ptr<Refcounts> refcounts_;
  TableCache l2_cache_;
  std::unique_ptr<Backing> backing_;
  uint64_t preallocated_end_ = 0;  // the file is at least this long
  TransferTracker transfers_;
  // Where the next compressed cluster's bytes go (inside a host cluster
  // already counted for earlier ones), 0 when none; dropped whenever a
  // cluster is released, so it never points into a freed cluster.
  uint64_t compressed_cursor_ = 0;
};

}  // namespace tern::block::qcow2
