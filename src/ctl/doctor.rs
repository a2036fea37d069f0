//! `ds01ctl doctor`: checks the installation and says what is wrong and how to fix it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ctl::socket_reach;
use crate::host::exec::resolve_runtime;
use crate::host::users::UserDb;
use crate::policy::settings::{Located, Settings};
use crate::policy::Policy;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok(String),
    /// Works, but worth a look.
    Warn(String, String),
    /// Broken: what, and how to fix it.
    Fail(String, String),
}

/// A named check and its verdict.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// Lines listed under it (the settings the runtime does not enforce).
    pub detail: String,
}

/// Where to look.
pub struct Inputs {
    /// The settings file.
    pub settings: Located,
    /// Docker's daemon.json.
    pub daemon_json: PathBuf,
    /// Whether systemd runs this host (decides the expected cgroup driver).
    pub systemd: bool,
    /// Where processes are listed (/proc), to find dockerd's sockets.
    pub proc_root: PathBuf,
    /// The user database, to say who is in a socket's group.
    pub users: UserDb,
}

fn ok(s: impl Into<String>) -> Verdict {
    Verdict::Ok(s.into())
}
fn fail(s: impl Into<String>, fix: impl Into<String>) -> Verdict {
    Verdict::Fail(s.into(), fix.into())
}
fn warn(s: impl Into<String>, fix: impl Into<String>) -> Verdict {
    Verdict::Warn(s.into(), fix.into())
}

/// Runs every check.
pub fn run(i: &Inputs) -> Vec<Check> {
    let mut out = Vec::new();
    let mut push = |name, verdict| out.push(Check { name, verdict, detail: String::new() });
    let settings = match Settings::load(&i.settings) {
        Ok(s) => {
            push("settings", ok(format!("{} parses", i.settings.path.display())));
            s
        }
        Err(e) => {
            push("settings", fail(e.to_string(), "fix the file named above (ds01ctl doctor again after)"));
            return out;
        }
    };
    push("low-level runtime", runtime_check(&settings));
    let policy = match Policy::load(&settings.policy) {
        Ok(p) => {
            push(
                "policy",
                ok(format!("{} parses ({} groups)", settings.policy.display(), p.file.groups.len())),
            );
            Some(p)
        }
        Err(e) => {
            push("policy", fail(e.to_string(), "fix the file named above"));
            None
        }
    };
    let coverage = policy.as_ref().map(|p| coverage_check(&settings.policy, p));
    let daemon = read_daemon(&i.daemon_json);
    push("daemon.json registration", registration_check(&i.daemon_json, &daemon));
    push("cgroup driver", driver_check(&daemon, policy.as_ref(), i.systemd));
    push(DOCKERD_SOCKET, dockerd_socket_check(&i.proc_root, &i.users));
    push(
        "NVML",
        match crate::gpu::nvml::query(settings.gpu.nvml_library.as_ref()) {
            Ok(g) => ok(format!("{} GPU(s) through {}", g.len(), settings.gpu.nvml_library)),
            Err(e) => warn(
                e.to_string(),
                "fine on a host without GPUs; else install the NVIDIA driver or set gpu.nvml_library",
            ),
        },
    );
    push("/dev/char links", char_links_check(&settings.gpu.dev_root));
    push("CDI", cdi_check(&settings.gpu.cdi_dirs));
    push("state directory", writable_dir(&settings.state_dir));
    push("audit log", writable_log(&settings.audit_log));
    out.extend(coverage);
    out
}

