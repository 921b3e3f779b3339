//! The README's generated tables: every block between `<!-- NAME:begin ...
//! -->` and `<!-- NAME:end -->` is well formed, every table in it parses
//! (a header, a `|---|` line, rows as wide as the header), and every row
//! names a benchmark that exists in this repository:
//!
//! - `peers GROUP/FUNCTION`, `system_path GROUP/FUNCTION/PARAM`: a criterion
//!   benchmark in `benches/BENCH.rs` (its group and its function's id);
//! - `fast_path.c SET/ID`: a measurement `benches/c/fast_path.c` prints;
//! - `eviction_workloads WORKLOAD/POLICY`: a workload and a policy of the
//!   example;
//! - `install.cmake lib/FILE`, `cargo target/release/FILE`: a library the
//!   CMake staging step or cargo builds;
//! - the main job's rows name one of `checkpoint_load`'s loaders.
//!
//! The Performance section has no table outside a block. Timing stays out:
//! this checks names and shapes, never numbers. The last tests check that
//! the checker fails on a made-up row and on a malformed table.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The blocks every README must have: the ones benches/report.py writes,
/// the C program's and the main job's.
const BLOCKS: &[&str] = &[
    "checkpoint_load",
    "artifacts",
    "perf_untouched",
    "perf_threads",
    "perf_written",
    "c_fast_path",
    "system_path",
    "eviction",
];

fn read(rel: &str) -> String {
    let path = Path::new(ROOT).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (name, body) of every generated block, in order.
fn blocks(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find("<!-- ") {
        let after = &rest[b + 5..];
        let Some(close) = after.find("-->") else { return Err("an unclosed HTML comment".into()) };
        let comment = &after[..close];
        rest = &after[close + 3..];
        let Some((name, tail)) = comment.split_once(':') else { continue };
        if tail.starts_with("end") {
            return Err(format!("`{name}:end` without a begin before it"));
        }
        if !tail.starts_with("begin") {
            continue;
        }
        let end = format!("<!-- {name}:end -->");
        let Some(e) = rest.find(&end) else { return Err(format!("block `{name}` has no `{end}`")) };
        let body = &rest[..e];
        if body.contains(":begin") {
            return Err(format!("block `{name}` holds another block's begin marker"));
        }
        out.push((name.to_string(), body.to_string()));
        rest = &rest[e + end.len()..];
    }
    Ok(out)
}

/// One markdown table: its header and rows, cells trimmed.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// The tables of `body`: runs of lines that start with `|`.
fn tables(body: &str) -> Result<Vec<Table>, String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = body.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].trim_start().starts_with('|') {
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && lines[i].trim_start().starts_with('|') {
            i += 1;
        }
        let run = &lines[start..i];
        if run.len() < 3 {
            return Err(format!("a table needs a header, a `|---|` line and a row: {:?}", run));
        }
        let header = cells(run[0]);
        let sep = cells(run[1]);
        if sep.len() != header.len() || !sep.iter().all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            return Err(format!("table `{}`: the second line is not a `|---|` line as wide as the header", run[0]));
        }
        let mut rows = Vec::new();
        for line in &run[2..] {
            let row = cells(line);
            if row.len() != header.len() {
                return Err(format!("row `{line}` has {} cells, its header {}", row.len(), header.len()));
            }
            if row.iter().all(String::is_empty) {
                return Err(format!("row `{line}` is empty"));
            }
            rows.push(row);
        }
        out.push(Table { header, rows });
    }
    Ok(out)
}

/// The one backticked id in a benchmark cell.
fn id(cell: &str) -> Result<&str, String> {
    let parts: Vec<&str> = cell.split('`').collect();
    if parts.len() != 3 || !parts[0].is_empty() || !parts[2].is_empty() {
        return Err(format!("benchmark cell `{cell}` is not one `...` id"));
    }
    Ok(parts[1])
}

