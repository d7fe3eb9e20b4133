// The VMM's configuration, parsed from the cloud-hypervisor style command
// line (docs/vmm.md, "Command line"):
//   --kernel PATH --initramfs PATH --cmdline STR --cpus boot=N[,profile=auto|host|emulated]
//   --memory size=SIZE[,thp=on|off] --serial tty|file=PATH[,max_size=SIZE]|off --api-socket PATH
//   --disk path=P[,readonly=on][,id=NAME][,num_queues=N][,queue_size=N]
//          [,image_type=raw|qcow2][,backing_files=on][,direct=on][,serial=STR]
//          [,lock=on|off][,aio=sync|native|threads][,transport=pci|mmio]  (repeatable)
//   --virtio-mmio-cmdline on|off
//   --seccomp true|false|log --landlock true|false
//   --landlock-rules path=P,access=ro|rw                  (repeatable)
// --disk transport=mmio puts the disk on virtio-mmio (docs/virtio.md); the
// DSDT describes every MMIO device, and for a Linux kernel tern also
// appends virtio_mmio.device=SIZE@BASE:IRQ to the command line unless
// --virtio-mmio-cmdline off (kernels without ACPI find them that way).
// Every value is validated here; a bad option is a message naming it.
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "block/open.h"
#include "devices/virtio/blk/device.h"
#include "devices/virtio/virtio_device.h"

namespace tern::vmm {


struct DiskConfig {
  block::OpenOptions open;           // path=, readonly=, image_type=, backing_files=, direct=, lock=, aio=
  devices::VirtioBlkOptions device;  // id= ("disk0", "disk1"... unless given), readonly=, num_queues=, queue_size=, serial=
  devices::VirtioTransport transport = devices::VirtioTransport::Pci;  // transport=
};

// Which CPU the guest is shown (vmm/host_kvm.h): `host` passes KVM's
// supported features through; `emulated` hides the ones a software-emulated
// KVM cannot run and adds the kernel parameters documented there; `auto`
// picks `emulated` on such a host and `host` everywhere else.
enum class CpuProfile { Auto, Host, Emulated };

struct CpusConfig {
  uint32_t boot = 1;
  CpuProfile profile = CpuProfile::Auto;
};

enum class SerialMode { Tty, File, Off };

// --serial file=: the console file stops growing here (bytes past it are
// dropped and counted); max_size=0 lifts the cap.
inline constexpr uint64_t kDefaultSerialFileMax = 64ull << 20;

struct SerialConfig {
  SerialMode mode = SerialMode::Tty;
  std::string path;                           // SerialMode::File
  uint64_t max_size = kDefaultSerialFileMax;  // SerialMode::File; 0: no cap
};

// The sandbox (vmm/sandbox.h, docs/SECURITY.md "Sandbox").
enum class SeccompMode { Off, Kill, Log };
enum class LandlockMode { Auto, On, Off };  // Auto: on where the kernel offers Landlock

struct LandlockRule {
  std::string path;
  bool writable = false;  // access=rw
};

struct SandboxConfig {
  SeccompMode seccomp = SeccompMode::Kill;
  LandlockMode landlock = LandlockMode::Auto;
  std::vector<LandlockRule> rules;  // --landlock-rules
  // Hidden --sandbox-test (docs/SECURITY.md, "Testing the sandbox"): thread
  // kinds that make a forbidden call once confined ("vcpu",
  // "virtio-queue", "api"); "mmap=KIND" and "write=KIND": the thread of
  // that kind maps a disk image's descriptor shared and writable, or
  // write()s to it; "open=PATH" files the main thread tries to open once
  // in the Landlock domain (/etc/passwd always), "unlink=PATH" files it
  // tries to remove, "kill=PID" processes it tries to signal (signal 0).
  std::vector<std::string> test;
};

struct MemoryConfig {
  uint64_t size = 512ull << 20;
  // Transparent huge pages for guest RAM (MADV_HUGEPAGE on 2 MiB-aligned
  // mappings), as QEMU and cloud-hypervisor do: KVM can then map the guest
  // with 2 MiB pages, so it takes 512 times fewer nested page faults
  // filling it and its TLB misses walk one level less. `thp=off` keeps
  // 4 KiB pages: host memory follows what the guest touched more closely.
  bool thp = true;
};

struct VmConfig {
  std::string kernel;
  std::optional<std::string> initramfs;
  std::string cmdline;
  uint32_t cpus = 1;
  CpuProfile cpu_profile = CpuProfile::Auto;
  MemoryConfig memory;
  SerialConfig serial;
  std::vector<DiskConfig> disks;
  std::optional<std::string> api_socket;
  bool virtio_mmio_cmdline = true;  // --virtio-mmio-cmdline
  uint64_t timeout_s = 0;           // --timeout; 0: none
  SandboxConfig sandbox;
};

inline constexpr uint32_t kMaxCpus = 254;  // xAPIC IDs 0..253 (0xff is broadcast)
inline constexpr uint64_t kMinMemory = 16ull << 20;
inline constexpr uint64_t kMaxMemory = 1ull << 40;
inline constexpr size_t kMaxMmioDisks = 16;  // one IOAPIC input each (arch/x86_64/layout.h)

// Result of parsing argv: a config to run, or the process should exit with
// `exit_code` after printing `message` (help text, or an error).
struct ParseExit {
  int exit_code = 1;
  std::string message;
};

std::expected<VmConfig, ParseExit> parse_command_line(int argc, const char* const* argv);

// Pieces, exposed for the unit tests.
std::expected<uint64_t, std::string> parse_size(std::string_view text);
std::expected<DiskConfig, std::string> parse_disk(std::string_view text, size_t index);
std::expected<CpusConfig, std::string> parse_cpus(std::string_view text);
std::expected<MemoryConfig, std::string> parse_memory(std::string_view text);
std::expected<SerialConfig, std::string> parse_serial(std::string_view text);
std::expected<LandlockRule, std::string> parse_landlock_rule(std::string_view text);

}  // namespace tern::vmm
