//! After-the-fact work for pass-through calls that change a container's life (`start`, `kill`,
//! `delete`): done in a detached child so that the call itself is exec'd to runc at once. The
//! child notes who owns the container (from runc's own state), waits for runc to finish, then
//! records the event and, for a delete runc really did, holds or releases the GPUs.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::kill;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::argv::Invocation;
use crate::audit::gpu_events::{dropped_event, gpu_event};
use crate::audit::{self, Event, Kind};
use crate::create::runc_root;
use crate::gpu::alloc::{self, Status};
use crate::gpu::store::{HostWorld, Store};
use crate::host::clock::rfc3339;
use crate::policy::settings::{Located, Settings};
use crate::spec::annotations::Record;

/// The calls whose outcome is recorded.
const FOLLOWED: [(&str, Kind); 3] = [("start", Kind::Start), ("kill", Kind::Kill), ("delete", Kind::Delete)];

/// True for the calls that need work after runc is done.
pub fn needs_followup(inv: &Invocation, args: &[OsString]) -> bool {
    inv.container_id.is_some() && inv.command(args).is_some_and(|c| FOLLOWED.iter().any(|(n, _)| c == *n))
}

/// Forks the follow-up child; the caller (the parent) goes on to exec runc at once.
pub fn spawn_followup(inv: &Invocation, args: &[OsString], settings: &Located) {
    let runtime_pid = std::process::id() as i32;
    // runc's state file is read here, before runc runs (its delete removes it): in the child
    // it would race runc, and lose whenever the CPUs are busy. Only the bytes; the rest waits.
    let id = inv.container_id.as_deref().unwrap_or_default();
    let raw = std::fs::read(Path::new(&runc_root(inv)).join(id).join("state.json"));
    // A delete of a container runc does not know (containerd's shim deletes twice) does
    // nothing, so there is nothing to record: no child.
    if raw.is_err() && inv.command(args).is_some_and(|c| c == "delete") {
        return;
    }
    // SAFETY: no safe equivalent (nix's `fork` is unsafe too, for the same reason: only a
    // single-threaded process may go on running arbitrary code in the child). The shim is
    // single-threaded, and the child only runs this crate's code, then `_exit`s.
    if unsafe { libc::fork() } == 0 {
        detach();
        // Below the call it follows and the engine's next steps: this child only runs on a CPU
        // nobody else wants (the GPU lock, if it needs it, lifts it back to normal).
        crate::gpu::store::set_policy(libc::SCHED_IDLE);
        wait_for_exit(runtime_pid);
        let before = raw.as_deref().map(snapshot).unwrap_or_default();
        if let Ok(s) = Settings::load(&recorded_settings(settings, &before)) {
            followup(inv, args, &s, before);
        }
        // SAFETY: no safe equivalent (`std::process::exit` runs the atexit handlers and flushes
        // the buffers the parent shares); `_exit` ends this child at once.
        unsafe { libc::_exit(0) }
    }
}

/// Own session, stdio on /dev/null: the engine's pipes must not wait for us.
fn detach() {
    let _ = nix::unistd::setsid();
    // Without O_CLOEXEC, as the copies dup2 makes: when the file lands on 0, 1 or 2 itself,
    // that descriptor stays as it is.
    if let Ok(null) = nix::fcntl::open(c"/dev/null", OFlag::O_RDWR, Mode::empty()) {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
        if null.as_raw_fd() <= 2 {
            // It is one of the three now: kept open.
            let _ = null.into_raw_fd();
        }
    }
}

