#include "vmm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include "arch/x86_64/layout.h"

namespace tern::vmm {

namespace ax = tern::arch::x86_64;

SysResult<int> kvm_ioctl(int fd, unsigned long request, const char* name, unsigned long arg) {
  for (;;) {
    int r = ::ioctl(fd, request, arg);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    return std::unexpected(SysError::from_errno(name));
  }
}

SysResult<Kvm> Kvm::open() {
  int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return std::unexpected(SysError::from_errno("open /dev/kvm"));
  UniqueFd owned(fd);
  auto version = kvm_ioctl(fd, KVM_GET_API_VERSION, "KVM_GET_API_VERSION", 0ul);
  if (!version) return std::unexpected(version.error());
  if (*version != KVM_API_VERSION) return std::unexpected(SysError{"KVM_GET_API_VERSION", ENOTSUP});
  return Kvm(std::move(owned));
}

SysResult<std::vector<kvm_cpuid_entry2>> Kvm::supported_cpuid() const {
  // KVM_GET_SUPPORTED_CPUID answers E2BIG until the buffer is large enough.
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    auto buf = kvm_var_buffer(std::vector<kvm_cpuid_entry2>(n));
    auto r = kvm_ioctl(fd(), kKvmGetSupportedCpuid, "KVM_GET_SUPPORTED_CPUID", buf.data());
    if (!r) {
      if (r.error().err == E2BIG) continue;
      return std::unexpected(r.error());
    }
    uint32_t count;
    std::memcpy(&count, buf.data(), 4);
    if (count > n) return std::unexpected(SysError{"KVM_GET_SUPPORTED_CPUID", E2BIG});
    std::vector<kvm_cpuid_entry2> out(count);
    std::memcpy(out.data(), buf.data() + kKvmVarHeader, count * sizeof(kvm_cpuid_entry2));
    return out;
  }
  return std::unexpected(SysError{"KVM_GET_SUPPORTED_CPUID", E2BIG});
}

SysResult<size_t> Kvm::vcpu_mmap_size() const {
  auto r = kvm_ioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", 0ul);
  if (!r) return std::unexpected(r.error());
  return static_cast<size_t>(*r);
}

SysResult<VmFd> VmFd::create(const Kvm& kvm) {
  auto fd = kvm_ioctl(kvm.fd(), KVM_CREATE_VM, "KVM_CREATE_VM", 0ul);
  if (!fd) return std::unexpected(fd.error());
  VmFd vm{UniqueFd(*fd)};
  uint64_t identity = ax::kKvmIdentityMapAddr;
  if (auto r = kvm_ioctl(vm.fd(), KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &identity); !r) {
    return std::unexpected(r.error());
  }
  if (auto r = kvm_ioctl(vm.fd(), KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", ax::kKvmTssAddr); !r) {
    return std::unexpected(r.error());
  }
  if (auto r = kvm_ioctl(vm.fd(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP", 0ul); !r) {
    return std::unexpected(r.error());
  }
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  if (auto r = kvm_ioctl(vm.fd(), KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &pit); !r) {
    return std::unexpected(r.error());
  }
  return vm;
}

}  // namespace tern::vmm
