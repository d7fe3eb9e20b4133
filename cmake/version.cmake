# Writes the version source (cmake -P, at every build): the project version
# and, in a git checkout, `git describe`. configure_file rewrites the file
# only when its text changes, so a build after no commit recompiles nothing.
# Inputs: TERN_VERSION, SOURCE_DIR, OUTPUT, TEMPLATE.
set(TERN_GIT_DESCRIBE "")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(
    COMMAND "${GIT_EXECUTABLE}" -C "${SOURCE_DIR}" describe --always --dirty --tags
    OUTPUT_VARIABLE TERN_GIT_DESCRIBE
    OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_QUIET)
endif()
if(TERN_GIT_DESCRIBE STREQUAL "")
  set(TERN_VERSION_TEXT "${TERN_VERSION}")
else()
  set(TERN_VERSION_TEXT "${TERN_VERSION} (git ${TERN_GIT_DESCRIBE})")
endif()
configure_file("${TEMPLATE}" "${OUTPUT}" @ONLY)
