//! The front door in front of a private dockerd, and real users to call it: dockerd's socket
//! made root-only, `ds01-front-door` listening on a socket of the `docker` group, and the
//! docker CLI run with a user's uid (the kernel names the caller, as on a real host).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::dockerd::{Dockerd, Opts};
use super::*;

/// A real user of the machine (created with useradd when missing; kept for later runs).
#[derive(Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
}

/// The `docker` group's gid, created when missing.
pub fn docker_gid() -> u32 {
    if group_gid("docker").is_none() {
        let ok = Command::new("groupadd").arg("docker").status().unwrap();
        assert!(ok.success(), "groupadd docker");
    }
    group_gid("docker").unwrap()
}

fn group_gid(name: &str) -> Option<u32> {
    let o = Command::new("getent").args(["group", name]).output().ok()?;
    String::from_utf8_lossy(&o.stdout).split(':').nth(2)?.trim().parse().ok()
}

/// The user `name`, created (no home of its own) when missing, with a fresh home under `dir`.
pub fn user(name: &str, dir: &Path) -> User {
    let id = |n: &str| -> Option<u32> {
        let o = Command::new("id").args(["-u", n]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id(name).is_none() {
        let o = Command::new("useradd").args(["-M", "-s", "/bin/sh", name]).output().unwrap();
        assert!(o.status.success() || id(name).is_some(), "useradd {name}: {}", stderr(&o));
    }
    let uid = id(name).unwrap();
    let home = dir.join(format!("home-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(docker_gid())).unwrap();
    User { name: name.to_owned(), uid, home }
}

/// A private dockerd behind the front door.
pub struct Door {
    pub d: Dockerd,
    /// The users' socket.
    pub sock: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Door {
    /// Starts dockerd (ds01 the default runtime), makes its socket root's alone, and starts the
    /// front door in front of it.
    pub fn start(tag: &str, settings_extra: &str) -> Door {
        Door::start_in(tag, settings_extra, None)
    }

    /// Like [`Door::start`], with the engine's directories under `base` (default /tmp; the
    /// benchmark uses tmpfs).
    pub fn start_in(tag: &str, settings_extra: &str, base: Option<&Path>) -> Door {
        let d =
            Dockerd::start(tag, Opts { default_runtime: true, settings_extra, base, ..Default::default() });
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d.sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(d.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        docker_gid();
        let sock = d.tmp.path().join("users.sock");
        let log = d.tmp.path().join("door.log");
        let mut door = Door { d, sock, log, child: None };
        door.start_door();
        door
    }

    fn start_door(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ds01-front-door"))
            .arg("--config")
            .arg(&self.d.settings)
            .arg("--listen")
            .arg(&self.sock)
            .arg("--upstream")
            .arg(&self.d.sock)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ds01-front-door");
        self.child = Some(child);
        let up = wait_for(20, || self.sock.exists().then_some(()));
        assert!(up.is_some(), "the front door did not listen: {}", self.door_log());
    }

    /// Stops the front door and starts it again (it sweeps its records when it starts).
    pub fn restart_door(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, 5);
        }
        let _ = std::fs::remove_file(&self.sock);
        self.start_door();
    }

    /// The docker CLI as `u`, on the users' socket.
    pub fn docker(&self, u: &User, args: &[&str]) -> Output {
        self.docker_in(u, args, None)
    }

    /// The docker CLI as `u`, with `stdin` written to it.
    pub fn docker_in(&self, u: &User, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = self.command(u, "docker");
        cmd.args(args);
        run_with(cmd, stdin)
    }

    /// A command as `u` (uid, the docker group, its home, DOCKER_HOST the users' socket).
    pub fn command(&self, u: &User, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(u.uid)
            .gid(docker_gid())
            .current_dir(&u.home)
            .env("HOME", &u.home)
            .env("USER", &u.name)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_BUILDKIT", "0");
        cmd
    }

    /// The docker CLI as root on dockerd's own socket.
    pub fn root_docker(&self, args: &[&str]) -> Output {
        self.d.docker(args)
    }

    /// The front door's log.
    pub fn door_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The front door's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The front door's process id (0 when it is not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// A KiB field of the front door's /proc/PID/status (`VmRSS`, `VmHWM`); 0 when absent.
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, 5);
        }
    }
}

fn run_with(mut cmd: Command, stdin: Option<&[u8]>) -> Output {
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(bytes) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}
