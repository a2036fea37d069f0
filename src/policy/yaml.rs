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

/// Like [`from_str`], through a JSON copy of the document kept in `cache_dir`, named by the
/// text's digest: JSON parses about ten times faster than YAML, and `create` reads the policy on
/// every call. The copy is only a shortcut: a missing or unreadable one falls back to the YAML,
/// which decides every error; one that would not give the same value is never written.
pub fn from_str_cached<T: DeserializeOwned>(
    text: &str,
    what: &str,
    file: &Path,
    cache_dir: &Path,
) -> Result<T> {
    use md5::{Digest, Md5};
    let slug: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest: String = Md5::digest(text.as_bytes())
        .iter()
        .flat_map(|b| [HEX[usize::from(b >> 4)] as char, HEX[usize::from(b & 15)] as char])
        .collect();
    let copy = cache_dir.join(format!("{slug}-{digest}.json"));
    if let Some(v) = std::fs::read(&copy).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        return Ok(v);
    }
    let value: T = from_str(text, what, file)?;
    if let Ok(doc) = serde_yaml_ng::from_str::<serde_json::Value>(text) {
        if let Ok(json) = serde_json::to_vec(&doc) {
            if serde_json::from_slice::<T>(&json).is_ok() {
                write_copy(cache_dir, &slug, &copy, &json);
            }
        }
    }
    Ok(value)
}

/// Writes the JSON copy (temp file and rename, so a reader never sees half of one) and removes
/// the stale copies of the same file. Failures only cost the next call a YAML parse.
fn write_copy(dir: &Path, slug: &str, copy: &Path, json: &[u8]) {
    // Only inside an existing state directory: reading a file must not create one.
    if !dir.parent().is_some_and(Path::is_dir) || (!dir.is_dir() && std::fs::create_dir(dir).is_err()) {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&format!("{slug}-")) && e.path() != copy {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let tmp = dir.join(format!(".{slug}.{}.tmp", std::process::id()));
    if std::fs::write(&tmp, json).is_ok() && std::fs::rename(&tmp, copy).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
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
