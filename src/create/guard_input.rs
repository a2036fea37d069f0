//! The guard's input, gathered from the host before the lock: mount sources resolved, the
//! admin's seccomp profiles and the engine's own files read, the host's namespaces told apart;
//! and what a restore may bring.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::host::Host;
use super::modifiers::{cap_name, seccomp, GuardInput};
use super::opaque::Part;
use super::{Call, Restore};
use crate::error::{Error, Refusal, Result, ADMIN_ONLY};
use crate::owner::engine::Engine;
use crate::owner::identity::Owner;
use crate::policy::settings::Settings;
use crate::policy::Policy;

/// The container the guard will judge, as gathered so far.
pub struct Subject<'a> {
    /// The create call.
    pub call: &'a Call,
    /// The document as loaded.
    pub spec: &'a Value,
    /// The parts of it carried unparsed.
    pub carried: &'a [Part],
    /// The engine that made it.
    pub engine: &'a Engine,
    /// Its owner.
    pub owner: &'a Owner,
}

/// What the guard checks against, gathered from the settings, the engine and the host's files.
pub fn guard_input(host: &dyn Host, s: &Settings, policy: &Policy, c: &Subject) -> Result<GuardInput> {
    let Subject { call, spec, carried, engine, owner } = *c;
    let id = call.id.as_str();
    // Admin rights are looked up only for an owner named by a source trusted for them (none by
    // default), so an ordinary create asks no group database here.
    let trusted_admin = owner.source.is_some_and(|src| s.identity.trusted_for_admin.contains(&src))
        && owner.user.as_deref().is_some_and(|u| host.is_admin(policy, u));
    let mut seccomp_extra = seccomp::Extra::default();
    for f in &s.guard.seccomp_profiles {
        let text = host.read_to_string(f).map_err(|e| {
            Error::failed(format!("guard.seccomp_profiles: cannot read {}: {e}", f.display()))
        })?;
        seccomp_extra.add(&text).map_err(|e| {
            Error::failed(format!("guard.seccomp_profiles: {} is not a seccomp profile: {e}", f.display()))
        })?;
    }
    let device_allow = s
        .guard
        .device_allow
        .iter()
        .map(|d| {
            parse_device(d)
                .ok_or_else(|| Error::failed(format!("guard.device_allow: {d:?} is not `c MAJOR:MINOR`")))
        })
        .collect::<Result<Vec<_>>>()?;
    let allow = s
        .guard
        .bind_allow
        .iter()
        .filter_map(|root| match (&owner.user, root.contains("{user}")) {
            (_, false) => Some(PathBuf::from(root)),
            (Some(u), true) => Some(PathBuf::from(root.replace("{user}", u))),
            (None, true) => None,
        })
        .collect();
    let dir_of = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let mut protected: Vec<(PathBuf, &'static str)> =
        ["/etc", "/usr", "/boot", "/proc", "/sys", "/dev", "/bin", "/sbin", "/lib", "/lib64", "/root"]
            .iter()
            .map(|p| (PathBuf::from(p), "a system folder"))
            .collect();
    for p in Engine::state_dirs(&s.docker_root) {
        protected.push((p, "the container engine's own data"));
    }
    for p in [
        "/run/docker.sock",
        "/var/run/docker.sock",
        "/run/docker",
        "/var/run/docker",
        "/run/podman",
        "/run/runc",
    ] {
        protected.push((PathBuf::from(p), "a container engine's socket or state"));
    }
    for p in [s.front_door.listen.clone(), s.front_door.upstream.clone()] {
        protected.push((p, "a container engine's socket or state"));
    }
    for p in [dir_of(&s.policy), s.state_dir.clone(), dir_of(&s.audit_log), s.front_door.verified_dir.clone()]
    {
        protected.push((p, "ds01-runtime's own settings, state or log"));
    }
    let bundle = host.canonical(&call.bundle).ok();
    let own = engine.own_paths(&s.docker_root, id, bundle.as_deref());
    let resolved = crate::spec::get(spec, &["mounts"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("source").and_then(Value::as_str))
        .filter(|src| src.starts_with('/'))
        .filter_map(|src| host.canonical(Path::new(src)).ok().map(|p| (src.to_owned(), p)))
        .collect();
    let host_volumes = crate::spec::get(spec, &["mounts"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("source").and_then(Value::as_str))
        .filter_map(|src| host_volume(host, &s.docker_root, src).map(|what| (src.to_owned(), what)))
        .collect();
    Ok(GuardInput {
        host_volumes,
        privileged: engine.privileged(spec),
        trusted_admin,
        allow,
        protected,
        engine_own: own.paths,
        own_userdata: own.userdata,
        resolved,
        carried: carried.iter().map(|(p, raw)| (*p, raw.get().to_owned())).collect(),
        engine_sets_seccomp: engine.sets_seccomp(),
        cap_allow: s.guard.cap_allow.iter().map(|c| cap_name(c)).collect(),
        seccomp_extra,
        apparmor: host.apparmor_enabled().then(|| s.guard.apparmor_profiles.clone()),
        selinux_types: s.guard.selinux_types.clone(),
        host_namespaces: host_namespaces(host, spec),
        device_allow,
    })
}

/// What a Docker volume under `<docker_root>/volumes/<name>/_data` mounts, when its local
/// driver options (`opts.json`) make it a bind of a host path, a host device or a kernel file
/// system; network and tmpfs volumes pass.
fn host_volume(host: &dyn Host, docker_root: &Path, src: &str) -> Option<String> {
    let rest = Path::new(src).strip_prefix(docker_root.join("volumes")).ok()?;
    let name = rest.components().next()?.as_os_str().to_str()?;
    let text = host.read_to_string(&docker_root.join("volumes").join(name).join("opts.json")).ok()?;
    let opts: serde_json::Map<String, Value> = serde_json::from_str(&text).ok()?;
    let get = |k: &str| opts.get(k).and_then(Value::as_str).unwrap_or("").trim().to_owned();
    let (typ, device, o) = (get("MountType").to_ascii_lowercase(), get("MountDevice"), get("MountOpts"));
    const KERNEL: &[&str] = &[
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "devtmpfs",
        "debugfs",
        "securityfs",
        "tracefs",
        "bpf",
        "configfs",
        "mqueue",
        "hugetlbfs",
        "overlay",
        "fusectl",
        "pstore",
        "efivarfs",
    ];
    let bind = typ == "none" || o.split(',').any(|x| matches!(x.trim(), "bind" | "rbind"));
    if bind || device.starts_with('/') || KERNEL.contains(&typ.as_str()) {
        Some(format!(
            "{} {}",
            if typ.is_empty() { "device" } else { &typ },
            if device.is_empty() { "-" } else { &device }
        ))
    } else {
        None
    }
}

/// A `restore` by a non-admin may not bring its own CRIU image (it restores the credentials
/// and capabilities stored in it) or its own LSM profile: the image must be the engine's.
pub fn restore_refusal(host: &dyn Host, r: &Restore, docker_root: &Path) -> Option<Error> {
    if let Some(flag) = r.lsm_flag {
        return Some(
            Refusal::Restore {
                what: format!("--{flag}"),
                why: format!("{ADMIN_ONLY} choose the restored container's security labels"),
            }
            .into(),
        );
    }
    let real = host.canonical(&r.image).ok();
    let engines =
        real.as_deref().is_some_and(|p| Engine::state_dirs(docker_root).iter().any(|d| p.starts_with(d)));
    (!engines).then(|| {
        Refusal::Restore {
            what: format!("from {}", r.image.display()),
            why: format!(
                "a checkpoint image outside the engine's own folders restores whatever credentials it holds; {ADMIN_ONLY}"
            ),
        }
        .into()
    })
}

/// `c MAJOR:MINOR` or `c MAJOR:*`.
fn parse_device(d: &str) -> Option<(i64, Option<i64>)> {
    let (typ, nums) = d.trim().split_once(' ')?;
    let (major, minor) = nums.trim().split_once(':')?;
    if typ != "c" {
        return None;
    }
    let minor = if minor == "*" { None } else { Some(minor.parse().ok()?) };
    Some((major.parse().ok()?, minor))
}

/// The namespace types whose `path` in the spec is the host's own namespace (the one this
/// process, started by the engine on the host, is in): joining them is sharing the host's.
fn host_namespaces(host: &dyn Host, spec: &Value) -> Vec<String> {
    let ours = |t: &str| {
        let name = match t {
            "network" => "net",
            "mount" => "mnt",
            other => other,
        };
        host.file_id(Path::new(&format!("/proc/self/ns/{name}")))
    };
    crate::spec::get(spec, &["linux", "namespaces"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let t = n.get("type")?.as_str()?;
            let path = n.get("path")?.as_str().filter(|p| !p.is_empty())?;
            // A path that does not resolve here cannot be joined by runc either: it fails.
            let theirs = host.file_id(Path::new(path))?;
            (Some(theirs) == ours(t)).then(|| t.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_path_to_the_hosts_own_is_the_host() {
        let spec = serde_json::json!({"linux": {"namespaces": [
            {"type": "pid", "path": "/proc/self/ns/pid"},
            {"type": "ipc", "path": "/proc/1/ns/ipc"},
            {"type": "uts", "path": "/nonexistent/ns/uts"},
            {"type": "mount"}
        ]}});
        let host = super::super::host::System { nvml: &crate::gpu::nvml::Helper::beside_self() };
        let found = host_namespaces(&host, &spec);
        assert!(found.contains(&"pid".to_owned()), "{found:?}");
        assert!(!found.contains(&"uts".to_owned()) && !found.contains(&"mount".to_owned()), "{found:?}");
        assert!(parse_device("c 10:229") == Some((10, Some(229))));
        assert!(parse_device("c 136:*") == Some((136, None)));
        assert!(parse_device("b 7:0").is_none() && parse_device("c x:1").is_none());
    }
}
