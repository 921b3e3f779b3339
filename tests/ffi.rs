//! Builds the C programs in ffi-tests/ with the `cc` crate's compiler
//! (-Wall -Wextra -Werror) and runs each against the static library and
//! against the shared library (through its SONAME), plus checks on what the
//! shared library exports.
//!
//! Under a sanitizer (.ci/harden's tsan step runs this file with the
//! library instrumented), the C programs must be instrumented too and
//! linked with the Rust sanitizer runtime: the step sets `ZP_SAN_CC` (a
//! clang; `clang++` is derived from it for C++), `ZP_SAN_FLAGS` (e.g.
//! `-fsanitize=thread`) and `ZP_SAN_RT` (the runtime archive).

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
    build_with(source, link, &[])
}

/// The sanitizer build of the C programs, when the environment asks for
/// one: (compiler, flags, runtime archive).
fn sanitizer() -> Option<(String, String, String)> {
    let cc = std::env::var("ZP_SAN_CC").ok().filter(|c| !c.is_empty())?;
    let flags = std::env::var("ZP_SAN_FLAGS").expect("ZP_SAN_FLAGS goes with ZP_SAN_CC");
    let rt = std::env::var("ZP_SAN_RT").expect("ZP_SAN_RT goes with ZP_SAN_CC");
    assert!(Path::new(&rt).exists(), "ZP_SAN_RT: no sanitizer runtime at {rt}");
    Some((cc, flags, rt))
}

/// As [`build`], with preprocessor definitions (`-D<each>`).
fn build_with(source: &str, link: Link, defines: &[&str]) -> PathBuf {
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
    let exe = scratch().join(format!("{source}-{link:?}{}", defines.join("-")).replace('.', "_"));
    let san = sanitizer();
    let mut cmd = match &san {
        Some((cc, flags, _)) => {
            let mut cmd = Command::new(if cpp { cc.replacen("clang", "clang++", 1) } else { cc.clone() });
            cmd.args(["-g", "-O1", "-Wall", "-Wextra", "-Werror"]).args(flags.split_whitespace());
            cmd
        }
        None => compiler.to_command(),
    };
    cmd.arg(if cpp { "-std=c++17" } else { "-std=c11" })
        .arg("-I")
        .arg(root.join("include"))
        .arg(root.join("ffi-tests").join(source))
        .arg("-o")
        .arg(&exe)
        .arg("-pthread");
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    if let Some((_, _, rt)) = &san {
        // The runtime that matches the instrumented Rust code, whole (the
        // library and the program both call into it), before the libraries
        // (the static link's `-lc` among them) it needs.
        cmd.arg("-Wl,--whole-archive").arg(rt).arg("-Wl,--no-whole-archive");
    }
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
    if san.is_some() {
        cmd.args(["-ldl", "-lm", "-lrt"]);
    }
    let out = cmd.output().expect("the C compiler should run");
    assert!(out.status.success(), "compiling {source} ({link:?}) failed:\n{}", String::from_utf8_lossy(&out.stderr));
    exe
}

fn run(source: &str, link: Link) {
    run_with(source, link, &[]);
}

fn run_with(source: &str, link: Link, defines: &[&str]) {
    run_env(source, link, defines, &[]);
}

