#include "block/error.h"

#include <gtest/gtest.h>

namespace tern::block {
namespace {

TEST(BlockError, MessageNamesStepDetailAndErrno) {
  Error e{Errc::OpenFailed, ENOENT, "/no/such.img"};
  EXPECT_EQ(e.message(), "cannot open: /no/such.img: No such file or directory");
  EXPECT_EQ(e.to_errno(), ENOENT);
}

TEST(BlockError, RefcountOverflowMapsToEinval) {
  Error e{Errc::RefcountOverflow, 0, "value 2 exceeds maximum 1 of 1-bit refcounts"};
  EXPECT_EQ(e.to_errno(), EINVAL);
}

}  // namespace
}  // namespace tern::block
