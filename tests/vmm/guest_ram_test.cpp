// GuestRam against the real /dev/kvm: each RAM region is 2 MiB-aligned in
// the host and advised for transparent huge pages unless `thp=off` asked
// otherwise, so that KVM can map the guest with 2 MiB pages. The kernel's
// own word on the mapping is read from /proc/self/smaps ("THPeligible").
#include "vmm/guest_ram.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "vmm/kvm.h"
#include "tests/vmm/kvm_vm_fixture.h"

namespace tern::vmm {
namespace {

// The THP mode in force ("always", "madvise" or "never").
std::string thp_mode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string all;
  std::getline(f, all);
  auto open = all.find('['), close = all.find(']');
  return open == std::string::npos || close == std::string::npos ? "" : all.substr(open + 1, close - open - 1);
}

// The "THPeligible:" value of the mapping that contains `p`, or -1.
int thp_eligible(const void* p) {
  auto addr = reinterpret_cast<uintptr_t>(p);
  std::ifstream f("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(f, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
      inside = addr >= lo && addr < hi;
      continue;
    }
    if (inside && line.rfind("THPeligible:", 0) == 0) return std::stoi(line.substr(12));
  }
  return -1;
}

using GuestRamTest = KvmVmTest;

TEST_F(GuestRamTest, HugePagesByDefaultOnTwoMebibyteBoundaries) {
  auto ram = GuestRam::create(vm_->fd(), 64ull << 20);
  ASSERT_TRUE(ram.has_value()) << ram.error().message();
  auto low = ram->low();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(low.data()) % (2ull << 20), 0u);
  EXPECT_EQ(low.size(), 64ull << 20);
  std::string mode = thp_mode();
  if (mode == "never") {
    EXPECT_EQ(thp_eligible(low.data()), 0) << "THP is off on this host";
  } else {
    EXPECT_EQ(thp_eligible(low.data()), 1) << "THP mode " << mode;
  }
  // The guest's RAM reads and writes through the view at both ends.
  low.front() = 0x5a;
  low.back() = 0xa5;
  EXPECT_EQ(low.front(), 0x5a);
  EXPECT_EQ(low.back(), 0xa5);
}

TEST_F(GuestRamTest, ThpOffLeavesSmallPages) {
  if (thp_mode() == "always") GTEST_SKIP() << "THP mode \"always\": every anonymous mapping is eligible";
  auto ram = GuestRam::create(vm_->fd(), 64ull << 20, /*huge_pages=*/false);
  ASSERT_TRUE(ram.has_value()) << ram.error().message();
  EXPECT_EQ(thp_eligible(ram->low().data()), 0);
}

}  // namespace
}  // namespace tern::vmm
