//! The runtime's own settings file (`/etc/ds01/runtime.yaml` by default).
//!
//! Located by `--ds01-config=PATH` (from daemon.json `runtimeArgs`), else the environment
//! variable `DS01_RUNTIME_CONFIG`, else the default path. Relative paths inside it are taken
//! relative to the file's own directory. Unknown keys are errors: a typo must not silently
//! weaken the policy.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::argv::Invocation;
use crate::error::{Error, Result};
pub use crate::gpu::settings::{GpuSettings, InventorySource};

/// Default location of the settings file.
pub const DEFAULT_PATH: &str = "/etc/ds01/runtime.yaml";
/// Environment variable naming the settings file.
pub const ENV_VAR: &str = "DS01_RUNTIME_CONFIG";
/// The key the pass-through path reads without parsing the whole file.
const RUNTIME_KEY: &str = "low_level_runtime";

/// Where the settings come from, and whether someone named that file explicitly.
#[derive(Debug, Clone)]
pub struct Located {
    /// The settings file.
    pub path: PathBuf,
    /// Named by flag or environment (then it must exist).
    pub explicit: bool,
}

/// Finds the settings file for this invocation.
pub fn locate(inv: &Invocation) -> Located {
    if let Some((p, _)) = &inv.ds01_config {
        return Located { path: PathBuf::from(p), explicit: true };
    }
    match std::env::var_os(ENV_VAR) {
        Some(p) if !p.is_empty() => Located { path: PathBuf::from(p), explicit: true },
        _ => Located { path: PathBuf::from(DEFAULT_PATH), explicit: false },
    }
}

/// Identity sources, in the order they are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The front door's record: the caller the kernel named (`owner::verified`). Always asked
    /// first, whatever `order` says, and it wins over every claimed source.
    Verified,
    /// OCI annotation `ds01.user` (Podman, Docker 24+, Kubernetes).
    Annotation,
    /// Docker label `ds01.user` (or the older `DS01_USER`, `aime.mlc.USER`).
    Label,
    /// DS01's container name convention `<name>._.<user>`.
    Name,
    /// The owner of a bind-mounted `/home/<user>` path.
    HomeMount,
    /// The pod's Kubernetes namespace, mapped to an owner by `kubernetes.namespaces`.
    Kubernetes,
}

impl Source {
    /// The name recorded in the `ds01.identity-source` annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Verified => "verified",
            Source::Annotation => "annotation",
            Source::Label => "label",
            Source::Name => "name",
            Source::HomeMount => "home_mount",
            Source::Kubernetes => "kubernetes",
        }
    }
}

/// What a create does when its audit line cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFailure {
    /// Allow the container, say so on stderr and in the journal.
    Allow,
    /// Refuse the container.
    Refuse,
}

/// What to do with a container nobody can be named owner of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unattributed {
    /// Refuse to create it.
    Refuse,
    /// Place it in ds01-unattributed.slice.
    Place,
}

/// How owners are found.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// Sources asked, first match wins (and a conflicting later one refuses).
    pub order: Vec<Source>,
    /// Policy for containers without an owner.
    pub unattributed: Unattributed,
    /// Sources trusted to grant admin rights (privileged containers); none by default.
    pub trusted_for_admin: Vec<Source>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            order: vec![
                Source::Annotation,
                Source::Label,
                Source::Name,
                Source::HomeMount,
                Source::Kubernetes,
            ],
            unattributed: Unattributed::Refuse,
            trusted_for_admin: Vec::new(),
        }
    }
}

