#include "base/event_fd.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(EventFd, SignalThenConsumeReturnsCountAndResets) {
  auto efd = EventFd::create();
  ASSERT_TRUE(efd.has_value()) << efd.error().message();
  efd->signal();
  efd->signal();
  EXPECT_EQ(efd->consume(), 2u);
  EXPECT_EQ(efd->consume(), 0u);
}

}  // namespace
}  // namespace tern
