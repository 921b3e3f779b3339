//! Builds the C programs in ffi-tests/ with the `cc` crate's compiler
//! (-Wall -Wextra -Werror) and runs each against the static library and
//! against the shared library (through its SONAME), plus checks on what the
//! shared library exports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// target/<profile>/deps, where cargo leaves libzeropool.{a,so} for tests.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("zeropool-ffi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The shared library is found through its SONAME, which cargo never
        // creates as a file: stage that name.
        let soname = dir.join(env!("ZP_SONAME"));
        let _ = std::fs::remove_file(&soname);
        std::os::unix::fs::symlink(deps_dir().join("libzeropool.so"), &soname).unwrap();
        dir
    })
}

#[derive(Clone, Copy, Debug)]
enum Link {
    Static,
    Shared,
}

/// Compiles `ffi-tests/<source>` and links it against the library.
fn build(source: &str, link: Link) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cpp = source.ends_with(".cpp");
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .target(env!("ZP_TARGET"))
        .host(env!("ZP_TARGET"))
        .opt_level(1)
        .debug(true)
        .cpp(cpp)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .get_compiler();
    let exe = scratch().join(format!("{source}-{link:?}").replace('.', "_"));
    let mut cmd = compiler.to_command();
    cmd.arg(if cpp { "-std=c++17" } else { "-std=c11" })
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("ffi-tests").join(source))
        .arg("-o")
        .arg(&exe)
        .arg("-pthread");
    match link {
        Link::Static => {
            cmd.arg(deps_dir().join("libzeropool.a"));
            cmd.args(env!("ZP_NATIVE_STATIC_LIBS").split_whitespace());
        }
        Link::Shared => {
            cmd.arg(format!("-L{}", scratch().display()))
                .arg(format!("-l:{}", env!("ZP_SONAME")))
                .arg(format!("-Wl,-rpath,{}", scratch().display()));
        }
    }
    let out = cmd.output().expect("the C compiler should run");
    assert!(
        out.status.success(),
        "compiling {source} ({link:?}) failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

fn run(source: &str, link: Link) {
    let exe = build(source, link);
    let out = Command::new(&exe).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    print!("{text}");
    assert!(out.status.success(), "{source} ({link:?}) failed:\n{text}");
}

#[test]
fn api_static() {
    run("api.c", Link::Static);
}

#[test]
fn api_shared() {
    run("api.c", Link::Shared);
}

#[test]
fn misuse_static() {
    run("misuse.c", Link::Static);
}

#[test]
fn misuse_shared() {
    run("misuse.c", Link::Shared);
}

#[test]
fn threads_static() {
    run("threads.c", Link::Static);
}

#[test]
fn threads_shared() {
    run("threads.c", Link::Shared);
}

#[test]
fn free_while_busy_static() {
    run("free_while_busy.c", Link::Static);
}

#[test]
fn free_while_busy_shared() {
    run("free_while_busy.c", Link::Shared);
}

/// The control run of the ASan death test (.ci/harden runs the bug cases,
/// which only an ASan build may run).
#[test]
fn use_after_put_control_static() {
    run("use_after_put.c", Link::Static);
}

#[test]
fn header_works_from_cpp() {
    run("cpp_compat.cpp", Link::Shared);
}

#[test]
fn shared_library_exports_only_zp_symbols() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(deps_dir().join("libzeropool.so"))
        .output()
        .expect("nm (binutils) is needed for this check");
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert!(names.len() >= 20, "too few symbols: {names:?}");
    let stray: Vec<_> = names.iter().filter(|n| !n.starts_with("zp_")).collect();
    assert!(stray.is_empty(), "exported symbols without the zp_ prefix: {stray:?}");
}

#[test]
fn shared_library_has_the_soname() {
    let out = Command::new("readelf").arg("-d").arg(deps_dir().join("libzeropool.so")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("Library soname: [{}]", env!("ZP_SONAME"))), "{text}");
}

#[test]
fn c_programs_are_clean_under_valgrind_memcheck() {
    let found = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "valgrind is required for this test; install it with: apt-get install -y valgrind");
    for source in ["api.c", "misuse.c", "free_while_busy.c"] {
        let exe = build(source, Link::Static);
        let out = Command::new("valgrind")
            .args(["--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite", "-q"])
            .arg(&exe)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{source} under memcheck (invalid access or definite leak):\n{text}");
    }
}