/// As [`run_with`], the program run with `env` added to its environment.
fn run_env(source: &str, link: Link, defines: &[&str], env: &[(&str, &str)]) {
    let exe = build_with(source, link, defines);
    // A just-linked executable can be briefly busy (ETXTBSY) while another
    // test thread forks: retry the spawn a few times.
    let mut tries = 0;
    let out = loop {
        match Command::new(&exe).envs(env.iter().copied()).output() {
            Ok(out) => break out,
            Err(e) if tries < 20 && e.raw_os_error() == Some(libc::ETXTBSY) => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("running {}: {e}", exe.display()),
        }
    };
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

/// The misuse program again, every return through `zp_local_put`.
#[test]
fn misuse_through_zp_local_static() {
    run_with("misuse.c", Link::Static, &["ZP_VIA_LOCAL"]);
}

#[test]
fn misuse_through_zp_local_shared() {
    run_with("misuse.c", Link::Shared, &["ZP_VIA_LOCAL"]);
}

#[test]
fn local_static() {
    run("local.c", Link::Static);
}

#[test]
fn local_shared() {
    run("local.c", Link::Shared);
}

/// The soak (ffi-tests/soak.c), 2 s here (.ci/harden's soak step runs it
/// for minutes): 8 threads, 4 pools, random sizes, hand-offs between
/// threads, trims, stats and zp_local calls; patterns, zero gets, nothing
/// outstanding, memory back after free. It prints its figures.
#[test]
fn soak_static() {
    run_env("soak.c", Link::Static, &[], &[("ZP_SOAK_SECONDS", "2")]);
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
/// Issue 26: a failing calloc at a thread's first call, a failing
/// pthread_atfork at the first pool creation (both injected by the program).
///
/// Not under a sanitizer: the program replaces `calloc` and
/// `pthread_atfork`, which the sanitizer runtimes intercept themselves.
#[test]
fn rare_oom_static() {
    if sanitized() {
        eprintln!("rare_oom.c replaces calloc and pthread_atfork: not run under a sanitizer");
        return;
    }
    run("rare_oom.c", Link::Static);
}

fn sanitized() -> bool {
    std::env::var("ZP_SAN_CC").is_ok_and(|c| !c.is_empty())
}

#[test]
fn rare_oom_shared() {
    if sanitized() {
        return;
    }
    run("rare_oom.c", Link::Shared);
}

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
    if sanitizer().is_some() {
        // Valgrind cannot run sanitizer-instrumented programs.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped c_programs_are_clean_under_valgrind_memcheck: a sanitizer build");
        return;
    }
    let found = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        // Fails under CI (and .ci/test, which installs valgrind); elsewhere
        // one line, straight to stderr (libtest swallows eprintln! output).
        let msg = "`valgrind` is not installed; .ci/test installs what the tests need";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "c_programs_are_clean_under_valgrind_memcheck: {msg}");
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped c_programs_are_clean_under_valgrind_memcheck: {msg}");
        return;
    }
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

#[test]
fn cpp_wrapper_static() {
    run("hpp.cpp", Link::Static);
}

#[test]
fn cpp_wrapper_shared() {
    run("hpp.cpp", Link::Shared);
}