/// Whether `id` names a benchmark that exists; Err says why not.
fn benchmark_exists(root: &Path, id: &str) -> Result<(), String> {
    let src = |rel: &str| std::fs::read_to_string(root.join(rel)).map_err(|e| format!("`{id}`: {rel}: {e}"));
    let (tool, name) = id.split_once(' ').ok_or_else(|| format!("`{id}` is not `TOOL NAME`"))?;
    match tool {
        "peers" | "system_path" | "fast_path" => {
            let text = src(&format!("benches/{tool}.rs"))?;
            let mut it = name.split('/');
            let (group, function, param) = (it.next().unwrap_or(""), it.next().unwrap_or(""), it.next());
            if it.next().is_some() || group.is_empty() || function.is_empty() {
                return Err(format!("`{id}`: not GROUP/FUNCTION[/PARAM]"));
            }
            if !text.contains(&format!("benchmark_group(\"{group}\")")) {
                return Err(format!("`{id}`: benches/{tool}.rs has no group `{group}`"));
            }
            if !text.contains(&format!("\"{function}\"")) {
                return Err(format!("`{id}`: benches/{tool}.rs has no benchmark `{function}`"));
            }
            if let Some(p) = param {
                let digits = text.replace('_', "");
                if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || !digits.contains(p) {
                    return Err(format!("`{id}`: benches/{tool}.rs has no parameter `{p}`"));
                }
            }
            Ok(())
        }
        "fast_path.c" => {
            let text = src("benches/c/fast_path.c")?;
            let (set, what) = name.split_once('/').ok_or_else(|| format!("`{id}`: not SET/ID"))?;
            if !text.contains(&format!("compare(\"{set}\"")) {
                return Err(format!("`{id}`: fast_path.c runs no set `{set}`"));
            }
            if !text.contains(&format!(".id = \"{what}\"")) {
                return Err(format!("`{id}`: fast_path.c has no contender `{what}`"));
            }
            Ok(())
        }
        "eviction_workloads" => {
            let text = src("examples/eviction_workloads.rs")?;
            let (workload, policy) = name.rsplit_once('/').ok_or_else(|| format!("`{id}`: not WORKLOAD/POLICY"))?;
            if !text.contains(&format!("name: \"{workload}\"")) {
                return Err(format!("`{id}`: the example has no workload `{workload}`"));
            }
            if !text.contains(&format!("EvictionPolicy::{policy}")) {
                return Err(format!("`{id}`: the example runs no policy `{policy}`"));
            }
            Ok(())
        }
        "install.cmake" => {
            src("cmake/install.cmake")?;
            let stage = src("cmake/zeropool-stage.cmake")?;
            let file = name.strip_prefix("lib/").ok_or_else(|| format!("`{id}`: not lib/FILE"))?;
            // lib/libzeropool.so.X.Y.Z is staged as libzeropool.so.${VERSION}.
            let staged = if file.starts_with("libzeropool.so.") { "libzeropool.so.${VERSION}" } else { file };
            if !stage.contains(&format!("{{lib}}/{staged}\"")) {
                return Err(format!("`{id}`: cmake/zeropool-stage.cmake stages no lib/{file}"));
            }
            Ok(())
        }
        "cargo" => {
            let manifest = src("Cargo.toml")?;
            let kind = match name {
                "target/release/libzeropool.so" => "cdylib",
                "target/release/libzeropool.a" => "staticlib",
                _ => return Err(format!("`{id}`: cargo builds no {name}")),
            };
            if !manifest.contains(&format!("\"{kind}\"")) {
                return Err(format!("`{id}`: Cargo.toml builds no {kind}"));
            }
            Ok(())
        }
        _ => Err(format!("`{id}`: unknown tool `{tool}`")),
    }
}

