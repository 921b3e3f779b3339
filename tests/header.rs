//! include/zeropool.h is generated from the sources: this test regenerates
//! it in memory and fails when the checked-in copy is stale.
//! Refresh it with: ZP_UPDATE_HEADER=1 cargo test --test header

use std::path::Path;

fn generate() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let mut config = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml")).unwrap();
    // The version macros come from Cargo.toml; the rest of `after_includes`
    // (the attribute macros) from cbindgen.toml.
    config.after_includes = Some(format!(
        "\n#define ZP_VERSION_MAJOR {}\n#define ZP_VERSION_MINOR {}\n#define ZP_VERSION_PATCH {}\n{}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        config.after_includes.as_deref().unwrap_or(""),
    ));
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_crate(dir)
        .generate()
        .expect("cbindgen could not read the crate")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn checked_in_header_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/zeropool.h");
    let fresh = generate();
    if std::env::var_os("ZP_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == fresh,
        "include/zeropool.h is stale; refresh it with: ZP_UPDATE_HEADER=1 cargo test --test header"
    );
}

#[test]
fn header_declares_the_whole_contract() {
    let h = generate();
    for name in [
        "zp_config_new", "zp_config_free", "zp_config_set_tls_cache_size", "zp_config_set_min_buffer_size",
        "zp_config_set_max_buffers_per_shard", "zp_config_set_num_shards", "zp_config_set_pinned_memory",
        "zp_config_set_eviction_policy", "zp_config_set_zeroing", "zp_config_set_max_pooled_bytes",
        "zp_pool_new", "zp_pool_new_with_config", "zp_pool_free", "zp_get", "zp_last_error", "zp_put",
        "zp_pool_stats", "zp_pool_trim", "zp_status_str", "zp_version", "ZP_ERR_INTERNAL = 9",
        "ZP_EVICTION_LIFO = 1", "ZP_ZERO_NEVER = 2", "typedef struct zp_pool zp_pool",
        "typedef struct zp_config zp_config", "uint64_t rejected_puts", "extern \"C\"",
    ] {
        assert!(h.contains(name), "header lacks {name}");
    }
    let version = format!("#define ZP_VERSION_MINOR {}", env!("CARGO_PKG_VERSION_MINOR"));
    assert!(h.contains(&version));
}
