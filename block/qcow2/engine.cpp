#include "block/qcow2/engine.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "block/qcow2/big_endian.h"
#include "block/qcow2/compression.h"
#include "block/io/iov.h"

namespace tern::block::qcow2 {

Engine::Engine(std::unique_ptr<HostFile> file, Header header, const EngineOptions& options)
    : file_(std::move(file)),
      header_(*file_, std::move(header)),
      options_(options),
      cluster_bits_(header_.get().cluster_bits),
      cluster_size_(header_.get().cluster_size()),
      l2_cache_(*file_, cluster_size_, options.l2_cache_bytes >> cluster_bits_,
                Errc::ReadingMetadata, Errc::WritingMetadata) {}

Engine::~Engine() = default;

void Engine::image_fds(std::vector<int>& out) const {
  out.push_back(file_->fd());
  if (backing_) backing_->image_fds(out);
}

Result<std::unique_ptr<Engine>> Engine::open(std::unique_ptr<HostFile> file,
                                             const std::string& path,
                                             const EngineOptions& options) {
  auto file_size = file->size();
  if (!file_size) return fail(Errc::ReadingHeader, file_size.error().sys_errno, path);
  auto header = read_header(*file, *file_size);
  if (!header) {
    Error e = header.error();
    e.detail = path + ": " + e.detail;
    return std::unexpected(e);
  }
  if (!options.read_only) {
    // qcow2.txt: a corrupt image "must not be opened for writing".
    if ((header->incompatible_features & kIncompatCorrupt) && !options.repair) {
      return fail(Errc::CorruptImage, 0,
                  path + ": corrupt bit set; open it read-only or repair it (tern-img check -r all)");
    }
    if (header->nb_snapshots > 0) {
      return fail(Errc::UnsupportedFeature, 0, path + ": writing images with internal snapshots");
    }
  }
  std::unique_ptr<Engine> engine(new Engine(std::move(file), std::move(*header), options));
  Header& h = engine->header_.get();
  if (!h.backing_file.empty()) {
    if (!options.allow_backing) return fail(Errc::BackingRefused, 0, path + " -> " + h.backing_file);
    BackingRules rules;
    rules.allow_block_device = options.allow_block_backing;
    rules.chain = options.chain;
    rules.chain.push_back(chain_link(engine->file_->fd(), path));
    auto backing = open_backing(path, h.backing_file, h.backing_format, rules);
    if (!backing) return std::unexpected(backing.error());
    engine->backing_ = std::move(*backing);
  }
  engine->l1_.resize(static_cast<size_t>(h.l1_size) * 8);
  if (auto r = engine->file_->read_at(h.l1_table_offset, engine->l1_); !r) {
    return fail(Errc::ReadingMetadata, r.error().sys_errno, path + ": L1 table");
  }
  auto refcounts = Refcounts::load(*engine->file_, engine->header_, *file_size,
                                   options.refcount_cache_bytes >> h.cluster_bits);
  if (!refcounts) return std::unexpected(refcounts.error());
  engine->refcounts_ = std::move(*refcounts);
  engine->refcounts_->set_transfers(&engine->transfers_);
  engine->preallocated_end_ = *file_size;
  Refcounts* rc = engine->refcounts_.get();
  // An L2 table reaches the disk only after the refcounts that count the
  // clusters it names.
  engine->l2_cache_.set_before_write([rc] { return rc->flush(); });
  engine->header_.set_writable(!options.read_only);
  if (options.read_only || h.version < 3) return engine;  // header untouched
  if (h.incompatible_features & kIncompatDirty) {
    // Not closed cleanly: refcounts may be stale (qcow2.txt, dirty bit).
    engine->warn(path + ": image was not closed cleanly; rebuilding refcounts");
    if (auto r = engine->rebuild_refcounts(); !r) return std::unexpected(r.error());
  }
  // qcow2.txt: a writer that does not understand an autoclear bit clears it.
  h.autoclear_features = 0;
  // Dirty until a clean close, set and synced before the first write.
  h.incompatible_features |= kIncompatDirty;
  if (auto r = engine->header_.commit(); !r) return std::unexpected(r.error());
  return engine;
}

uint64_t Engine::l1_entry(uint64_t index) const { return load_be<uint64_t>(l1_.data() + index * 8); }

void Engine::set_l1_entry(uint64_t index, uint64_t value) {
  store_be<uint64_t>(l1_.data() + index * 8, value);
  l1_dirty_ = true;
}

std::optional<Engine::Mapping> Engine::decode(uint64_t entry) const {
  Mapping m;
  m.entry = entry;
  if (entry & kOflagCompressed) {
    m.kind = Mapping::Compressed;
    return m;
  }
  m.host_offset = entry & kOffsetMask;
  if (m.host_offset & (cluster_size_ - 1)) return std::nullopt;
  // The zero flag exists from version 3 on (qcow2.txt, "Standard Cluster
  // Descriptor", bit 0).
  if (v3() && (entry & kOflagZero)) {
    m.kind = Mapping::Zero;
  } else {
    m.kind = m.host_offset == 0 ? Mapping::Unallocated : Mapping::Standard;
  }
  return m;
}

Result<Engine::Mapping> Engine::classify(uint64_t entry) {
  auto m = decode(entry);
  if (!m) {
    return std::unexpected(
        header_.mark_corrupt("unaligned data cluster offset " + std::to_string(entry & kOffsetMask)));
  }
  return *m;
}

Result<Engine::Mapping> Engine::lookup(uint64_t guest_offset) {
  const uint32_t l2_bits = cluster_bits_ - 3;
  uint64_t l1_index = guest_offset >> (cluster_bits_ + l2_bits);
  if (l1_index >= header_.get().l1_size) return Mapping{};
  uint64_t l2_table = l1_entry(l1_index) & kOffsetMask;
  if (l2_table == 0) return Mapping{};
  if (l2_table & (cluster_size_ - 1)) {
    return std::unexpected(header_.mark_corrupt("unaligned L2 table offset " + std::to_string(l2_table)));
  }
  if (l2_table >= refcounts_->end()) {
    return std::unexpected(header_.mark_corrupt("L2 table offset " + std::to_string(l2_table) +
                                                " past the end of the image"));
  }
  auto table = l2_cache_.get(l2_table);
  if (!table) return std::unexpected(table.error());
  uint64_t index = (guest_offset >> cluster_bits_) & ((uint64_t{1} << l2_bits) - 1);
  return classify(load_be<uint64_t>(*table + index * 8));
}

Result<ClusterStatus> Engine::cluster_status(uint64_t guest_offset) {
  auto m = lookup(guest_offset);
  if (!m) return std::unexpected(m.error());
  switch (m->kind) {
    case Mapping::Unallocated: return ClusterStatus{};
    case Mapping::Zero: return ClusterStatus{ClusterKind::Zero, m->host_offset};
    case Mapping::Compressed: return ClusterStatus{ClusterKind::Compressed, 0};
    case Mapping::Standard: return ClusterStatus{ClusterKind::Data, m->host_offset};
  }
  return ClusterStatus{};
}

Result<ExtentStatus> Engine::extent_status(uint64_t guest_offset, uint64_t max_length) {
  const uint64_t size = header_.get().size;
  if (guest_offset >= size) return fail(Errc::OutOfRange, 0, "status past the end of the image");
  if (max_length == 0) return fail(Errc::InvalidArgument, 0, "status of no bytes");
  const uint64_t end = guest_offset + std::min(max_length, size - guest_offset);
  const uint32_t l2_bits = cluster_bits_ - 3;
  const uint32_t l2_shift = cluster_bits_ + l2_bits;  // bytes one L2 table maps: 2^l2_shift
  std::optional<Mapping> first;
  uint64_t next_host = 0;  // where the extent's next cluster must lie to continue it
  // Whether the cluster mapped as `m` continues the extent that `first` began.
  auto continues = [&](const Mapping& m) {
    if (m.kind != first->kind) return false;
    switch (m.kind) {
      case Mapping::Unallocated:
      case Mapping::Compressed:
        return true;
      case Mapping::Zero:
        // A zero cluster that keeps its allocation shows its offset.
        return first->host_offset == 0 ? m.host_offset == 0 : m.host_offset == next_host;
      case Mapping::Standard:
        return m.host_offset == next_host;
    }
    return false;
  };
  uint64_t pos = guest_offset;
  while (pos < end) {
    const uint64_t l1_index = pos >> l2_shift;
    // The end of this L1 entry's range, or `end`; no sum that could wrap.
    const uint64_t table_start = l1_index << l2_shift;
    const uint64_t table_span = uint64_t{1} << l2_shift;
    const uint64_t table_end = end - table_start > table_span ? table_start + table_span : end;
    const uint64_t l2_table = l1_index < header_.get().l1_size ? l1_entry(l1_index) & kOffsetMask : 0;
    if (l2_table == 0) {
      // No L2 table: its whole range is unallocated, one step.
      if (!first) first = Mapping{};
      if (first->kind != Mapping::Unallocated) break;
      pos = table_end;
      continue;
    }
    if (l2_table & (cluster_size_ - 1)) {
      return std::unexpected(header_.mark_corrupt("unaligned L2 table offset " + std::to_string(l2_table)));
    }
    if (l2_table >= refcounts_->end()) {
      return std::unexpected(header_.mark_corrupt("L2 table offset " + std::to_string(l2_table) +
                                                  " past the end of the image"));
    }
    auto table = l2_cache_.get(l2_table);
    if (!table) return std::unexpected(table.error());
    bool ended = false;
    while (pos < table_end) {
      const uint64_t index = (pos >> cluster_bits_) & ((uint64_t{1} << l2_bits) - 1);
      auto m = classify(load_be<uint64_t>(*table + index * 8));
      if (!m) return std::unexpected(m.error());
      if (!first) {
        first = *m;
      } else if (!continues(*m)) {
        ended = true;
        break;
      }
      next_host = m->host_offset + cluster_size_;
      pos += std::min(table_end - pos, cluster_size_ - (pos & (cluster_size_ - 1)));
    }
    if (ended) break;
  }
  ExtentStatus out;
  out.length = std::min(pos, end) - guest_offset;
  switch (first->kind) {
    case Mapping::Unallocated: break;
    case Mapping::Zero: out.status = ClusterStatus{ClusterKind::Zero, first->host_offset}; break;
    case Mapping::Compressed: out.status = ClusterStatus{ClusterKind::Compressed, 0}; break;
    case Mapping::Standard: out.status = ClusterStatus{ClusterKind::Data, first->host_offset}; break;
  }
  return out;
}

std::optional<Engine::Mapping> Engine::lookup_shared(uint64_t guest_offset, bool for_write) {
  const uint32_t l2_bits = cluster_bits_ - 3;
  uint64_t l1_index = guest_offset >> (cluster_bits_ + l2_bits);
  if (l1_index >= header_.get().l1_size) return for_write ? std::nullopt : std::optional<Mapping>(Mapping{});
  const uint64_t l1e = l1_entry(l1_index);
  const uint64_t l2_table = l1e & kOffsetMask;
  if (l2_table == 0) return for_write ? std::nullopt : std::optional<Mapping>(Mapping{});
  if ((l2_table & (cluster_size_ - 1)) || l2_table >= refcounts_->end()) return std::nullopt;
  if (for_write && !(l1e & kOflagCopied)) return std::nullopt;
  const uint8_t* table = l2_cache_.peek(l2_table);
  if (table == nullptr) return std::nullopt;
  uint64_t index = (guest_offset >> cluster_bits_) & ((uint64_t{1} << l2_bits) - 1);
  return decode(load_be<uint64_t>(table + index * 8));
}

Result<bool> Engine::map_shared(bool is_write, uint64_t offset, std::span<const iovec> request_iov,
                                std::vector<HostExtent>& extents) {
  const uint64_t length = iov_length(request_iov);
  const size_t first_extent = extents.size();
  IovCursor iov(request_iov);  // clusters are visited front to back: linear in segments
  std::vector<uint8_t> scratch;
  auto give_up = [&] {
    extents.resize(first_extent);
    return false;
  };
  for (uint64_t pos = 0; pos < length;) {
    const uint64_t guest = offset + pos;
    const uint64_t in_cluster = guest & (cluster_size_ - 1);
    const uint64_t n = std::min(cluster_size_ - in_cluster, length - pos);
    auto m = lookup_shared(guest, is_write);
    if (!m) return give_up();
    if (is_write) {
      // Only an in-place write: no refcount, L2 or allocation change.
      if (m->kind != Mapping::Standard || !(m->entry & kOflagCopied) || overlaps_metadata(m->host_offset)) {
        return give_up();
      }
    }
    switch (m->kind) {
      case Mapping::Compressed:
        return give_up();
      case Mapping::Zero:
        iov_zero(iov, pos, n);
        break;
      case Mapping::Unallocated:
        if (backing_) {
          scratch.resize(n);
          if (auto r = backing_->read(guest, scratch); !r) return std::unexpected(r.error());
          iov_copy_from(iov, pos, scratch);
        } else {
          iov_zero(iov, pos, n);
        }
        break;
      case Mapping::Standard: {
        const uint64_t host = m->host_offset + in_cluster;
        if (extents.size() > first_extent && extents.back().host_offset + extents.back().length == host &&
            extents.back().request_offset + extents.back().length == pos) {
          extents.back().length += n;
        } else {
          extents.push_back(HostExtent{host, pos, n});
        }
        break;
      }
    }
    pos += n;
  }
  return true;
}

Result<void> Engine::read_compressed(uint64_t entry, std::span<uint8_t> out) {
  const auto d = CompressedDescriptor::decode(entry, cluster_bits_);
  const uint64_t offset = d.host_offset;
  std::vector<uint8_t> compressed(d.readable_bytes());
  if (auto r = file_->read_at(offset, compressed); !r) {
    return fail(Errc::ReadFailed, r.error().sys_errno, "compressed cluster");
  }
  if (auto r = decompress_cluster(header_.get().compression_type, compressed, out); !r) {
    // Data that does not decode to one cluster is corruption.
    return std::unexpected(header_.mark_corrupt("compressed cluster at host offset " + std::to_string(offset) +
                                                ": " + r.error().message()));
  }
  return {};
}

Result<void> Engine::read(uint64_t offset, std::span<const iovec> request_iov,
                          std::vector<HostExtent>* deferred) {
  const uint64_t length = iov_length(request_iov);
  IovCursor iov(request_iov);  // clusters are visited front to back: linear in segments
  std::vector<uint8_t> scratch;
  for (uint64_t pos = 0; pos < length;) {
    uint64_t guest = offset + pos;
    uint64_t in_cluster = guest & (cluster_size_ - 1);
    uint64_t n = std::min(cluster_size_ - in_cluster, length - pos);
    auto m = lookup(guest);
    if (!m) return std::unexpected(m.error());
    switch (m->kind) {
      case Mapping::Unallocated:
        if (backing_) {
          scratch.resize(n);
          if (auto r = backing_->read(guest, scratch); !r) return r;
          iov_copy_from(iov, pos, scratch);
        } else {
          iov_zero(iov, pos, n);
        }
        break;
      case Mapping::Zero:
        iov_zero(iov, pos, n);
        break;
      case Mapping::Compressed:
        scratch.resize(cluster_size_);
        if (auto r = read_compressed(m->entry, scratch); !r) return r;
        iov_copy_from(iov, pos, std::span<const uint8_t>(scratch).subspan(in_cluster, n));
        break;
      case Mapping::Standard: {
        uint64_t host = m->host_offset + in_cluster;
        if (deferred) {
          if (!deferred->empty() && deferred->back().host_offset + deferred->back().length == host &&
              deferred->back().request_offset + deferred->back().length == pos) {
            deferred->back().length += n;
          } else {
            deferred->push_back(HostExtent{host, pos, n});
          }
        } else {
          scratch.resize(n);
          if (auto r = file_->read_at(host, scratch); !r) return r;
          iov_copy_from(iov, pos, scratch);
        }
        break;
      }
    }
    pos += n;
  }
  return {};
}

// A hostile L2 entry may point a guest cluster at metadata; writing guest
// data there would destroy the image. Checked before every in-place write:
// the L1 and refcount tables by range, L2 tables and refcount blocks as far
// as the caches hold them (QEMU's overlap check, cheap form).
bool Engine::overlaps_metadata(uint64_t host) const {
  const Header& h = header_.get();
  auto inside = [&](uint64_t start, uint64_t bytes) {
    uint64_t end = (start + bytes + cluster_size_ - 1) & ~(cluster_size_ - 1);
    return bytes > 0 && host >= start && host < end;
  };
  // Past every cluster the refcounts know: a write there would grow the
  // file to wherever a hostile entry points.
  return host == 0 || host >= refcounts_->end() || inside(h.l1_table_offset, uint64_t{h.l1_size} * 8) ||
         inside(h.refcount_table_offset, uint64_t{h.refcount_table_clusters} << cluster_bits_) ||
         l2_cache_.contains(host) || refcounts_->is_cached_block(host);
}

Result<Engine::L2Slot> Engine::l2_slot_for_write(uint64_t guest_offset) {
  const uint32_t l2_bits = cluster_bits_ - 3;
  uint64_t l1_index = guest_offset >> (cluster_bits_ + l2_bits);
  if (l1_index >= header_.get().l1_size) std::abort();  // callers check the range
  uint64_t l1e = l1_entry(l1_index);
  uint64_t table = l1e & kOffsetMask;
  if (table == 0) {
    bool fresh = false;
    auto at = refcounts_->allocate(1, fresh);
    if (!at) return std::unexpected(at.error());
    table = *at;
    if (table == 0) return std::unexpected(header_.mark_corrupt("allocation at offset 0"));
    if (auto r = l2_cache_.create(table); !r) return std::unexpected(r.error());
    set_l1_entry(l1_index, table | kOflagCopied);
  } else {
    if (table & (cluster_size_ - 1)) {
      return std::unexpected(header_.mark_corrupt("unaligned L2 table offset " + std::to_string(table)));
    }
    if (table >= refcounts_->end()) {
      return std::unexpected(header_.mark_corrupt("L2 table offset " + std::to_string(table) +
                                                  " past the end of the image"));
    }
    if (!(l1e & kOflagCopied)) {
      // qcow2.txt: COPIED is set exactly when the refcount is 1.
      auto rc = refcounts_->get(table);
      if (!rc) return std::unexpected(rc.error());
      if (*rc != 1) return fail(Errc::Unsupported, 0, "L2 table shared with a snapshot");
      set_l1_entry(l1_index, table | kOflagCopied);
    }
  }
  return L2Slot{table, (guest_offset >> cluster_bits_) & ((uint64_t{1} << l2_bits) - 1)};
}

Result<uint64_t> Engine::l2_entry(const L2Slot& slot) {
  auto table = l2_cache_.get(slot.table);
  if (!table) return std::unexpected(table.error());
  return load_be<uint64_t>(*table + slot.index * 8);
}

Result<void> Engine::set_l2_entry(const L2Slot& slot, uint64_t entry) {
  auto table = l2_cache_.get(slot.table);
  if (!table) return std::unexpected(table.error());
  store_be<uint64_t>(*table + slot.index * 8, entry);
  l2_cache_.mark_dirty(slot.table);
  return {};
}

// Drops the references a mapping holds on host clusters: one for a standard
// cluster, one on every host cluster a compressed cluster's data touches.
Result<void> Engine::release_cluster(const Mapping& m) {
  if (m.kind == Mapping::Compressed) {
    const auto d = CompressedDescriptor::decode(m.entry, cluster_bits_);
    for (uint64_t c = d.first_cluster(cluster_bits_); c <= d.last_cluster(cluster_bits_); ++c) {
      if (auto r = drop_reference(c << cluster_bits_); !r) return r;
    }
    return {};
  }
  if (m.host_offset != 0) return drop_reference(m.host_offset);
  return {};
}

// A cluster whose last reference goes may be handed out again as anything
// (a data cluster, a table): compressed bytes must not be packed into it
// any more, so the packing cursor leaves it.
Result<void> Engine::drop_reference(uint64_t host_offset) {
  auto left = refcounts_->adjust(host_offset, -1);
  if (!left) return std::unexpected(left.error());
  if (*left == 0 && compressed_cursor_ != 0 && (compressed_cursor_ >> cluster_bits_) == (host_offset >> cluster_bits_)) {
    compressed_cursor_ = 0;
  }
  return {};
}

// The current contents of guest cluster `guest_cluster` (its first byte).
Result<void> Engine::fill_cluster(uint64_t guest_cluster, const Mapping& old, std::span<uint8_t> out) {
  switch (old.kind) {
    case Mapping::Zero:
      std::fill(out.begin(), out.end(), 0);
      return {};
    case Mapping::Compressed:
      return read_compressed(old.entry, out);
    case Mapping::Standard:
      if (auto r = file_->read_at(old.host_offset, out); !r) return fail(Errc::ReadFailed, r.error().sys_errno);
      return {};
    case Mapping::Unallocated:
      if (backing_) return backing_->read(guest_cluster, out);
      std::fill(out.begin(), out.end(), 0);
      return {};
  }
  return {};
}

Result<void> Engine::write_cluster(uint64_t guest, IovCursor& iov, uint64_t pos,
                                   uint64_t n, std::vector<HostExtent>* deferred) {
  const uint64_t in_cluster = guest & (cluster_size_ - 1);
  const uint64_t guest_cluster = guest - in_cluster;
  auto slot = l2_slot_for_write(guest);
  if (!slot) return std::unexpected(slot.error());
  auto entry = l2_entry(*slot);
  if (!entry) return std::unexpected(entry.error());
  auto old = classify(*entry);
  if (!old) return std::unexpected(old.error());

  // Fast path: an allocated cluster we own alone is written in place.
  if (old->kind == Mapping::Standard) {
    bool owned = (*entry & kOflagCopied) != 0;
    if (!owned) {
      auto rc = refcounts_->get(old->host_offset);
      if (!rc) return std::unexpected(rc.error());
      owned = *rc == 1;
      if (owned) {
        if (auto r = set_l2_entry(*slot, old->host_offset | kOflagCopied); !r) return r;
      }
    }
    if (owned && overlaps_metadata(old->host_offset)) {
      return std::unexpected(header_.mark_corrupt("data cluster at " + std::to_string(old->host_offset) +
                                                  " overlaps metadata or lies past the end"));
    }
    if (owned) {
      uint64_t host = old->host_offset + in_cluster;
      if (deferred) {
        deferred->push_back(HostExtent{host, pos, n});
        return {};
      }
      std::vector<uint8_t> data(n);
      iov_copy_to(iov, pos, data);
      if (auto r = file_->write_at(host, data); !r) return fail(Errc::WriteFailed, r.error().sys_errno);
      return {};
    }
  }

  // An allocated zero cluster we own keeps its host cluster.
  uint64_t host = 0;
  bool fresh = false;
  bool reuse = false;
  if (old->kind == Mapping::Zero && old->host_offset != 0) {
    auto rc = refcounts_->get(old->host_offset);
    if (!rc) return std::unexpected(rc.error());
    if (*rc == 1) {
      if (overlaps_metadata(old->host_offset)) {
        return std::unexpected(header_.mark_corrupt("data cluster at " + std::to_string(old->host_offset) +
                                                    " overlaps metadata"));
      }
      host = old->host_offset;
      reuse = true;
    }
  }
  if (!reuse) {
    auto at = refcounts_->allocate(1, fresh);
    if (!at) return std::unexpected(at.error());
    host = *at;
    if (host == 0) return std::unexpected(header_.mark_corrupt("allocation at offset 0"));
  }
  // A fresh cluster past the old end of the file reads as zeros, so when the
  // old contents are zeros only the new data needs writing.
  bool old_is_zero = old->kind == Mapping::Zero ||
                     (old->kind == Mapping::Unallocated &&
                      (!backing_ || guest_cluster >= backing_->size()));
  if (fresh && old_is_zero) {
    if (auto r = preallocate_for(host + cluster_size_); !r) return r;
    if (deferred) {
      deferred->push_back(HostExtent{host + in_cluster, pos, n});
    } else {
      std::vector<uint8_t> data(n);
      iov_copy_to(iov, pos, data);
      if (auto r = file_->write_at(host + in_cluster, data); !r) {
        return fail(Errc::WriteFailed, r.error().sys_errno);
      }
    }
  } else {
    // Copy on write: the whole cluster, old contents merged with the new data.
    std::vector<uint8_t> cluster(cluster_size_);
    if (n < cluster_size_) {
      if (auto r = fill_cluster(guest_cluster, *old, cluster); !r) return r;
    }
    iov_copy_to(iov, pos, std::span<uint8_t>(cluster).subspan(in_cluster, n));
    if (auto r = file_->write_at(host, cluster); !r) return fail(Errc::WriteFailed, r.error().sys_errno);
  }
  if (auto r = set_l2_entry(*slot, host | kOflagCopied); !r) return r;
  if (!reuse) return release_cluster(*old);
  return {};
}

Result<void> Engine::write(uint64_t offset, std::span<const iovec> request_iov,
                           std::vector<HostExtent>* deferred) {
  const uint64_t length = iov_length(request_iov);
  IovCursor iov(request_iov);  // clusters are visited front to back: linear in segments
  for (uint64_t pos = 0; pos < length;) {
    uint64_t guest = offset + pos;
    uint64_t n = std::min(cluster_size_ - (guest & (cluster_size_ - 1)), length - pos);
    if (auto r = write_cluster(guest, iov, pos, n, deferred); !r) return r;
    pos += n;
  }
  return {};
}

// One whole guest cluster made to read as zeros (write-zeroes) or dropped
// (discard), following QEMU: on v3 the zero flag keeps a backing file from
// showing through; without it, deallocation.
Result<void> Engine::zero_cluster(uint64_t guest, bool may_unmap, bool discard) {
  auto cur = lookup(guest);
  if (!cur) return std::unexpected(cur.error());
  if (cur->kind == Mapping::Unallocated && !backing_) return {};  // already reads zeros
  if (cur->kind == Mapping::Zero && (!may_unmap || cur->host_offset == 0)) return {};
  if (!v3()) {
    if (backing_) {
      if (discard) return {};  // v2 cannot hide the backing file without data
      std::vector<uint8_t> zeros(cluster_size_, 0);
      iovec v{zeros.data(), zeros.size()};
      return write_cluster(guest, std::span<const iovec>(&v, 1), 0, cluster_size_, nullptr);
    }
    if (!may_unmap && !discard && cur->kind == Mapping::Standard) {
      std::vector<uint8_t> zeros(cluster_size_, 0);
      iovec v{zeros.data(), zeros.size()};
      return write_cluster(guest, std::span<const iovec>(&v, 1), 0, cluster_size_, nullptr);
    }
  }
  auto slot = l2_slot_for_write(guest);
  if (!slot) return std::unexpected(slot.error());
  uint64_t entry;
  if (!v3()) {
    entry = 0;
  } else if (discard) {
    entry = backing_ ? kOflagZero : 0;
  } else if (!may_unmap && cur->kind == Mapping::Standard && (cur->entry & kOflagCopied)) {
    // Keep the allocation, mark it zero (qcow2.txt: "all-zero" allocated).
    return set_l2_entry(*slot, cur->host_offset | kOflagCopied | kOflagZero);
  } else {
    entry = kOflagZero;
  }
  if (auto r = set_l2_entry(*slot, entry); !r) return r;
  return release_cluster(*cur);
}

Result<void> Engine::write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) {
  std::vector<uint8_t> zeros;
  for (uint64_t pos = 0; pos < length;) {
    uint64_t guest = offset + pos;
    uint64_t in_cluster = guest & (cluster_size_ - 1);
    uint64_t n = std::min(cluster_size_ - in_cluster, length - pos);
    if (n == cluster_size_) {
      if (auto r = zero_cluster(guest, may_unmap, false); !r) return r;
    } else {
      auto m = lookup(guest);
      if (!m) return std::unexpected(m.error());
      bool reads_zero = m->kind == Mapping::Zero || (m->kind == Mapping::Unallocated && !backing_);
      if (!reads_zero) {
        zeros.assign(n, 0);
        iovec v{zeros.data(), n};
        if (auto r = write_cluster(guest, std::span<const iovec>(&v, 1), 0, n, nullptr); !r) return r;
      }
    }
    pos += n;
  }
  return {};
}

