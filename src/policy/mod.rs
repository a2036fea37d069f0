//! The DS01 policy: `resource-limits.yaml`, its `groups/<group>.members` files and
//! `user-overrides.yaml`, all in one directory, so that a DS01 host's files work unchanged.
//!
//! Resolution: defaults → the user's group → the user's override, field by field, each value
//! remembering where it came from. A key present with `null` means unlimited; an absent key
//! inherits. Keys this project does not use are accepted and ignored.

pub mod caps;
pub mod coverage;
pub mod quota;
pub mod settings;
pub mod values;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::naming;
pub use values::{Duration, GpuEq, Nullable, Percent, Size};

/// Per-container and per-user limits as written in `defaults`, a group or an override.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Limits {
    /// DS01's fair-share quota across the user's containers, in GPU-equivalents (a full GPU is
    /// 1.0). After [`Limits::normalize`], also what an older name of this layer said.
    pub max_gpu_equivalents: Nullable<GpuEq>,
    /// DS01's cap on GPU/MIG units in one container. After [`Limits::normalize`], also what an
    /// older name of this layer said.
    pub max_gpu_slots_per_container: Nullable<u32>,
    /// Older name of `max_gpu_equivalents` (DS01, one release).
    pub max_gpu_slots: Nullable<u32>,
    /// Older name of `max_gpu_equivalents`.
    pub max_gpus_per_user: Nullable<u32>,
    /// Legacy name of `max_gpu_equivalents` (MIG-equivalents).
    pub max_mig_instances: Nullable<u32>,
    /// Older name of `max_gpu_slots_per_container`.
    pub max_gpus_per_container: Nullable<u32>,
    /// Legacy name of `max_gpu_slots_per_container`.
    pub max_mig_per_container: Nullable<u32>,
    /// Whether a full (non-MIG) GPU may be requested.
    pub allow_full_gpu: Nullable<bool>,
    /// CPU cores per container.
    pub max_cpus: Nullable<f64>,
    /// RAM per container.
    pub memory: Nullable<Size>,
    /// RAM + swap per container.
    pub memory_swap: Nullable<Size>,
    /// Size of /dev/shm.
    pub shm_size: Nullable<Size>,
    /// Max processes per container.
    pub pids_limit: Nullable<i64>,
    /// Max simultaneous containers per user.
    pub max_containers_per_user: Nullable<u32>,
    /// How long GPUs stay held after a stop.
    #[serde(alias = "gpu_hold_after_stop_h")]
    pub gpu_hold_after_stop: Nullable<Duration>,
    /// Per-user aggregate (slice) limits.
    pub aggregate: Option<Aggregate>,
}

impl Limits {
    /// Reads the older GPU key names as DS01 does: in each layer, the first of
    /// `max_gpu_equivalents`, `max_gpu_slots`, `max_gpus_per_user`, `max_mig_instances` that is
    /// present, and the first of `max_gpu_slots_per_container`, `max_gpus_per_container`,
    /// `max_mig_per_container`.
    pub fn normalize(&mut self) {
        if self.max_gpu_equivalents.is_unset() {
            let old = [&self.max_gpu_slots, &self.max_gpus_per_user, &self.max_mig_instances];
            if let Some(n) = old.into_iter().find(|n| !n.is_unset()) {
                self.max_gpu_equivalents = match n {
                    Nullable::Value(v) => Nullable::Value(GpuEq::from(*v)),
                    Nullable::Unlimited => Nullable::Unlimited,
                    Nullable::Unset => Nullable::Unset,
                };
            }
        }
        if self.max_gpu_slots_per_container.is_unset() {
            let old = [&self.max_gpus_per_container, &self.max_mig_per_container];
            if let Some(n) = old.into_iter().find(|n| !n.is_unset()) {
                self.max_gpu_slots_per_container = n.clone();
            }
        }
    }
}

