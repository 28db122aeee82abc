//! The layer rules, checked on the source text so that they stay true:
//! - the shared layer (the vocabulary below the capabilities) imports nothing above it;
//! - the capabilities stand side by side: none imports another, or anything of the server;
//! - the tests and benches build the HTTP stack with the features the binary has.
//!
//! Cheap and literal: every `crate::…` path outside comments is read, including the items of a
//! grouped `use crate::{…}`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The shared layer: modules every capability may use, which use only each other.
const BOTTOM: &[&str] = &[
    "problem",
    "clock",
    "db",
    "settings",
    "latency",
    "connection",
    "client",
    "metrics",
];

/// The capabilities: above the shared layer, side by side, below the server.
const FEATURES: &[&str] = &["cache", "auth", "ratelimit", "events"];

/// The server, which no capability or shared module may import (`http`, `config` and `catalog`
/// are its modules, re-exported at the crate root), and which may import everything.
const TOP: &[&str] = &["server"];

/// The `.rs` files of module `name`: `src/name.rs` and everything under `src/name/`.
fn module_files(name: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let single = src.join(format!("{name}.rs"));
    if single.is_file() {
        files.push(single);
    }
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(!files.is_empty(), "module {name} has no source files");
    files
}

/// The source without comments (`//` to the end of a line; no block comments in this crate).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| {
            // A `//` inside a string literal is rare in this crate and only widens the check.
            match line.find("//") {
                Some(at) => &line[..at],
                None => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first-level modules of the crate named by `crate::` paths in `code`: `crate::a::b` gives
/// `a`, and `crate::{a::x, b}` gives `a` and `b`.
fn crate_modules(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        // `redkit_crate::` or `$crate::` are other paths.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let trimmed = rest.trim_start();
        if let Some(group) = trimmed.strip_prefix('{') {
            // Items at depth 1 of the group, each taken by its first segment.
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        found.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 {
                    item.push(c);
                }
            }
            found.push(first_segment(&item));
        } else {
            found.push(first_segment(trimmed));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every `(file, module)` where a module of `layer` names a crate module outside `allowed`.
fn violations(layer: &[&str], allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let mut bad = Vec::new();
    for name in layer {
        for file in module_files(name) {
            let code = code_of(&fs::read_to_string(&file).unwrap());
            for module in crate_modules(&code) {
                if !allowed(&module) {
                    bad.push(format!("{} imports crate::{module}", file.display()));
                }
            }
        }
    }
    bad
}

/// The path reader sees plain paths, grouped imports and nested groups, and skips comments.
#[test]
fn the_path_reader_finds_grouped_imports() {
    let code = code_of(
        "use crate::{\n    auth::AuthUser,\n    http::{Problem, Services},\n};\n\
         // crate::config::X in a comment\nlet x = crate::config::DEFAULT;\n",
    );
    assert_eq!(crate_modules(&code), ["auth", "http", "config"]);
}

/// Each capability imports only itself and the shared layer: no other capability, nothing of
/// the server.
#[test]
fn capabilities_import_only_themselves_and_the_shared_layer() {
    for capability in FEATURES {
        let bad = violations(&[capability], |m| m == *capability || BOTTOM.contains(&m));
        assert!(bad.is_empty(), "{bad:#?}");
    }
}

/// The bottom layer imports only itself: no feature, no HTTP assembly, no CLI config.
#[test]
fn the_bottom_layer_imports_only_itself() {
    let bad = violations(BOTTOM, |m| BOTTOM.contains(&m));
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Every module under `src/` is in one layer here and has a line in `ARCHITECTURE.md`'s folder
/// map, so that a new module cannot slip past the rules or the map.
#[test]
fn every_module_has_a_layer_and_a_line_in_the_architecture_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for entry in fs::read_dir(root.join("src")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let (name, shown) = match file.strip_suffix(".rs") {
            Some(name) => (name.to_owned(), format!("`src/{file}`")),
            None => (file.clone(), format!("`src/{file}/`")),
        };
        if name == "lib" || name == "main" {
            continue;
        }
        let layers = [BOTTOM, FEATURES, TOP];
        if !layers.iter().any(|layer| layer.contains(&name.as_str())) {
            missing.push(format!("{name}: in no layer of tests/layers.rs"));
        }
        if !map.contains(&shown) {
            missing.push(format!("{name}: no {shown} in ARCHITECTURE.md"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

/// The crates whose features shape what every connection and timer costs: what the tests and
/// benches measure must be built as the binary is.
const HTTP_STACK: &[&str] = &[
    "actix-http",
    "actix-web",
    "actix-server",
    "actix-rt",
    "tokio",
];

/// The features cargo turns on for `package` when building along `edges` (`cargo tree`).
fn features_of(package: &str, edges: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "--edges",
            edges,
            "--invert",
            package,
        ])
        .args(["--format", "{p} | {f}", "--depth", "0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    // The package's own line, so that an empty answer cannot pass for equal features.
    assert!(line.starts_with(&format!("{package} v")), "{line:?}");
    line
}

/// A dev-dependency's features reach the server the tests and benches build (cargo unifies
/// them). awc, the tests' client before, turned on actix-http's `http2`: every connection's
/// state then held HTTP/2's, and the events bench measured 1.2 KiB more per SSE client than the
/// binary takes. tokio's `test-util` made every read of tokio's clock take a lock.
#[test]
fn the_benches_build_the_server_as_shipped() {
    for package in HTTP_STACK {
        assert_eq!(
            features_of(package, "normal,dev"),
            features_of(package, "normal"),
            "{package}: a dev-dependency changes its features"
        );
    }
}