Result<void> Engine::discard(uint64_t offset, uint64_t length) {
  // Only whole clusters are dropped; a discard is a hint, partial clusters
  // keep their data.
  uint64_t first = (offset + cluster_size_ - 1) & ~(cluster_size_ - 1);
  uint64_t end = (offset + length) & ~(cluster_size_ - 1);
  for (uint64_t guest = first; guest < end; guest += cluster_size_) {
    if (auto r = zero_cluster(guest, true, true); !r) return r;
  }
  return {};
}

Result<void> Engine::flush_metadata() {
  if (auto r = refcounts_->flush(); !r) return r;
  if (auto r = l2_cache_.flush(); !r) return r;
  if (l1_dirty_) {
    if (auto r = file_->write_at(header_.get().l1_table_offset, l1_); !r) {
      return fail(Errc::WritingMetadata, r.error().sys_errno, "L1 table");
    }
    l1_dirty_ = false;
  }
  // Clusters handed out but not yet written must lie inside the file.
  auto size = file_->size();
  if (!size) return std::unexpected(size.error());
  if (*size < refcounts_->end()) {
    if (auto r = file_->truncate(refcounts_->end()); !r) return r;
  }
  return {};
}

// Fresh data clusters are written where the file does not reach yet; grow
// it ahead in large steps so those writes land inside it.
Result<void> Engine::preallocate_for(uint64_t host_end) {
  if (host_end <= preallocated_end_) return {};
  uint64_t step = std::clamp<uint64_t>(host_end / 8, 4ull << 20, 256ull << 20);
  uint64_t new_end = (host_end + step + cluster_size_ - 1) & ~(cluster_size_ - 1);
  if (auto r = file_->preallocate(preallocated_end_, new_end - preallocated_end_); !r) return r;
  preallocated_end_ = new_end;
  return {};
}