/// The runtime's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The runtime every call is handed to: a name looked up on PATH, or an absolute path.
    pub low_level_runtime: String,
    /// The DS01 policy (resource-limits.yaml schema).
    pub policy: PathBuf,
    /// Where allocation and container state live.
    pub state_dir: PathBuf,
    /// The audit log (JSON lines).
    pub audit_log: PathBuf,
    /// When the audit log cannot be written on create: refuse the container, or allow it and
    /// say so on stderr and in the journal.
    pub audit_failure: AuditFailure,
    /// Also send events to the system journal when one is running.
    pub journal: bool,
    /// Docker's data root, where container metadata is read from.
    pub docker_root: PathBuf,
    /// The scope prefix in cgroup paths (`docker-<id>.scope`, `slice:docker:<id>`); when
    /// unset, the engine's own (see [`crate::owner::engine::Engine::scope_prefix`]).
    pub scope_prefix: Option<String>,
    /// Owner resolution.
    pub identity: IdentitySettings,
    /// GPU inventory and requests.
    pub gpu: GpuSettings,
    /// Host access guard.
    pub guard: GuardSettings,
    /// Build containers that name no owner.
    pub build: BuildSettings,
    /// Containers a Kubernetes node's CRI (containerd, CRI-O) creates.
    pub kubernetes: KubernetesSettings,
    /// The Docker socket front door (`ds01-front-door`).
    pub front_door: FrontDoorSettings,
    /// This file, when it was named by flag or environment (absolute).
    #[serde(skip)]
    pub named_file: Option<PathBuf>,
}

/// The Docker socket front door: where it listens, where dockerd is, what it lets callers see.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrontDoorSettings {
    /// The socket users reach, when not handed one by systemd (socket activation).
    pub listen: PathBuf,
    /// The group that may connect to `listen` (mode 0660).
    pub listen_group: String,
    /// dockerd's own socket, which only root may reach.
    pub upstream: PathBuf,
    /// Where the front door records verified owners, one root-owned file a container.
    pub verified_dir: PathBuf,
    /// Listing and inspecting containers stay open to every caller (DS01's docs tell users to
    /// `docker ps -a`); false limits both to the caller's own containers and admins.
    pub open_reads: bool,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// The largest create body (`POST /containers/create`), in bytes.
    pub max_create_body: usize,
    /// BuildKit builds by non-admins: Docker 20.10 runs their steps with runc directly, not
    /// through a registered runtime, so they would run outside the caller's slice.
    pub buildkit: BuildKit,
}

/// What the front door does with a non-admin's BuildKit build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildKit {
    /// Refuse it, saying to build with the classic builder (`DOCKER_BUILDKIT=0`).
    Refuse,
    /// Let it through (for an engine whose BuildKit runs steps through the runtime).
    Allow,
}

impl Default for FrontDoorSettings {
    fn default() -> Self {
        FrontDoorSettings {
            listen: "/var/run/docker.sock".into(),
            listen_group: "docker".into(),
            upstream: "/run/ds01/dockerd.sock".into(),
            verified_dir: "/var/lib/ds01/verified".into(),
            open_reads: true,
            max_header_bytes: 64 << 10,
            max_create_body: 1 << 20,
            buildkit: BuildKit::Refuse,
        }
    }
}

/// Where a Kubernetes container's cgroup goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KubePlacement {
    /// The kubelet's pod cgroup, as the kubelet set it: its accounting, QoS and eviction
    /// keep working, and the pod's own requests and limits apply.
    #[default]
    Pod,
    /// The owner's slice with the owner's limits, as for Docker.
    Slice,
}

/// The owner of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOwner {
    /// Login name.
    pub user: String,
    /// Policy group; when absent, the group the policy gives the user.
    #[serde(default)]
    pub group: Option<String>,
}

/// How Kubernetes containers are attributed and placed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSettings {
    /// Namespace -> owner (one namespace per user or team).
    pub namespaces: std::collections::BTreeMap<String, NamespaceOwner>,
    /// Where the cgroup goes (default: the kubelet's pod cgroup).
    pub placement: KubePlacement,
    /// Check the GPUs the kubelet assigned against the owner's local quota too. By default the
    /// scheduler has decided: the devices are enforced and recorded, not re-decided.
    pub local_quota: bool,
}