/// Every setting of the policy files the runtime does not enforce, with what does.
fn coverage_check(path: &Path, policy: &Policy) -> Check {
    let name = "policy settings";
    let mut list = match crate::policy::coverage::scan(path) {
        Ok(l) => l,
        Err(e) => {
            return Check {
                name,
                verdict: fail(e.to_string(), "fix the file named above"),
                detail: String::new(),
            }
        }
    };
    if !policy.aggregates_enforced()
        && policy.file.groups.values().flatten().any(|g| g.limits.aggregate.is_some())
    {
        list.push(crate::policy::coverage::Unenforced {
            key: "groups.*.aggregate (cpu_quota, memory_max, memory_high, tasks_max)".into(),
            value: "not applied".into(),
            by: "nothing until enforcement.aggregate_limits: true (DS01 reads it the same way); gpu_limit holds",
        });
    }
    if list.is_empty() {
        return Check {
            name,
            verdict: ok("every setting is enforced by this runtime"),
            detail: String::new(),
        };
    }
    let shown: Vec<&crate::policy::coverage::Unenforced> = list.iter().collect();
    Check {
        name,
        verdict: warn(
            format!(
                "{} setting(s) are not enforced by this runtime; listed below with what does",
                list.len()
            ),
            "keep DS01's cron jobs and tools for these, or remove them if nothing should",
        ),
        detail: crate::policy::coverage::render(&shown, "      "),
    }
}

/// The name of the check that no user reaches dockerd's own socket.
pub const DOCKERD_SOCKET: &str = "dockerd socket";

