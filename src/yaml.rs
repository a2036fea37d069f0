//! YAML loading with errors that name the file, the line and the key.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::error::{Error, Result};

/// Deserializes `text`; on error says `<what> <file>: line N: <key.path>: <cause>`.
pub fn from_str<T: DeserializeOwned>(text: &str, what: &str, file: &Path) -> Result<T> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let keys: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Map { key } => Some(key.clone()),
                Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        let inner = e.inner();
        let cause = inner.to_string();
        let cause = match cause.rfind(" at line ") {
            Some(i) => cause[..i].to_owned(),
            None => cause,
        };
        let line = locate(text, &keys).or_else(|| inner.location().map(|l| l.line()));
        let mut msg = format!("{what} {}", file.display());
        if let Some(l) = line {
            msg.push_str(&format!(": line {l}"));
        }
        // serde_yaml puts its own (sometimes shorter) path in front of the cause.
        let cause = (1..=keys.len())
            .rev()
            .find_map(|n| cause.strip_prefix(&format!("{}: ", keys[..n].join("."))))
            .map(str::to_owned)
            .unwrap_or(cause);
        let key = keys.join(".");
        if !key.is_empty() {
            msg.push_str(&format!(": {key}"));
        }
        Error::failed(format!("{msg}: {cause}"))
    })
}

/// The 1-based line of a block-style key path, found by indentation; None if not found.
fn locate(text: &str, keys: &[String]) -> Option<usize> {
    if keys.is_empty() {
        return None;
    }
    let mut parent_indent: Option<usize> = None; // indent of the last matched key
    let mut level_indent: Option<usize> = None; // indent of keys at the level being searched
    let mut depth = 0;
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if parent_indent.is_some_and(|p| indent <= p) {
            return None;
        }
        let level = *level_indent.get_or_insert(indent);
        if indent != level {
            continue;
        }
        let key = body.split(':').next().unwrap_or("").trim().trim_matches(|c| c == '"' || c == '\'');
        if key == keys[depth] && body.contains(':') {
            depth += 1;
            if depth == keys.len() {
                return Some(n + 1);
            }
            parent_indent = Some(indent);
            level_indent = None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys() {
        let t = "a:\n  x: 1\n  b:\n    # c\n    c: 2\nb:\n  c: 3\n";
        assert_eq!(locate(t, &["a".into(), "b".into(), "c".into()]), Some(5));
        assert_eq!(locate(t, &["b".into(), "c".into()]), Some(7));
        assert_eq!(locate(t, &["a".into()]), Some(1));
        assert_eq!(locate(t, &["zz".into()]), None);
    }
}