/// Host access guard: which host paths containers may bind-mount, and what a non-admin's
/// container may have beyond an engine's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardSettings {
    /// Roots a bind mount's source may be under; `{user}` is the owner's name.
    pub bind_allow: Vec<String>,
    /// Capabilities allowed beyond Docker's default set (`SYS_PTRACE` or `CAP_SYS_PTRACE`).
    pub cap_allow: Vec<String>,
    /// Seccomp profiles (OCI or Docker JSON files) a container's profile may be as permissive
    /// as, besides the engines' defaults.
    pub seccomp_profiles: Vec<PathBuf>,
    /// AppArmor profiles a container may run under; a trailing `*` matches any rest.
    pub apparmor_profiles: Vec<String>,
    /// SELinux process types a container may run as.
    pub selinux_types: Vec<String>,
    /// Character devices allowed beyond the safe set runc gives every container, as
    /// `c MAJOR:MINOR` or `c MAJOR:*` (e.g. `c 10:229` for /dev/fuse).
    pub device_allow: Vec<String>,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            bind_allow: vec!["/home/{user}".into(), "/data".into(), "/scratch".into()],
            cap_allow: vec!["SYS_PTRACE".into()],
            seccomp_profiles: Vec::new(),
            apparmor_profiles: vec!["docker-default".into(), "containers-default-*".into()],
            selinux_types: vec!["container_t".into(), "container_init_t".into()],
            device_allow: Vec::new(),
        }
    }
}

/// Build containers (Docker's classic builder) that name no owner: their slice's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuildSettings {
    /// CPUs per build container.
    pub max_cpus: Option<f64>,
    /// Memory per build container (`8g`).
    pub memory: Option<crate::policy::Size>,
    /// Processes per build container.
    pub pids_limit: Option<i64>,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            max_cpus: Some(4.0),
            memory: crate::policy::Size::parse("8g"),
            pids_limit: Some(4096),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            low_level_runtime: "runc".into(),
            policy: "/etc/ds01/resource-limits.yaml".into(),
            state_dir: "/run/ds01-runtime".into(),
            audit_log: "/var/log/ds01/events.jsonl".into(),
            audit_failure: AuditFailure::Allow,
            journal: true,
            docker_root: "/var/lib/docker".into(),
            scope_prefix: None,
            identity: IdentitySettings::default(),
            gpu: GpuSettings::default(),
            guard: GuardSettings::default(),
            build: BuildSettings::default(),
            kubernetes: KubernetesSettings::default(),
            front_door: FrontDoorSettings::default(),
            named_file: None,
        }
    }
}

impl Settings {
    /// Loads the settings; a missing default file gives the defaults, a missing named file or a
    /// bad one is an error naming the file, line and key.
    pub fn load(loc: &Located) -> Result<Settings> {
        let text = match std::fs::read_to_string(&loc.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !loc.explicit => {
                return Ok(Settings::default());
            }
            Err(e) => {
                return Err(Error::failed(format!("cannot read settings file {}: {e}", loc.path.display())));
            }
        };
        let mut s = Settings::parse(&text, &loc.path)?;
        if loc.explicit {
            s.named_file = std::path::absolute(&loc.path).ok();
        }
        Ok(s)
    }

    /// Parses settings text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Settings> {
        let bad = |e: &dyn std::fmt::Display| Error::failed(format!("settings file {}: {e}", path.display()));
        let base = path.parent().unwrap_or(Path::new("/"));
        let mut s: Settings = if text.trim().is_empty() {
            Settings::default()
        } else {
            // The JSON copy lives in the state directory, found from its one line.
            let state = fast_value(text, "state_dir").unwrap_or_else(|| "/run/ds01-runtime".into());
            crate::policy::yaml::from_str_cached(
                text,
                "settings file",
                path,
                &base.join(state).join("cache"),
            )?
        };
        if fast_runtime(text).as_deref().unwrap_or("runc") != s.low_level_runtime {
            return Err(bad(&"low_level_runtime must be written on one line at the top level, as `low_level_runtime: PATH`"));
        }
        if s.low_level_runtime.is_empty() {
            return Err(bad(&"low_level_runtime is empty"));
        }
        for p in [
            &mut s.policy,
            &mut s.state_dir,
            &mut s.audit_log,
            &mut s.docker_root,
            &mut s.gpu.dev_root,
            &mut s.gpu.proc_root,
            &mut s.front_door.listen,
            &mut s.front_door.upstream,
            &mut s.front_door.verified_dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(s)
    }
}

