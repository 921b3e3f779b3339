//! Build script: gives the shared library its SONAME, and works out which
//! native libraries a static link needs (from rustc itself, not a
//! hard-coded list). It is the one place both are computed: the tests get
//! them as `ZP_SONAME` and `ZP_NATIVE_STATIC_LIBS`, and the CMake project
//! (cmake/zeropool-stage.cmake) reads the same two values from cargo's
//! `build-script-executed` message.

use std::env;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let minor = env::var("CARGO_PKG_VERSION_MINOR").unwrap();
    let major = env::var("CARGO_PKG_VERSION_MAJOR").unwrap();
    // cargo-c's convention: while the major version is 0, the minor
    // version is the ABI version.
    let soname = if major == "0" { format!("libzeropool.so.0.{minor}") } else { format!("libzeropool.so.{major}") };
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    let libs = static_link_libs(&native_static_libs());
    println!("cargo::rustc-env=ZP_SONAME={soname}");
    println!("cargo::rustc-env=ZP_TARGET={}", env::var("TARGET").unwrap());
    println!("cargo::rustc-env=ZP_NATIVE_STATIC_LIBS={libs}");
}

/// What rustc says a staticlib needs at link time, e.g. "-lgcc_s -lutil ...".
fn native_static_libs() -> String {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = env::var("OUT_DIR").unwrap() + "/probe.a";
    let output = Command::new(rustc)
        .args(["--crate-type=staticlib", "--crate-name=probe", "--print=native-static-libs", "-o", &out, "-"])
        .arg(format!("--target={}", env::var("TARGET").unwrap()))
        .stdin(Stdio::null())
        .output();
    let text = match output {
        Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
        Err(_) => String::new(),
    };
    match text.lines().find_map(|l| l.split("native-static-libs:").nth(1)) {
        Some(libs) => libs.trim().to_string(),
        None => {
            // Not silent: a static link with this list may miss a library
            // rustc would have named.
            let fallback = "-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc";
            println!(
                "cargo::warning=rustc did not print its native-static-libs (stderr: {}); linking the static \
                 library with the usual glibc list instead: {fallback}",
                text.trim().lines().next().unwrap_or("empty")
            );
            fallback.to_string()
        }
    }
}

/// rustc's list, made to work for fully static programs too: there is no
/// static libgcc_s, and libgcc_eh is the same unwinder as an archive (what
/// `gcc -static-libgcc` links), so it serves dynamic programs as well.
fn static_link_libs(rustc_libs: &str) -> String {
    rustc_libs
        .split_whitespace()
        .map(|l| if l == "-lgcc_s" { "-lgcc_eh" } else { l })
        .collect::<Vec<_>>()
        .join(" ")
}
