//! What a container may do beyond an engine's defaults: capabilities, seccomp, AppArmor and
//! SELinux, host namespaces, host devices and device rules, sysctls, the masked and read-only
//! parts of /proc and /sys, writable sysfs and cgroup mounts, a negative OOM score. For an
//! owner who is not an admin named by a trusted source, each is refused in one line naming the
//! option and the setting that would allow it. Judged on what runc will apply: the parts the
//! pipeline carries unparsed are read from their bytes.

use std::borrow::Cow;

use serde_json::Value;

use super::seccomp;
use super::GuardInput;
use crate::create::modifiers::GpuGrant;
use crate::error::{Error, Refusal, Result, ADMIN_ONLY};
use crate::spec;

/// Docker's default capability set (moby oci/caps/defaults.go); Podman's and containerd's
/// defaults are within it.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Character devices runc gives every container (null, zero, full, random, urandom, tty,
/// console, ptmx, the pts and /dev/net/tun), as (major, minor; `None` for any).
const SAFE_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(1)),
    (5, Some(2)),
    (136, None),
    (10, Some(200)),
];

/// Paths every engine masks (the intersection of Docker's, Podman's and runc's defaults).
const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// Paths every engine makes read-only (or masks).
const READONLY: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Sysctls of the IPC namespace (runc's list), safe when the container has its own.
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// `CAP_SYS_ADMIN` from `SYS_ADMIN`, `cap_sys_admin` or `CAP_SYS_ADMIN`.
pub fn cap_name(c: &str) -> String {
    let up = c.trim().to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// A carried part: from the tree when it is there (a whole parse, `ds01ctl explain`), else
/// from its bytes.
fn part<'a>(spec: &'a Value, g: &'a GuardInput, path: &[&str]) -> Result<Option<Cow<'a, Value>>> {
    if let Some(v) = spec::get(spec, path).filter(|v| !v.is_null()) {
        return Ok(Some(Cow::Borrowed(v)));
    }
    match g.carried.iter().find(|(p, _)| *p == path) {
        Some((_, raw)) => {
            let v: Value = serde_json::from_str(raw)
                .map_err(|e| Error::failed(format!("config.json: {} cannot be read: {e}", path.join("."))))?;
            Ok((!v.is_null()).then_some(Cow::Owned(v)))
        }
        None => Ok(None),
    }
}

fn refused(what: String, why: &str) -> Error {
    Refusal::Privilege { what, plural: false, why: why.to_owned() }.into()
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Every check of this module, in order; the first refusal wins.
pub fn check(spec: &Value, g: &GuardInput, gpus: &GpuGrant, pod: bool) -> Result<()> {
    let caps = capabilities(spec, g)?;
    seccomp_profile(spec, g, &caps)?;
    security_labels(spec, g)?;
    let shared = namespaces(spec, g)?;
    devices(spec, g, gpus)?;
    sysctls(spec, &shared)?;
    mounts(spec)?;
    // A Kubernetes pod's masked paths and OOM score are the kubelet's (procMount, QoS class).
    if !pod {
        system_paths(spec, g)?;
        if let Some(adj) =
            spec::get(spec, &["process", "oomScoreAdj"]).and_then(Value::as_i64).filter(|a| *a < 0)
        {
            return Err(refused(
                format!("--oom-score-adj {adj}"),
                &format!("it would have the host's processes killed before this container's; {ADMIN_ONLY}"),
            ));
        }
    }
    Ok(())
}

/// Every capability in any set must be Docker's default or in `guard.cap_allow`. Gives the
/// container's capabilities.
fn capabilities(spec: &Value, g: &GuardInput) -> Result<Vec<String>> {
    let Some(c) = part(spec, g, &["process", "capabilities"])? else { return Ok(Vec::new()) };
    let mut all: Vec<String> = Vec::new();
    for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
        for cap in strings(c.get(set)) {
            let name = cap_name(cap);
            if !DEFAULT_CAPS.contains(&name.as_str()) && !g.cap_allow.contains(&name) {
                return Err(refused(
                    format!("capability {} (--cap-add)", name.trim_start_matches("CAP_")),
                    &format!(
                        "it is beyond Docker's default set and not in guard.cap_allow of the runtime's settings; {ADMIN_ONLY}"
                    ),
                ));
            }
            if !all.contains(&name) {
                all.push(name);
            }
        }
    }
    Ok(all)
}

fn seccomp_profile(spec: &Value, g: &GuardInput, caps: &[String]) -> Result<()> {
    let raw: Cow<str> = match g.carried.iter().find(|(p, _)| *p == ["linux", "seccomp"]) {
        Some((_, raw)) if spec::get(spec, &["linux", "seccomp"]).is_none_or(Value::is_null) => {
            Cow::Borrowed(raw)
        }
        _ => match spec::get(spec, &["linux", "seccomp"]) {
            Some(v) => Cow::Owned(v.to_string()),
            None => Cow::Borrowed("null"),
        },
    };
    if raw.trim() == "null" {
        // Docker and Podman give every container a profile unless told not to; runc's own
        // spec, ctr (both root's tools) and a CRI (the kubelet chooses) may have none.
        if !g.engine_sets_seccomp {
            return Ok(());
        }
        return Err(refused(
            "seccomp=unconfined (--security-opt)".into(),
            &format!("a container runs with an engine's default seccomp profile or one listed in guard.seccomp_profiles; {ADMIN_ONLY}"),
        ));
    }
    match seccomp::weaker(&raw, caps, &g.seccomp_extra) {
        None => Ok(()),
        Some(why) => Err(refused(
            "this seccomp profile (--security-opt seccomp=…)".into(),
            &format!("{why}; list it in guard.seccomp_profiles of the runtime's settings, or {ADMIN_ONLY}"),
        )),
    }
}

/// `profile` matches an allowed name, where a trailing `*` matches any rest.
fn listed(allowed: &[String], profile: &str) -> bool {
    allowed.iter().any(|a| match a.strip_suffix('*') {
        Some(prefix) => profile.starts_with(prefix),
        None => a == profile,
    })
}

fn security_labels(spec: &Value, g: &GuardInput) -> Result<()> {
    if let Some(allowed) = &g.apparmor {
        let profile = spec::get_str(spec, &["process", "apparmorProfile"]).unwrap_or("");
        if profile.is_empty() || profile == "unconfined" {
            return Err(refused(
                "apparmor=unconfined (--security-opt)".into(),
                &format!("AppArmor confines every container on this host; {ADMIN_ONLY}"),
            ));
        }
        if !listed(allowed, profile) {
            return Err(refused(
                format!("AppArmor profile {profile} (--security-opt apparmor=…)"),
                &format!("it is not in guard.apparmor_profiles of the runtime's settings; {ADMIN_ONLY}"),
            ));
        }
    }
    for path in [&["process", "selinuxLabel"][..], &["linux", "mountLabel"]] {
        let label = spec::get_str(spec, path).unwrap_or("");
        let Some(typ) = label.split(':').nth(2) else { continue };
        if !g.selinux_types.iter().any(|t| t == typ) {
            return Err(refused(
                format!("SELinux type {typ} (--security-opt label=…)"),
                &format!("it is not in guard.selinux_types of the runtime's settings; {ADMIN_ONLY}"),
            ));
        }
    }
    Ok(())
}

/// Host PID, IPC, UTS and mount namespaces are refused; gives the namespace types the
/// container does not share with the host.
fn namespaces(spec: &Value, g: &GuardInput) -> Result<Vec<String>> {
    let list = spec::get(spec, &["linux", "namespaces"]).and_then(Value::as_array);
    let own: Vec<String> = list
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let t = n.get("type")?.as_str()?;
            let joined = n.get("path").and_then(Value::as_str).is_some_and(|p| !p.is_empty());
            (!(joined && g.host_namespaces.iter().any(|h| h == t))).then(|| t.to_owned())
        })
        .collect();
    for (t, flag, why) in [
        ("pid", "--pid host", "it shows and signals every process on the host"),
        ("ipc", "--ipc host", "it shares the host's shared memory and semaphores"),
        ("uts", "--uts host", "it can change the host's name"),
        ("mount", "the host's mount namespace", "it would see and change the host's mounts"),
    ] {
        if !own.iter().any(|o| o == t) {
            return Err(refused(
                format!("{t} namespace of the host ({flag})"),
                &format!("{why}; {ADMIN_ONLY}"),
            ));
        }
    }
    if list.into_iter().flatten().any(|n| {
        n.get("type").and_then(Value::as_str) == Some("user")
            && n.get("path").and_then(Value::as_str).is_some_and(|p| !p.is_empty())
            && g.host_namespaces.iter().any(|h| h == "user")
    }) {
        return Err(refused("user namespace of the host (--userns host)".into(), ADMIN_ONLY));
    }
    Ok(own)
}

