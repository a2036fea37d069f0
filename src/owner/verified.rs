//! Owners the front door verified: one file a container (or a build), written by
//! `ds01-front-door` (root) after the kernel named the caller, read by the runtime at create.
//!
//! Why a non-root caller cannot forge one: the record is a file in `front_door.verified_dir`,
//! and the runtime believes it only when the file and its folder belong to root and neither is
//! writable by group or others. What a caller sends (labels, annotations, names, cgroup
//! parents) reaches dockerd's config, never this folder. A record is keyed by the container id
//! dockerd chose (written after dockerd answered the create, before the caller sees the id), or
//! for a build by a random 128-bit token the front door put in the build's cgroup parent
//! (`ds01-door-<token>.slice`) and removes when the build ends.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// The cgroup parent the front door gives a build: `ds01-door-<token>.slice`.
pub const BUILD_PARENT_PREFIX: &str = "ds01-door-";

/// One verified owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The owner's login name.
    pub user: String,
    /// The caller's uid, as the kernel gave it.
    pub uid: u32,
    /// The caller, when an admin created the container for `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// The record's file for a container id or a build token; None for a key that is not a plain
/// name (the key becomes a file name).
pub fn path(dir: &Path, key: &str) -> Option<PathBuf> {
    let plain = !key.is_empty()
        && key.len() <= 128
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plain.then(|| dir.join(key))
}

/// The record key of a build, from the token in its cgroup parent.
pub fn build_key(token: &str) -> String {
    format!("build-{token}")
}

/// The build token in a container's cgroups path (`ds01-door-<token>.slice/<id>` with the
/// cgroupfs driver, `ds01-door-<token>.slice:docker:<id>` with systemd's).
pub fn build_token(cgroups_path: &str) -> Option<&str> {
    let at = cgroups_path.find(BUILD_PARENT_PREFIX)?;
    let before = &cgroups_path[..at];
    if !(before.is_empty() || before.ends_with('/')) {
        return None;
    }
    let rest = &cgroups_path[at + BUILD_PARENT_PREFIX.len()..];
    let token = rest.split_once(".slice")?.0;
    (token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit())).then_some(token)
}

/// Reads the record for `key`: None when there is none. A record root does not own, or that
/// group or others could have written, is an error (it is never believed).
pub fn read(dir: &Path, key: &str) -> Result<Option<Verified>> {
    let Some(file) = path(dir, key) else { return Ok(None) };
    let meta = match fs::symlink_metadata(&file) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::failed(format!("verified owner {}: {e}", file.display()))),
    };
    root_only(&file, &meta)?;
    let folder = fs::metadata(dir).context(format_args!("verified owners' folder {}", dir.display()))?;
    root_only(dir, &folder)?;
    let text = fs::read(&file).context(format_args!("verified owner {}", file.display()))?;
    let v: Verified = serde_json::from_slice(&text)
        .map_err(|e| Error::failed(format!("verified owner {}: {e}", file.display())))?;
    Ok(Some(v))
}

fn root_only(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 || !(meta.is_file() || meta.is_dir()) {
        return Err(Error::failed(format!(
            "verified owner {} is not root's alone (uid {}, mode {:o}): not believed",
            path.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Writes the record for `key` (temporary file, then rename), creating the folder root-only.
pub fn write(dir: &Path, key: &str, v: &Verified) -> Result<()> {
    let file = path(dir, key).ok_or_else(|| Error::failed(format!("verified owner: bad key {key:?}")))?;
    if !dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .context(format_args!("verified owners' folder {}", dir.display()))?;
    }
    let line = serde_json::to_vec(v).map_err(|e| Error::failed(format!("verified owner: {e}")))?;
    crate::host::fs::replace(&file, &line, 0o644, None, false)
        .context(format_args!("verified owner {}", file.display()))
}

/// Removes the record for `key`; a missing one is fine.
pub fn remove(dir: &Path, key: &str) {
    if let Some(file) = path(dir, key) {
        let _ = fs::remove_file(file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_tokens_are_found_in_both_drivers_forms() {
        let t = "0123456789abcdef0123456789abcdef";
        assert_eq!(build_token(&format!("ds01-door-{t}.slice/abc")), Some(t));
        assert_eq!(build_token(&format!("/ds01-door-{t}.slice/abc")), Some(t));
        assert_eq!(build_token(&format!("ds01-door-{t}.slice:docker:abc")), Some(t));
        assert_eq!(build_token("/docker/abc"), None);
        assert_eq!(build_token(&format!("x-ds01-door-{t}.slice/abc")), None);
        assert_eq!(build_token("ds01-door-short.slice/abc"), None);
    }

    #[test]
    fn keys_are_plain_names() {
        let d = Path::new("/v");
        assert_eq!(path(d, "abc-1_2"), Some(PathBuf::from("/v/abc-1_2")));
        for bad in ["", "../x", "a/b", ".", "a b"] {
            assert_eq!(path(d, bad), None, "{bad}");
        }
    }

    #[test]
    fn a_record_round_trips_and_one_others_could_write_is_not_believed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED owner::verified: needs root to own the records (runs in CI)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ds01-verified-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let v = Verified { user: "alice".into(), uid: 1001, by: None };
        write(&dir, "abc", &v).unwrap();
        assert_eq!(read(&dir, "abc").unwrap(), Some(v));
        assert_eq!(read(&dir, "missing").unwrap(), None);
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join("abc"), fs::Permissions::from_mode(0o666)).unwrap();
        assert!(read(&dir, "abc").unwrap_err().to_string().contains("not believed"));
        remove(&dir, "abc");
        assert_eq!(read(&dir, "abc").unwrap(), None);
        let _ = fs::remove_dir_all(&dir);
    }
}
