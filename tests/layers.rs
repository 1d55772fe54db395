//! The crate's layers, and the proof that its imports point one way: down.
//!
//! Every top-level module of `src/` is one layer. [`LAYERS`] lists them lowest first; a
//! layer may use only layers listed before it (less those its row excludes), so no arrow
//! can run back up and no circle can form. The test reads every
//! `crate::…` path in every file under `src/` (in `use` lines, grouped `use crate::{…}`
//! lines and paths written inline) and fails on each one the table does not allow, naming
//! the file and line. A module that is not in the table fails too: a new module gets a
//! place in the layering before it gets code. The README's architecture section says what
//! each layer holds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lowest first. A layer may use every layer listed before it, except those named beside
/// it.
const LAYERS: &[(&str, &[&str])] = &[
    ("util", &[]),
    ("wire", &[]),
    ("telemetry", &["wire"]),
    ("config", &["wire"]),
    ("spec", &["wire", "telemetry"]),
    ("host", &["wire", "spec"]),
    ("cluster", &["wire", "spec"]),
    // A runtime reaches other agents through `runtime::peers::Peers`, which the agent
    // implements: nothing below the agent speaks the wire.
    ("runtime", &["wire"]),
    ("kernel", &["wire"]),
    ("agent", &[]),
    ("manager", &[]),
    ("daemon", &[]),
    ("cli", &[]),
];

/// Items of the crate root every layer may name (not modules).
const ROOT_ITEMS: &[&str] = &["VERSION"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rank(layer: &str) -> Option<usize> {
    LAYERS.iter().position(|(name, _)| *name == layer)
}

fn allowed(from: &str, to: &str) -> bool {
    match (rank(from), rank(to)) {
        (Some(f), Some(t)) => t < f && !LAYERS[f].1.contains(&to),
        _ => false,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The layer a file under `src/` belongs to; `None` for the crate root (`lib.rs`,
/// `main.rs`).
fn layer_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_str()?.to_string();
    if parts.next().is_some() {
        return Some(first);
    }
    let stem = first.trim_end_matches(".rs");
    (stem != "lib" && stem != "main").then(|| stem.to_string())
}

/// `text` without comments and without the contents of string and char literals (their
/// line breaks kept, so line numbers stay right).
fn code_only(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&b, i) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            out.push('"');
            loop {
                match b.get(j) {
                    None => break,
                    Some('"') if (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some('\n') => out.push('\n'),
                    _ => {}
                }
                j += 1;
            }
            out.push('"');
            i = j;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && b.get(i + 2) == Some(&'\'') {
            // A char literal such as '{' (a lifetime has no closing quote there).
            out.push_str("' '");
            i += 3;
        } else if c == '\'' && next == Some('\\') {
            let mut j = i + 2;
            while j < b.len() && b[j] != '\'' {
                j += 1;
            }
            out.push_str("' '");
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// The first segment of every path rooted at `crate::` in `code`, with its line: `crate::a::b`
/// gives `a`; `crate::{a::x, b}` gives `a` and `b`.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let b: Vec<char> = code.chars().collect();
    let line_at = |i: usize| b[..i].iter().filter(|c| **c == '\n').count() + 1;
    let mut out = Vec::new();
    let pat: Vec<char> = "crate::".chars().collect();
    let mut i = 0;
    while i + pat.len() <= b.len() {
        if b[i..i + pat.len()] != pat[..] || ident_before(&b, i) || (i > 0 && b[i - 1] == '$') {
            i += 1;
            continue;
        }
        let mut j = i + pat.len();
        while b.get(j).is_some_and(|c| c.is_whitespace()) {
            j += 1;
        }
        if b.get(j) == Some(&'{') {
            // A group: the names at its first level.
            let mut depth = 0;
            let mut name = String::new();
            let mut expect_name = true;
            while j < b.len() {
                let c = b[j];
                match c {
                    '{' => {
                        depth += 1;
                        expect_name = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_name = true,
                    c if depth == 1 && expect_name && (c.is_alphanumeric() || c == '_') => {
                        name.push(c);
                        if !b
                            .get(j + 1)
                            .is_some_and(|n| n.is_alphanumeric() || *n == '_')
                        {
                            out.push((line_at(j), std::mem::take(&mut name)));
                            expect_name = false;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            let start = j;
            while b.get(j).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                j += 1;
            }
            if j > start {
                out.push((line_at(i), b[start..j].iter().collect()));
            }
        }
        i = j.max(i + 1);
    }
    out
}

#[test]
fn the_table_names_only_layers_below() {
    for (i, (layer, not)) in LAYERS.iter().enumerate() {
        for n in *not {
            let r = rank(n).unwrap_or_else(|| panic!("{layer} excludes `{n}`, not a layer"));
            assert!(
                r < i,
                "`{layer}` excludes `{n}`, which is not below it anyway"
            );
        }
    }
    assert!(!allowed("runtime", "wire") && allowed("agent", "wire"));
    assert!(!allowed("util", "cli") && allowed("cli", "util"));
}

#[test]
fn every_module_of_the_crate_is_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: BTreeSet<String> = code_only(&lib)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect();
    let layers: BTreeSet<String> = LAYERS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        declared, layers,
        "src/lib.rs declares these modules; tests/layers.rs lists these layers"
    );
}

/// The most lines a file of `src/` or `tests/` may have: a file a newcomer reads whole.
const MAX_LINES: usize = 520;

#[test]
fn no_file_is_longer_than_a_reader_reads_at_once() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    assert!(files.len() > 100, "found only {} files", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} has {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these (at most {MAX_LINES} lines):\n{}",
        long.join("\n")
    );
}

#[test]
fn no_import_runs_up_a_layer() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut seen = 0;
    for file in &files {
        let Some(from) = layer_of(file) else { continue };
        let shown = file
            .strip_prefix(Path::new(env!("CARGO_MANIFEST_DIR")))
            .unwrap();
        if rank(&from).is_none() {
            wrong.push(format!(
                "{}: module `{from}` is not in the table",
                shown.display()
            ));
            continue;
        }
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for (line, to) in crate_paths(&code) {
            seen += 1;
            if to == from || ROOT_ITEMS.contains(&to.as_str()) || allowed(&from, &to) {
                continue;
            }
            let why = match rank(&to) {
                None => format!("`{to}` is not a layer"),
                Some(r) if r > rank(&from).unwrap() => format!("`{to}` is above `{from}`"),
                Some(_) => format!("the table does not let `{from}` use `{to}`"),
            };
            wrong.push(format!(
                "{}:{line}: {from} -> {to} ({why})",
                shown.display()
            ));
        }
    }
    // The reader must see the crate's paths at all (a broken parser passes everything).
    assert!(seen > 300, "only {seen} crate:: paths read under src/");
    assert!(
        wrong.is_empty(),
        "imports against the layering (tests/layers.rs has the table):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_finds_every_form_of_path() {
    let code = code_only(
        "use crate::a::b;\nuse crate::{c::d, e::{f, g}, h};\nlet x = crate::i::j();\n\
         // crate::k::l\nlet s = \"crate::m\";\nlet r = r#\"crate::n\"#;\nlet c = '{';\nuse crate::{\n    o,\n};\n",
    );
    let found: Vec<(usize, String)> = crate_paths(&code);
    let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["a", "c", "e", "h", "i", "o"]);
    assert_eq!(found[0].0, 1);
    assert_eq!(found[4].0, 3);
    assert_eq!(found[5].0, 9);
}
