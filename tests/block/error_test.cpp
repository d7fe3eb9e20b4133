#include "block/error.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <string>

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

// The table sorts each error once; its users (the guest's status and
// counters, the API's status codes) follow from the class.
ErrorClass class_of(Errc code, int sys_errno = 0) { return Error{code, sys_errno, {}}.error_class(); }
int errno_of(Errc code) { return Error{code, 0, {}}.to_errno(); }

TEST(BlockError, EachCodeHasItsRowAndClass) {
  for (int i = 0; i <= static_cast<int>(Errc::Internal); ++i) {
    auto code = static_cast<Errc>(i);
    EXPECT_EQ(errc_info(code).code, code);
    EXPECT_NE(std::string(errc_name(code)), "") << i;
  }
  EXPECT_EQ(class_of(Errc::OutOfRange), ErrorClass::BadRequest);
  EXPECT_EQ(class_of(Errc::ReadOnly), ErrorClass::Refused);
  EXPECT_EQ(class_of(Errc::ShrinkRefused), ErrorClass::Refused);
  EXPECT_EQ(class_of(Errc::Unsupported), ErrorClass::Unsupported);
  EXPECT_EQ(class_of(Errc::ShortTransfer), ErrorClass::Io);
  EXPECT_EQ(class_of(Errc::CorruptImage), ErrorClass::Image);
  EXPECT_EQ(class_of(Errc::QueueFull), ErrorClass::Other);
  // A full host file system is NoSpace whichever step saw it.
  EXPECT_EQ(class_of(Errc::WriteFailed, ENOSPC), ErrorClass::NoSpace);
  EXPECT_EQ(class_of(Errc::WritingMetadata, EDQUOT), ErrorClass::NoSpace);
  EXPECT_EQ(errno_of(Errc::ReadOnly), EROFS);
  EXPECT_EQ(errno_of(Errc::Cancelled), ECANCELED);
  EXPECT_EQ(errno_of(Errc::WritingHeader), EIO);
}

}  // namespace
}  // namespace tern::block
