// Linux under build/tern, proving tern's disk paths from inside Linux (label
// `linux`). Which Linux depends on the KVM:
// - on a real KVM (hardware, or scripts/lab.sh): Debian's stock cloud kernel
//   (build/guest/bzImage) with a 64-bit busybox user space
//   (build/guest/initramfs64.cpio.gz) and a plain `console=ttyS0 panic=-1`:
//   what users run;
// - on this project's emulated CI host (kvm_pvm), where that kernel needs
//   a quarter of an hour to reach init and 64-bit user space cannot run:
//   the small kernel (scripts/make-small-kernel.sh: Debian's
//   linux-source-6.1, tinyconfig plus scripts/small-kernel.config, booted as
//   the ELF vmlinux) with a 32-bit busybox user space. Every assertion is on the guest's own output: the kernel's lines
// (its virtio-blk probe, "detected capacity change", ext4's mount, a panic),
// and the lines of the initramfs's /init and its test scripts
// (tests/linux/guest/, run through `tern.run=`). Afterwards the host checks
// the images: qemu-io reads the guest's patterns, `qemu-img check`, e2fsck.
//
// On this project's CI the KVM is nested and software-emulated (kvm_pvm):
// the small kernel reaches its disk probe in about a minute, so every wait is for
// an event with a generous bound (TERN_LINUX_SMALL_TIMEOUT seconds, default
// 600, per wait), never a fixed sleep. Each test prints the times at which
// it saw each line.
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/linux/linux_guest.h"

namespace tern::linux_test {
namespace {

constexpr uint64_t kDiskBytes = 64ull << 20;
constexpr uint64_t kDiskSectors = kDiskBytes / 512;

std::chrono::seconds limit() { return std::chrono::seconds(env_int("TERN_LINUX_SMALL_TIMEOUT", 900)); }

// Kernel parameters for every boot. On an emulated KVM (kvm_pvm):
// - noxsave and clearcpuid for the features KVM's emulator cannot execute
//   (xsave, cx16, popcnt, SIMD past SSE2: what tern's emulated CPU profile
//   adds by itself, vmm/host_kvm.h, which steps aside when the command line
//   already has a clearcpuid=), plus 110,111 (SYSCALL32 and
//   SYSENTER32): the 32-bit vDSO then makes system calls with `int $0x80`,
//   which the small kernel takes from the #UD it arrives as
//   (scripts/small-kernel-patches/);
// - GLIBC_TUNABLES (passed to init's environment) keeps glibc's string
//   functions in the i386 busybox off SSE2, which the emulator runs as #UD
//   in user mode too.
// These words live in scripts/lib/small-guest.cmdline, which demo.sh reads
// too (vmm's config test keeps its clearcpuid list a superset of tern's).
// On a real KVM: nothing. TERN_LINUX_EXTRA_CMDLINE adds words.
std::string base_cmdline() {
  std::string c = "console=ttyS0 panic=-1";
  if (emulated_kvm()) {
    std::ifstream words(source_dir() + "/scripts/lib/small-guest.cmdline");
    std::string line;
    std::getline(words, line);
    c += " " + line;
  }
  if (const char* e = std::getenv("TERN_LINUX_EXTRA_CMDLINE")) c += std::string(" ") + e;
  return c;
}

// CI time on the emulated host goes to what only it can show (the small
// kernel through tern's emulated CPU profile and fallbacks): the tests that
// the lab (label lab) runs on a real KVM with Debian's stock kernel, in a
// tenth of the time, skip here, saying so. TERN_LINUX_ALL=1 runs them.
#define SKIP_ON_EMULATED_KVM_UNLESS_ALL()                                                                        \
  do {                                                                                                           \
    if (emulated_kvm() && std::getenv("TERN_LINUX_ALL") == nullptr) {                                            \
      GTEST_SKIP() << "emulated KVM: this boot runs in the lab (label lab) on a real KVM; TERN_LINUX_ALL=1 runs " \
                      "it here too";                                                                             \
    }                                                                                                            \
  } while (0)

std::string guest_kernel() { return build_dir() + (emulated_kvm() ? "/guest/small/vmlinux" : "/guest/bzImage"); }
std::string guest_initramfs() {
  return build_dir() + (emulated_kvm() ? "/guest/small/initramfs.cpio" : "/guest/initramfs64.cpio.gz");
}

class LinuxGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    TERN_REQUIRE_KVM();
    // The guest (cloud kernel, initramfs, small kernel) comes from Debian's
    // packages, cached; failing to build it fails the test.
    static bool built = false;
    if (!built) {
      // On a real KVM only the stock kernel's guest is needed.
      std::string env = emulated_kvm() ? "" : "TERN_GUEST_SMALL_KERNEL=0 ";
      Shell g = sh(env + "bash " + source_dir() + "/scripts/make-guest.sh");
      ASSERT_EQ(g.status, 0) << "scripts/make-guest.sh failed:\n" << g.out;
      built = true;
    }
    tmp_ = std::make_unique<tern::test_support::TempDir>("tern-linux");
    dir_ = tmp_->path();
  }
  void TearDown() override {
    if (::testing::Test::HasFailure() && tern_.running()) std::printf("%s\n", tern_.report().c_str());
    tern_.kill();
  }

