// The three programs' command lines: --version prints the project version
// (and the git description in a checkout), and a usage error exits with
// status 1 as qemu-img does, not with CLI11's own codes (106, 109, ...).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/support/support.h"

namespace tern::tools::test {
namespace {

using tern::test_support::sh;

std::string program(const std::string& name) { return tern::test_support::build_path(name); }

TEST(Cli, VersionOnAllThree) {
  for (const char* name : {"tern", "tern-img", "tern-remote"}) {
    std::string out;
    ASSERT_EQ(sh(program(name) + " --version", &out), 0) << name << ": " << out;
    EXPECT_TRUE(out.starts_with(std::string(name) + " version 0.")) << out;
    // Built from a checkout: the git description follows.
    EXPECT_NE(out.find("(git "), std::string::npos) << out;
  }
}

TEST(Cli, UsageErrorsExitOne) {
  const char* cases[] = {
      "tern-img map",                        // missing argument
      "tern-img nosuchverb x",               // unknown verb
      "tern-img convert --bogus a b",        // unknown option
      "tern-img",                            // no verb
      "tern-img info --output yaml x",       // bad choice
      "tern-remote ping",                    // --api-socket missing
      "tern-remote --api-socket s frobnicate",
      "tern --bogus",
  };
  for (const char* c : cases) {
    std::string out;
    EXPECT_EQ(sh(program(c), &out), 1) << c << ": " << out;
    EXPECT_FALSE(out.empty()) << c;
  }
  std::string out;
  EXPECT_EQ(sh(program("tern-img --help"), &out), 0) << out;
  EXPECT_EQ(sh(program("tern-img info --help"), &out), 0) << out;
}

}  // namespace
}  // namespace tern::tools::test
