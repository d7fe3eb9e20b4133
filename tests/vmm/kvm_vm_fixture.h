// A fixture with an open /dev/kvm and one VM, for the vmm tests that talk
// to the real KVM; skips (saying so) where /dev/kvm is absent.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "tests/support/support.h"
#include "vmm/kvm.h"

namespace tern::vmm {

class KvmVmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    TERN_REQUIRE_KVM();
    auto kvm = Kvm::open();
    ASSERT_TRUE(kvm.has_value()) << kvm.error().message();
    kvm_ = std::make_unique<Kvm>(std::move(*kvm));
    auto vm = VmFd::create(*kvm_);
    ASSERT_TRUE(vm.has_value()) << vm.error().message();
    vm_ = std::make_unique<VmFd>(std::move(*vm));
  }
  std::unique_ptr<Kvm> kvm_;
  std::unique_ptr<VmFd> vm_;
};

}  // namespace tern::vmm
