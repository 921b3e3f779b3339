//! The install story, end to end with real tools: install into a prefix
//! with `cmake -P cmake/install.cmake` (release build), move the prefix,
//! then build and run the consumer project (C and C++, shared and static)
//! with `find_package(zeropool)`, build with pkg-config flags, load the
//! library with Python ctypes, and check the SONAME and the package's error
//! paths. The installed release library also runs
//! ffi-tests/scrub_on_release.c: the scrub before memory goes back to the
//! system must survive the optimizer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Fails (never skips) when a tool the test needs is missing.
fn need(tool: &str) {
    let found = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{tool}` is required by the packaging test; install it with: apt-get install -y cmake pkg-config python3"
    );
}

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

/// Configures a two-line project that asks for zeropool as `request` says.
fn configure_request(prefix: &Path, request: &str) -> Output {
    let dir = fresh_dir("request");
    std::fs::write(
        dir.join("CMakeLists.txt"),
        format!("cmake_minimum_required(VERSION 3.16)\nproject(p C)\nfind_package({request})\n"),
    )
    .unwrap();
    Command::new("cmake")
        .arg("-S")
        .arg(&dir)
        .arg("-B")
        .arg(dir.join("build"))
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()))
        .output()
        .unwrap()
}

#[test]
fn install_move_and_consume() {
    for tool in ["cmake", "pkg-config", "python3", "readelf"] {
        need(tool);
    }
    let work = fresh_dir("packaging");
    let staged = work.join("staged");
    // A target dir of its own: the outer `cargo test` holds the lock on ours.
    let target = root().join("target/packaging");
    run(Command::new("cmake")
        .arg(format!("-DPREFIX={}", staged.display()))
        .arg("-DPROFILE=release")
        .arg(format!("-DCARGO_TARGET_DIR={}", target.display()))
        .arg("-P")
        .arg(root().join("cmake/install.cmake")));

    // Relocatable: everything must still work from elsewhere.
    let prefix = work.join("moved");
    std::fs::rename(&staged, &prefix).unwrap();
    let lib = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let soname = env!("ZP_SONAME");
    let real = lib.join(format!("libzeropool.so.{version}"));
    assert!(real.is_file() && lib.join("libzeropool.a").is_file());
    assert_eq!(std::fs::read_link(lib.join(soname)).unwrap(), Path::new(&format!("libzeropool.so.{version}")));
    assert_eq!(std::fs::read_link(lib.join("libzeropool.so")).unwrap(), Path::new(soname));
    assert!(prefix.join("include/zeropool.h").is_file());
    let dynamic = text(&run(Command::new("readelf").arg("-d").arg(&real)));
    assert!(dynamic.contains(&format!("Library soname: [{soname}]")), "{dynamic}");

    // CMake consumer: C and C++, shared and static.
    let build = work.join("build");
    run(Command::new("cmake")
        .arg("-S")
        .arg(root().join("cmake/example"))
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display())));
    run(Command::new("cmake").arg("--build").arg(&build));
    for program in ["hello_c_shared", "hello_c_static", "hello_cpp_shared", "hello_cpp_static"] {
        let out = text(&run(&mut Command::new(build.join(program))));
        assert!(out.contains("hello from zeropool"), "{program}: {out}");
        let needed = text(&run(Command::new("readelf").arg("-d").arg(build.join(program))));
        assert_eq!(needed.contains(soname), program.ends_with("shared"), "{program} links the wrong library:\n{needed}");
    }

    // pkg-config flags build a working program.
    let pc_path = lib.join("pkgconfig");
    let flags = text(&run(Command::new("pkg-config").args(["--cflags", "--libs", "zeropool"]).env("PKG_CONFIG_PATH", &pc_path)));
    let exe = work.join("hello_pkg_config");
    run(Command::new("cc")
        .arg(root().join("cmake/example/hello.c"))
        .args(flags.split_whitespace())
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe));
    assert!(text(&run(&mut Command::new(&exe))).contains("hello from zeropool"));
    let private = text(&run(Command::new("pkg-config").args(["--static", "--libs", "zeropool"]).env("PKG_CONFIG_PATH", &pc_path)));
    assert!(private.contains("-lpthread") && private.contains("-ldl"), "{private}");

    // dlopen from another runtime: Python ctypes, by path.
    let out = text(&run(Command::new("python3").arg(root().join("cmake/example/zeropool_ctypes.py")).arg(lib.join("libzeropool.so"))));
    assert!(out.contains("ctypes: zeropool"), "{out}");

    // The optimized library scrubs memory before giving it back (the check
    // program interposes munmap; see the source).
    let scrub = work.join("scrub_on_release");
    run(Command::new("cc")
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root().join("ffi-tests"))
        .arg("-I")
        .arg(prefix.join("include"))
        .arg(root().join("ffi-tests/scrub_on_release.c"))
        .arg(lib.join("libzeropool.a"))
        .args(env!("ZP_NATIVE_STATIC_LIBS").split_whitespace())
        .arg("-o")
        .arg(&scrub));
    assert!(text(&run(&mut Command::new(&scrub))).contains("0 failed"));

    // The package's answers to requests it cannot meet.
    assert!(configure_request(&prefix, "zeropool CONFIG REQUIRED COMPONENTS static shared").status.success());
    let bogus = configure_request(&prefix, "zeropool CONFIG REQUIRED COMPONENTS bogus");
    assert!(!bogus.status.success() && text(&bogus).contains("has no component 'bogus'"), "{}", text(&bogus));
    let newer = configure_request(&prefix, "zeropool 0.99 CONFIG REQUIRED");
    assert!(!newer.status.success(), "0.x versions of another minor must not be compatible");
    std::fs::remove_dir_all(&work).unwrap();
}
