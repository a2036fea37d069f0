//! After-the-fact work for pass-through calls that change a container's life (`delete`): done
//! in a detached child so that the call itself is exec'd to runc at once. The child waits for
//! runc to finish, then holds or releases the container's GPUs if runc really deleted it.

use std::ffi::OsString;
use std::os::unix::io::FromRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::argv::Invocation;
use crate::create::runc_root;
use crate::gpu::alloc;
use crate::gpu::store::{HostWorld, Store};
use crate::settings::{Located, Settings};

/// True for the calls that need work after runc is done.
pub fn needs_followup(inv: &Invocation, args: &[OsString]) -> bool {
    inv.container_id.is_some() && inv.command(args).is_some_and(|c| c == "delete")
}

/// Forks the follow-up child; the caller (the parent) goes on to exec runc at once.
pub fn spawn_followup(inv: &Invocation, settings: &Located) {
    let runtime_pid = std::process::id() as i32;
    // SAFETY: single-threaded process; the child only runs our own code and exits.
    if unsafe { libc::fork() } == 0 {
        detach();
        wait_for_exit(runtime_pid);
        followup(inv, settings);
        // SAFETY: leave without running the parent's atexit handlers or flushing its buffers.
        unsafe { libc::_exit(0) }
    }
}

/// Own session, stdio on /dev/null: the engine's pipes must not wait for us.
fn detach() {
    // SAFETY: plain syscalls on our own process and fds.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
}

/// Blocks until process `pid` (runc, once exec'd) has exited, up to a minute.
fn wait_for_exit(pid: i32) {
    // SAFETY: pidfd_open returns a new fd we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd >= 0 {
        // SAFETY: `fd` is ours; File closes it on drop.
        let _owned = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 60_000) };
        return;
    }
    // Kernels without pidfd_open: watch for the pid to go.
    for _ in 0..60_000 {
        // SAFETY: signal 0 only checks existence.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Holds or releases the GPUs of a container runc has deleted.
fn followup(inv: &Invocation, located: &Located) {
    let Ok(settings) = Settings::load(located) else { return };
    let store = Store::new(&settings.state_dir);
    if !store.path().exists() {
        return;
    }
    let Some(id) = inv.container_id.as_deref().and_then(|i| i.to_str()) else { return };
    let root = runc_root(inv);
    if std::path::Path::new(&root).join(id).join("state.json").exists() {
        return; // runc did not delete it
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let world = HostWorld { docker_root: settings.docker_root.clone() };
    let _ = store.locked(|state| {
        let changed = alloc::on_deleted(state, id, now).is_some();
        let dropped = alloc::reconcile(state, now, &world);
        Ok(((), changed || !dropped.is_empty()))
    });
}
