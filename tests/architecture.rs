//! The house rules of `src/`: modules form layers, each importing only from
//! its own layer or those below, and no import circle anywhere (a module
//! reached from itself through its imports), within folders too.
//!
//! The layers, bottom up, as the crate root's docs list them:
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | system | `os`, `padded`, `pack`, `lock`, `error` | OS calls, cache padding, packed-word fields, the futex mutex and fork-lock trait, error type |
//! | memory | `size_class`, `config`, `region`, `region::*`, `buffer` | size classes, settings, mappings, slots and their out-of-band metadata, raw buffers and the guard type |
//! | idle lists | `eviction`, `eviction::*`, `shard` | idle buffers of a shard, in a policy's order |
//! | shared state | `budget`, `stats`, `epoch`, `shared` | the budget, counters, the trim/close epoch, slow paths |
//! | thread caches | `tls`, `thread_cache` | the per-thread table and the caches in it |
//! | pool | `fork`, `pool` | `BufferPool`, the guard's return, the builder's `build`, fork handlers |
//! | C ABI | `ffi`, `ffi::*` | everything C: handles, canary checks, `zp_local`, status codes |
//!
//! Imports are read from the source text: `crate::a::b` and `super::x` paths
//! anywhere in code (not comments), `use crate::{a, b::c}` groups included;
//! each resolves to the longest module path it names. `#[cfg(test)]` test
//! modules at the end of a file are left out (tests may use anything).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const LAYERS: &[(&str, &[&str])] = &[
    ("system", &["os", "padded", "pack", "lock", "error"]),
    ("memory", &["size_class", "config", "region", "region::radix", "region::chunk", "buffer"]),
    ("idle lists", &["eviction", "eviction::evict", "eviction::lifo", "eviction::clock_pro", "shard"]),
    ("shared state", &["budget", "stats", "epoch", "shared"]),
    ("thread caches", &["tls", "thread_cache"]),
    ("pool", &["fork", "pool"]),
    ("C ABI", &["ffi", "ffi::boundary", "ffi::status", "ffi::about", "ffi::config", "ffi::pool", "ffi::buffer", "ffi::local"]),
];

/// Module path of a source file (`src/a/b.rs` -> `a::b`, `src/a/mod.rs` -> `a`).
fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

/// The source without comments, string literals and the trailing test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut kept = String::new();
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if !in_str && c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' && prev != '\'' {
                in_str = !in_str;
            } else if !in_str {
                kept.push(c);
            }
            prev = c;
            i += 1;
        }
        out.push_str(&kept);
        out.push('\n');
    }
    out
}

/// Every module path that `code` (of module `me`) imports.
fn imports_of(me: &str, is_mod_rs: bool, code: &str) -> Vec<String> {
    let parent: Vec<&str> = {
        let mut p: Vec<&str> = if me.is_empty() { vec![] } else { me.split("::").collect() };
        if !is_mod_rs {
            p.pop();
        }
        p
    };
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    // A folder's `mod.rs` (or the root) naming its children: `chunk::X`.
    if is_mod_rs {
        let base: Vec<&str> = if me.is_empty() { vec![] } else { me.split("::").collect() };
        let children: Vec<String> = code
            .lines()
            .filter_map(|l| {
                let l = l.trim().trim_start_matches("pub(crate) ").trim_start_matches("pub ");
                l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_string)
            })
            .collect();
        for child in &children {
            let needle = format!("{child}::");
            let mut at = 0;
            while let Some(i) = code[at..].find(&needle) {
                let start = at + i;
                at = start + needle.len();
                let before = if start > 0 { bytes[start - 1] } else { b' ' };
                if before.is_ascii_alphanumeric() || before == b'_' || before == b':' {
                    continue;
                }
                for path in expand(&code[start..]) {
                    let mut full = base.clone();
                    full.extend(path.iter().map(String::as_str));
                    found.push(full.join("::"));
                }
            }
        }
    }
    for (prefix, base) in [("crate::", Vec::<&str>::new()), ("super::", parent.clone())] {
        let mut at = 0;
        while let Some(i) = code[at..].find(prefix) {
            let start = at + i;
            at = start + prefix.len();
            // A path segment boundary before `crate::` / `super::`.
            if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
                continue;
            }
            for path in expand(&code[at..]) {
                let mut full = base.clone();
                full.extend(path.iter().map(String::as_str));
                found.push(full.join("::"));
            }
        }
    }
    found
}