  // Boots the guest's kernel with one disk (id disk0) and the API socket.
  void boot(const std::string& disk_arg, const std::string& cmdline_extra, bool initramfs = true,
            const std::vector<std::string>& tern_extra = {}) {
    std::vector<std::string> args{"--kernel", guest_kernel()};
    if (initramfs) {
      args.push_back("--initramfs");
      args.push_back(guest_initramfs());
    }
    sock_ = dir_ + "/api.sock";
    std::vector<std::string> more{"--cmdline", base_cmdline() + " " + cmdline_extra, "--cpus", "boot=2",
                                  "--memory", "size=256M", "--disk", disk_arg, "--api-socket", sock_};
    args.insert(args.end(), more.begin(), more.end());
    args.insert(args.end(), tern_extra.begin(), tern_extra.end());
    tern_.start(args, dir_ + "/console.log", dir_ + "/tern.log");
  }

  // Waits for a console line; on failure the console and tern's log.
  void expect_line(const std::string& text) {
    EXPECT_TRUE(tern_.wait_for(text, limit())) << "missing: " << text << "\n" << tern_.report();
  }
  int finish() {
    int st = tern_.wait_exit(limit());
    std::string console = tern_.console();
    std::printf("--- console (%.1f s) ---\n%s\n--- tern ---\n%s\n", tern_.seconds(), console.c_str(),
                tern_.log().c_str());
    if (!emulated_kvm()) expect_clean_kernel_log(console, tern_.log());
    return st;
  }

  std::string image(const std::string& name, const std::string& format, uint64_t bytes = kDiskBytes) {
    std::string path = dir_ + "/" + name;
    Shell c = sh("qemu-img create -q -f " + format + " " + path + " " + std::to_string(bytes));
    EXPECT_EQ(c.status, 0) << c.out;
    return path;
  }

  // qemu-io on the host: `len` bytes at `offset` hold `byte`.
  void expect_host_pattern(const std::string& path, const std::string& format, uint64_t offset, uint64_t len,
                           const std::string& byte) {
    Shell r = sh("qemu-io -f " + format + " -r -c 'read -P " + byte + " " + std::to_string(offset) + " " +
                 std::to_string(len) + "' " + path);
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out.find("Pattern verification failed"), std::string::npos)
        << "host read of " << byte << " at " << offset << ": " << r.out;
  }

  std::string curl(const std::string& method, const std::string& path, const std::string& body = "") {
    std::string cmd = "curl -s -o /dev/null -w '%{http_code}' --unix-socket " + sock_ + " -X " + method;
    if (!body.empty()) cmd += " -H 'Content-Type: application/json' -d '" + body + "'";
    return sh(cmd + " http://localhost/api/v1/" + path).out;
  }

  std::string probe_line(uint64_t sectors) { return "[vda] " + std::to_string(sectors) + " 512-byte logical blocks"; }

  std::unique_ptr<tern::test_support::TempDir> tmp_;
  std::string dir_, sock_;
  TernRun tern_;
};