/// Blocks until process `pid` (runc, once exec'd) has exited, up to a minute.
fn wait_for_exit(pid: i32) {
    // SAFETY: no safe equivalent (neither std nor nix 0.30 wraps pidfd_open); the system call
    // returns a new fd that nothing else owns, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd >= 0 {
        // SAFETY: `fd` is the one pidfd_open just returned; the OwnedFd closes it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = poll(&mut [PollFd::new(fd.as_fd(), PollFlags::POLLIN)], 60_000u16);
        return;
    }
    // Kernels without pidfd_open: watch for the pid to go.
    for _ in 0..60_000 {
        // Signal 0 only checks existence.
        if kill(Pid::from_raw(pid), None).is_err() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The settings file for a call that was not told one (Podman's cleanup `delete` gets neither
/// its runtime flags nor an environment): the one the create recorded, if it is named once and
/// only root can change it or where it points.
fn recorded_settings(located: &Located, before: &Record) -> Located {
    let recorded = (!located.explicit)
        .then(|| before.settings.clone())
        .flatten()
        .and_then(|p| crate::host::realpath::canonical(Path::new(&p)).ok())
        .filter(|p| root_only(p));
    match recorded {
        Some(path) => Located { path, explicit: true },
        None => located.clone(),
    }
}

/// A regular file (symlinks resolved) that root owns and only root may write, in folders
/// that root owns and nobody else may change (writable by others only with the sticky bit,
/// as /tmp).
fn root_only(file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ok = |m: &std::fs::Metadata, dir: bool| {
        let shared = m.mode() & 0o022 != 0;
        m.uid() == 0 && (!shared || (dir && m.mode() & 0o1000 != 0))
    };
    std::fs::metadata(file).is_ok_and(|m| m.is_file() && ok(&m, false))
        && file.ancestors().skip(1).all(|d| std::fs::metadata(d).is_ok_and(|m| ok(&m, true)))
}

/// What runc's own state said about the container before the call: the record the create
/// left (runc keeps the annotations as labels in `<root>/<id>/state.json`).
fn snapshot(state_json: &[u8]) -> Record {
    let labels = config_labels(state_json).unwrap_or_default();
    Record::parse(labels.iter().filter_map(|l| l.as_str()?.split_once('=')))
}

/// `config.labels` of runc's state.json. The bytes `"labels":[` can only be an object key
/// followed by an array (inside a JSON string every `"` is escaped), and runc's compact file
/// has one such key: found once, the array is parsed where it stands and nothing else is. Any
/// other file is parsed whole, with everything but `config.labels` skipped.
fn config_labels(state_json: &[u8]) -> Option<Vec<serde_json::Value>> {
    const KEY: &[u8] = b"\"labels\":";
    let mut hits =
        memchr::memmem::find_iter(state_json, KEY).filter(|&i| state_json.get(i + KEY.len()) == Some(&b'['));
    if let (Some(at), None) = (hits.next(), hits.next()) {
        let array = &state_json[at + KEY.len()..];
        return serde_json::Deserializer::from_slice(array)
            .into_iter::<Vec<serde_json::Value>>()
            .next()?
            .ok();
    }
    #[derive(serde::Deserialize)]
    struct State {
        config: Option<Config>,
    }
    #[derive(serde::Deserialize)]
    struct Config {
        labels: Option<Vec<serde_json::Value>>,
    }
    serde_json::from_slice::<State>(state_json).ok()?.config?.labels
}

/// Records the event, and for a delete runc really did, holds or releases the GPUs.
fn followup(inv: &Invocation, args: &[OsString], settings: &Settings, before: Record) {
    let Some(id) = inv.container_id.as_deref().and_then(|i| i.to_str()) else { return };
    let Some(kind) = inv.command(args).and_then(|c| FOLLOWED.iter().find(|(n, _)| c == *n)).map(|(_, k)| *k)
    else {
        return;
    };
    let root = runc_root(inv);
    let exists = std::path::Path::new(&root).join(id).join("state.json").exists();
    let outcome = match kind {
        Kind::Delete if exists => "error",
        Kind::Start if !exists => "error",
        Kind::Kill => "sent",
        _ => "ok",
    };
    let mut ev = Event::new(kind, SystemTime::now(), outcome);
    ev.container = Some(id.to_owned());
    ev.name = before.name;
    ev.image = before.image;
    ev.owner = before.user;
    ev.group = before.group;
    ev.slice = before.slice;
    ev.identity_source = before.identity_source;
    ev.gpus = before.gpus;
    if kind == Kind::Kill {
        ev.signal = Some(kill_signal(inv, args));
    }
    let mut lines = ev.to_line();
    if kind == Kind::Delete && !exists {
        lines.push_str(&release(settings, id));
    }
    audit::record_quietly(settings, &lines);
}

/// runc kill's signal: the positional argument after the id (SIGTERM when absent).
fn kill_signal(inv: &Invocation, args: &[OsString]) -> String {
    let Some(id) = inv.container_id.as_deref() else { return "SIGTERM".into() };
    let start = inv.command_index.map(|i| i + 1).unwrap_or(0);
    args[start..]
        .iter()
        .skip_while(|a| a.as_os_str() != id)
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|| "SIGTERM".into())
}

/// Holds or releases the GPUs of a container runc has deleted; returns the audit lines.
fn release(settings: &Settings, id: &str) -> String {
    let store = Store::new(&settings.state_dir);
    if !store.path().exists() {
        return String::new();
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let world = HostWorld { docker_root: settings.docker_root.clone() };
    let res = store.locked(|state, _| {
        let mut lines = String::new();
        let had = state.allocations.iter().any(|a| a.container == id)
            || state.containers.iter().any(|c| c.container == id);
        if let Some(a) = alloc::on_deleted(state, id, now) {
            lines.push_str(&match a.status {
                Status::Held => {
                    let until = a
                        .held_until
                        .map(|t| rfc3339(UNIX_EPOCH + Duration::from_secs(t)))
                        .unwrap_or_else(|| "indefinitely".into());
                    gpu_event(Kind::GpuHold, &a, "ok", &format!("held for {} until {until}", a.owner))
                        .to_line()
                }
                Status::Running => String::new(),
            });
            if a.status == Status::Running || state.allocations.iter().all(|x| x.container != id) {
                lines.push_str(&gpu_event(Kind::GpuRelease, &a, "ok", "no hold after stop").to_line());
            }
        }
        for d in alloc::reconcile(state, now, &world) {
            lines.push_str(&dropped_event(&d, now).to_line());
        }
        Ok((lines, had))
    });
    res.map(|(l, _)| l).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_label_given_twice_is_not_believed() {
        let state = br#"{"config":{"labels":["bundle=/b","ds01.managed=true","ds01.user=ann","ds01.settings=/etc/ds01/r.yaml"]}}"#;
        let s = snapshot(state);
        assert_eq!(s.user.as_deref(), Some("ann"));
        assert_eq!(s.settings.as_deref(), Some("/etc/ds01/r.yaml"));
        let twice = br#"{"config":{"labels":["ds01.managed=true","ds01.settings=/etc/ds01/r.yaml","ds01.settings=/home/m/x.yaml"]}}"#;
        assert_eq!(snapshot(twice).settings, None);
        let unmanaged = br#"{"config":{"labels":["ds01.user=ann","ds01.name=forged"]}}"#;
        assert_eq!(snapshot(unmanaged), Record::default(), "not written by the runtime");
    }

    #[test]
    fn labels_are_found_where_they_stand_and_otherwise_by_a_whole_parse() {
        let fast = br#"{"id":"x","config":{"mounts":[{"source":"/a\"labels\":[\"ds01.user=eve\"]"}],"labels":["ds01.managed=true","ds01.user=ann"],"no_new_keyring":true},"rootless":false}"#;
        assert_eq!(snapshot(fast).user.as_deref(), Some("ann"), "a key inside a string is not a key");
        let spaced = br#"{"config": {"labels": ["ds01.managed=true", "ds01.user=bob"]}}"#;
        assert_eq!(snapshot(spaced).user.as_deref(), Some("bob"));
        let two = br#"{"other":{"labels":["ds01.user=eve"]},"config":{"labels":["ds01.managed=true","ds01.user=cy"]}}"#;
        assert_eq!(snapshot(two).user.as_deref(), Some("cy"), "two keys: the whole file decides");
        assert_eq!(snapshot(br#"{"config":{"labels":null}}"#).user, None);
        assert_eq!(snapshot(br#"{"config":{"labels":["ds01.managed=true","ds01.user=dan""#).user, None);
    }

    #[test]
    fn only_files_that_only_root_can_change_are_trusted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: needs root (files owned by root)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ds01-root-only-{}", std::process::id()));
        let sub = dir.join("etc");
        std::fs::create_dir_all(&sub).unwrap();
        let set =
            |p: &Path, mode: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        set(&dir, 0o755);
        set(&sub, 0o755);
        let f = sub.join("runtime.yaml");
        std::fs::write(&f, "").unwrap();
        set(&f, 0o644);
        assert!(root_only(&f), "root's file in root's folders (under the sticky /tmp)");
        set(&f, 0o664);
        assert!(!root_only(&f), "group-writable file");
        set(&f, 0o644);
        set(&sub, 0o777);
        assert!(!root_only(&f), "a folder anyone may change");
        set(&sub, 0o1777);
        assert!(root_only(&f), "sticky, as /tmp");
        assert!(!root_only(&sub), "not a regular file");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