/// Fails when anyone but root can connect to a unix socket dockerd listens on: that caller
/// would reach Docker past the front door (and past any check of who they are).
pub fn dockerd_socket_check(proc_root: &Path, users: &UserDb) -> Verdict {
    let found = match socket_reach::listening(proc_root, "dockerd") {
        Ok(f) => f,
        Err(e) => return warn(e.to_string(), "run ds01ctl doctor as root on the Docker host"),
    };
    if found.processes == 0 {
        return warn(
            "no dockerd is running: its sockets were not checked",
            "run ds01ctl doctor while Docker runs",
        );
    }
    if found.paths.is_empty() && !found.unreadable.is_empty() {
        return warn(
            format!("cannot read dockerd's open files ({})", found.unreadable.join("; ")),
            "run ds01ctl doctor as root",
        );
    }
    let (mut reached, mut closed, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for p in &found.paths {
        match socket_reach::reachers(p, users) {
            Ok(r) if r.is_empty() => closed.push(p.display().to_string()),
            Ok(r) => {
                let who: Vec<String> = r.iter().map(ToString::to_string).collect();
                reached.push(format!(
                    "dockerd's socket {} can be reached by {}",
                    p.display(),
                    who.join(" and ")
                ));
            }
            // Unlinked since it was bound: nobody reaches it by that path.
            Err(_) if std::fs::symlink_metadata(p).is_err() => {}
            Err(e) => unknown.push(e.to_string()),
        }
    }
    if !reached.is_empty() {
        return fail(
            format!("{}: users bypass the front door", reached.join("; ")),
            "ds01ctl install --front-door, or make the socket root-only",
        );
    }
    if !unknown.is_empty() {
        return warn(unknown.join("; "), "run ds01ctl doctor as root");
    }
    if found.paths.is_empty() {
        return ok("dockerd listens on no unix socket");
    }
    if closed.is_empty() {
        return ok("dockerd's unix sockets have been unlinked: nobody reaches them by path");
    }
    ok(format!("only root can reach dockerd's socket(s): {}", closed.join(", ")))
}

fn cdi_check(dirs: &[std::path::PathBuf]) -> Verdict {
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    match crate::gpu::cdi::Registry::load(dirs) {
        Ok(r) if r.is_empty() => ok(format!(
            "no NVIDIA CDI spec in {}: GPU containers need NVIDIA's runtime or hook for the driver's files",
            shown.join(", ")
        )),
        Ok(r) => ok(format!("NVIDIA CDI spec with {} device(s) in {}", r.len(), shown.join(", "))),
        Err(e) => fail(e.to_string(), "regenerate it: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"),
    }
}

fn runtime_check(s: &Settings) -> Verdict {
    let path = match resolve_runtime(s.low_level_runtime.as_ref(), std::env::var_os("PATH").as_deref()) {
        Ok(p) => p,
        Err(e) => {
            return fail(e.to_string(), "apt-get install runc, or set low_level_runtime to the real runc")
        }
    };
    match std::process::Command::new(&path).arg("--version").output() {
        Ok(o) if o.status.success() => {
            let first = String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_owned();
            ok(format!("{} ({first})", path.display()))
        }
        Ok(o) => fail(format!("{} --version exited {}", path.display(), o.status), "reinstall runc"),
        Err(e) => fail(format!("cannot run {}: {e}", path.display()), "reinstall runc"),
    }
}

/// daemon.json: Ok(None) when absent, Err(msg) when it does not parse.
fn read_daemon(path: &Path) -> std::result::Result<Option<Value>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            serde_json::from_str(&t).map(Some).map_err(|e| format!("{} does not parse: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn registration_check(path: &Path, daemon: &std::result::Result<Option<Value>, String>) -> Verdict {
    let d = match daemon {
        Err(e) => return fail(e.clone(), "fix the JSON (dockerd will not start with it either)"),
        Ok(None) => return fail(format!("{} does not exist", path.display()), "ds01ctl install --default"),
        Ok(Some(d)) => d,
    };
    let ours = d.get("runtimes").and_then(Value::as_object).and_then(|r| {
        r.iter()
            .find(|(_, v)| v.get("path").and_then(Value::as_str).is_some_and(|p| p.ends_with("ds01-runtime")))
    });
    let Some((name, _)) = ours else {
        return fail(
            format!("no runtime in {} runs ds01-runtime", path.display()),
            "ds01ctl install --default",
        );
    };
    match d.get("default-runtime").and_then(Value::as_str) {
        Some(n) if n == name => ok(format!("runtime \"{name}\" registered and default")),
        other => warn(
            format!("runtime \"{name}\" registered, but default-runtime is {}", other.unwrap_or("runc")),
            "ds01ctl install --default (else only --runtime ds01 goes through it)",
        ),
    }
}

fn driver_check(
    daemon: &std::result::Result<Option<Value>, String>,
    policy: Option<&Policy>,
    systemd: bool,
) -> Verdict {
    let docker = daemon
        .as_ref()
        .ok()
        .and_then(|d| d.as_ref())
        .and_then(|d| d.get("exec-opts"))
        .and_then(Value::as_array)
        .and_then(|o| o.iter().filter_map(Value::as_str).find_map(|x| x.strip_prefix("native.cgroupdriver=")))
        .map(str::to_owned)
        .unwrap_or_else(|| "cgroupfs".into());
    let wanted = policy.and_then(|p| p.file.enforcement.cgroup_driver.clone());
    if docker == "systemd" && !systemd {
        return fail(
            "daemon.json asks for the systemd cgroup driver but systemd is not running",
            "use native.cgroupdriver=cgroupfs",
        );
    }
    match wanted {
        Some(w) if w != docker => fail(
            format!(
                "Docker uses the {docker} cgroup driver, the policy's enforcement.cgroup_driver says {w}"
            ),
            format!("set \"exec-opts\": [\"native.cgroupdriver={w}\"] in daemon.json, or change the policy"),
        ),
        _ => ok(format!(
            "Docker uses {docker}{}",
            if systemd { " (systemd running)" } else { " (no systemd)" }
        )),
    }
}

fn char_links_check(dev_root: &Path) -> Verdict {
    let mut missing = Vec::new();
    let mut seen = 0;
    for rel in ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]
        .iter()
        .map(|s| s.to_string())
        .chain((0..64).map(|i| format!("nvidia{i}")))
    {
        if let Some(n) = crate::gpu::inventory::node(dev_root, &rel) {
            seen += 1;
            let link = dev_root.join("char").join(format!("{}:{}", n.major, n.minor));
            if !link.exists() {
                missing.push(format!("{} ({}:{})", rel, n.major, n.minor));
            }
        }
    }
    if seen == 0 {
        ok("no NVIDIA device nodes on this host")
    } else if missing.is_empty() {
        ok(format!("{seen} NVIDIA nodes have their /dev/char links"))
    } else {
        fail(
            format!("no /dev/char link for {}", missing.join(", ")),
            "runc's systemd driver needs them: nvidia-ctk system create-dev-char-symlinks --create-all",
        )
    }
}

fn writable_dir(dir: &Path) -> Verdict {
    if std::fs::create_dir_all(dir).is_err() {
        return fail(format!("cannot create {}", dir.display()), "create it, owned by root");
    }
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            ok(format!("{} writable", dir.display()))
        }
        Err(e) => fail(format!("{} is not writable: {e}", dir.display()), "make it writable for root"),
    }
}

