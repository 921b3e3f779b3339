//! The C/C++ user's story, end to end with real tools, on one release build
//! (every CMake build here shares the cargo target dir `target/packaging`):
//!
//! - the CMake project in cmake/: build, `cmake --install` with DESTDIR and
//!   a custom libdir, move the result, then consume it with
//!   `find_package(zeropool)` (C and C++, shared and static), pkg-config
//!   (shared, a static archive in a dynamic program, a fully static
//!   program), Python ctypes, and a plugin `.so`; check the SONAME, the
//!   stripped libraries and their separate debug info, the static
//!   archive's global symbols, the licenses, and the package's error paths;
//! - the one-command `cmake -P cmake/install.cmake`;
//! - building from source inside a CMake project, through `add_subdirectory`
//!   and through `FetchContent` (cmake/from_source);
//! - the installed release library runs ffi-tests/scrub_on_release.c: the
//!   scrub before memory goes back to the system must survive the optimizer.
//!
//! A missing tool fails the test under `CI=true` (and under .ci/test, which
//! installs the tools first); elsewhere the test is skipped with one line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One cargo target dir for every CMake build here: a release build is
/// made once. (Not target/ itself: the outer `cargo test` holds its lock.)
fn cargo_target() -> PathBuf {
    root().join("target/packaging")
}

/// Whether every tool runs; when one does not, fails under CI and
/// otherwise prints one line and tells the caller to skip.
fn have(test: &str, tools: &[&str]) -> bool {
    for tool in tools {
        let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !found {
            let msg = format!("`{tool}` is not installed; .ci/test installs what the tests need");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: {msg}");
            // Straight to stderr: libtest would swallow eprintln! output.
            let _ = writeln!(std::io::stderr(), "skipped {test}: {msg}");
            return false;
        }
    }
    true
}

const TOOLS: &[&str] = &["cmake", "pkg-config", "python3", "readelf", "nm", "cc"];

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zeropool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cmake() -> Command {
    Command::new("cmake")
}

/// Configures and builds a CMake project with the shared cargo target dir.
fn cmake_build(source: &Path, build: &Path, args: &[String]) {
    run(cmake()
        .arg("-S")
        .arg(source)
        .arg("-B")
        .arg(build)
        .arg("-DCMAKE_BUILD_TYPE=Release")
        .arg(format!("-DZEROPOOL_CARGO_TARGET_DIR={}", cargo_target().display()))
        .args(args));
    run(cmake().arg("--build").arg(build));
}

/// Runs the programs cmake/example builds and checks what they link.
fn run_examples(dir: &Path) {
    for program in ["hello_c_shared", "hello_c_static", "hello_cpp_shared", "hello_cpp_static"] {
        let out = text(&run(&mut Command::new(dir.join(program))));
        assert!(out.contains("hello from zeropool"), "{program}: {out}");
        let needed = text(&run(Command::new("readelf").arg("-d").arg(dir.join(program))));
        assert_eq!(
            needed.contains(env!("ZP_SONAME")),
            program.ends_with("shared"),
            "{program} links the wrong library:\n{needed}"
        );
    }
}

/// The defined global symbols of an archive or object.
fn global_symbols(file: &Path) -> Vec<String> {
    let out = text(&run(Command::new("nm").args(["-g", "--defined-only"]).arg(file)));
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| f[2].to_string())
        })
        .collect()
}

fn sections(file: &Path) -> String {
    text(&run(Command::new("readelf").arg("-SW").arg(file)))
}

fn pkg_config(pc_path: &Path, args: &[&str]) -> Vec<String> {
    let out = run(Command::new("pkg-config").args(args).env("PKG_CONFIG_PATH", pc_path));
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect()
}

/// The standalone CMake project, configured for /opt/zeropool with lib64,
/// built once.
fn standalone_build() -> &'static Path {
    static BUILD: OnceLock<PathBuf> = OnceLock::new();
    BUILD.get_or_init(|| {
        let build = cargo_target().join("cmake-standalone");
        cmake_build(
            &root().join("cmake"),
            &build,
            &["-DCMAKE_INSTALL_PREFIX=/opt/zeropool".into(), "-DCMAKE_INSTALL_LIBDIR=lib64".into()],
        );
        build
    })
}