constexpr uint64_t kDiscardOffset = 8ull << 20, kDiscardLength = 4ull << 20;
constexpr uint64_t kGrown = 2 * kDiskBytes;

// One boot per image format, each step asserted on the guest's own lines:
// - boot to init with 2 vCPUs (both online) and the kernel's own probe of
//   the disk with the image's size;
// - patterns written and read back by the guest with O_DIRECT (the first
//   sectors, an odd sector past 1 MiB, the middle, the last sector);
// - blkdiscard on a range the host had filled;
// - a live resize through the API while Linux runs: a shrink refused (409)
//   with the guest unharmed, then a grow (curl for raw, tern-remote for
//   qcow2) that the kernel reports ("detected capacity change") and
//   /sys/block/vda/size shows, and writes past the old end;
// - power-off, exit 0.
// Then the host reads the same bytes with qemu-io, sees the discarded range
// released and the new size, and (qcow2) `qemu-img check` is clean.
class LinuxGuestDisk : public LinuxGuest {
 public:
  void run(const std::string& format) {
    std::string disk = image("disk." + format, format);
    Shell fill = sh("qemu-io -f " + format + " -c 'write -P 0x11 " + std::to_string(kDiscardOffset) + " " +
                    std::to_string(kDiscardLength) + "' " + disk);
    ASSERT_EQ(fill.status, 0) << fill.out;
    struct stat before {};
    ASSERT_EQ(::stat(disk.c_str(), &before), 0);

    boot("path=" + disk + ",id=disk0,num_queues=2",
         "tern.run=/tests/rw.sh&&/tests/discard.sh," + std::to_string(kDiscardOffset) + "," +
             std::to_string(kDiscardLength) + "&&/tests/resize.sh");
    expect_line(probe_line(kDiskSectors));
    expect_line("smp: Brought up 1 node, 2 CPUs");
    expect_line("tern-guest: init running");
    expect_line("2 CPU(s), online 0-1");
    expect_line("tern-guest: disk vda " + std::to_string(kDiskSectors) + " sectors");
    expect_line("tern-test: rw on /dev/vda, " + std::to_string(kDiskSectors) + " sectors, 2 queues");
    expect_line("tern-test: rw done");
    expect_line("tern-test: discarded " + std::to_string(kDiscardLength) + " bytes at " +
                std::to_string(kDiscardOffset));
    ASSERT_TRUE(tern_.wait_for("tern-test: size " + std::to_string(kDiskSectors) + " sectors; waiting for a resize",
                               limit()))
        << tern_.report();
    EXPECT_EQ(curl("PUT", "vm.resize-disk", R"({"id":"disk0","desired_size":33554432})"), "409");
    if (format == "qcow2") {
      Shell r = sh(build_dir() + "/tern-remote --api-socket " + sock_ + " resize-disk --disk disk0 --size " +
                   std::to_string(kGrown));
      EXPECT_EQ(r.status, 0) << r.out;
    } else {
      EXPECT_EQ(curl("PUT", "vm.resize-disk", R"({"id":"disk0","desired_size":)" + std::to_string(kGrown) + "}"),
                "204");
    }
    expect_line("vda: detected capacity change from " + std::to_string(kDiskSectors) + " to " +
                std::to_string(kGrown / 512));
    expect_line("tern-test: size now " + std::to_string(kGrown / 512) + " sectors");
    expect_line("tern-test: resize done");
    expect_line("tern-guest: powering off");
    EXPECT_EQ(finish(), 0);

    expect_host_pattern(disk, format, 0, 8 * 512, "0x5a");
    expect_host_pattern(disk, format, 2049 * 512, 512, "0xa5");
    expect_host_pattern(disk, format, kDiskBytes / 2, 128 * 512, "0x3c");
    expect_host_pattern(disk, format, kDiskBytes - 512, 512, "0xc3");
    expect_host_pattern(disk, format, kDiscardOffset, kDiscardLength, "0x00");
    expect_host_pattern(disk, format, kDiskBytes, 8 * 512, "0x6b");
    expect_host_pattern(disk, format, kGrown - 512, 512, "0x9d");
    Shell info = sh("qemu-img info --output=json -f " + format + " " + disk);
    EXPECT_NE(info.out.find("\"virtual-size\": " + std::to_string(kGrown)), std::string::npos) << info.out;
    if (format == "qcow2") {
      expect_qcow2_check_clean(disk);
      // The discarded range is no longer allocated data in the image: the
      // map entries that cover it all say "data": false.
      Shell map = sh("qemu-img map --output=json " + disk);
      ASSERT_EQ(map.status, 0) << map.out;
      uint64_t covered = 0;
      for (size_t at = map.out.find("{"); at != std::string::npos; at = map.out.find("{", at + 1)) {
        std::string entry = map.out.substr(at, map.out.find('}', at) - at);
        auto field = [&](const std::string& name) {
          size_t f = entry.find("\"" + name + "\": ");
          return f == std::string::npos ? 0ull : std::stoull(entry.substr(f + name.size() + 4));
        };
        uint64_t start = field("start"), end = start + field("length");
        if (end <= kDiscardOffset || start >= kDiscardOffset + kDiscardLength) continue;
        EXPECT_NE(entry.find("\"data\": false"), std::string::npos) << "discarded range still allocated: " << entry;
        covered += std::min(end, kDiscardOffset + kDiscardLength) - std::max(start, kDiscardOffset);
      }
      EXPECT_EQ(covered, kDiscardLength) << map.out;
    } else {
      // st_blocks counts 512-byte units: the discarded 4 MiB went back to
      // the host file system, while the guest's patterns took a little.
      struct stat after {};
      ASSERT_EQ(::stat(disk.c_str(), &after), 0);
      std::printf("raw image allocation: %lld KiB before, %lld KiB after\n",
                  static_cast<long long>(before.st_blocks / 2), static_cast<long long>(after.st_blocks / 2));
      EXPECT_LE(after.st_blocks * 512 + static_cast<long long>(kDiscardLength),
                before.st_blocks * 512 + (1 << 20))
          << "the discard did not free the range";
    }
  }
};

