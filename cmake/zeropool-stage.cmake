# Build step of cmake/CMakeLists.txt (run with `cmake -P` at build time, not
# meant to be run by hand): builds the crate with cargo, then lays out what
# the targets use and what `cmake --install` copies, in STAGE:
#
#   lib/libzeropool.so.X.Y.Z   stripped, with a .gnu_debuglink to the file below
#   lib/<SONAME>, lib/libzeropool.so   symbolic links
#   lib/libzeropool.a          one object whose only global symbols are zp_*
#   debug/libzeropool.so.X.Y.Z.debug   the shared library's debug info
#   native-static-libs.rsp     what a static link needs besides the archive
#   cmake/zeropool-link.cmake  the same, and the SONAME, for the package config
#   pkgconfig/zeropool.pc, pkgconfig/zeropool-static.pc
#
# The SONAME and the native libraries come from build.rs (through cargo's
# build-script-executed message): they are computed in one place only.
#
# Inputs (-D): CARGO MANIFEST TARGET_DIR PROFILE STAGE VERSION STRIP
# OBJCOPY LINKER AR READELF PC_IN PC_STATIC_IN PC_PREFIX PC_LIBDIR
# PC_INCLUDEDIR.
cmake_minimum_required(VERSION 3.21)

foreach(var CARGO MANIFEST TARGET_DIR PROFILE STAGE VERSION OBJCOPY LINKER AR READELF)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "zeropool-stage.cmake: ${var} is not set")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "zeropool: `${cmd}` failed (${rc})")
  endif()
endfunction()

# cargo decides what is stale; the JSON messages say where things are.
execute_process(
  COMMAND "${CARGO}" build --lib --profile "${PROFILE}" --manifest-path "${MANIFEST}"
          --target-dir "${TARGET_DIR}" --message-format=json-render-diagnostics
  OUTPUT_VARIABLE messages
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "zeropool: cargo build failed (${rc})")
endif()

file(REAL_PATH "${MANIFEST}" manifest)
string(REPLACE ";" "\\;" messages "${messages}")
string(REPLACE "\n" ";" messages "${messages}")
set(package_id "")
set(cargo_so "")
set(cargo_a "")
set(script_messages "")
foreach(msg IN LISTS messages)
  string(JSON reason ERROR_VARIABLE err GET "${msg}" reason)
  if(err)
    continue()
  endif()
  if(reason STREQUAL "build-script-executed")
    list(APPEND script_messages "${msg}")
  elseif(reason STREQUAL "compiler-artifact")
    string(JSON path GET "${msg}" manifest_path)
    string(JSON name GET "${msg}" target name)
    if(path STREQUAL manifest AND name STREQUAL "zeropool")
      string(JSON package_id GET "${msg}" package_id)
      string(JSON n LENGTH "${msg}" filenames)
      math(EXPR last "${n} - 1")
      foreach(i RANGE ${last})
        string(JSON f GET "${msg}" filenames ${i})
        if(f MATCHES "\\.so$")
          set(cargo_so "${f}")
        elseif(f MATCHES "\\.a$")
          set(cargo_a "${f}")
        endif()
      endforeach()
    endif()
  endif()
endforeach()
if(cargo_so STREQUAL "" OR cargo_a STREQUAL "")
  message(FATAL_ERROR "zeropool: cargo did not report libzeropool.so and libzeropool.a")
endif()

set(SONAME "")
set(NATIVE_STATIC_LIBS "")
foreach(msg IN LISTS script_messages)
  string(JSON id GET "${msg}" package_id)
  if(NOT id STREQUAL package_id)
    continue()
  endif()
  string(JSON n LENGTH "${msg}" env)
  math(EXPR last "${n} - 1")
  foreach(i RANGE ${last})
    string(JSON key GET "${msg}" env ${i} 0)
    string(JSON value GET "${msg}" env ${i} 1)
    if(key STREQUAL "ZP_SONAME")
      set(SONAME "${value}")
    elseif(key STREQUAL "ZP_NATIVE_STATIC_LIBS")
      set(NATIVE_STATIC_LIBS "${value}")
    endif()
  endforeach()
endforeach()
if(SONAME STREQUAL "" OR NATIVE_STATIC_LIBS STREQUAL "")
  message(FATAL_ERROR "zeropool: build.rs did not report ZP_SONAME and ZP_NATIVE_STATIC_LIBS")
endif()

set(lib "${STAGE}/lib")
set(real "${lib}/libzeropool.so.${VERSION}")
set(debug "${STAGE}/debug/libzeropool.so.${VERSION}.debug")
set(tmp "${STAGE}/tmp")
file(MAKE_DIRECTORY "${lib}" "${STAGE}/debug" "${STAGE}/cmake" "${STAGE}/pkgconfig" "${tmp}")