fn device_allowed(g: &GuardInput, gpus: &GpuGrant, major: i64, minor: Option<i64>) -> bool {
    let listed = |(ma, mi): &(i64, Option<i64>)| *ma == major && (mi.is_none() || *mi == minor);
    let granted = minor.is_some_and(|mi| {
        let mut nodes = gpus.devices.iter().flat_map(|d| d.nodes.iter());
        let control = if gpus.devices.is_empty() { &[][..] } else { &gpus.control[..] };
        nodes.any(|n| n.major == major && n.minor == mi)
            || control.iter().any(|n| n.major == major && n.minor == mi)
    });
    SAFE_DEVICES.iter().any(listed) || g.device_allow.iter().any(listed) || granted
}

/// Device nodes and cgroup rules that reach more than the safe set and the GPUs granted.
fn devices(spec: &Value, g: &GuardInput, gpus: &GpuGrant) -> Result<()> {
    let why = format!("only the GPUs the runtime grants and devices in guard.device_allow of the runtime's settings may be used; {ADMIN_ONLY}");
    for d in spec::get(spec, &["linux", "devices"]).and_then(Value::as_array).into_iter().flatten() {
        let path = d.get("path").and_then(Value::as_str).unwrap_or("?");
        let typ = d.get("type").and_then(Value::as_str).unwrap_or("c");
        let major = d.get("major").and_then(Value::as_i64).unwrap_or(-1);
        let minor = d.get("minor").and_then(Value::as_i64);
        let ok = match typ {
            "p" => true,
            "c" | "u" => device_allowed(g, gpus, major, minor),
            _ => false,
        };
        if !ok {
            let kind = if typ == "b" { "block device" } else { "device" };
            return Err(refused(format!("{kind} {path} (--device)"), &why));
        }
    }
    for r in
        spec::get(spec, &["linux", "resources", "devices"]).and_then(Value::as_array).into_iter().flatten()
    {
        let allow = r.get("allow").and_then(Value::as_bool) == Some(true);
        let access = r.get("access").and_then(Value::as_str).unwrap_or("rwm");
        if !allow || !access.contains(['r', 'w']) {
            continue;
        }
        let typ = r.get("type").and_then(Value::as_str).unwrap_or("a");
        let num = |k: &str| r.get(k).and_then(Value::as_i64).filter(|n| *n >= 0);
        let (major, minor) = (num("major"), num("minor"));
        let ok = typ == "c" && major.is_some_and(|ma| device_allowed(g, gpus, ma, minor));
        if !ok {
            let n = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_else(|| "*".into());
            return Err(refused(
                format!("device rule '{typ} {}:{} {access}' (--device-cgroup-rule)", n(major), n(minor)),
                &why,
            ));
        }
    }
    Ok(())
}

