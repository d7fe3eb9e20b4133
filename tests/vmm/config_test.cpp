// The command line: cloud-hypervisor style options, every value validated.
#include "vmm/config.h"
#include "vmm/machine.h"
#include "vmm/host_kvm.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/support.h"

namespace tern::vmm {
namespace {

std::expected<VmConfig, ParseExit> parse(std::vector<const char*> args) {
  args.insert(args.begin(), "tern");
  return parse_command_line(static_cast<int>(args.size()), args.data());
}

TEST(Config, Sizes) {
  EXPECT_EQ(parse_size("512M"), 512ull << 20);
  EXPECT_EQ(parse_size("2G"), 2ull << 30);
  EXPECT_EQ(parse_size("4k"), 4096u);
  EXPECT_EQ(parse_size("1048576"), 1048576u);
  EXPECT_FALSE(parse_size("").has_value());
  EXPECT_FALSE(parse_size("M").has_value());
  EXPECT_FALSE(parse_size("12X").has_value());
  EXPECT_FALSE(parse_size("-1M").has_value());
  EXPECT_FALSE(parse_size("99999999999999999999").has_value());
  EXPECT_FALSE(parse_size("17179869184T").has_value());  // overflows 64 bits
}

TEST(Config, Memory) {
  EXPECT_EQ(parse_memory("size=128M")->size, 128ull << 20);
  EXPECT_TRUE(parse_memory("size=128M")->thp);
  EXPECT_FALSE(parse_memory("size=128M,thp=off")->thp);
  EXPECT_FALSE(parse_memory("size=128M,thp=maybe").has_value());
  EXPECT_FALSE(parse_memory("size=1M").has_value());     // below the minimum
  EXPECT_FALSE(parse_memory("size=100001").has_value());  // not page-sized
  auto r = parse_memory("sise=1G");
  ASSERT_FALSE(r.has_value());
  EXPECT_NE(r.error().find("unknown key \"sise\""), std::string::npos) << r.error();
}

TEST(Config, Cpus) {
  EXPECT_EQ(parse_cpus("boot=4")->boot, 4u);
  EXPECT_EQ(parse_cpus("boot=4")->profile, tern::vmm::CpuProfile::Auto);
  EXPECT_EQ(parse_cpus("boot=2,profile=emulated")->profile, tern::vmm::CpuProfile::Emulated);
  EXPECT_EQ(parse_cpus("profile=host")->profile, tern::vmm::CpuProfile::Host);
  EXPECT_FALSE(parse_cpus("profile=fast").has_value());
  EXPECT_FALSE(parse_cpus("boot=0").has_value());
  EXPECT_FALSE(parse_cpus("boot=255").has_value());
  EXPECT_FALSE(parse_cpus("boot=two").has_value());
  EXPECT_FALSE(parse_cpus("max=2").has_value());
  EXPECT_FALSE(parse_cpus("4").has_value());
}

TEST(Config, Serial) {
  EXPECT_EQ(parse_serial("tty")->mode, SerialMode::Tty);
  EXPECT_EQ(parse_serial("off")->mode, SerialMode::Off);
  auto f = parse_serial("file=/tmp/x");
  ASSERT_TRUE(f.has_value());
  EXPECT_EQ(f->mode, SerialMode::File);
  EXPECT_EQ(f->path, "/tmp/x");
  EXPECT_FALSE(parse_serial("pty").has_value());
  EXPECT_FALSE(parse_serial("file=").has_value());
  EXPECT_EQ(f->max_size, kDefaultSerialFileMax);
  auto capped = parse_serial("file=/tmp/x,max_size=4K");
  ASSERT_TRUE(capped.has_value()) << capped.error();
  EXPECT_EQ(capped->path, "/tmp/x");
  EXPECT_EQ(capped->max_size, 4096u);
  EXPECT_EQ(parse_serial("file=/tmp/x,max_size=0")->max_size, 0u);  // no cap
  EXPECT_FALSE(parse_serial("file=/tmp/x,max_size=lots").has_value());
  EXPECT_FALSE(parse_serial("file=/tmp/x,color=on").has_value());
}

TEST(Config, DiskEveryKey) {
  auto d = parse_disk(
      "path=/x.qcow2,readonly=on,id=root,num_queues=2,queue_size=128,image_type=qcow2,"
      "backing_files=on,direct=on,serial=SN1,lock=off,aio=threads",
      0);
  ASSERT_TRUE(d.has_value()) << d.error();
  EXPECT_EQ(d->open.path, "/x.qcow2");
  EXPECT_TRUE(d->open.read_only);
  EXPECT_TRUE(d->device.read_only);  // the disk's open and the device's feature bit
  EXPECT_EQ(d->device.id, "root");
  EXPECT_EQ(d->device.num_queues, 2);
  EXPECT_EQ(d->device.queue_size, 128);
  EXPECT_EQ(d->open.type, block::ImageType::Qcow2);
  EXPECT_TRUE(d->open.allow_backing);
  EXPECT_TRUE(d->open.direct);
  EXPECT_EQ(d->device.serial, "SN1");
  EXPECT_FALSE(d->open.lock);
  EXPECT_EQ(d->open.aio, block::AioMode::Threads);
}

TEST(Config, DiskDefaults) {
  auto d = parse_disk("path=/x.img", 3);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->device.id, "disk3");
  EXPECT_FALSE(d->open.read_only);
  EXPECT_EQ(d->device.num_queues, 1);
  EXPECT_EQ(d->open.type, block::ImageType::Auto);
  EXPECT_TRUE(d->open.lock);
  EXPECT_FALSE(d->open.allow_backing);
  EXPECT_FALSE(d->open.follow_probed_backing);  // the VMM never follows a probed header's backing file
}

TEST(Config, DiskErrorsNameTheProblem) {
  auto err = [](const char* text) {
    auto d = parse_disk(text, 0);
    EXPECT_FALSE(d.has_value()) << text;
    return d ? std::string() : d.error();
  };
  EXPECT_NE(err("readonly=on").find("path= is required"), std::string::npos);
  EXPECT_NE(err("path=/x,colour=blue").find("unknown key \"colour\""), std::string::npos);
  EXPECT_NE(err("path=/x,readonly=maybe").find("on or off"), std::string::npos);
  EXPECT_NE(err("path=/x,num_queues=0").find("outside"), std::string::npos);
  EXPECT_NE(err("path=/x,num_queues=x").find("not a number"), std::string::npos);
  EXPECT_NE(err("path=/x,queue_size=100").find("power of two"), std::string::npos);
  EXPECT_NE(err("path=/x,image_type=vmdk").find("raw or qcow2"), std::string::npos);
  EXPECT_NE(err("path=/x,aio=uring").find("sync, native or threads"), std::string::npos);
  EXPECT_NE(err("path=/x,path=/y").find("given twice"), std::string::npos);
  EXPECT_NE(err("path=/x,,id=a").find("key=value"), std::string::npos);
}

TEST(Config, WholeCommandLine) {
  auto c = parse({"--kernel", "/etc/hostname", "--cmdline", "console=ttyS0 x=1", "--cpus", "boot=2",
                  "--memory", "size=256M", "--serial", "off", "--disk", "path=/a.img", "--disk",
                  "path=/b.img,id=b", "--api-socket", "/tmp/api.sock"});
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->kernel, "/etc/hostname");
  EXPECT_EQ(c->cmdline, "console=ttyS0 x=1");
  EXPECT_EQ(c->cpus, 2u);
  EXPECT_EQ(c->memory.size, 256ull << 20);
  EXPECT_EQ(c->serial.mode, SerialMode::Off);
  ASSERT_EQ(c->disks.size(), 2u);
  EXPECT_EQ(c->disks[0].device.id, "disk0");
  EXPECT_EQ(c->disks[1].device.id, "b");
  EXPECT_EQ(c->api_socket, "/tmp/api.sock");
}