/// Every problem with `readme` (empty when none), checked against the
/// sources under `root`.
fn problems(readme: &str, root: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    let blocks = match blocks(readme) {
        Ok(b) => b,
        Err(e) => return vec![e],
    };
    for want in BLOCKS {
        if !blocks.iter().any(|(n, _)| n == want) {
            errs.push(format!("the README has no `{want}` block"));
        }
    }
    let loaders = std::fs::read_to_string(root.join("examples/checkpoint_load.rs")).unwrap_or_default();
    for (name, body) in &blocks {
        let tables = match tables(body) {
            Ok(t) => t,
            Err(e) => {
                errs.push(format!("block `{name}`: {e}"));
                continue;
            }
        };
        if tables.is_empty() {
            errs.push(format!("block `{name}` has no table"));
        }
        for t in &tables {
            if name == "checkpoint_load" {
                // The main job's rows are its loaders, by their label.
                for row in &t.rows {
                    let cell = row[0].as_str();
                    // "ZeroPool `Always`, pinned (0 pin failures)": the count is the run's.
                    let label = match cell.rsplit_once(" (") {
                        Some((l, tail)) if tail.ends_with(" pin failures)") => l,
                        _ => cell,
                    };
                    if !loaders.contains(&format!("\"{label}\"")) {
                        errs.push(format!("block `{name}`: `{}` is no loader of examples/checkpoint_load.rs", row[0]));
                    }
                }
                continue;
            }
            let Some(col) = t.header.iter().position(|h| h == "benchmark" || h == "measured from") else {
                errs.push(format!(
                    "block `{name}`: table `{}` has no `benchmark` (or `measured from`) column",
                    t.header.join(" | ")
                ));
                continue;
            };
            for row in &t.rows {
                if let Err(e) = id(&row[col]).and_then(|id| benchmark_exists(root, id)) {
                    errs.push(format!("block `{name}`: {e}"));
                }
            }
        }
    }
    // No table in the Performance section outside a block.
    if let (Some(a), Some(b)) = (readme.find("\n## Performance\n"), readme.find("\n## Benchmarks\n")) {
        let mut section = readme[a..b].to_string();
        for (name, body) in &blocks {
            section = section.replace(body.as_str(), &format!("(block {name})\n"));
        }
        match tables(&section) {
            Ok(t) if !t.is_empty() => errs
                .push(format!("the Performance section has a table outside the blocks: `{}`", t[0].header.join(" | "))),
            Ok(_) => {}
            Err(e) => errs.push(format!("the Performance section, outside the blocks: {e}")),
        }
    } else {
        errs.push("the README has no `## Performance` or `## Benchmarks` section".into());
    }
    errs
}

fn root() -> PathBuf {
    PathBuf::from(ROOT)
}

#[test]
fn every_readme_table_parses_and_names_a_benchmark_that_exists() {
    let errs = problems(&read("README.md"), &root());
    assert!(errs.is_empty(), "README.md:\n{}", errs.join("\n"));
}

/// `text` with `row` added after the `|---|` line of the first table in
/// block `block`.
fn with_row(text: &str, block: &str, row: &str) -> String {
    let b = text.find(&format!("<!-- {block}:begin")).expect("block");
    let sep = b + text[b..].find("\n|---").expect("table") + 1;
    let eol = sep + text[sep..].find('\n').unwrap() + 1;
    format!("{}{row}\n{}", &text[..eol], &text[eol..])
}

#[test]
fn a_made_up_row_fails() {
    let readme = read("README.md");
    // As wide as the table it joins, naming a benchmark nobody wrote.
    let b = readme.find("<!-- perf_untouched:begin").unwrap();
    let header = readme[b..].lines().find(|l| l.starts_with('|')).unwrap();
    let width = cells(header).len();
    let col = cells(header).iter().position(|h| h == "benchmark").expect("a benchmark column");
    let mut row: Vec<String> = vec!["x".into(); width];
    row[col] = "`peers s1_untouched/made_up_allocator`".into();
    let made_up = with_row(&readme, "perf_untouched", &format!("| {} |", row.join(" | ")));
    let errs = problems(&made_up, &root());
    assert!(errs.iter().any(|e| e.contains("made_up_allocator")), "{errs:?}");

    row[col] = "`fast_path.c untouched/made_up`".into();
    let errs = problems(&with_row(&readme, "perf_untouched", &format!("| {} |", row.join(" | "))), &root());
    assert!(errs.iter().any(|e| e.contains("no contender `made_up`")), "{errs:?}");

    row[col] = "`system_path burst_64k/malloc/12345`".into();
    let errs = problems(&with_row(&readme, "perf_untouched", &format!("| {} |", row.join(" | "))), &root());
    assert!(errs.iter().any(|e| e.contains("no parameter `12345`")), "{errs:?}");

    let errs =
        problems(&with_row(&readme, "checkpoint_load", &format!("| a made-up loader |{}", " x |".repeat(9))), &root());
    assert!(errs.iter().any(|e| e.contains("a made-up loader")), "{errs:?}");
}

#[test]
fn a_malformed_table_or_block_fails() {
    let readme = read("README.md");
    let short = with_row(&readme, "eviction", "| zipf | Lifo |");
    assert!(problems(&short, &root()).iter().any(|e| e.contains("has 2 cells")));
    let unclosed = readme.replace("<!-- eviction:end -->", "");
    assert!(problems(&unclosed, &root()).iter().any(|e| e.contains("no `<!-- eviction:end -->`")));
    let loose = readme.replace("\n## Benchmarks\n", "\n| a | b |\n|---|---|\n| 1 | 2 |\n\n## Benchmarks\n");
    assert!(problems(&loose, &root()).iter().any(|e| e.contains("outside the blocks")));
}
