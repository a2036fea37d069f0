//! The exec edge: finding the low-level runtime and replacing this process with it.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// Replaces the current process; returns only on failure.
pub trait Exec {
    /// execv(path, argv) with the current environment.
    fn exec(&self, path: &Path, argv: &[&OsStr]) -> Error;
}

/// The real execv(2).
pub struct Execv;

impl Exec for Execv {
    fn exec(&self, path: &Path, argv: &[&OsStr]) -> Error {
        let cpath = match CString::new(path.as_os_str().as_bytes()) {
            Ok(c) => c,
            Err(_) => return Error::failed(format!("runtime path {} contains a NUL byte", path.display())),
        };
        let mut cargs: Vec<CString> = Vec::with_capacity(argv.len());
        for a in argv {
            match CString::new(a.as_bytes()) {
                Ok(c) => cargs.push(c),
                Err(_) => return Error::failed("an argument contains a NUL byte"),
            }
        }
        // Returns only on failure.
        let Err(errno) = nix::unistd::execv(&cpath, &cargs);
        let err = std::io::Error::from(errno);
        Error::failed(format!("cannot exec low-level runtime {}: {err}", path.display()))
    }
}

/// (device, inode) of a file, following symlinks.
fn file_id(p: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
}

/// Makes `bytes` the process's standard input (an anonymous memory file, read from its
/// start): what this process read from its own stdin is handed on to the runtime it execs.
pub fn stdin_from(bytes: &[u8]) -> Result<(), Error> {
    use std::io::{Seek, Write};
    let fd = nix::sys::memfd::memfd_create(c"ds01-stdin", nix::sys::memfd::MFdFlags::empty())
        .map_err(|e| Error::failed(format!("cannot hand stdin on: {}", std::io::Error::from(e))))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)
        .and_then(|_| f.rewind())
        .and_then(|_| nix::unistd::dup2_stdin(&f).map_err(std::io::Error::from))
        .map_err(|e| Error::failed(format!("cannot hand stdin on: {e}")))?;
    Ok(())
}

/// Resolves the configured low-level runtime to an absolute path that is not this binary.
///
/// A name without '/' is looked up on `PATH`, skipping any entry that is this very program
/// (so that the shim can be installed as `runc` ahead of the real one); an explicit path that
/// turns out to be this program is an error, never a loop.
pub fn resolve_runtime(configured: &OsStr, path_env: Option<&OsStr>) -> Result<PathBuf, Error> {
    let me = file_id(Path::new("/proc/self/exe"));
    let name = Path::new(configured);
    if configured.as_bytes().contains(&b'/') {
        if !is_executable_file(name) {
            return Err(Error::failed(format!(
                "low-level runtime {} is not an executable file",
                name.display()
            )));
        }
        if me.is_some() && file_id(name) == me {
            return Err(Error::failed(format!(
                "low-level runtime {} is this ds01-runtime itself; set low_level_runtime to the real runc",
                name.display()
            )));
        }
        return Ok(name.to_path_buf());
    }
    let path_env =
        path_env.unwrap_or(OsStr::new("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    for dir in path_env.as_bytes().split(|&b| b == b':').filter(|d| !d.is_empty()) {
        let cand = Path::new(OsStr::from_bytes(dir)).join(name);
        if is_executable_file(&cand) && (me.is_none() || file_id(&cand) != me) {
            return Ok(cand);
        }
    }
    Err(Error::failed(format!(
        "low-level runtime {:?} not found on PATH (other than ds01-runtime itself)",
        configured
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path_and_rejects_missing() {
        let p = resolve_runtime(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin"))).unwrap();
        assert_eq!(p, PathBuf::from("/bin/sh"));
        let e = resolve_runtime(OsStr::new("no-such-runtime-xyz"), Some(OsStr::new("/bin"))).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"));
        let e = resolve_runtime(OsStr::new("/nonexistent/runc"), None).unwrap_err();
        assert!(e.to_string().contains("not an executable"));
    }

    #[test]
    fn never_resolves_to_itself() {
        let me = std::fs::read_link("/proc/self/exe").unwrap();
        let dir = me.parent().unwrap().as_os_str().to_owned();
        let name = me.file_name().unwrap();
        assert!(resolve_runtime(name, Some(&dir)).is_err());
        let e = resolve_runtime(me.as_os_str(), None).unwrap_err();
        assert!(e.to_string().contains("itself"));
    }
}
