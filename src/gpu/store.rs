//! The allocation state on disk: one JSON file under the state directory, read, decided and
//! written under one flock, and written atomically, so that no GPU is ever handed out twice.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::alloc::{State, World};
use crate::error::{Context, Error, Result};
use crate::host::fs::write_atomic;

/// The state file and its lock.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `state_dir`.
    pub fn new(state_dir: &Path) -> Store {
        Store { dir: state_dir.to_path_buf() }
    }

    /// Path of the state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("gpus.json")
    }

    /// Reads the state without the lock (for display).
    pub fn peek(&self) -> Result<State> {
        read(&self.path())
    }

    /// Runs `f` on the state with the lock held from read to write; `f` gets how long the lock
    /// took to get, and returns its result and whether it changed the state. Nothing is written
    /// when `f` fails.
    pub fn locked<T>(
        &self,
        f: impl FnOnce(&mut State, Duration) -> Result<(T, bool)>,
    ) -> Result<(T, Duration)> {
        fs::create_dir_all(&self.dir)
            .context(format_args!("cannot create state directory {}", self.dir.display()))?;
        // Priority ceiling, raised before the lock is waited for and put back only after it is
        // released (declared before the lock, so dropped after it on every return path): the
        // holder, and the waiter it wakes, run ahead of the creates still on their way, so that
        // 50 creates at once wait for each other's short sections, not for CPU.
        let nice = Nice::raise_to(-10);
        let lock_path = self.dir.join("gpus.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .context(format_args!("cannot open {}", lock_path.display()))?;
        let t0 = Instant::now();
        // flock(LOCK_EX), released when `lock` is dropped.
        if let Err(e) = lock.lock() {
            return Err(Error::failed(format!("cannot lock {}: {e}", lock_path.display())));
        }
        let waited = t0.elapsed();
        let path = self.path();
        let mut state = read(&path)?;
        let (out, dirty) = f(&mut state, waited)?;
        if dirty {
            state.version = 1;
            let bytes = serde_json::to_vec_pretty(&state).context("cannot serialize GPU state")?;
            write_atomic(&path, &bytes, 0o600, None)?;
        }
        drop(lock);
        drop(nice);
        Ok((out, waited))
    }
}

/// A raised scheduling priority, put back on drop (a no-op where the process may not raise it).
/// A process at `SCHED_IDLE` (the lifecycle follow-up) is moved to the normal policy first:
/// under the lock it must not wait for an idle CPU.
struct Nice {
    nice: Option<i32>,
    policy: Option<i32>,
}

/// Moves this process to scheduling `policy` (priority 0, the only one the non-real-time
/// policies take); true when it did. The raw system call: musl's `sched_setscheduler` is a stub
/// that always fails (POSIX means the process, Linux the thread).
pub(crate) fn set_policy(policy: i32) -> bool {
    // The kernel's struct sched_param is one int, the priority (libc's on musl carries padding
    // fields that only `mem::zeroed` could fill).
    let priority: libc::c_int = 0;
    // SAFETY: no safe equivalent (neither std nor nix wraps sched_setscheduler, and musl's is
    // the stub); a system call on this process, given an int that outlives it.
    unsafe { libc::syscall(libc::SYS_sched_setscheduler, 0, policy, &priority as *const libc::c_int) == 0 }
}

/// This process's scheduling policy (raw system call, as for [`set_policy`]), -1 on error.
fn policy() -> i32 {
    // SAFETY: no safe equivalent (as for `set_policy`); a system call on this process.
    unsafe { libc::syscall(libc::SYS_sched_getscheduler, 0) as i32 }
}

impl Nice {
    fn raise_to(nice: i32) -> Nice {
        let was = policy();
        let policy = (was == libc::SCHED_IDLE || was == libc::SCHED_BATCH)
            .then(|| set_policy(libc::SCHED_OTHER))
            .filter(|ok| *ok)
            .map(|_| was);
        // getpriority's -1 is ambiguous with an error, so errno is cleared first.
        Errno::clear();
        // SAFETY: no safe equivalent (neither std nor nix wraps getpriority); a plain call on
        // this process.
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        if Errno::last_raw() != 0 || before <= nice {
            return Nice { nice: None, policy };
        }
        // SAFETY: no safe equivalent (as for getpriority); a plain call on this process.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            return Nice { nice: None, policy };
        }
        Nice { nice: Some(before), policy }
    }
}

impl Drop for Nice {
    fn drop(&mut self) {
        if let Some(before) = self.nice {
            // SAFETY: no safe equivalent (as in `raise_to`); a plain call on this process.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, before) };
        }
        if let Some(policy) = self.policy {
            set_policy(policy);
        }
    }
}

fn read(path: &Path) -> Result<State> {
    match fs::read(path) {
        Ok(b) if b.is_empty() => Ok(State::default()),
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            Error::failed(format!(
                "GPU state {} is corrupt ({e}); fix or remove it (ds01ctl gpus shows it)",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(Error::failed(format!("cannot read GPU state {}: {e}", path.display()))),
    }
}

/// The real world: runc's state directories, /proc, Docker's containers directory.
pub struct HostWorld {
    /// Docker's data root.
    pub docker_root: PathBuf,
}

impl World for HostWorld {
    fn runc_has(&self, runc_root: &str, container: &str) -> bool {
        Path::new(runc_root).join(container).join("state.json").exists()
    }
    fn pid_alive(&self, pid: u32) -> bool {
        pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
    }
    fn docker_has(&self, container: &str) -> bool {
        self.docker_root.join("containers").join(container).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_written_when_the_closure_fails_and_corruption_is_an_error() {
        let dir = std::env::temp_dir().join(format!("ds01-store-{}", std::process::id()));
        let s = Store::new(&dir);
        let r: Result<((), Duration)> = s.locked(|st, _| {
            st.allocations.clear();
            Err(Error::failed("no"))
        });
        assert!(r.is_err());
        assert!(!s.path().exists());
        s.locked(|st, _| {
            st.version = 7;
            Ok(((), true))
        })
        .unwrap();
        assert_eq!(s.peek().unwrap().version, 1);
        fs::write(s.path(), "{").unwrap();
        assert!(s.peek().unwrap_err().to_string().contains("is corrupt"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