/// Per-user aggregate limits, enforced on `ds01-<group>-<user>.slice`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct Aggregate {
    /// CPU quota in systemd's percent form, 100% = 1 CPU.
    pub cpu_quota: Nullable<Percent>,
    /// Hard memory limit of the slice.
    pub memory_max: Nullable<Size>,
    /// Soft memory limit (throttling) of the slice.
    pub memory_high: Nullable<Size>,
    /// Max tasks in the slice.
    pub tasks_max: Nullable<u64>,
    /// Max GPU-equivalents across the user's containers (DS01 writes a float, `2.0`).
    pub gpu_limit: Nullable<GpuEq>,
}

/// A group: its limits plus an optional inline member list.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Group {
    /// Inline members (unioned with `groups/<name>.members`).
    pub members: Option<Vec<String>>,
    /// The group's limits.
    #[serde(flatten)]
    pub limits: Limits,
}

/// `access_control` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AccessControl {
    /// Users with admin rights.
    pub admin_users: Vec<String>,
    /// Unix group whose members have admin rights.
    pub admin_group: Option<String>,
}

/// `enforcement` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Enforcement {
    /// The slice's CPU, memory and task caps of `aggregate` are applied only when true, as
    /// DS01's generate-user-slice-limits.py does (absent: off). `aggregate.gpu_limit` holds
    /// either way, as in DS01's allocator.
    pub aggregate_limits: Option<bool>,
    /// The cgroup driver Docker must use (`systemd` or `cgroupfs`).
    pub cgroup_driver: Option<String>,
}

/// The parsed resource-limits.yaml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PolicyFile {
    /// Fallback values for everyone.
    #[serde(deserialize_with = "null_is_default")]
    pub defaults: Limits,
    /// Group of users listed in no group.
    pub default_group: Option<String>,
    /// Groups in file order.
    pub groups: indexmap::IndexMap<String, Option<Group>>,
    /// Inline per-user overrides.
    pub user_overrides: Option<BTreeMap<String, Option<Limits>>>,
    /// Admins.
    #[serde(deserialize_with = "null_is_default")]
    pub access_control: AccessControl,
    /// Enforcement switches.
    #[serde(deserialize_with = "null_is_default")]
    pub enforcement: Enforcement,
}

/// A section written with nothing under it (DS01's `gpu_allocation:`) is YAML null: the defaults.
fn null_is_default<'de, D: serde::Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Where a resolved value came from, for messages like "…, group student".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `defaults`.
    Defaults,
    /// `groups.<name>`.
    Group(String),
    /// `user_overrides.<user>` or user-overrides.yaml.
    Override(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Defaults => write!(f, "defaults"),
            Origin::Group(g) => write!(f, "group {g}"),
            Origin::Override(u) => write!(f, "user override {u}"),
        }
    }
}

/// A resolved value with its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved<T> {
    /// The value (Unset when no layer sets it).
    pub value: Nullable<T>,
    /// The layer that set it.
    pub origin: Origin,
}

/// The whole policy: the file, its member lists and its overrides.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// resource-limits.yaml.
    pub file: PolicyFile,
    /// Members of each group, file members ∪ inline members.
    pub members: BTreeMap<String, Vec<String>>,
    /// Overrides: inline, then user-overrides.yaml replacing whole entries.
    pub overrides: BTreeMap<String, Limits>,
    /// Where the file was read from.
    pub path: PathBuf,
}

impl Policy {
    /// Loads `path` plus `groups/*.members` and `user-overrides.yaml` beside it.
    pub fn load(path: &Path) -> Result<Policy> {
        Policy::load_with(path, None)
    }

    /// Like [`Policy::load`], keeping JSON copies of the YAML documents in `cache_dir` (the
    /// create path, which reads the policy on every call).
    pub fn load_cached(path: &Path, cache_dir: &Path) -> Result<Policy> {
        Policy::load_with(path, Some(cache_dir))
    }