#[test]
fn install_with_destdir_and_libdir_then_consume() {
    if !have("install_with_destdir_and_libdir_then_consume", TOOLS) {
        return;
    }
    let build = standalone_build();
    let work = fresh_dir("packaging");
    let destdir = work.join("dest");
    run(cmake().arg("--install").arg(build).env("DESTDIR", &destdir));
    run(cmake().arg("--install").arg(build).args(["--component", "Debug"]).env("DESTDIR", &destdir));
    assert!(destdir.join("opt/zeropool/lib64").is_dir(), "DESTDIR and CMAKE_INSTALL_LIBDIR not honoured");

    // Relocatable: everything must still work from elsewhere.
    let prefix = work.join("moved");
    std::fs::rename(destdir.join("opt/zeropool"), &prefix).unwrap();
    let lib = prefix.join("lib64");
    let version = env!("CARGO_PKG_VERSION");
    let soname = env!("ZP_SONAME");
    let real = lib.join(format!("libzeropool.so.{version}"));
    let archive = lib.join("libzeropool.a");
    assert!(real.is_file() && archive.is_file());
    assert_eq!(std::fs::read_link(lib.join(soname)).unwrap(), Path::new(&format!("libzeropool.so.{version}")));
    assert_eq!(std::fs::read_link(lib.join("libzeropool.so")).unwrap(), Path::new(soname));
    for file in [
        "include/zeropool.h",
        "include/zeropool.hpp",
        "lib64/cmake/zeropool/zeropool-config.cmake",
        "lib64/cmake/zeropool/zeropool-config-version.cmake",
        "lib64/pkgconfig/zeropool.pc",
        "lib64/pkgconfig/zeropool-static.pc",
        "share/doc/zeropool/LICENSE-MIT",
        "share/doc/zeropool/LICENSE-APACHE",
    ] {
        assert!(prefix.join(file).is_file(), "{file} is not installed");
    }
    let dynamic = text(&run(Command::new("readelf").arg("-d").arg(&real)));
    assert!(dynamic.contains(&format!("Library soname: [{soname}]")), "{dynamic}");

    // Stripped, with the debug info in a separate file that gdb finds
    // through the debug link.
    let debug = lib.join(format!("libzeropool.so.{version}.debug"));
    let so_sections = sections(&real);
    assert!(!so_sections.contains(".debug_info"), "the installed library is not stripped");
    assert!(so_sections.contains(".gnu_debuglink") && so_sections.contains(".note.gnu.build-id"));
    assert!(sections(&debug).contains(".debug_info"), "the debug file holds no debug info");
    let link = text(&run(Command::new("readelf").args(["-p", ".gnu_debuglink"]).arg(&real)));
    assert!(link.contains(&format!("libzeropool.so.{version}.debug")), "{link}");
    assert!(!sections(&archive).contains(".debug_info"), "the installed archive keeps debug info");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    println!("installed: .so {} bytes, .a {} bytes, .debug {} bytes", size(&real), size(&archive), size(&debug));
    assert!(size(&real) < 2 << 20 && size(&archive) < 8 << 20, "libraries larger than expected");

    // The archive defines no global symbol but the zp_* functions.
    let globals = global_symbols(&archive);
    let stray: Vec<_> = globals.iter().filter(|s| !s.starts_with("zp_")).collect();
    assert!(globals.len() >= 20, "too few symbols: {globals:?}");
    assert!(stray.is_empty(), "libzeropool.a defines global symbols besides zp_*: {stray:?}");

    // CMake consumer: C and C++ (zeropool.hpp), shared and static. (CMake
    // searches lib64 only on platforms that use it, not on Debian: point it
    // at the package.)
    let build = work.join("build");
    run(cmake()
        .arg("-S")
        .arg(root().join("cmake/example"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-Dzeropool_DIR={}", lib.join("cmake/zeropool").display())));
    run(cmake().arg("--build").arg(&build));
    run_examples(&build);

    // pkg-config, shared: the documented command plus an rpath.
    let pc_path = lib.join("pkgconfig");
    let hello = root().join("cmake/example/hello.c");
    let exe = work.join("hello_pkg_config");
    run(Command::new("cc")
        .arg(&hello)
        .args(pkg_config(&pc_path, &["--cflags", "--libs", "zeropool"]))
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe));
    assert!(text(&run(&mut Command::new(&exe))).contains("hello from zeropool"));

    // A fully static program, with the flags `pkg-config --static` prints.
    let exe = work.join("hello_fully_static");
    run(Command::new("cc")
        .arg("-static")
        .arg(&hello)
        .args(pkg_config(&pc_path, &["--static", "--cflags", "--libs", "zeropool"]))
        .arg("-o")
        .arg(&exe));
    assert!(text(&run(&mut Command::new(&exe))).contains("hello from zeropool"));
    let headers = text(&run(Command::new("readelf").arg("-lW").arg(&exe)));
    assert!(!headers.contains("INTERP") && !headers.contains("DYNAMIC"), "not a static program:\n{headers}");

    // The archive in an otherwise dynamic program: zeropool-static.pc.
    let exe = work.join("hello_static_archive");
    run(Command::new("cc")
        .arg(&hello)
        .args(pkg_config(&pc_path, &["--cflags", "--libs", "zeropool-static"]))
        .arg("-o")
        .arg(&exe));
    assert!(text(&run(&mut Command::new(&exe))).contains("hello from zeropool"));
    assert!(!text(&run(Command::new("readelf").arg("-d").arg(&exe))).contains(soname));

    // A plugin built with the archive exports its own symbol and zp_*, not
    // Rust's std, and works when loaded.
    let plugin = work.join("plugin.so");
    run(Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"])
        .arg(root().join("ffi-tests/plugin.c"))
        .args(pkg_config(&pc_path, &["--cflags", "--libs", "zeropool-static"]))
        .arg("-o")
        .arg(&plugin));
    let exported = text(&run(Command::new("nm").args(["-D", "--defined-only"]).arg(&plugin)));
    let stray: Vec<&str> = exported
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| !s.starts_with("zp_") && *s != "plugin_roundtrip")
        .collect();
    assert!(stray.is_empty(), "the plugin exports more than its own and zp_* symbols: {stray:?}");
    let script = format!(
        "import ctypes; p = ctypes.CDLL({:?}); assert p.plugin_roundtrip() == 0; print('plugin ok')",
        plugin.display().to_string()
    );
    assert!(text(&run(Command::new("python3").args(["-c", &script]))).contains("plugin ok"));

    // dlopen from another runtime: Python ctypes, by path.
    let out = text(&run(Command::new("python3").arg(root().join("cmake/example/zeropool_ctypes.py")).arg(lib.join("libzeropool.so"))));
    assert!(out.contains("ctypes: zeropool"), "{out}");

    // The optimized library scrubs memory before giving it back (the check
    // program interposes munmap; see the source).
    let scrub = work.join("scrub_on_release");
    run(Command::new("cc")
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("ffi-tests"))
        .arg(root().join("ffi-tests/scrub_on_release.c"))
        .args(pkg_config(&pc_path, &["--cflags", "--libs", "zeropool-static"]))
        .arg("-o")
        .arg(&scrub));
    assert!(text(&run(&mut Command::new(&scrub))).contains("0 failed"));

    // The package's answers to requests it cannot meet.
    let package = lib.join("cmake/zeropool");
    assert!(configure_request(&package, "zeropool CONFIG REQUIRED COMPONENTS static shared").status.success());
    let bogus = configure_request(&package, "zeropool CONFIG REQUIRED COMPONENTS bogus");
    assert!(!bogus.status.success() && text(&bogus).contains("has no component 'bogus'"), "{}", text(&bogus));
    let newer = configure_request(&package, "zeropool 0.99 CONFIG REQUIRED");
    assert!(!newer.status.success(), "0.x versions of another minor must not be compatible");
    std::fs::remove_dir_all(&work).unwrap();
}

