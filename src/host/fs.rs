//! The file edge: atomic replacement of a file (temp file in the same folder, then rename), so
//! readers see the old file or the new one, never a mix, and a failure leaves the old in place.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Context, Result};

/// Writes `bytes` to `path` via a temp file in the same directory, fsync and rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<()> {
    replace(path, bytes, mode, owner, true)
}

/// [`write_atomic`], with the fsync only when `durable`.
pub fn replace(path: &Path, bytes: &[u8], mode: u32, owner: Option<(u32, u32)>, durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.ds01-{}.tmp", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .context(format_args!("cannot create {}", tmp.display()))?;
        f.write_all(bytes).context(format_args!("cannot write {}", tmp.display()))?;
        // The umask may have narrowed the mode given to open().
        f.set_permissions(fs::Permissions::from_mode(mode))
            .context(format_args!("cannot chmod {}", tmp.display()))?;
        if let Some((uid, gid)) = owner {
            // Keeping the owner matters only when it differs; failing that is not fatal for root-owned bundles.
            if uid != nix::unistd::geteuid().as_raw() || gid != nix::unistd::getegid().as_raw() {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .context(format_args!("cannot chown {}", tmp.display()))?;
            }
        }
        if durable {
            f.sync_all().context(format_args!("cannot fsync {}", tmp.display()))?;
        }
        fs::rename(&tmp, path).context(format_args!("cannot replace {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
