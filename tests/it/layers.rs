//! The crate's layering, checked from its source: every `crate::` path in `src/` names a module
//! of its own stage or of a stage below it, and nothing in the pipeline names the rehearsal kit.
//!
//! `cargo test --test it layers -- --nocapture` prints the stage-to-stage import graph (each edge
//! with the files behind it), the same picture the architecture notes draw.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The stages, bottom first; a module may name its own stage or one below.
const STAGES: [(&str, u8); 12] = [
    ("model", 0),
    ("config", 0),
    ("net", 0),
    ("telemetry", 0),
    ("runtime", 0),
    ("ingest", 1),
    ("route", 2),
    ("outbox", 3),
    ("deliver", 4),
    ("daemon", 5),
    ("commands", 6),
    ("kit", 9),
];

fn rank(stage: &str) -> Option<u8> {
    STAGES.iter().find(|(s, _)| *s == stage).map(|(_, r)| *r)
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

/// The stage a file belongs to: the first component under `src/` (`model.rs` → `model`).
fn stage_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every stage named by a `crate::` path in code (comments and doc comments left out: a doc link
/// is not an import).
fn named_stages(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            let after = &rest[i + "crate::".len()..];
            rest = after;
            // `clinicea_notifier::` style paths and `$crate::` are not this crate's `crate::`.
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue;
            }
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                // `crate::{a, b}`: every name in the braces.
                if let Some(inner) = after.strip_prefix('{') {
                    for part in inner.split([',', '}']) {
                        let n: String = part
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        if !n.is_empty() {
                            out.insert(n);
                        }
                    }
                }
                continue;
            }
            out.insert(name);
        }
    }
    out
}

/// (from stage, to stage) → the files that make the edge.
fn stage_edges() -> BTreeMap<(String, String), BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap().to_path_buf();
        let from = stage_of(&rel);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for to in named_stages(&text) {
            if to != from && rank(&to).is_some() {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn every_module_imports_only_its_own_stage_or_those_below() {
    let edges = stage_edges();
    let mut graph = String::new();
    let mut wrong = Vec::new();
    for ((from, to), files) in &edges {
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        graph.push_str(&format!("{from} -> {to}: {}\n", files.join(", ")));
        let (Some(f), Some(t)) = (rank(from), rank(to)) else {
            wrong.push(format!("{from} -> {to}: a module outside the stage list"));
            continue;
        };
        if to == "kit" && from != "kit" {
            wrong.push(format!(
                "{from} -> kit ({}): the pipeline never imports the kit",
                files.join(", ")
            ));
        } else if t > f && from != "kit" {
            wrong.push(format!(
                "{from} -> {to} ({}): an import against the flow",
                files.join(", ")
            ));
        }
    }
    println!("{graph}");
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_stage_list_covers_every_top_level_module() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut unknown = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let rel = PathBuf::from(entry.unwrap().file_name());
        let stage = stage_of(&rel);
        if stage != "lib" && stage != "main" && rank(&stage).is_none() {
            unknown.push(stage);
        }
    }
    assert!(unknown.is_empty(), "modules with no stage: {unknown:?}");
}

#[test]
fn the_scanner_sees_plain_grouped_and_inline_paths_but_not_comments() {
    let text = "use crate::route::plan::Payload;\nuse crate::{config, model};\n\
                let x = crate::deliver::outcome::MAX;\n// crate::kit::demo\n/// [`crate::daemon`]\n\
                use clinicea_notifier::commands;";
    let got: Vec<String> = named_stages(text).into_iter().collect();
    assert_eq!(got, ["config", "deliver", "model", "route"]);
}
