# Installation and packaging: `cmake --install build` puts the three
# programs in bin/, their man pages (generated from --help by help2man) in
# share/man/man1/ and bash completions in share/bash-completion/completions/;
# `cpack -G DEB` (in build/) makes a .deb of the same tree under /usr, its
# Depends computed from the binaries by dpkg-shlibdeps.
include(GNUInstallDirs)

set(TERN_PROGRAMS tern tern-img tern-remote)
install(TARGETS ${TERN_PROGRAMS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

find_program(HELP2MAN help2man)
if(HELP2MAN)
  set(tern_man_summary "boot one Linux guest under KVM")
  set(tern-img_man_summary "create, inspect, compare, convert and check disk images")
  set(tern-remote_man_summary "control a running tern over its API socket")
  set(man_pages)
  foreach(program ${TERN_PROGRAMS})
    set(page ${CMAKE_BINARY_DIR}/man/${program}.1)
    add_custom_command(OUTPUT ${page}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
      COMMAND ${HELP2MAN} --no-info --section=1 --name=${${program}_man_summary}
              --output=${page} $<TARGET_FILE:${program}>
      DEPENDS ${program}
      COMMENT "Man page ${program}.1"
      VERBATIM)
    list(APPEND man_pages ${page})
  endforeach()
  add_custom_target(man_pages ALL DEPENDS ${man_pages})
  install(FILES ${man_pages} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
else()
  message(WARNING "help2man not found (scripts/setup.sh installs it): no man pages")
endif()

foreach(program ${TERN_PROGRAMS})
  install(FILES ${CMAKE_SOURCE_DIR}/tools/completions/${program}
          DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
endforeach()

set(CPACK_PACKAGE_NAME tern)
set(CPACK_PACKAGE_VENDOR "Tern")
set(CPACK_PACKAGE_CONTACT "Tern developers <tern@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "minimal KVM virtual machine monitor with virtio-blk and QCOW2 tools")
set(CPACK_PACKAGE_DESCRIPTION
    "Tern boots one Linux guest under KVM with virtio-blk disks (raw or QCOW2) and a JSON API; tern-img creates, inspects, compares, converts and checks images; tern-remote drives a running tern.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_GENERATOR DEB)
include(CPack)
