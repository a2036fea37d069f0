//! A path with its symlinks resolved, in three system calls whatever its depth: open it with
//! `O_PATH` and ask the kernel for that file's name. libc's `realpath` reads every component
//! with its own `readlink` (eight calls for a Docker mount source), plus a malloc.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The canonical form of `p` (absolute, no symlinks, `.` or `..`), as `std::fs::canonicalize`
/// gives it; an error when the path does not exist.
pub fn canonical(p: &Path) -> std::io::Result<PathBuf> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path; the fd, if any, is ours and closed below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let named = std::fs::read_link(format!("/proc/self/fd/{fd}"));
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    match named {
        // Without /proc (or for a file the kernel names oddly) ask libc.
        Ok(n) if n.is_absolute() && !n.as_os_str().as_bytes().ends_with(b" (deleted)") => Ok(n),
        _ => std::fs::canonicalize(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_answer_as_std() {
        let dir = std::env::temp_dir().join(format!("ds01-realpath-{}", std::process::id()));
        let real = dir.join("a/b");
        std::fs::create_dir_all(&real).unwrap();
        let _ = std::fs::remove_file(dir.join("link"));
        std::os::unix::fs::symlink("a/./b", dir.join("link")).unwrap();
        for p in
            [dir.join("link"), dir.join("a/../a/b/."), real.clone(), PathBuf::from("/"), PathBuf::from(".")]
        {
            assert_eq!(canonical(&p).unwrap(), std::fs::canonicalize(&p).unwrap(), "{}", p.display());
        }
        assert!(canonical(&dir.join("missing")).is_err());
        assert!(canonical(Path::new("a\0b")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
