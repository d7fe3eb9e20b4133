#include "block/open.h"

namespace tern::block {

Result<std::unique_ptr<DiskFile>> open_disk(const OpenOptions& options) {
  return fail(Errc::UnknownFormat, 0, options.path);
}

}  // namespace tern::block
