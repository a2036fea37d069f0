//! The users' socket: handed over by systemd (socket activation, `LISTEN_FDS`), or bound here
//! with mode 0660 and the settings' group.

use std::os::fd::FromRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use crate::error::{Context, Error, Result};

/// The first socket systemd passed this process, if it passed one.
pub fn from_systemd() -> Option<std::os::unix::net::UnixListener> {
    let pid: u32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    let fds: u32 = std::env::var("LISTEN_FDS").ok()?.parse().ok()?;
    if pid != std::process::id() || fds < 1 {
        return None;
    }
    // SAFETY: systemd's protocol hands this process descriptor 3, open and listening, and
    // nothing else in this process owns it.
    Some(unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) })
}

/// Binds `path` (a stale socket there is replaced; any other file is an error), mode 0660,
/// group `group` when it exists.
pub fn bind(path: &Path, group: &str) -> Result<std::os::unix::net::UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).context(format_args!("removing the old socket {}", path.display()))?;
        }
        Ok(_) => return Err(Error::failed(format!("{} exists and is not a socket", path.display()))),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).context(format_args!("creating {}", dir.display()))?;
    }
    let l =
        std::os::unix::net::UnixListener::bind(path).context(format_args!("binding {}", path.display()))?;
    let gid = crate::host::users::UserDb::system().group(group).ok().flatten().map(|g| g.gid);
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).context(format_args!("chown {}", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .context(format_args!("chmod {}", path.display()))?;
    Ok(l)
}
