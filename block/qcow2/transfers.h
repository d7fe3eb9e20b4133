// TransferTracker: tickets for the data transfers that run outside the
// engine lock (block/qcow2/qcow2_disk.h). A ticket is taken in the same lock
// scope (shared or exclusive) that maps the request to host clusters, and
// given back, from any thread, once the transfer is over (completed,
// failed or refused). The allocator (Refcounts) keeps a cluster freed while
// ticket T was the next to be issued out of reuse until every ticket below
// T is back: only those transfers could have been mapped onto it.
#pragma once

#include <cstdint>
#include <mutex>
#include <set>

namespace tern::block::qcow2 {

using TransferTicket = uint64_t;

class TransferTracker {
 public:
  // Called inside the mapping's lock scope (either side), before it ends;
  // frees happen only under the exclusive side, so never concurrently.
  [[nodiscard]] TransferTicket begin() {
    std::lock_guard lock(mutex_);
    TransferTicket t = next_++;
    in_flight_.insert(t);
    return t;
  }
  // Any thread, exactly once per ticket.
  void end(TransferTicket ticket) {
    std::lock_guard lock(mutex_);
    in_flight_.erase(ticket);
  }
  // Every ticket handed out so far is below this.
  uint64_t issued() const {
    std::lock_guard lock(mutex_);
    return next_;
  }
  // The oldest ticket still out, or issued() when none is.
  uint64_t oldest_in_flight() const {
    std::lock_guard lock(mutex_);
    return in_flight_.empty() ? next_ : *in_flight_.begin();
  }
  uint64_t in_flight() const {
    std::lock_guard lock(mutex_);
    return in_flight_.size();
  }

 private:
  mutable std::mutex mutex_;  // a leaf: nothing else is taken under it
  uint64_t next_ = 0;                 // guarded by mutex_
  std::set<TransferTicket> in_flight_;  // guarded by mutex_
};

}  // namespace tern::block::qcow2