Result<void> Engine::close() {
  if (options_.read_only) return {};
  if (auto r = flush(); !r) return r;
  auto size = file_->size();
  if (!size) return std::unexpected(size.error());
  if (*size > refcounts_->end()) {
    if (auto r = file_->truncate(refcounts_->end()); !r) return r;
    if (auto r = file_->sync(); !r) return r;
  }
  preallocated_end_ = refcounts_->end();
  Header& h = header_.get();
  if (h.incompatible_features & kIncompatDirty) {
    h.incompatible_features &= ~kIncompatDirty;
    if (auto r = header_.commit(); !r) return r;
  }
  return {};
}

void Engine::warn(const std::string& message) const {
  if (options_.warn) {
    options_.warn(message);
  } else {
    std::fprintf(stderr, "tern: warning: %s\n", message.c_str());
  }
}

Result<void> Engine::flush() {
  if (options_.read_only) return {};
  if (auto r = flush_metadata(); !r) return r;
  if (auto r = file_->sync(); !r) return r;
  return {};
}

Result<void> Engine::resize(uint64_t new_size) {
  Header& h = header_.get();
  if (options_.read_only) return fail(Errc::ReadOnly);
  if (backing_ || !h.backing_file.empty()) {
    return fail(Errc::Unsupported, 0, "an image with a backing file cannot be resized");
  }
  if (new_size < h.size) return fail(Errc::ShrinkRefused);
  if (new_size % 512 != 0) return fail(Errc::InvalidArgument, 0, "size must be a multiple of 512");
  if (new_size > kMaxVirtualSize) return fail(Errc::InvalidArgument, 0, "size too large");
  if (new_size == h.size) return {};
  uint64_t needed = l1_entries_for(new_size, cluster_bits_);
  if (needed * 8 > kMaxL1Bytes) return fail(Errc::InvalidArgument, 0, "L1 table would be too large");
  if (needed > h.l1_size) {
    // Every L2 table the L1 names must be on disk before the new L1 is.
    if (auto r = flush_metadata(); !r) return r;
    uint64_t old_clusters = (uint64_t{h.l1_size} * 8 + cluster_size_ - 1) >> cluster_bits_;
    uint64_t new_clusters = (needed * 8 + cluster_size_ - 1) >> cluster_bits_;
    uint64_t old_offset = h.l1_table_offset;
    l1_.resize(needed * 8, 0);
    uint64_t new_offset = old_offset;
    if (new_clusters > old_clusters || old_offset == 0) {
      bool fresh = false;
      auto at = refcounts_->allocate(new_clusters, fresh);
      if (!at) return std::unexpected(at.error());
      new_offset = *at;
      if (auto r = refcounts_->flush(); !r) return r;
      if (auto r = flush_metadata(); !r) return r;
    }
    if (auto r = file_->write_at(new_offset, l1_); !r) {
      return fail(Errc::WritingMetadata, r.error().sys_errno, "L1 table");
    }
    if (auto r = file_->sync(); !r) return fail(Errc::WritingMetadata, r.error().sys_errno);
    l1_dirty_ = false;
    h.l1_table_offset = new_offset;
    h.l1_size = static_cast<uint32_t>(needed);
    h.size = new_size;
    if (auto r = header_.commit(); !r) return r;
    if (new_offset != old_offset) {
      for (uint64_t i = 0; i < old_clusters; ++i) {
        if (auto r = drop_reference(old_offset + (i << cluster_bits_)); !r) return r;
      }
    }
    return flush();
  }
  h.size = new_size;
  return header_.commit();
}

}  // namespace tern::block::qcow2