TEST(Config, DiskTransportAndTheMmioCommandLine) {
  auto c = parse({"--kernel", "/etc/hostname", "--disk", "path=/a.img", "--disk", "path=/b.img,transport=mmio",
                  "--disk", "path=/c.img,transport=pci", "--disk", "path=/d.img,transport=mmio"});
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->disks[0].transport, devices::VirtioTransport::Pci);
  EXPECT_EQ(c->disks[1].transport, devices::VirtioTransport::Mmio);
  EXPECT_EQ(c->disks[2].transport, devices::VirtioTransport::Pci);
  EXPECT_TRUE(c->virtio_mmio_cmdline);
  // MMIO disks take the slots in order; PCI disks take none.
  auto slots = mmio_slots(c->disks);
  ASSERT_EQ(slots.size(), 4u);
  EXPECT_FALSE(slots[0] || slots[2]);
  ASSERT_TRUE(slots[1] && slots[3]);
  EXPECT_EQ(slots[1]->base, 0xe0100000u);
  EXPECT_EQ(slots[1]->gsi, 5u);
  EXPECT_EQ(slots[3]->base, 0xe0101000u);
  EXPECT_EQ(slots[3]->gsi, 6u);
  EXPECT_EQ(virtio_mmio_cmdline(c->disks),
            " virtio_mmio.device=4K@0xe0100000:5 virtio_mmio.device=4K@0xe0101000:6");

  auto off = parse({"--kernel", "/etc/hostname", "--virtio-mmio-cmdline", "off"});
  ASSERT_TRUE(off.has_value());
  EXPECT_FALSE(off->virtio_mmio_cmdline);
  EXPECT_FALSE(parse({"--kernel", "/etc/hostname", "--virtio-mmio-cmdline", "maybe"}).has_value());
  EXPECT_FALSE(parse_disk("path=/a,transport=usb", 0).has_value());
  std::vector<std::string> many;
  std::vector<const char*> args = {"--kernel", "/etc/hostname"};
  for (size_t i = 0; i <= kMaxMmioDisks; ++i) many.push_back("path=/x" + std::to_string(i) + ",transport=mmio");
  for (auto& m : many) args.insert(args.end(), {"--disk", m.c_str()});
  auto too_many = parse(args);
  ASSERT_FALSE(too_many.has_value());
  EXPECT_NE(too_many.error().message.find("transport=mmio"), std::string::npos);
}