/// Sysctls of a namespace the container has its own of (IPC, network, UTS); nothing else.
fn sysctls(spec: &Value, own: &[String]) -> Result<()> {
    let has = |t: &str| own.iter().any(|o| o == t);
    for key in
        spec::get(spec, &["linux", "sysctl"]).and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k)
    {
        let ok = ((IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.")) && has("ipc"))
            || (key.starts_with("net.") && has("network"))
            || (matches!(key.as_str(), "kernel.hostname" | "kernel.domainname") && has("uts"));
        if !ok {
            return Err(refused(
                format!("sysctl {key} (--sysctl)"),
                &format!("only sysctls of the container's own IPC, network or UTS namespace may be set; {ADMIN_ONLY}"),
            ));
        }
    }
    Ok(())
}

/// The engines' masked and read-only paths stay so (`--security-opt systempaths=unconfined`).
fn system_paths(spec: &Value, g: &GuardInput) -> Result<()> {
    let masked = part(spec, g, &["linux", "maskedPaths"])?;
    let readonly = part(spec, g, &["linux", "readonlyPaths"])?;
    let masked = strings(masked.as_deref());
    let readonly = strings(readonly.as_deref());
    let missing = MASKED
        .iter()
        .find(|p| !masked.contains(p))
        .or_else(|| READONLY.iter().find(|p| !masked.contains(p) && !readonly.contains(p)));
    match missing {
        None => Ok(()),
        Some(p) => Err(refused(
            "systempaths=unconfined (--security-opt)".into(),
            &format!("{p} would be open to the container; {ADMIN_ONLY}"),
        )),
    }
}

/// sysfs and cgroup file systems are mounted read-only (a writable cgroup v1 tree is a known
/// way out to the host).
fn mounts(spec: &Value) -> Result<()> {
    for m in spec::get(spec, &["mounts"]).and_then(Value::as_array).into_iter().flatten() {
        let typ = m.get("type").and_then(Value::as_str).unwrap_or("");
        if !matches!(typ, "sysfs" | "cgroup" | "cgroup2") {
            continue;
        }
        if !strings(m.get("options")).contains(&"ro") {
            let dest = m.get("destination").and_then(Value::as_str).unwrap_or("?");
            return Err(refused(
                format!("a writable {typ} mount at {dest}"),
                &format!("it changes the host's kernel and cgroup settings; {ADMIN_ONLY}"),
            ));
        }
    }
    Ok(())
}
