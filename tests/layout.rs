//! The tree's layering (docs/ARCHITECTURE.md, "Layers"): each top-level module of src/ uses only
//! modules of the layers below it, so no two modules import each other, directly or around a
//! circle. Read from the source: every `crate::<module>` outside comments and test code.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first; a module may use any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["argv", "naming", "spec"],
    &["host"],
    &["gpu"],
    &["policy"],
    &["audit", "owner"],
    &["create"],
    &["ctl", "door", "shim"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `crate::<name>` references in `text`, comments and `#[cfg(test)]` code left out.
fn uses(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn each_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut edges: BTreeMap<(String, String), String> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_str().unwrap();
        if first == "bin" || first == "lib.rs" || rel.ends_with("tests.rs") {
            continue;
        }
        let top = first.trim_end_matches(".rs").to_owned();
        assert!(
            layer(&top).is_some(),
            "src/{first} is in no layer of LAYERS: place it there and in ARCHITECTURE.md"
        );
        for used in uses(&std::fs::read_to_string(f).unwrap()) {
            if used != top {
                edges.entry((top.clone(), used)).or_insert_with(|| rel.display().to_string());
            }
        }
    }
    let wrong: Vec<String> = edges
        .iter()
        .filter(|((from, to), _)| layer(to).is_none_or(|t| t >= layer(from).unwrap_or(0)))
        .map(|((from, to), file)| format!("{from} -> {to} (src/{file})"))
        .collect();
    assert!(wrong.is_empty(), "uses at or above their own layer: {wrong:#?}");
    assert!(edges.len() > 20, "the scan found the tree's uses: {edges:?}");
}