TEST_F(LinuxGuestDisk, RawProbeWriteReadDiscardLiveResizePowerOff) {
  SKIP_ON_EMULATED_KVM_UNLESS_ALL();
  run("raw");
}
TEST_F(LinuxGuestDisk, Qcow2ProbeWriteReadDiscardLiveResizePowerOff) { run("qcow2"); }

// A virtio-mmio disk that Linux finds through ACPI alone: tern's command
// line hint is off (--virtio-mmio-cmdline off, as Debian's kernel, which
// lacks virtio_mmio.device=, would need), so the kernel binds the DSDT's
// LNRO0005 device; the guest says its vda sits under that platform device,
// writes and reads patterns, and sees a live resize through the API.
TEST_F(LinuxGuest, MmioDiskFoundThroughAcpiDoesIoAndSeesALiveResize) {
  SKIP_ON_EMULATED_KVM_UNLESS_ALL();
  std::string disk = image("disk.raw", "raw");
  boot("path=" + disk + ",id=disk0,transport=mmio", "tern.run=/tests/where.sh&&/tests/rw.sh&&/tests/resize.sh",
       /*initramfs=*/true, {"--virtio-mmio-cmdline", "off"});
  expect_line(probe_line(kDiskSectors));
  expect_line("tern-guest: disk vda " + std::to_string(kDiskSectors) + " sectors");
  expect_line("tern-test: vda device /sys/devices/platform/LNRO0005:00/virtio0");
  expect_line("tern-test: rw done");
  ASSERT_TRUE(tern_.wait_for("tern-test: size " + std::to_string(kDiskSectors) + " sectors; waiting for a resize",
                             limit()))
      << tern_.report();
  EXPECT_EQ(curl("PUT", "vm.resize-disk", R"({"id":"disk0","desired_size":)" + std::to_string(kGrown) + "}"), "204");
  expect_line("vda: detected capacity change from " + std::to_string(kDiskSectors) + " to " +
              std::to_string(kGrown / 512));
  expect_line("tern-test: resize done");
  expect_line("tern-guest: powering off");
  EXPECT_EQ(finish(), 0);
  EXPECT_EQ(tern_.console().find("virtio_mmio.device="), std::string::npos) << "the command line named the device";
  expect_host_pattern(disk, "raw", 0, 8 * 512, "0x5a");
  expect_host_pattern(disk, "raw", kDiskBytes - 512, 512, "0xc3");
  expect_host_pattern(disk, "raw", kDiskBytes, 8 * 512, "0x6b");
  expect_host_pattern(disk, "raw", kGrown - 512, 512, "0x9d");
}