/// The paths after `crate::`: `a::b::C` or a group `{a::X, b, c::{d, e}}`.
fn expand(rest: &str) -> Vec<Vec<String>> {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    end = i;
                    break;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        let inner = &inner[..end];
        let mut items = Vec::new();
        let (mut depth, mut from) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[from..]);
        return items.into_iter().filter(|s| !s.trim().is_empty()).flat_map(expand).collect();
    }
    let mut segs = Vec::new();
    let mut s = rest;
    loop {
        let ident: String = s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if ident.is_empty() {
            break;
        }
        s = &s[ident.len()..];
        segs.push(ident);
        if let Some(next) = s.strip_prefix("::") {
            if next.starts_with('{') {
                return expand(next).into_iter().map(|p| segs.iter().cloned().chain(p).collect()).collect();
            }
            s = next;
        } else {
            break;
        }
    }
    if segs.is_empty() || segs[0] == "self" {
        return vec![];
    }
    vec![segs]
}

/// The import graph of a set of (module, is_mod_rs, code) sources: module
/// -> the modules it imports (resolved to the longest known module path).
fn graph(sources: &[(String, bool, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<&str> = sources.iter().map(|(m, _, _)| m.as_str()).collect();
    let mut g = BTreeMap::new();
    for (me, is_mod, code) in sources {
        let mut deps = BTreeSet::new();
        for path in imports_of(me, *is_mod, code) {
            let segs: Vec<&str> = path.split("::").collect();
            let target = (1..=segs.len()).rev().map(|n| segs[..n].join("::")).find(|p| known.contains(p.as_str()));
            if let Some(t) = target {
                if &t != me && !t.is_empty() {
                    deps.insert(t);
                }
            }
        }
        g.insert(me.clone(), deps);
    }
    g
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// Every violation: an import that climbs a layer, a module in no layer, and
/// every import circle.
fn violations(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (me, deps) in g {
        if me.is_empty() {
            continue; // the crate root declares the modules
        }
        let Some(mine) = layer_of(me) else {
            out.push(format!("src module `{me}` is in no layer: add it to LAYERS (and the crate root's docs)"));
            continue;
        };
        for d in deps {
            if let Some(theirs) = layer_of(d) {
                if theirs > mine {
                    out.push(format!(
                        "`{me}` ({}) imports `crate::{d}` ({}), a layer above it",
                        LAYERS[mine].0, LAYERS[theirs].0
                    ));
                }
            }
        }
    }
    // Circles: a module reachable from one of its own imports.
    for start in g.keys() {
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for d in g.get(&m).into_iter().flatten() {
                if d == start {
                    let mut cycle = path.clone();
                    cycle.push(d.clone());
                    // Report each circle once, from its smallest module.
                    if path.iter().all(|p| p >= start) {
                        out.push(format!("import circle: {}", cycle.join(" -> ")));
                    }
                } else if seen.insert(d.clone()) {
                    let mut p = path.clone();
                    p.push(d.clone());
                    stack.push((d.clone(), p));
                }
            }
        }
    }
    out
}

fn sources() -> Vec<(String, bool, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&root).unwrap();
            let is_mod = rel.file_name().is_some_and(|n| n == "mod.rs" || n == "lib.rs");
            (module_of(rel), is_mod, code_of(&std::fs::read_to_string(&f).unwrap()))
        })
        .collect()
}

#[test]
fn layers_import_only_downward_and_nothing_imports_in_a_circle() {
    let g = graph(&sources());
    assert!(g.len() >= 25, "read {} modules", g.len());
    let v = violations(&g);
    assert!(v.is_empty(), "{} violation(s):\n  {}", v.len(), v.join("\n  "));
}

#[test]
fn the_check_fails_when_a_lower_module_imports_ffi() {
    let mut src = sources();
    let region = src.iter_mut().find(|(m, _, _)| m == "region::radix").expect("src/region/radix.rs");
    region.2.push_str("\nfn probe() { let _ = crate::ffi::zp_version(); }\n");
    let v = violations(&graph(&src));
    assert!(
        v.iter().any(|e| e.contains("`region::radix` (memory) imports `crate::ffi` (C ABI)")),
        "the probe was not caught: {v:?}"
    );
}

#[test]
fn the_check_finds_circles_within_a_layer() {
    let src = vec![
        (String::new(), true, "mod a; mod b;".to_string()),
        ("os".to_string(), false, "use crate::padded::X;".to_string()),
        ("padded".to_string(), false, "fn f() { super::os::g(); }".to_string()),
    ];
    let v = violations(&graph(&src));
    assert!(v.iter().any(|e| e.starts_with("import circle: os -> padded -> os")), "{v:?}");
}

