//! Builds benches/c/fast_path.c against the release static and shared
//! libraries and runs it: zp_get+zp_put through the C ABI next to
//! malloc+free, measured in the same C program.
//!
//! `cargo run --release --example c_fast_path [ITERATIONS]`

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This example is built in target/<profile>/examples; the libraries are
    // in target/<profile>/deps.
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().parent().unwrap().join("deps");
    let scratch = std::env::temp_dir().join(format!("zeropool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let soname = scratch.join(env!("ZP_SONAME"));
    let _ = std::fs::remove_file(&soname);
    std::os::unix::fs::symlink(deps.join("libzeropool.so"), &soname).unwrap();
    let iters = std::env::args().nth(1).unwrap_or_else(|| "2000000".into());

    for shared in [false, true] {
        let compiler = cc::Build::new()
            .cargo_metadata(false)
            .target(env!("ZP_TARGET"))
            .host(env!("ZP_TARGET"))
            .opt_level(2)
            .get_compiler();
        let out: PathBuf = scratch.join(if shared { "fast_path_shared" } else { "fast_path_static" });
        let mut cmd = compiler.to_command();
        cmd.arg("-I").arg(root.join("include")).arg(root.join("benches/c/fast_path.c")).arg("-o").arg(&out);
        if shared {
            cmd.arg(format!("-L{}", scratch.display()))
                .arg(format!("-l:{}", env!("ZP_SONAME")))
                .arg(format!("-Wl,-rpath,{}", scratch.display()));
        } else {
            cmd.arg(deps.join("libzeropool.a")).args(env!("ZP_NATIVE_STATIC_LIBS").split_whitespace());
        }
        assert!(cmd.status().unwrap().success(), "compiling fast_path.c failed");
        println!("== linked {}", if shared { "against libzeropool.so (dlopen-style TLS)" } else { "statically" });
        assert!(Command::new(&out).arg(&iters).status().unwrap().success());
    }
}