/// Compiles `code` (a file's text) with the C or C++ compiler and `flags`;
/// true when it compiles, and the compiler's messages.
fn compiles(code: &str, cpp: bool, flags: &[&str]) -> (bool, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let src = scratch().join(format!("strict-{n}.{}", if cpp { "cpp" } else { "c" }));
    std::fs::write(&src, code).unwrap();
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .target(env!("ZP_TARGET"))
        .host(env!("ZP_TARGET"))
        .opt_level(2)
        .cpp(cpp)
        .get_compiler();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = compiler
        .to_command()
        // Compiled, not just parsed: GCC reports unused results later.
        .args(["-c", "-Wall", "-Wextra", "-Werror", "-pedantic"])
        .args(flags)
        .arg("-I")
        .arg(root.join("include"))
        .arg(&src)
        .arg("-o")
        .arg(src.with_extension("o"))
        .output()
        .expect("the C compiler should run");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Uses every function, checking every status, as a careful user would.
const EVERY_FUNCTION: &str = r#"
#include <zeropool.h>
#include <stdio.h>

int main(void) {
  zp_config *cfg = zp_config_new();
  zp_pool *pool = NULL;
  zp_stats stats;
  void *buf;
  if (!cfg) return 1;
  if (zp_config_set_tls_cache_size(cfg, 4) != ZP_OK || zp_config_set_min_buffer_size(cfg, 4096) != ZP_OK ||
      zp_config_set_max_buffers_per_shard(cfg, 8) != ZP_OK || zp_config_set_num_shards(cfg, 2) != ZP_OK ||
      zp_config_set_pinned_memory(cfg, false) != ZP_OK ||
      zp_config_set_eviction_policy(cfg, ZP_EVICTION_LIFO) != ZP_OK ||
      zp_config_set_zeroing(cfg, ZP_ZERO_ON_PUT) != ZP_OK || zp_config_set_max_pooled_bytes(cfg, 1 << 20) != ZP_OK ||
      zp_pool_new_with_config(cfg, &pool) != ZP_OK)
    return 1;
  zp_config_free(cfg);
  buf = zp_get(pool, 100);
  if (!buf) return (int)zp_last_error();
  if (zp_put(pool, buf) != ZP_OK || zp_pool_stats(pool, &stats) != ZP_OK || zp_pool_trim(pool) != ZP_OK) return 1;
  printf("%s %s %d.%d.%d\n", zp_version(), zp_status_str(ZP_OK), ZP_VERSION_MAJOR, ZP_VERSION_MINOR, ZP_VERSION_PATCH);
  zp_pool_free(zp_pool_new());
  zp_pool_free(pool);
  return 0;
}
"#;

/// The header is clean under -Wall -Wextra -Werror -pedantic in every C and
/// C++ standard it supports, zeropool.hpp in C++17 and C++20, and an
/// ignored status is a warning (ZP_NODISCARD).
#[test]
fn headers_are_clean_in_every_standard() {
    let mut failures = Vec::new();
    for std in ["c99", "c11", "c17"] {
        let (ok, err) = compiles(EVERY_FUNCTION, false, &[&format!("-std={std}")]);
        if !ok {
            failures.push(format!("zeropool.h, -std={std}:\n{err}"));
        }
    }
    for std in ["c++11", "c++14", "c++17", "c++20"] {
        let (ok, err) = compiles(EVERY_FUNCTION, true, &[&format!("-std={std}")]);
        if !ok {
            failures.push(format!("zeropool.h, -std={std}:\n{err}"));
        }
    }
    let hpp = format!(
        "#include <zeropool.hpp>\n{}",
        include_str!("../ffi-tests/hpp.cpp").replace("#include \"zeropool.hpp\"", "")
    );
    for std in ["c++17", "c++20"] {
        let (ok, err) = compiles(&hpp, true, &[&format!("-std={std}")]);
        if !ok {
            failures.push(format!("zeropool.hpp, -std={std}:\n{err}"));
        }
    }
    let (ok, err) = compiles("#include <zeropool.hpp>\nint main() { return 0; }\n", true, &["-std=c++14"]);
    if ok || !err.contains("C++17") {
        failures.push(format!("zeropool.hpp must refuse C++14 with a clear message:\n{err}"));
    }
    // An ignored status or buffer is a warning, so an error here.
    let ignored_put = "#include <zeropool.h>\nint main(void) { zp_pool *p = zp_pool_new(); zp_put(p, 0); zp_pool_free(p); return 0; }\n";
    let ignored_get = "#include <zeropool.h>\nint main(void) { zp_pool *p = zp_pool_new(); zp_get(p, 1); zp_pool_free(p); return 0; }\n";
    for (code, cpp, std) in [
        (ignored_put, false, "c11"),
        (ignored_get, false, "c11"),
        (ignored_put, true, "c++11"),
        (ignored_put, true, "c++17"),
        (ignored_get, true, "c++20"),
    ] {
        let (ok, err) = compiles(code, cpp, &[&format!("-std={std}")]);
        if ok || !err.contains("unused") && !err.contains("nodiscard") {
            failures.push(format!("an ignored result compiles silently with -std={std}:\n{code}\n{err}"));
        }
    }
    // Users can opt out.
    let (ok, err) = compiles(&format!("#define ZP_NODISCARD\n{ignored_put}"), false, &["-std=c11"]);
    if !ok {
        failures.push(format!("defining ZP_NODISCARD empty does not silence it:\n{err}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
