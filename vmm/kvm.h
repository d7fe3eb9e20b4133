// Thin owners of the KVM file descriptors: Kvm (/dev/kvm, the system fd) and
// VmFd (one VM: in-kernel irqchip, PIT, TSS and identity-map pages). Every
// ioctl goes through kvm_ioctl(), which retries EINTR where the call is
// restartable and names the ioctl in its error.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace tern::vmm {

// The variable-length KVM structures (kvm_cpuid2, kvm_msrs,
// kvm_irq_routing) are { u32 count; u32 pad; entries[] } with the entries
// at offset 8, as the kernel (C) lays them out. The uapi header's
// flexible-array wrapper makes g++ size them 12 or 16 and move the entries,
// which also changes the ioctl numbers (they encode the size). So tern lays
// these buffers out by hand and spells the numbers with size 8.
inline constexpr size_t kKvmVarHeader = 8;
inline constexpr unsigned long kKvmGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
inline constexpr unsigned long kKvmSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
inline constexpr unsigned long kKvmSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
inline constexpr unsigned long kKvmSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, 8);

// A buffer holding `header_count` then `entries` at offset 8.
template <class Entry>
std::vector<uint8_t> kvm_var_buffer(const std::vector<Entry>& entries) {
  std::vector<uint8_t> buf(kKvmVarHeader + entries.size() * sizeof(Entry));
  uint32_t count = static_cast<uint32_t>(entries.size());
  std::memcpy(buf.data(), &count, 4);
  if (!entries.empty()) std::memcpy(buf.data() + kKvmVarHeader, entries.data(), entries.size() * sizeof(Entry));
  return buf;
}

// ioctl(fd, request, arg), retried on EINTR; errors carry `name`.
SysResult<int> kvm_ioctl(int fd, unsigned long request, const char* name, unsigned long arg);
template <class T>
SysResult<int> kvm_ioctl(int fd, unsigned long request, const char* name, T* arg) {
  return kvm_ioctl(fd, request, name, reinterpret_cast<unsigned long>(arg));
}

class Kvm {
 public:
  [[nodiscard]] static SysResult<Kvm> open();
  int fd() const { return fd_.get(); }
  [[nodiscard]] SysResult<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
  [[nodiscard]] SysResult<size_t> vcpu_mmap_size() const;

 private:
  explicit Kvm(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

class VmFd {
 public:
  // KVM_CREATE_VM, then the TSS and identity-map pages, the in-kernel
  // IOAPIC/PIC/LAPICs and the PIT (whose speaker port 0x61 Linux uses to
  // calibrate the TSC).
  [[nodiscard]] static SysResult<VmFd> create(const Kvm& kvm);
  int fd() const { return fd_.get(); }

 private:
  explicit VmFd(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace tern::vmm