#[test]
fn imports_are_read_from_groups_and_super_paths() {
    let code = code_of("use crate::{a::X, b, c::{d, e::F}};\n// crate::zzz in a comment\nfn f() { super::sib::g(); \"crate::str\"; }\n");
    let mut found = imports_of("dir::me", false, &code);
    found.sort();
    assert_eq!(found, ["a::X", "b", "c::d", "c::e::F", "dir::sib::g"]);
    let code = code_of("pub(crate) mod kid;\nuse kid::{Y, Z};\nfn f() { kid::g(); other::kid::h(); }\n");
    let mut found = imports_of("dir", true, &code);
    found.sort();
    assert_eq!(found, ["dir::kid::Y", "dir::kid::Z", "dir::kid::g"]);
}

/// The exports of one source file whose body is not a single `export!`:
/// `(name, what the body starts with)`. Reads raw source (with comments):
/// an export is `pub extern "C" fn zp_...`, its body what follows the
/// signature's opening brace.
fn exports_without_the_macro(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("extern \"C\" fn zp_") {
        let sig = &rest[at + "extern \"C\" fn ".len()..];
        let name: String = sig.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let Some(open) = sig.find('{') else { break };
        let body = sig[open + 1..].trim_start();
        let first = body.lines().next().unwrap_or("").trim().to_string();
        // The body is the macro call and nothing else: `export!(` first,
        // and (after an optional `const` line) no statement before it.
        let body = body.strip_prefix("const ").map_or(body, |b| b.split_once('\n').map_or("", |x| x.1).trim_start());
        if !body.starts_with("export!(") {
            out.push((name, first));
        }
        rest = &sig[open..];
    }
    out
}

#[test]
fn every_c_export_is_one_export_macro() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ffi");
    let mut bad = Vec::new();
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        seen += text.matches("extern \"C\" fn zp_").count();
        for (name, first) in exports_without_the_macro(&text) {
            bad.push(format!("{}: {name} begins with `{first}`", path.file_name().unwrap().to_string_lossy()));
        }
    }
    // Every function of the header (each `zp_*` declaration) is one here.
    let header = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/zeropool.h")).unwrap();
    let declared = header.lines().filter(|l| l.contains(" zp_") && l.contains('(') && !l.trim_start().starts_with('*')).count();
    assert!(seen >= 25 && seen >= declared, "found {seen} exports, the header declares {declared}");
    assert!(bad.is_empty(), "exports whose body is not one `export!` (the panic boundary):\n  {}", bad.join("\n  "));
}

#[test]
fn the_export_check_fails_on_a_bare_export() {
    let src = "#[no_mangle]\npub extern \"C\" fn zp_ok(p: *mut T) -> zp_status {\n    export!(ZP_ERR_INTERNAL, { ZP_OK })\n}\n\
               #[no_mangle]\npub extern \"C\" fn zp_bare(p: *mut T) -> zp_status {\n    if p.is_null() { return ZP_ERR_NULL_POINTER; }\n    export!(ZP_ERR_INTERNAL, { ZP_OK })\n}\n\
               #[no_mangle]\npub extern \"C\" fn zp_v() -> *const c_char {\n    const V: &str = \"1\\0\";\n    export!(V.as_ptr().cast(), { V.as_ptr().cast() })\n}\n";
    let bad = exports_without_the_macro(src);
    assert_eq!(bad, [("zp_bare".to_string(), "if p.is_null() { return ZP_ERR_NULL_POINTER; }".to_string())]);
}

/// The C layer's hook in the memory layer (`region/chunk.rs`, "The C
/// layer's hook"): the claim states and the canary are read and written
/// only by `ffi/` (and the memory layer itself); the layers between carry
/// a `SlotHint` and nothing more.
#[test]
fn only_the_c_layer_uses_the_claim_states_and_the_canary() {
    const C_ONLY: [&str; 8] =
        ["hand_out(", "out_word(", "claim_from(", "claim(", ".canary()", "owner()", "Refused", "SlotWord"];
    let mut bad = Vec::new();
    for (module, _, code) in sources() {
        // `Pin::Refused` (a refused mlock) is the memory layer's own.
        let code = code.replace("Pin::Refused", "");
        if module == "ffi" || module.starts_with("ffi::") || module == "region" || module.starts_with("region::") {
            continue;
        }
        for word in C_ONLY {
            if code.contains(word) {
                bad.push(format!("`{module}` uses `{word}`"));
            }
        }
    }
    assert!(bad.is_empty(), "C-only slot metadata used outside ffi/ and region/:\n  {}", bad.join("\n  "));
}
