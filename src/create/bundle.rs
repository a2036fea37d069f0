//! The bundle edge: reading config.json as an order-preserving JSON document and writing it
//! back atomically (temp file in the same directory, rename, mode and owner kept).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::create::opaque;
use crate::error::{Context, Error, Result};

/// A loaded config.json: its path, its document, and the file's mode and owner.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// `<dir>/config.json`.
    pub config_path: PathBuf,
    /// The document, keys in their original order; the parts no step reads ([`opaque::CARRIED`])
    /// are `null` here and written back from their original bytes.
    pub spec: Value,
    carried: Vec<opaque::Part>,
    /// The file as read: a document that comes out the same is not written again.
    bytes: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Bundle {
    /// Reads and parses `<dir>/config.json`; the error names the file and the cause.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let config_path = dir.join("config.json");
        let shown = config_path.display();
        let meta = fs::metadata(&config_path).context(format_args!("cannot read bundle config {shown}"))?;
        let bytes = fs::read(&config_path).context(format_args!("cannot read bundle config {shown}"))?;
        Bundle::parse(dir, bytes, Some((meta.permissions().mode() & 0o7777, meta.uid(), meta.gid())))
    }

    /// Parses `bytes` as `<dir>/config.json`, with the file's mode and owner when known.
    pub fn parse(dir: &Path, bytes: Vec<u8>, meta: Option<(u32, u32, u32)>) -> Result<Bundle> {
        Bundle::parse_as(dir, bytes, meta, true)
    }

    /// [`Bundle::parse`], with the parts no step reads carried as raw bytes only when `carry`
    /// (the create always carries them; tests compare the two).
    pub fn parse_as(
        dir: &Path,
        bytes: Vec<u8>,
        meta: Option<(u32, u32, u32)>,
        carry: bool,
    ) -> Result<Bundle> {
        let config_path = dir.join("config.json");
        let shown = config_path.display();
        let parsed = if carry {
            opaque::parse(&bytes).map_err(|e| e.to_string())
        } else {
            serde_json::from_slice(&bytes).map(|v| (v, Vec::new())).map_err(|e| e.to_string())
        };
        let (spec, carried) =
            parsed.map_err(|e| Error::failed(format!("malformed bundle config {shown}: {e}")))?;
        if !spec.is_object() {
            return Err(Error::failed(format!("malformed bundle config {shown}: not a JSON object")));
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            config_path,
            spec,
            carried,
            bytes,
            mode: meta.map_or(0o644, |m| m.0),
            uid: meta.map_or(0, |m| m.1),
            gid: meta.map_or(0, |m| m.2),
        })
    }

    /// `spec` with the carried parts put back, as one document (what [`Bundle::write`] would
    /// write, parsed): for showing, never on the create path.
    pub fn whole(&self, spec: &Value) -> Result<Value> {
        let bytes = serde_json::to_vec(&opaque::Spliced { value: spec, parts: &self.carried })
            .context("cannot serialize config.json")?;
        serde_json::from_slice(&bytes).context("cannot read config.json back")
    }

    /// The parts of config.json carried unparsed, with their original bytes.
    pub fn carried(&self) -> &[opaque::Part] {
        &self.carried
    }

    /// Replaces config.json with `spec` (unless it comes out byte for byte as read), atomically: readers see the old or the new file, never
    /// a mix, and a failure at any step leaves the old file in place.
    ///
    /// No fsync: the rename alone gives readers (runc, next) the old or the new file, and a
    /// bundle does not outlive a crash of the host (the engine writes it again for the next
    /// start), while an fsync on a disk-backed bundle (Podman's) costs milliseconds a create.
    pub fn write(&self, spec: &Value) -> Result<()> {
        let bytes = serde_json::to_vec(&opaque::Spliced { value: spec, parts: &self.carried })
            .context("cannot serialize config.json")?;
        if bytes == self.bytes {
            return Ok(());
        }
        crate::host::fs::replace(&self.config_path, &bytes, self.mode, Some((self.uid, self.gid)), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_that_comes_out_the_same_is_not_written_again() {
        let dir = std::env::temp_dir().join(format!("ds01-bundle-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.json");
        let text = r#"{"ociVersion":"1.0.2","linux":{"seccomp":{"defaultAction": "SCMP_ACT_ERRNO"}}}"#;
        fs::write(&config, text).unwrap();
        let ino = || fs::metadata(&config).unwrap().ino();
        let before = ino();
        let b = Bundle::load(&dir).unwrap();
        b.write(&b.spec).unwrap();
        assert_eq!(ino(), before, "unchanged: left in place");
        let mut changed = b.spec.clone();
        changed["ociVersion"] = "1.1.0".into();
        b.write(&changed).unwrap();
        assert_ne!(ino(), before, "changed: replaced");
        let out = fs::read_to_string(&config).unwrap();
        assert_eq!(out, text.replace("1.0.2", "1.1.0"), "the carried part as it was");
        fs::remove_dir_all(&dir).unwrap();
    }
}