TEST(Config, CommandLineErrors) {
  auto missing = parse({});
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().exit_code, 1);
  EXPECT_NE(missing.error().message.find("--kernel"), std::string::npos) << missing.error().message;

  auto unknown = parse({"--kernel", "/etc/hostname", "--frobnicate"});
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().exit_code, 1);

  auto dup = parse({"--kernel", "/etc/hostname", "--disk", "path=/a,id=x", "--disk", "path=/b,id=x"});
  ASSERT_FALSE(dup.has_value());
  EXPECT_NE(dup.error().message.find("used twice"), std::string::npos);

  auto help = parse({"--help"});
  ASSERT_FALSE(help.has_value());
  EXPECT_EQ(help.error().exit_code, 0);
  EXPECT_NE(help.error().message.find("--disk"), std::string::npos);
}

TEST(Config, Sandbox) {
  auto d = parse({"--kernel", "/etc/hostname"});
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->sandbox.seccomp, SeccompMode::Kill);
  EXPECT_EQ(d->sandbox.landlock, LandlockMode::Auto);
  EXPECT_TRUE(d->sandbox.rules.empty());

  auto c = parse({"--kernel", "/etc/hostname", "--seccomp", "log", "--landlock", "false", "--landlock-rules",
                  "path=/srv/a,access=ro", "--landlock-rules", "path=/srv/b,access=rw", "--sandbox-test", "api"});
  ASSERT_TRUE(c.has_value()) << c.error().message;
  EXPECT_EQ(c->sandbox.seccomp, SeccompMode::Log);
  EXPECT_EQ(c->sandbox.landlock, LandlockMode::Off);
  ASSERT_EQ(c->sandbox.rules.size(), 2u);
  EXPECT_EQ(c->sandbox.rules[0].path, "/srv/a");
  EXPECT_FALSE(c->sandbox.rules[0].writable);
  EXPECT_TRUE(c->sandbox.rules[1].writable);
  EXPECT_EQ(c->sandbox.test, std::vector<std::string>{"api"});
  EXPECT_EQ(parse({"--kernel", "/etc/hostname", "--seccomp", "false"})->sandbox.seccomp, SeccompMode::Off);
  EXPECT_EQ(parse({"--kernel", "/etc/hostname", "--landlock", "true"})->sandbox.landlock, LandlockMode::On);

  for (auto args : std::vector<std::vector<const char*>>{
           {"--seccomp", "yes"},
           {"--landlock", "on"},
           {"--landlock-rules", "path=/a"},
           {"--landlock-rules", "access=rw"},
           {"--landlock-rules", "path=/a,access=wo"},
           {"--landlock-rules", "path=/a,access=ro,mode=1"},
           {"--sandbox-test", "launcher"},
           {"--sandbox-test", "mmap=nobody"},
           {"--sandbox-test", "write=vcpus"}}) {
    args.insert(args.begin(), {"--kernel", "/etc/hostname"});
    auto bad = parse(args);
    ASSERT_FALSE(bad.has_value()) << args[2] << " " << args[3];
    EXPECT_EQ(bad.error().exit_code, 1);
    EXPECT_NE(bad.error().message.find(args[2]), std::string::npos) << bad.error().message;
  }
  for (const char* t : {"mmap=launcher", "write=console-out", "unlink=/a/b", "kill=1"}) {
    auto ok = parse({"--kernel", "/etc/hostname", "--sandbox-test", t});
    EXPECT_TRUE(ok.has_value()) << t << ": " << ok.error().message;
  }
  // The trigger is for tests: not in --help.
  EXPECT_EQ(parse({"--help"}).error().message.find("--sandbox-test"), std::string::npos);
}

}  // namespace
}  // namespace tern::vmm