/// Configures a two-line project that asks for zeropool as `request` says,
/// searching `package_dir` (a prefix, or the package's own directory).
fn configure_request(package_dir: &Path, request: &str) -> Output {
    let dir = fresh_dir("request");
    std::fs::write(
        dir.join("CMakeLists.txt"),
        format!("cmake_minimum_required(VERSION 3.21)\nproject(p C)\nfind_package({request})\n"),
    )
    .unwrap();
    cmake()
        .arg("-S")
        .arg(&dir)
        .arg("-B")
        .arg(dir.join("build"))
        .arg(format!("-DCMAKE_PREFIX_PATH={}", package_dir.display()))
        .output()
        .unwrap()
}

/// The README's one command, on top of the same CMake project, with the
/// Debian multiarch libdir, which `find_package` and pkg-config must find
/// from the prefix alone.
#[test]
fn install_script_one_command() {
    if !have("install_script_one_command", TOOLS) {
        return;
    }
    let work = fresh_dir("install-script");
    let prefix = work.join("prefix");
    let multiarch = String::from_utf8(run(Command::new("cc").arg("-print-multiarch")).stdout).unwrap();
    let libdir = match multiarch.trim() {
        "" => "lib".to_string(),
        arch => format!("lib/{arch}"),
    };
    let script = |profile: &str| {
        let mut cmd = cmake();
        cmd.arg(format!("-DPREFIX={}", prefix.display()))
            .arg(format!("-DPROFILE={profile}"))
            .arg(format!("-DLIBDIR={libdir}"))
            .arg(format!("-DCARGO_TARGET_DIR={}", cargo_target().display()))
            .arg(format!("-DBUILD_DIR={}", work.join("build").display()))
            .arg("-P")
            .arg(root().join("cmake/install.cmake"));
        cmd
    };
    let refused = script("fast").output().unwrap();
    assert!(!refused.status.success() && text(&refused).contains("PROFILE must be release or debug"));
    run(&mut script("Release"));
    let lib = prefix.join(&libdir);
    for file in ["libzeropool.a", "libzeropool.so", env!("ZP_SONAME"), "pkgconfig/zeropool.pc", "cmake/zeropool/zeropool-config.cmake"] {
        assert!(lib.join(file).exists(), "{file} is not installed in {}", lib.display());
    }
    assert!(prefix.join("include/zeropool.h").is_file() && prefix.join("include/zeropool.hpp").is_file());

    let found = configure_request(&prefix, "zeropool 0.2 CONFIG REQUIRED COMPONENTS shared static");
    assert!(found.status.success(), "find_package with the prefix alone:\n{}", text(&found));
    let exe = work.join("hello");
    run(Command::new("cc")
        .arg(root().join("cmake/example/hello.c"))
        .args(pkg_config(&lib.join("pkgconfig"), &["--cflags", "--libs", "zeropool"]))
        .arg("-o")
        .arg(&exe));
    let out = text(&run(Command::new(&exe).env("LD_LIBRARY_PATH", &lib)));
    assert!(out.contains("hello from zeropool"), "{out}");
    std::fs::remove_dir_all(&work).unwrap();
}

/// cmake/from_source: zeropool built as part of another CMake project.
fn from_source(via: &str) {
    let work = fresh_dir(&format!("from-source-{via}"));
    let build = work.join("build");
    cmake_build(&root().join("cmake/from_source"), &build, &[format!("-DZEROPOOL_VIA={via}")]);
    run_examples(&build.join("example"));
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn from_source_with_add_subdirectory() {
    if have("from_source_with_add_subdirectory", &["cmake", "readelf"]) {
        from_source("add_subdirectory");
    }
}

#[test]
fn from_source_with_fetchcontent() {
    if have("from_source_with_fetchcontent", &["cmake", "readelf"]) {
        from_source("FetchContent");
    }
}