// The ACPI power button through the API: the guest's busybox acpid (its
// userspace power handling, tests/linux/guest/powerbutton.sh) sees
// KEY_POWER from the kernel's button driver, which the DSDT's Generic Event
// Device notified, and powers off: tern exits 0. vm.shutdown would instead
// stop the VM at once.
TEST_F(LinuxGuest, PowerButtonThroughTheApiShutsTheGuestDownCleanly) {
  if (emulated_kvm()) {
    // The emulated host boots the small kernel (scripts/small-kernel.config),
    // built without the ACPI button and evdev drivers; the lab's real KVM
    // runs this test with the stock kernel.
    GTEST_SKIP() << "the small kernel of the emulated KVM (kvm_pvm) has no ACPI button or evdev driver";
  }
  std::string disk = image("disk.raw", "raw");
  boot("path=" + disk + ",id=disk0", "tern.run=/tests/powerbutton.sh");
  expect_line("Power Button [PWRB]");  // the button driver bound the DSDT's PNP0C0C
  ASSERT_TRUE(tern_.wait_for("tern-test: waiting for the power button", limit())) << tern_.report();
  EXPECT_EQ(curl("PUT", "vm.power-button"), "204");
  expect_line("tern-test: power button pressed");
  EXPECT_EQ(finish(), 0);
  std::string console = tern_.console();
  EXPECT_EQ(console.find("ACPI Error"), std::string::npos) << "an ACPI error";
  EXPECT_EQ(console.find("cannot locate _EVT"), std::string::npos);
  EXPECT_EQ(console.find("tern-guest: powering off"), std::string::npos) << "the guest's script ended by itself";
}

// A read-only disk: the guest's kernel marks it read-only, reads return
// the host's bytes, a write fails in the guest, and the image is untouched.
// Then a command that fails (/bin/false, status 1) makes /init end the VM
// through tern's exit device: tern exits 32 + 1.
TEST_F(LinuxGuest, ReadOnlyDiskThenAFailingCommandEndsTheVmWithItsStatus) {
  std::string disk = image("disk.raw", "raw");
  Shell fill = sh("qemu-io -f raw -c 'write -P 0x77 0 4096' -c 'write -P 0x77 " + std::to_string(kDiskBytes - 512) +
                  " 512' " + disk);
  ASSERT_EQ(fill.status, 0) << fill.out;
  std::string before = sh("sha256sum < " + disk).out;
  boot("path=" + disk + ",id=disk0,readonly=on", "tern.run=/tests/readonly.sh,0x77&&/bin/false");
  expect_line(probe_line(kDiskSectors));
  expect_line("tern-guest: disk vda " + std::to_string(kDiskSectors) + " sectors (64 MiB), ro=1");
  expect_line("tern-test: read 0x77 at sector 0 and at the last sector");
  expect_line("tern-test: write refused");
  expect_line("tern-test: read-only done");
  expect_line("tern-guest: command failed (exit 1); ending the VM with status 1");
  EXPECT_EQ(finish(), 33);
  EXPECT_EQ(sh("sha256sum < " + disk).out, before) << "the read-only image changed";
}

// `reboot -f` in the guest: tern reports a reset, exit 2. (Linux reboots a
// hardware-reduced ACPI machine without EFI through a jump to the BIOS
// reset vector; on a real KVM tern used to run on there forever.)
TEST_F(LinuxGuest, GuestRebootGivesExit2) {
  SKIP_ON_EMULATED_KVM_UNLESS_ALL();
  std::string disk = image("disk.raw", "raw");
  boot("path=" + disk + ",id=disk0", "tern.run=reboot,-f");
  expect_line("tern-guest: running: reboot -f");
  expect_line("reboot: Restarting system");
  EXPECT_EQ(finish(), 2);
}