fn writable_log(path: &Path) -> Verdict {
    match crate::audit::append(path, "") {
        Ok(()) => ok(format!("{} writable", path.display())),
        Err(e) => fail(e.to_string(), "make the log's directory writable for root, or set audit_log"),
    }
}

/// Human-readable report; the bool says whether everything essential is fine.
pub fn report(checks: &[Check]) -> (String, bool) {
    let mut s = String::new();
    let mut good = true;
    for c in checks {
        match &c.verdict {
            Verdict::Ok(m) => s.push_str(&format!("ok    {:<26} {m}\n", c.name)),
            Verdict::Warn(m, fix) => {
                s.push_str(&format!("warn  {:<26} {m}\n      {:<26} fix: {fix}\n", c.name, ""))
            }
            Verdict::Fail(m, fix) => {
                good = false;
                s.push_str(&format!("FAIL  {:<26} {m}\n      {:<26} fix: {fix}\n", c.name, ""));
            }
        }
    }
    for c in checks.iter().filter(|c| !c.detail.is_empty()) {
        s.push_str(&format!("\n{}:\n{}", c.name, c.detail));
    }
    (s, good)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_dockerd_socket_users_reach_fails_the_check() {
        let d = std::env::temp_dir().join(format!("ds01-doctor-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("proc/77/fd")).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(d.join("group"), "root:x:0:\n").unwrap();
        let users = UserDb { passwd: d.join("passwd"), group: d.join("group"), getent: None };
        let proc_root = d.join("proc");
        let check = || dockerd_socket_check(&proc_root, &users);
        assert!(matches!(check(), Verdict::Warn(m, _) if m.starts_with("no dockerd is running")));

        let sock = d.join("api.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::fs::write(proc_root.join("77/comm"), "dockerd\n").unwrap();
        std::os::unix::fs::symlink("socket:[31337]", proc_root.join("77/fd/5")).unwrap();
        std::fs::create_dir_all(proc_root.join("77/net")).unwrap();
        std::fs::write(
            proc_root.join("77/net/unix"),
            format!(
                "Num       RefCount Protocol Flags    Type St Inode Path\n\
                 0000000000000000: 00000002 00000000 00010000 0001 01 31337 {}\n",
                sock.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let Verdict::Fail(m, fix) = check() else { panic!("{:?}", check()) };
        // Run by a user other than root, the socket is also its owner's to reach.
        assert!(m.starts_with(&format!("dockerd's socket {} can be reached by ", sock.display())), "{m}");
        assert!(m.ends_with("every user: users bypass the front door"), "{m}");
        assert_eq!(fix, "ds01ctl install --front-door, or make the socket root-only");
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(
                check(),
                Verdict::Ok(format!("only root can reach dockerd's socket(s): {}", sock.display()))
            );
        }
        std::fs::remove_file(&sock).unwrap();
        assert!(matches!(check(), Verdict::Ok(m) if m.contains("unlinked")));
        let _ = std::fs::remove_dir_all(&d);
    }
}
