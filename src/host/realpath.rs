//! A path with its symlinks resolved, in five system calls whatever its depth: open it with
//! `O_PATH`, ask the kernel for that file's name, and check that the name is the same file.
//! libc's `realpath` reads every component with its own `readlink` (eight calls for a Docker
//! mount source), plus a malloc.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, Mode};

/// The canonical form of `p` (absolute, no symlinks, `.` or `..`), as `std::fs::canonicalize`
/// gives it; an error when the path does not exist.
pub fn canonical(p: &Path) -> std::io::Result<PathBuf> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    let fd = open(c.as_c_str(), OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
    let named = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let opened = fstat(&fd).ok().map(|st| (st.st_dev, st.st_ino));
    drop(fd);
    // The kernel names a file reached through another mount namespace (a /proc/<pid>/root
    // link) by its path there: believed only when that name is the same file here.
    let same = |n: &Path| std::fs::metadata(n).is_ok_and(|m| opened == Some((m.dev(), m.ino())));
    match named {
        Ok(n) if n.is_absolute() && same(&n) => Ok(n),
        // Without /proc, or a name that is not this file here: ask libc.
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
        // Through /proc's link to our own root: the same file here, so the kernel's name stands.
        let via_proc = Path::new("/proc/self/root").join(dir.strip_prefix("/").unwrap()).join("link");
        assert_eq!(canonical(&via_proc).unwrap(), real);
        assert!(canonical(&dir.join("missing")).is_err());
        assert!(canonical(Path::new("a\0b")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A name the kernel gives from another mount namespace is not taken for a path here.
    #[test]
    fn a_file_in_another_mount_namespace_is_not_named_by_its_path_there() {
        use std::io::BufRead;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (a mount namespace of its own)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ds01-realpath-ns-{}", std::process::id()));
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let script = format!(
            "mount -t tmpfs ds01 {0} && mkdir {0}/inner && echo ready && exec sleep 30",
            mnt.display()
        );
        let mut child = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = String::new();
        let out = child.stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        let inner = mnt.join("inner");
        let through = Path::new(&format!("/proc/{}/root", child.id())).join(inner.strip_prefix("/").unwrap());
        let got = canonical(&through);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line.trim(), "ready", "the namespace was set up");
        assert!(!inner.exists(), "the tmpfs stayed in its namespace");
        assert!(got.is_err(), "named {:?}, a path that is not that file here", got);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