// A kernel panic with panic=-1 (no initramfs, a root device that does not
// exist): the kernel restarts the machine at once; tern exits 2, a reset.
TEST_F(LinuxGuest, KernelPanicGivesExit2) {
  SKIP_ON_EMULATED_KVM_UNLESS_ALL();
  std::string disk = image("disk.raw", "raw");
  boot("path=" + disk + ",id=disk0", "root=/dev/vdz", /*initramfs=*/false);
  // (The stock kernel's virtio_blk is a module: without an initramfs it
  // never probes the disk.)
  if (emulated_kvm()) expect_line(probe_line(kDiskSectors));
  expect_line("Kernel panic - not syncing: VFS: Unable to mount root fs");
  EXPECT_EQ(finish(), 2);
}

// root=/dev/vda rw on an ext4 file system that the host made on a tern
// image (mkfs.ext4 -d): the kernel mounts it read-write, its /sbin/init
// (tests/linux/guest/root-init) reads the host's file, writes one, remounts
// read-only and powers off. Afterwards e2fsck -fn is clean, the guest's file
// is there, and (qcow2) qemu-img check is clean.
class LinuxGuestExt4Root : public LinuxGuest {
 public:
  void run_ext4_root(const std::string& format) {
    if (!emulated_kvm()) {
      GTEST_SKIP() << "the stock kernel mounts a virtio root only from its initramfs (virtio_blk is a module); "
                      "on a real KVM the Debian root disk tests (label lab) boot that way";
    }
    std::string tree = dir_ + "/tree";
    std::string raw = dir_ + "/root.raw";
    Shell mk = sh("set -e; mkdir -p " + tree + "/bin " + tree + "/sbin " + tree + "/proc " + tree + "/dev; cp " + build_dir() +
                  "/guest/busybox-i386 " + tree + "/bin/busybox; ln -s busybox " + tree + "/bin/sh; cp " +
                  source_dir() + "/tests/linux/guest/root-init " + tree + "/sbin/init; chmod +x " + tree +
                  "/sbin/init; echo 'made by the host' > " + tree + "/host.txt; truncate -s 64M " + raw +
                  "; mkfs.ext4 -q -F -d " + tree + " " + raw);
    ASSERT_EQ(mk.status, 0) << mk.out;
    std::string disk = raw;
    if (format == "qcow2") {
      disk = dir_ + "/root.qcow2";
      Shell cv = sh("qemu-img convert -f raw -O qcow2 " + raw + " " + disk);
      ASSERT_EQ(cv.status, 0) << cv.out;
    }
    boot("path=" + disk + ",id=disk0", "root=/dev/vda rw rootwait", /*initramfs=*/false);
    expect_line(probe_line(kDiskSectors));
    expect_line("EXT4-fs (vda): mounted filesystem");
    expect_line("tern-root: host file says: made by the host");
    expect_line("tern-root: wrote /guest.txt");
    expect_line("tern-root: powering off");
    EXPECT_EQ(finish(), 0);
    std::string check = disk;
    if (format == "qcow2") {
      expect_qcow2_check_clean(disk);
      check = dir_ + "/back.raw";
      Shell cv = sh("qemu-img convert -f qcow2 -O raw " + disk + " " + check);
      ASSERT_EQ(cv.status, 0) << cv.out;
    }
    Shell fsck = sh("e2fsck -fn " + check);
    EXPECT_EQ(fsck.status, 0) << fsck.out;
    Shell cat = sh("debugfs -R 'cat /guest.txt' " + check);
    EXPECT_NE(cat.out.find("written by the guest"), std::string::npos) << cat.out;
  }
};

TEST_F(LinuxGuestExt4Root, Qcow2RootReadWrite) { run_ext4_root("qcow2"); }

}  // namespace
}  // namespace tern::linux_test