# The shared library: debug info split off, the rest stripped.
if(NOT EXISTS "${real}" OR "${cargo_so}" IS_NEWER_THAN "${real}" OR "${CMAKE_CURRENT_LIST_FILE}" IS_NEWER_THAN "${real}")
  file(REMOVE "${real}" "${debug}")
  if(STRIP)
    run("${OBJCOPY}" --only-keep-debug --compress-debug-sections "${cargo_so}" "${debug}")
    # --add-gnu-debuglink records the debug file's name and CRC; gdb looks
    # for that name next to the library (and in .debug/ below it).
    run("${OBJCOPY}" --strip-debug --strip-unneeded "--add-gnu-debuglink=${debug}" "${cargo_so}" "${real}")
  else()
    file(COPY_FILE "${cargo_so}" "${real}")
  endif()
endif()
# Names left by an earlier version would be installed too: remove them.
file(GLOB stale "${lib}/libzeropool.so.*" "${STAGE}/debug/*.debug")
list(REMOVE_ITEM stale "${real}" "${debug}")
file(REMOVE ${stale} "${lib}/libzeropool.so")
file(CREATE_LINK "libzeropool.so.${VERSION}" "${lib}/${SONAME}" SYMBOLIC)
file(CREATE_LINK "${SONAME}" "${lib}/libzeropool.so" SYMBOLIC)

# The static library: cargo's archive holds Rust's std, whose global
# symbols would clash with another Rust library's and leak out of a plugin
# built with it. Link it into one relocatable object (keeping only what the
# zp_* functions reach), make every symbol but zp_* local, and archive that.
set(archive "${lib}/libzeropool.a")
if(NOT EXISTS "${archive}" OR "${cargo_a}" IS_NEWER_THAN "${archive}" OR "${CMAKE_CURRENT_LIST_FILE}" IS_NEWER_THAN "${archive}")
  execute_process(COMMAND "${READELF}" -sW "${cargo_a}" OUTPUT_VARIABLE symbols ERROR_QUIET)
  string(REGEX MATCHALL "GLOBAL +DEFAULT +[0-9]+ +zp_[A-Za-z0-9_]+" exported "${symbols}")
  set(roots "")
  foreach(e IN LISTS exported)
    string(REGEX REPLACE ".* " "" e "${e}")
    list(APPEND roots "--undefined=${e}")
  endforeach()
  list(REMOVE_DUPLICATES roots)
  if(roots STREQUAL "")
    message(FATAL_ERROR "zeropool: no zp_* function found in ${cargo_a}")
  endif()
  run("${LINKER}" -r --gc-sections ${roots} --whole-archive "${cargo_a}" -o "${tmp}/linked.o")
  # Garbage collection leaves the undefined symbols of the dropped code
  # behind as local ones, which objcopy would turn into global references:
  # drop them (no relocation uses them).
  execute_process(COMMAND "${READELF}" -sW "${tmp}/linked.o" OUTPUT_VARIABLE symbols)
  string(REGEX MATCHALL "LOCAL +DEFAULT +UND +[^ \n]+" unused "${symbols}")
  set(unused_list "")
  foreach(u IN LISTS unused)
    string(REGEX REPLACE ".* " "" u "${u}")
    string(APPEND unused_list "${u}\n")
  endforeach()
  file(WRITE "${tmp}/unused-undefined.txt" "${unused_list}")
  set(strip_debug "")
  if(STRIP)
    set(strip_debug --strip-debug)
  endif()
  # .llvmbc/.llvmcmd (embedded bitcode) make GNU ar and nm choke.
  run("${OBJCOPY}" -w "--keep-global-symbol=zp_*" "--strip-unneeded-symbols=${tmp}/unused-undefined.txt"
      --remove-section=.llvmbc --remove-section=.llvmcmd ${strip_debug}
      "${tmp}/linked.o" "${tmp}/zeropool.o")
  file(REMOVE "${archive}")
  run("${AR}" qcD "${archive}" "${tmp}/zeropool.o")
  run("${AR}" sD "${archive}")
  file(REMOVE "${tmp}/linked.o" "${tmp}/zeropool.o")
endif()

# What a static link needs after the archive. libgcc_eh (not libgcc_s, which
# has no static form) so that `cc -static` links too.
string(REPLACE " " "\n" rsp "${NATIVE_STATIC_LIBS}")
file(CONFIGURE OUTPUT "${STAGE}/native-static-libs.rsp" CONTENT "${rsp}\n")
separate_arguments(native_list UNIX_COMMAND "${NATIVE_STATIC_LIBS}")
file(CONFIGURE OUTPUT "${STAGE}/cmake/zeropool-link.cmake" CONTENT
"# Written when zeropool was built (values from its build.rs).
set(ZEROPOOL_SONAME \"${SONAME}\")
set(ZEROPOOL_NATIVE_STATIC_LIBS \"${native_list}\")
")

if(DEFINED PC_IN)
  set(NATIVE_LIBS "${NATIVE_STATIC_LIBS}")
  configure_file("${PC_IN}" "${STAGE}/pkgconfig/zeropool.pc" @ONLY)
  configure_file("${PC_STATIC_IN}" "${STAGE}/pkgconfig/zeropool-static.pc" @ONLY)
endif()