namespace {

using tern::vmm::CpuProfile;
using tern::vmm::guest_cmdline;
using tern::vmm::HostKvm;
using tern::vmm::resolve_cpu_profile;

TEST(HostKvm, AutoProfileFollowsTheHost) {
  EXPECT_EQ(resolve_cpu_profile(CpuProfile::Auto, HostKvm::Emulated), CpuProfile::Emulated);
  EXPECT_EQ(resolve_cpu_profile(CpuProfile::Auto, HostKvm::Hardware), CpuProfile::Host);
  EXPECT_EQ(resolve_cpu_profile(CpuProfile::Host, HostKvm::Emulated), CpuProfile::Host);
  EXPECT_EQ(resolve_cpu_profile(CpuProfile::Emulated, HostKvm::Hardware), CpuProfile::Emulated);
}

// The small kernel's tests and demo.sh replace tern's clearcpuid= with their
// own (scripts/lib/small-guest.cmdline, plus SYSCALL32/SYSENTER32): it must
// hide at least every feature tern's own list hides.
TEST(HostKvm, TheSmallGuestsClearcpuidHidesEverythingTernsDoes) {
  std::ifstream in(tern::test_support::source_path("scripts/lib/small-guest.cmdline"));
  ASSERT_TRUE(in.good());
  std::string line;
  std::getline(in, line);
  auto numbers = [](std::string text) {
    std::set<int> out;
    auto at = text.find("clearcpuid=");
    if (at == std::string::npos) return out;
    std::istringstream list(text.substr(at + 11, text.find(' ', at) - at - 11));
    for (std::string n; std::getline(list, n, ',');) out.insert(std::stoi(n));
    return out;
  };
  std::set<int> small = numbers(line), tern_list = numbers(tern::vmm::kLinuxClearCpuid);
  ASSERT_FALSE(tern_list.empty());
  for (int n : tern_list) EXPECT_TRUE(small.contains(n)) << "clearcpuid " << n << " missing from the small guest's list";
  EXPECT_TRUE(small.contains(110) && small.contains(111));
}

TEST(HostKvm, EmulatedProfileAddsLinuxParametersOnce) {
  EXPECT_EQ(guest_cmdline("console=ttyS0", CpuProfile::Host), "console=ttyS0");
  EXPECT_EQ(guest_cmdline("console=ttyS0", CpuProfile::Emulated),
            std::string("console=ttyS0 noxsave ") + tern::vmm::kLinuxClearCpuid + " cryptomgr.notests");
  // What the user wrote wins.
  EXPECT_EQ(guest_cmdline("noxsave clearcpuid=151 cryptomgr.notests=0", CpuProfile::Emulated),
            "noxsave clearcpuid=151 cryptomgr.notests=0");
  // A word that merely contains a name is not that parameter.
  EXPECT_NE(guest_cmdline("x.noxsave=1", CpuProfile::Emulated).find(" noxsave "), std::string::npos);
  EXPECT_EQ(guest_cmdline("", CpuProfile::Emulated).front(), 'n');
}

}  // namespace
