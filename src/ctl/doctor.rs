//! `ds01ctl doctor`: checks the installation and says what is wrong and how to fix it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::host::exec::resolve_runtime;
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
