# Builds ZeroPool with cargo and installs it into a prefix:
#
#   cmake -DPREFIX=<dir> [-DPROFILE=release|debug] -P cmake/install.cmake
#
# Lays out <dir>/lib/libzeropool.so.X.Y.Z (+ the SONAME and .so links),
# <dir>/lib/libzeropool.a, <dir>/include/zeropool.h,
# <dir>/lib/cmake/zeropool/ (package config + version file) and
# <dir>/lib/pkgconfig/zeropool.pc. Everything installed is relocatable: the
# prefix can be moved afterwards. Optional: -DCARGO_TARGET_DIR=<dir>.
cmake_minimum_required(VERSION 3.16)

if(NOT DEFINED PREFIX)
  message(FATAL_ERROR "usage: cmake -DPREFIX=<dir> [-DPROFILE=release|debug] -P cmake/install.cmake")
endif()
if(NOT DEFINED PROFILE)
  set(PROFILE release)
endif()
if(PROFILE STREQUAL "release")
  set(profile_flag --release)
  set(profile_dir release)
elseif(PROFILE STREQUAL "debug")
  set(profile_flag "")
  set(profile_dir debug)
else()
  message(FATAL_ERROR "PROFILE must be release or debug, not '${PROFILE}'")
endif()

get_filename_component(src "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
get_filename_component(PREFIX "${PREFIX}" ABSOLUTE)
if(NOT DEFINED CARGO_TARGET_DIR)
  set(CARGO_TARGET_DIR "${src}/target")
endif()
get_filename_component(CARGO_TARGET_DIR "${CARGO_TARGET_DIR}" ABSOLUTE)

# The version comes from Cargo.toml, the one source of truth.
file(STRINGS "${src}/Cargo.toml" version_line REGEX "^version = \"[0-9]+\\.[0-9]+\\.[0-9]+\"" LIMIT_COUNT 1)
string(REGEX REPLACE "^version = \"([0-9]+)\\.([0-9]+)\\.([0-9]+)\".*" "\\1;\\2;\\3" parts "${version_line}")
list(GET parts 0 VERSION_MAJOR)
list(GET parts 1 VERSION_MINOR)
list(GET parts 2 VERSION_PATCH)
set(VERSION "${VERSION_MAJOR}.${VERSION_MINOR}.${VERSION_PATCH}")
# cargo-c's convention (set by build.rs): 0.x is ABI version 0.x.
if(VERSION_MAJOR EQUAL 0)
  set(SONAME "libzeropool.so.0.${VERSION_MINOR}")
else()
  set(SONAME "libzeropool.so.${VERSION_MAJOR}")
endif()

find_program(CARGO cargo)
find_program(RUSTC rustc)
if(NOT CARGO OR NOT RUSTC)
  message(FATAL_ERROR "cargo and rustc are needed (https://rustup.rs)")
endif()

message(STATUS "Building zeropool ${VERSION} (${PROFILE}) with cargo")
execute_process(
  COMMAND "${CARGO}" build --lib ${profile_flag} --manifest-path "${src}/Cargo.toml" --target-dir "${CARGO_TARGET_DIR}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cargo build failed (${rc})")
endif()
set(built "${CARGO_TARGET_DIR}/${profile_dir}")

# What a static link needs besides the archive, as rustc reports it.
execute_process(
  COMMAND "${RUSTC}" --crate-type=staticlib --crate-name=probe --print=native-static-libs -o "${CARGO_TARGET_DIR}/probe.a" -
  INPUT_FILE /dev/null
  ERROR_VARIABLE rustc_notes
  OUTPUT_QUIET)
string(REGEX MATCH "native-static-libs: ([^\n]*)" _ "${rustc_notes}")
set(NATIVE_LIBS "${CMAKE_MATCH_1}")
if(NATIVE_LIBS STREQUAL "")
  message(FATAL_ERROR "rustc did not report the native libraries of a static library")
endif()
string(REPLACE "-l" "" NATIVE_LIBS_LIST "${NATIVE_LIBS}")
separate_arguments(NATIVE_LIBS_LIST UNIX_COMMAND "${NATIVE_LIBS_LIST}")

set(lib "${PREFIX}/lib")
file(MAKE_DIRECTORY "${lib}/cmake/zeropool" "${lib}/pkgconfig" "${PREFIX}/include")
file(COPY_FILE "${built}/libzeropool.so" "${lib}/libzeropool.so.${VERSION}")
file(REMOVE "${lib}/${SONAME}" "${lib}/libzeropool.so")
file(CREATE_LINK "libzeropool.so.${VERSION}" "${lib}/${SONAME}" SYMBOLIC)
file(CREATE_LINK "${SONAME}" "${lib}/libzeropool.so" SYMBOLIC)
file(COPY_FILE "${built}/libzeropool.a" "${lib}/libzeropool.a")
file(COPY_FILE "${src}/include/zeropool.h" "${PREFIX}/include/zeropool.h")

configure_file("${CMAKE_CURRENT_LIST_DIR}/zeropool-config.cmake.in" "${lib}/cmake/zeropool/zeropool-config.cmake" @ONLY)
include(CMakePackageConfigHelpers)
# 0.x: only the same minor version is compatible.
write_basic_package_version_file("${lib}/cmake/zeropool/zeropool-config-version.cmake"
  VERSION "${VERSION}" COMPATIBILITY SameMinorVersion)
configure_file("${CMAKE_CURRENT_LIST_DIR}/zeropool.pc.in" "${lib}/pkgconfig/zeropool.pc" @ONLY)

message(STATUS "Installed zeropool ${VERSION} into ${PREFIX}")