    fn load_with(path: &Path, cache_dir: Option<&Path>) -> Result<Policy> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::failed(format!("cannot read policy file {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        let overrides_path = dir.join("user-overrides.yaml");
        let overrides_text = match std::fs::read_to_string(&overrides_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Error::failed(format!("cannot read {}: {e}", overrides_path.display())));
            }
        };
        let mut policy =
            Policy::parse_with(&text, path, overrides_text.as_deref(), &overrides_path, cache_dir)?;
        let groups: Vec<String> = policy.file.groups.keys().cloned().collect();
        for g in groups {
            let file = dir.join("groups").join(format!("{g}.members"));
            match std::fs::read_to_string(&file) {
                Ok(t) => policy.add_members(&g, parse_members(&t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::failed(format!("cannot read {}: {e}", file.display()))),
            }
        }
        Ok(policy)
    }

    /// Parses the policy text and the optional user-overrides text.
    pub fn parse(text: &str, path: &Path, overrides: Option<&str>, overrides_path: &Path) -> Result<Policy> {
        Policy::parse_with(text, path, overrides, overrides_path, None)
    }

    fn parse_with(
        text: &str,
        path: &Path,
        overrides: Option<&str>,
        overrides_path: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<Policy> {
        fn yaml<T: serde::de::DeserializeOwned>(
            t: &str,
            what: &str,
            p: &Path,
            c: Option<&Path>,
        ) -> Result<T> {
            match c {
                Some(dir) => crate::policy::yaml::from_str_cached(t, what, p, dir),
                None => crate::policy::yaml::from_str(t, what, p),
            }
        }
        let file: PolicyFile = if text.trim().is_empty() {
            PolicyFile::default()
        } else {
            yaml(text, "policy file", path, cache_dir)?
        };
        let mut file = file;
        file.defaults.normalize();
        for g in file.groups.values_mut().flatten() {
            g.limits.normalize();
        }
        let mut policy = Policy { path: path.to_path_buf(), ..Policy::default() };
        for (name, g) in &file.groups {
            naming::sanitize(name).map_err(|e| e.context(format_args!("policy file {}", path.display())))?;
            let inline = g.as_ref().and_then(|g| g.members.clone()).unwrap_or_default();
            policy.members.insert(name.clone(), inline);
        }
        for (user, l) in file.user_overrides.iter().flatten() {
            let mut l = l.clone().unwrap_or_default();
            l.normalize();
            policy.overrides.insert(user.clone(), l);
        }
        if let Some(t) = overrides.filter(|t| !t.trim().is_empty()) {
            let extra: BTreeMap<String, Option<Limits>> =
                yaml(t, "user overrides file", overrides_path, cache_dir)?;
            for (user, l) in extra {
                let mut l = l.unwrap_or_default();
                l.normalize();
                policy.overrides.insert(user, l);
            }
        }
        policy.file = file;
        Ok(policy)
    }

    fn add_members(&mut self, group: &str, more: Vec<String>) {
        let list = self.members.entry(group.to_owned()).or_default();
        for m in more {
            if !list.contains(&m) {
                list.push(m);
            }
        }
    }

    /// The user's group: the first group (in file order) listing them, by name or by sanitized
    /// name, else `default_group`, else `fallback`.
    pub fn group_of(&self, user: &str, fallback: &str) -> String {
        let safe = naming::sanitize(user).ok();
        for g in self.file.groups.keys() {
            if let Some(list) = self.members.get(g) {
                if list.iter().any(|m| m == user || Some(m.as_str()) == safe.as_deref()) {
                    return g.clone();
                }
            }
        }
        self.file.default_group.clone().unwrap_or_else(|| fallback.to_owned())
    }

    /// The user's override entry, by name or sanitized name.
    pub fn override_of(&self, user: &str) -> Option<(&String, &Limits)> {
        if let Some(e) = self.overrides.get_key_value(user) {
            return Some(e);
        }
        let safe = naming::sanitize(user).ok()?;
        self.overrides.get_key_value(&safe)
    }

    /// True when the user is named in `access_control.admin_users`, or is a member of the Unix
    /// group `access_control.admin_group` (/etc/group first, then the system's database).
    pub fn is_admin(&self, user: &str) -> bool {
        if self.is_listed_admin(user) {
            return true;
        }
        let Some(group) = &self.file.access_control.admin_group else { return false };
        crate::host::users::UserDb::system().is_member(user, group).unwrap_or(false)
    }

    /// True when the user is named in `access_control.admin_users` (no group lookup).
    pub fn is_listed_admin(&self, user: &str) -> bool {
        self.file.access_control.admin_users.iter().any(|u| u == user)
    }

    /// The layers that apply to a user in order: defaults, group, override.
    pub fn layers(&self, user: &str, group: &str) -> Vec<(Origin, &Limits)> {
        let mut v = vec![(Origin::Defaults, &self.file.defaults)];
        if let Some(Some(g)) = self.file.groups.get(group) {
            v.push((Origin::Group(group.to_owned()), &g.limits));
        }
        if let Some((name, l)) = self.override_of(user) {
            v.push((Origin::Override(name.clone()), l));
        }
        v
    }

    /// Resolves one field over the layers: the last layer that sets it wins.
    pub fn resolve<T: Clone>(
        &self,
        user: &str,
        group: &str,
        field: impl Fn(&Limits) -> &Nullable<T>,
    ) -> Resolved<T> {
        let mut out = Resolved { value: Nullable::Unset, origin: Origin::Defaults };
        for (origin, l) in self.layers(user, group) {
            let v = field(l);
            if !v.is_unset() {
                out = Resolved { value: v.clone(), origin };
            }
        }
        out
    }

    /// The aggregate section that applies: the override's, else the group's, else none.
    pub fn aggregate(&self, user: &str, group: &str) -> Option<(Origin, &Aggregate)> {
        self.layers(user, group)
            .into_iter()
            .filter(|(o, _)| *o != Origin::Defaults)
            .filter_map(|(o, l)| l.aggregate.as_ref().map(|a| (o, a)))
            .next_back()
    }

    /// The aggregate section whose CPU, memory and task caps the user's slice carries: only
    /// with `enforcement.aggregate_limits: true`, as DS01 applies them.
    pub fn slice_aggregate(&self, user: &str, group: &str) -> Option<(Origin, &Aggregate)> {
        self.aggregates_enforced().then(|| self.aggregate(user, group)).flatten()
    }

    /// Whether `enforcement.aggregate_limits` is true.
    pub fn aggregates_enforced(&self) -> bool {
        self.file.enforcement.aggregate_limits == Some(true)
    }

    /// Every user named in a members file, an inline list or an override, with their group.
    pub fn known_users(&self, fallback: &str) -> Vec<(String, String)> {
        let mut seen = std::collections::BTreeSet::new();
        for list in self.members.values() {
            seen.extend(list.iter().cloned());
        }
        seen.extend(self.overrides.keys().cloned());
        seen.into_iter()
            .map(|u| {
                let g = self.group_of(&u, fallback);
                (u, g)
            })
            .collect()
    }
}

/// One member a line; `#` starts a comment; blank lines are skipped.
pub fn parse_members(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests;

impl Aggregate {
    /// The slice's limits as the cgroup edge applies them.
    pub fn slice_limits(&self) -> crate::host::cgroups::SliceLimits {
        fn v<T: Clone>(n: &Nullable<T>) -> Option<T> {
            n.value().cloned()
        }
        crate::host::cgroups::SliceLimits {
            memory_max: v(&self.memory_max).map(|s| s.bytes),
            memory_high: v(&self.memory_high).map(|s| s.bytes),
            cpu_percent: v(&self.cpu_quota).map(|q| q.percent),
            tasks_max: v(&self.tasks_max),
        }
    }
}