/// The low-level runtime for the pass-through path: read from the settings file's one
/// `low_level_runtime:` line without parsing the rest (create checks that both readings agree).
/// A missing or unreadable file gives `runc`.
pub fn low_level_runtime_fast(path: &Path) -> std::ffi::OsString {
    match std::fs::read(path) {
        Ok(bytes) => match std::str::from_utf8(&bytes).ok().and_then(fast_runtime) {
            Some(v) => v.into(),
            None => "runc".into(),
        },
        Err(_) => "runc".into(),
    }
}

fn fast_runtime(text: &str) -> Option<String> {
    fast_value(text, RUNTIME_KEY)
}

/// The value of a top-level `key: value` line (the last one), without parsing the YAML.
fn fast_value(text: &str, key: &str) -> Option<String> {
    let line =
        text.lines().rev().find(|l| l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with(':')))?;
    let v = line[key.len()..].trim_start().strip_prefix(':')?;
    let v = match v.find(" #") {
        Some(i) => &v[..i],
        None => v,
    };
    let v = v.trim();
    let v = crate::naming::unquote(v);
    (!v.is_empty() && !v.starts_with('#')).then(|| v.to_owned())
}

/// The settings file as shown to admins in messages.
pub fn shown(p: &Path) -> &OsStr {
    p.as_os_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Settings> {
        Settings::parse(t, Path::new("/etc/ds01/runtime.yaml"))
    }

    #[test]
    fn defaults_and_relative_paths() {
        let s = parse("").unwrap();
        assert_eq!(s.low_level_runtime, "runc");
        assert_eq!(s.identity.unattributed, Unattributed::Refuse);
        let s = parse("policy: limits.yaml\nstate_dir: /run/x\n").unwrap();
        assert_eq!(s.policy, PathBuf::from("/etc/ds01/limits.yaml"));
        assert_eq!(s.state_dir, PathBuf::from("/run/x"));
    }

    #[test]
    fn fast_and_full_readings_agree() {
        for (t, want) in [
            ("low_level_runtime: /usr/sbin/runc\n", "/usr/sbin/runc"),
            ("# c\nlow_level_runtime: \"/opt/runc\"  # the real one\n", "/opt/runc"),
            ("low_level_runtime : 'nvidia-container-runtime'\n", "nvidia-container-runtime"),
        ] {
            assert_eq!(fast_runtime(t).as_deref(), Some(want));
            assert_eq!(parse(t).unwrap().low_level_runtime, want);
        }
        assert_eq!(fast_runtime("# low_level_runtime: x\n"), None);
        let e = parse("low_level_runtime:\n  /usr/sbin/runc\n").unwrap_err();
        assert!(e.to_string().contains("on one line"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("identity:\n  unattributed: maybe\n").unwrap_err().to_string();
        assert!(e.contains("/etc/ds01/runtime.yaml"), "{e}");
        assert!(e.contains("identity.unattributed"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = parse("state_dri: /x\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `state_dri`") && e.contains("line 1"), "{e}");
        let e = parse("policy: [1\n").unwrap_err().to_string();
        assert!(e.contains("/etc/ds01/runtime.yaml") && e.contains("line"), "{e}");
    }

    #[test]
    fn missing_default_file_gives_defaults_but_missing_named_file_is_an_error() {
        let loc = Located { path: "/nonexistent/ds01.yaml".into(), explicit: false };
        assert!(Settings::load(&loc).is_ok());
        let loc = Located { path: "/nonexistent/ds01.yaml".into(), explicit: true };
        let e = Settings::load(&loc).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ds01.yaml"), "{e}");
    }
}
