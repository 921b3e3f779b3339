# One command to build ZeroPool and install it into a prefix:
#
#   cmake -DPREFIX=<dir> [-DPROFILE=release|debug] -P cmake/install.cmake
#
# It configures, builds and installs the CMake project in this directory
# (cmake/CMakeLists.txt), which does the real work; this is a shorthand for
#
#   cmake -S cmake -B <build> -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=<dir>
#   cmake --build <build> && cmake --install <build>
#
# Optional: -DLIBDIR=<dir> (CMAKE_INSTALL_LIBDIR; default from
# GNUInstallDirs), -DCARGO_TARGET_DIR=<dir> (default: the source tree's
# target/), -DBUILD_DIR=<dir> (default: <cargo target dir>/cmake-install).
# DESTDIR in the environment is honoured. PROFILE is case-insensitive:
# release (also Release, RelWithDebInfo, MinSizeRel) or debug.
cmake_minimum_required(VERSION 3.21)

if(NOT DEFINED PREFIX)
  message(FATAL_ERROR "usage: cmake -DPREFIX=<dir> [-DPROFILE=release|debug] -P cmake/install.cmake")
endif()
if(NOT DEFINED PROFILE)
  set(PROFILE release)
endif()
string(TOLOWER "${PROFILE}" profile)
if(profile MATCHES "^(release|relwithdebinfo|minsizerel)$")
  set(build_type Release)
elseif(profile STREQUAL "debug")
  set(build_type Debug)
else()
  message(FATAL_ERROR "PROFILE must be release or debug, not '${PROFILE}'")
endif()

get_filename_component(src "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
get_filename_component(PREFIX "${PREFIX}" ABSOLUTE)
if(NOT DEFINED CARGO_TARGET_DIR)
  set(CARGO_TARGET_DIR "${src}/target")
endif()
get_filename_component(CARGO_TARGET_DIR "${CARGO_TARGET_DIR}" ABSOLUTE)
if(NOT DEFINED BUILD_DIR)
  set(BUILD_DIR "${CARGO_TARGET_DIR}/cmake-install")
endif()
set(libdir_arg "")
if(DEFINED LIBDIR)
  set(libdir_arg "-DCMAKE_INSTALL_LIBDIR=${LIBDIR}")
endif()

function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "`${cmd}` failed (${rc})")
  endif()
endfunction()

step("${CMAKE_COMMAND}" -S "${src}/cmake" -B "${BUILD_DIR}"
  "-DCMAKE_BUILD_TYPE=${build_type}"
  "-DCMAKE_INSTALL_PREFIX=${PREFIX}"
  "-DZEROPOOL_CARGO_TARGET_DIR=${CARGO_TARGET_DIR}"
  ${libdir_arg})
step("${CMAKE_COMMAND}" --build "${BUILD_DIR}")
step("${CMAKE_COMMAND}" --install "${BUILD_DIR}")
message(STATUS "Installed zeropool into $ENV{DESTDIR}${PREFIX}")
