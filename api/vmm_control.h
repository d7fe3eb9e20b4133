// VmmControl: what the API may ask of the VMM. The HTTP thread calls it; the
// implementation (vmm/) hands each call to the VMM's control thread through a
// ControlChannel, so the API thread owns no VM state.
#pragma once

#include <cstdint>
#include <expected>
#include <string>
#include <vector>

#include "base/block_counters.h"

namespace tern::api {

enum class ControlErrc {
  BadRequest,   // 400: malformed value (size not a multiple of 512, overflow)
  NotFound,     // 404: no disk with that id
  Refused,      // 409: the VM cannot do it in its state (shrink, backing file, read-only)
  Unavailable,  // 503: the VMM is shutting down or did not answer in time
  Internal,     // 500: a host failure while doing it
};

struct ControlError {
  ControlErrc code = ControlErrc::Internal;
  std::string message;
};

template <class T>
using ControlResult = std::expected<T, ControlError>;

inline std::unexpected<ControlError> control_error(ControlErrc code, std::string message) {
  return std::unexpected(ControlError{code, std::move(message)});
}

struct DiskInfo {
  std::string id;
  std::string path;
  std::string format;  // "raw", "qcow2"
  uint64_t size = 0;   // bytes, as the guest sees it now
  bool read_only = false;
  uint32_t num_queues = 1;
  uint32_t queue_size = 0;
  std::string transport = "pci";  // "pci", "mmio"
};

struct VmInfo {
  std::string state;  // "Running", "Shutdown"
  uint32_t cpus = 1;
  uint64_t memory_bytes = 0;
  std::string kernel;
  std::string cmdline;
  std::vector<DiskInfo> disks;
};

struct DiskCounters {
  std::string id;
  BlockCounters counters;  // every field reaches the JSON by its name
};

class VmmControl {
 public:
  virtual ~VmmControl() = default;
  virtual ControlResult<VmInfo> info() = 0;
  virtual ControlResult<std::vector<DiskCounters>> counters() = 0;
  virtual ControlResult<void> resize_disk(const std::string& id, uint64_t desired_size) = 0;
  virtual ControlResult<void> shutdown_vm() = 0;
  // Presses the guest's ACPI power button; the guest chooses what follows.
  virtual ControlResult<void> power_button() = 0;
  virtual ControlResult<void> shutdown_vmm() = 0;
};

}  // namespace tern::api
