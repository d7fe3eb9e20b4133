# The include direction between the layers (docs/ARCHITECTURE.md,
# "Layers"), checked on every build: run as
#   cmake -DSOURCE_DIR=... -DSTAMP=... -P cmake/check_layering.cmake
# target_link_libraries keeps a layer from linking a higher one, but every
# folder sees the whole tree's headers (include_directories at the top), so
# an upward include of a header-only type, or of block's private folders,
# would build. This reads every `#include "dir/..."` in the product folders
# and fails the build on one the table below does not allow. Tests are
# white-box and may include anything.

cmake_minimum_required(VERSION 3.25)  # IN_LIST and continue() in script mode

# Which folders each folder may include (its own included).
set(layer_base base)
set(layer_block base block)
set(layer_arch base arch)
set(layer_devices base block devices)
set(layer_api base api)
set(layer_vmm base block arch devices api vmm)
set(layer_tools base block api tools)
set(layers base block arch devices api vmm tools)

# block's private folders: the formats behind its public headers
# (block/*.h, block/io/*.h); only block/ itself includes them.
set(private_pattern "^block/(qcow2|raw)/")

set(violations "")
foreach(layer IN LISTS layers)
  file(GLOB_RECURSE sources "${SOURCE_DIR}/${layer}/*.h" "${SOURCE_DIR}/${layer}/*.cpp")
  foreach(source IN LISTS sources)
    file(STRINGS "${source}" includes REGEX "^[ \t]*#[ \t]*include[ \t]*\"[^\"]+\"")
    file(RELATIVE_PATH where "${SOURCE_DIR}" "${source}")
    foreach(line IN LISTS includes)
      string(REGEX REPLACE "^[^\"]*\"([^\"]+)\".*$" "\\1" header "${line}")
      string(REGEX MATCH "^[^/]+" folder "${header}")
      if(NOT header MATCHES "/" OR NOT folder IN_LIST layers)
        continue()  # a system or third-party header
      endif()
      if(NOT folder IN_LIST layer_${layer})
        string(REPLACE ";" ", " allowed "${layer_${layer}}")
        string(APPEND violations "  ${where}: ${header} (${layer}/ may include ${allowed})\n")
      elseif(header MATCHES "${private_pattern}" AND NOT layer STREQUAL "block")
        string(APPEND violations "  ${where}: ${header} (private to block/: use block/*.h, block/io/*.h)\n")
      endif()
    endforeach()
  endforeach()
endforeach()

if(violations)
  message(FATAL_ERROR "Includes against the layering (cmake/check_layering.cmake):\n${violations}")
endif()
file(TOUCH "${STAMP}")
