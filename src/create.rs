//! The create pipeline: load bundle, resolve owner, decide GPUs, run the modifiers, write
//! atomically; the caller then execs the low-level runtime. A create that asks for GPUs runs
//! under the allocation lock from decision to bundle write, and records its allocation only
//! when the bundle was written: a refusal or failure at any step leaks nothing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::argv::Invocation;
use crate::audit::{self, Event, Kind as AuditKind};
use crate::bundle::Bundle;
use crate::cgroups::{self, SliceLimits, Tree};
use crate::docker::{self, DockerMeta};
use crate::error::{Error, Kind as ErrorKind, Result};
use crate::gpu::alloc::{self, Quota, Unit, Who};
use crate::gpu::cdi;
use crate::gpu::inventory::{self, Node};
use crate::gpu::nvml::Querier;
use crate::gpu::request::{self, Request};
use crate::gpu::store::{HostWorld, Store};
use crate::gpu::Gpu;
use crate::identity::{self, Clues, Owner};
use crate::kubernetes;
use crate::modifiers::{
    self, Cap, ContainerCaps, Context, Engine, GpuGrant, Granted, GuardInput, Note, DOCKER_DEFAULT_SHM,
};
use crate::naming::Placement;
use crate::policy::{Nullable, Policy};
use crate::settings::{GpuSettings, KubePlacement, Settings};
use crate::users;

/// The outcome of running the pipeline over a spec, before anything is written.
#[derive(Debug)]
pub struct Plan {
    /// The patched document.
    pub spec: Value,
    /// Whose container it is.
    pub owner: Owner,
    /// What changed and why.
    pub notes: Vec<Note>,
    /// UUIDs of the GPUs allocated.
    pub gpus: Vec<String>,
}

/// Everything the pipeline reads about one create.
pub struct CreateInput<'a> {
    /// Settings.
    pub settings: &'a Settings,
    /// Policy.
    pub policy: &'a Policy,
    /// The bundle's config.json as loaded.
    pub original: &'a Value,
    /// The bundle directory.
    pub bundle_dir: &'a Path,
    /// Container id.
    pub container_id: &'a str,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// Docker's metadata, if Docker created it.
    pub docker: Option<&'a DockerMeta>,
}

/// Decides GPUs for an owner; returns the units granted (empty for none).
pub type Allocator<'x> = dyn FnMut(&Owner, &Request, &Quota) -> Result<Vec<Unit>> + 'x;

/// Runs identity resolution, the GPU decision and every modifier over a copy of the spec.
pub fn plan(r: &CreateInput, inventory: &[Gpu], allocate: &mut Allocator) -> Result<Plan> {
    let mut seen = Seen::default();
    match plan_seen(r, inventory, allocate, &mut seen, false) {
        Err(_) if seen.admin_would_pass(r.policy) => {
            plan_seen(r, inventory, allocate, &mut Seen::default(), true)
        }
        other => other,
    }
}

/// What a plan learned before it finished or failed.
#[derive(Debug, Default)]
pub struct Seen {
    /// The owner, as soon as it is known (for the audit record of a refusal that comes after it).
    pub owner: Option<Owner>,
    /// The GPU request was refused under the owner's quota. Admins have none, so the caller
    /// looks the owner up (outside any lock: it may ask LDAP) and plans again as admin.
    pub gpus_refused: bool,
}

impl Seen {
    /// True when the GPU request was refused and the owner is an admin.
    pub fn admin_would_pass(&self, policy: &Policy) -> bool {
        self.gpus_refused
            && self.owner.as_ref().and_then(|o| o.user.as_deref()).is_some_and(|u| policy.is_admin(u))
    }
}

/// Like [`plan`], one pass: GPUs are decided under the admin's quota when `admin`, else under
/// the owner's own (no admin lookup); what was learned is left in `seen`.
pub fn plan_seen(
    r: &CreateInput,
    inventory: &[Gpu],
    allocate: &mut Allocator,
    seen: &mut Seen,
    admin: bool,
) -> Result<Plan> {
    let d = decide(r, inventory, allocate, seen, admin)?;
    let mut spec = r.original.clone();
    let notes = d.apply(&mut spec)?;
    Ok(d.into_plan(spec, notes))
}

/// Everything the modifiers are given, decided from the spec as loaded. It owns what it holds,
/// so that the create can then patch that same document in place instead of a copy.
pub struct Decision {
    owner: Owner,
    units: Vec<Unit>,
    grant: GpuGrant,
    guard: GuardInput,
    limits: ContainerCaps,
    container_id: String,
    systemd_cgroup: bool,
    scope_prefix: String,
    engine_name: Option<String>,
    engine_image: Option<String>,
    settings_file: Option<PathBuf>,
}

impl Decision {
    /// Runs the modifiers over `spec`; gives what changed and why.
    pub fn apply(&self, spec: &mut Value) -> Result<Vec<Note>> {
        let ctx = Context {
            container_id: &self.container_id,
            owner: &self.owner,
            systemd_cgroup: self.systemd_cgroup,
            scope_prefix: &self.scope_prefix,
            gpus: &self.grant,
            guard: &self.guard,
            limits: &self.limits,
            engine: Engine { name: self.engine_name.as_deref(), image: self.engine_image.as_deref() },
            settings_file: self.settings_file.as_deref(),
        };
        modifiers::apply_all(&modifiers::pipeline(), spec, &ctx)
    }

    /// The plan: `spec` as [`Decision::apply`] left it.
    pub fn into_plan(self, spec: Value, notes: Vec<Note>) -> Plan {
        Plan { spec, owner: self.owner, notes, gpus: self.units.into_iter().map(|u| u.uuid).collect() }
    }
}

/// Identity resolution and the GPU decision: everything before the modifiers.
pub fn decide(
    r: &CreateInput,
    inventory: &[Gpu],
    allocate: &mut Allocator,
    seen: &mut Seen,
    admin: bool,
) -> Result<Decision> {
    let s = r.settings;
    let clues =
        Clues { spec: r.original, engine: r.docker.map(|d| &d.engine), kubernetes: Some(&s.kubernetes) };
    let mut owner = identity::resolve(&s.identity, r.policy, &clues, &users::to_login)?;
    let pod = kubernetes::of(r.original);
    if pod.is_some() && s.kubernetes.placement == KubePlacement::Pod {
        owner.placement = Placement::engine_cgroup();
    }
    seen.owner = Some(owner.clone());
    let (req, source) = gpu_request(r.original, r.docker, s)?;
    // On a Kubernetes node the scheduler has decided: the kubelet's devices are enforced and
    // recorded, not held against the local quota (unless the settings ask for that).
    let scheduled = pod.is_some() && !s.kubernetes.local_quota;
    let units = if req == Request::None {
        Vec::new()
    } else {
        if owner.user.is_none() {
            return Err(Error::refused(format!("GPUs requested ({source}) by a container with no owner")));
        }
        let q = if scheduled { Quota::scheduler() } else { quota_as(r.policy, &owner, admin) };
        allocate(&owner, &req, &q).inspect_err(|e| {
            seen.gpus_refused = e.kind == ErrorKind::Refused && !admin;
        })?
    };
    let grant = grant(&s.gpu, inventory, &units, toolkit_chained(r))?;
    let guard = guard_input(r, &owner);
    let limits = caps(r.policy, &owner, r.docker);
    let scope_prefix = match s.scope_prefix.as_deref() {
        Some(p) => p.to_owned(),
        None => crate::naming::engine_scope_prefix(r.original, r.container_id, r.docker.is_some()).to_owned(),
    };
    Ok(Decision {
        owner,
        units,
        grant,
        guard,
        limits,
        container_id: r.container_id.to_owned(),
        systemd_cgroup: r.systemd_cgroup,
        scope_prefix,
        engine_name: r.docker.and_then(|d| d.engine.name.clone()),
        engine_image: r.docker.and_then(|d| d.engine.image.clone()),
        settings_file: s.named_file.clone(),
    })
}

/// What GPUs the container asks for, and who asked: for a Kubernetes container only what the
/// kubelet assigned (nothing for the pod's sandbox), otherwise [`request::find`].
pub fn gpu_request(
    spec: &Value,
    docker: Option<&DockerMeta>,
    settings: &Settings,
) -> Result<(Request, &'static str)> {
    match kubernetes::of(spec) {
        Some(p) if p.sandbox => Ok((Request::None, "none (Kubernetes sandbox)")),
        Some(_) => Ok((kubernetes::assigned_gpus(spec), "the kubelet")),
        None => request::find(spec, docker, settings.gpu.env_is_request),
    }
}

/// True when the container counts towards its owner's container cap: a Kubernetes container
/// does only under `kubernetes.local_quota`, and a pod's sandbox never.
fn counts_locally(spec: &Value, settings: &Settings) -> bool {
    match kubernetes::of(spec) {
        Some(p) => settings.kubernetes.local_quota && !p.sandbox,
        None => true,
    }
}

/// The owner's GPU limits; admins have none. Missing keys take DS01's own defaults (1 per
/// container, 1 per user, no full GPUs, no hold).
pub fn quota(policy: &Policy, owner: &Owner) -> Quota {
    let admin = owner.user.as_deref().is_some_and(|u| policy.is_admin(u));
    quota_as(policy, owner, admin)
}

/// The owner's GPU limits, with admin status already known.
pub fn quota_as(policy: &Policy, owner: &Owner, admin: bool) -> Quota {
    let (Some(user), Some(group)) = (owner.user.as_deref(), owner.group.as_deref()) else {
        return Quota {
            per_container: Some((0, "no owner".into())),
            per_user: Some(0),
            allow_full: false,
            hold_secs: Some(0),
        };
    };
    if admin {
        return Quota {
            per_container: None,
            per_user: None,
            allow_full: true,
            hold_secs: hold(policy, user, group),
        };
    }
    let pc = policy.resolve(user, group, |l| &l.max_mig_per_container);
    let per_container = match pc.value {
        Nullable::Value(n) => Some((n, pc.origin.to_string())),
        Nullable::Unlimited => None,
        Nullable::Unset => Some((1, "DS01's default".into())),
    };
    let total = match policy.resolve(user, group, |l| &l.max_mig_instances).value {
        Nullable::Value(n) => Some(n),
        Nullable::Unlimited => None,
        Nullable::Unset => Some(1),
    };
    let agg = policy.aggregate(user, group).and_then(|(_, a)| a.gpu_limit.value().copied());
    let per_user = match (total, agg) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let allow_full = match policy.resolve(user, group, |l| &l.allow_full_gpu).value {
        Nullable::Value(b) => b,
        Nullable::Unlimited => true,
        Nullable::Unset => false,
    };
    Quota { per_container, per_user, allow_full, hold_secs: hold(policy, user, group) }
}

/// The per-container caps for an owner (defaults only when unattributed).
pub fn caps(policy: &Policy, owner: &Owner, docker: Option<&DockerMeta>) -> ContainerCaps {
    let user = owner.user.as_deref().unwrap_or("");
    let group = owner.group.as_deref().unwrap_or("");
    fn cap<T: Clone, U>(r: crate::policy::Resolved<T>, f: impl Fn(&T) -> U) -> Option<Cap<U>> {
        r.value.value().map(|v| Cap { value: f(v), origin: r.origin.to_string() })
    }
    // A container can never use more CPU than its user's whole slice (cgroup v1 even refuses a
    // child quota above its parent's), so the slice's quota bounds the per-container cap.
    let mut cpus = cap(policy.resolve(user, group, |l| &l.max_cpus), |v| *v);
    if let Some((origin, agg)) = policy.aggregate(user, group) {
        if let Some(q) = agg.cpu_quota.value() {
            if cpus.as_ref().is_none_or(|c| c.value > q.cpus()) {
                cpus = Some(Cap { value: q.cpus(), origin: format!("aggregate cpu_quota {q}, {origin}") });
            }
        }
    }
    ContainerCaps {
        cpus,
        memory: cap(policy.resolve(user, group, |l| &l.memory), |v| v.bytes),
        swap: cap(policy.resolve(user, group, |l| &l.memory_swap), |v| v.bytes),
        shm: cap(policy.resolve(user, group, |l| &l.shm_size), |v| v.bytes),
        pids: cap(policy.resolve(user, group, |l| &l.pids_limit), |v| *v),
        shm_is_engine_default: docker
            .is_some_and(|d| d.host.shm_size == 0 || d.host.shm_size as u64 == DOCKER_DEFAULT_SHM),
        swap_explicit: docker.map(|d| d.host.memory_swap != 0).unwrap_or(true),
    }
}

/// Fills the audit event from a plan: owner, placement, GPUs, the limits in the final spec.
fn describe(ev: &mut Event, plan: &Plan) {
    ev.owner = plan.owner.user.clone();
    ev.group = plan.owner.group.clone();
    ev.identity_source = Some(plan.owner.source_name().to_owned());
    ev.slice = if plan.owner.placement.is_engine_cgroup() {
        crate::spec::get(&plan.spec, &["linux", "cgroupsPath"]).and_then(Value::as_str).map(str::to_owned)
    } else {
        Some(plan.owner.placement.leaf().to_owned())
    };
    ev.gpus = plan.gpus.clone();
    let res = |path: &[&str]| crate::spec::get(&plan.spec, path).filter(|v| !v.is_null()).cloned();
    for (k, path) in [
        ("memory", &["linux", "resources", "memory", "limit"][..]),
        ("memory_swap", &["linux", "resources", "memory", "swap"]),
        ("cpu_quota", &["linux", "resources", "cpu", "quota"]),
        ("cpu_period", &["linux", "resources", "cpu", "period"]),
        ("pids", &["linux", "resources", "pids", "limit"]),
    ] {
        if let Some(v) = res(path) {
            ev.limits.insert(k.into(), v);
        }
    }
}

/// An audit event about one allocation.
pub fn gpu_event(kind: AuditKind, a: &alloc::Allocation, outcome: &str, reason: &str) -> Event {
    let mut e = Event::new(kind, SystemTime::now(), outcome);
    e.container = Some(a.container.clone());
    e.name = a.name.clone();
    e.owner = Some(a.owner.clone());
    e.group = Some(a.group.clone());
    e.gpus = a.devices.clone();
    e.reason = (!reason.is_empty()).then(|| reason.to_owned());
    e
}

/// max_containers_per_user for an owner, with its origin (None = unlimited or unattributed).
pub fn max_containers(policy: &Policy, owner: &Owner) -> Option<(u32, String)> {
    let (user, group) = (owner.user.as_deref()?, owner.group.as_deref()?);
    let r = policy.resolve(user, group, |l| &l.max_containers_per_user);
    r.value.value().map(|n| (*n, r.origin.to_string()))
}

/// The aggregate limits of an owner's slice (None: unattributed, or no aggregate section).
pub fn slice_limits(policy: &Policy, owner: &Owner) -> Option<SliceLimits> {
    let (user, group) = (owner.user.as_deref()?, owner.group.as_deref()?);
    policy.aggregate(user, group).map(|(_, a)| SliceLimits::from_aggregate(a))
}

fn hold(policy: &Policy, user: &str, group: &str) -> Option<u64> {
    match policy.resolve(user, group, |l| &l.gpu_hold_after_stop).value {
        Nullable::Value(d) => Some(d.secs),
        Nullable::Unlimited => None,
        Nullable::Unset => Some(0),
    }
}

/// True when NVIDIA's toolkit is in the chain: the low-level runtime is NVIDIA's, or the spec
/// carries NVIDIA's hook. It then mounts the driver itself for NVIDIA_VISIBLE_DEVICES.
fn toolkit_chained(r: &CreateInput) -> bool {
    let runtime = Path::new(&r.settings.low_level_runtime).file_name().and_then(OsStr::to_str).unwrap_or("");
    runtime.starts_with("nvidia-container-runtime")
        || crate::spec::get(r.original, &["hooks"]).and_then(Value::as_object).is_some_and(|phases| {
            phases.values().filter_map(Value::as_array).flatten().any(modifiers::is_nvidia_hook)
        })
}

/// CDI names a unit may have in NVIDIA's spec (index, UUID, type-index), and how to name it.
fn cdi_names(inv: &[Gpu], u: &Unit) -> (Vec<String>, String) {
    let g = &inv[u.gpu];
    match u.mig {
        None => (
            vec![g.index.to_string(), g.uuid.clone(), format!("gpu{}", g.index)],
            format!("GPU {} ({})", g.index, g.uuid),
        ),
        Some(m) => (
            vec![format!("{}:{m}", g.index), u.uuid.clone(), format!("mig{}:{m}", g.index)],
            format!("MIG {} of GPU {}", u.uuid, g.index),
        ),
    }
}

/// The NVIDIA CDI edits for the granted units, when a spec exists and the toolkit is not chained.
fn cdi_edits(s: &GpuSettings, inv: &[Gpu], units: &[Unit]) -> Result<Option<cdi::Resolved>> {
    let reg = cdi::Registry::load(&s.cdi_dirs)?;
    if reg.is_empty() {
        return Ok(None);
    }
    let names: Vec<_> = units.iter().map(|u| cdi_names(inv, u)).collect();
    let mut r = reg.resolve(&names)?;
    cdi::fill_nodes(&mut r.edits, &s.dev_root)?;
    Ok(Some(r))
}

/// The device nodes of the granted units, read from the host's nodes, and the CDI edits.
fn grant(s: &GpuSettings, inv: &[Gpu], units: &[Unit], chained: bool) -> Result<GpuGrant> {
    let mut devices = Vec::new();
    for u in units {
        let g = &inv[u.gpu];
        let rel = format!("nvidia{}", g.minor);
        let mut nodes = vec![inventory::node(&s.dev_root, &rel).ok_or_else(|| {
            Error::failed(format!(
                "GPU {} ({}): device node {} is missing",
                g.index,
                g.uuid,
                s.dev_root.join(&rel).display()
            ))
        })?];
        if let Some(m) = u.mig {
            for cap in &g.migs[m].caps {
                let rel = cap.trim_start_matches("/dev/");
                let n: Node = inventory::node(&s.dev_root, rel).ok_or_else(|| {
                    Error::failed(format!(
                        "MIG {}: device node {} is missing",
                        u.uuid,
                        s.dev_root.join(rel).display()
                    ))
                })?;
                nodes.push(n);
            }
        }
        devices.push(Granted { uuid: u.uuid.clone(), nodes });
    }
    let (control, majors) = if devices.is_empty() {
        (Vec::new(), inventory::nvidia_majors(&s.dev_root))
    } else {
        (inventory::control_nodes(&s.dev_root), inventory::nvidia_majors(&s.dev_root))
    };
    let cdi = if units.is_empty() || chained { None } else { cdi_edits(s, inv, units)? };
    Ok(GpuGrant { devices, control, majors, cdi })
}

/// What the guard checks against, gathered from the settings, the engine and the filesystem.
fn guard_input(r: &CreateInput, owner: &Owner) -> GuardInput {
    let s = r.settings;
    let id = r.container_id;
    let privileged = r.docker.is_some_and(|d| d.host.privileged)
        || crate::spec::annotation(r.original, "io.podman.annotations.privileged")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    // Admin rights matter only for what the guard would otherwise refuse: look them up then.
    let allow_all_rule = crate::spec::get(r.original, &["linux", "resources", "devices"])
        .and_then(Value::as_array)
        .is_some_and(|rs| {
            rs.iter()
                .any(|x| x.get("allow").and_then(Value::as_bool) == Some(true) && x.get("major").is_none())
        });
    let trusted_admin = (privileged || allow_all_rule)
        && owner.source.is_some_and(|src| s.identity.trusted_for_admin.contains(&src))
        && owner.user.as_deref().is_some_and(|u| r.policy.is_admin(u));
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
    for p in [
        "/var/lib/docker",
        "/var/lib/containerd",
        "/run/containerd",
        "/var/lib/containers",
        "/run/containers",
    ] {
        protected.push((PathBuf::from(p), "the container engine's own data"));
    }
    protected.push((s.docker_root.clone(), "the container engine's own data"));
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
    for p in [dir_of(&s.policy), s.state_dir.clone(), dir_of(&s.audit_log)] {
        protected.push((p, "ds01-runtime's own settings, state or log"));
    }
    let mut engine_own = vec![
        s.docker_root.join("containers").join(id),
        s.docker_root.join("volumes"),
        // Podman's defaults, also for a config.json read away from its bundle (`ds01ctl explain`).
        PathBuf::from(format!("/var/lib/containers/storage/overlay-containers/{id}")),
        PathBuf::from(format!("/run/containers/storage/overlay-containers/{id}")),
        PathBuf::from("/var/lib/containers/storage/volumes"),
        PathBuf::from("/run/containerd/io.containerd.grpc.v1.cri/sandboxes"),
        PathBuf::from("/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes"),
    ];
    let mut own_userdata = None;
    if let Ok(b) = crate::realpath::canonical(r.bundle_dir) {
        if let Some((graph_root, userdata)) = podman_userdata(&b, id) {
            engine_own.push(graph_root.join("volumes"));
            own_userdata = Some(userdata);
        }
        engine_own.push(b);
    }
    let resolved = crate::spec::get(r.original, &["mounts"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("source").and_then(Value::as_str))
        .filter(|src| src.starts_with('/'))
        .filter_map(|src| crate::realpath::canonical(Path::new(src)).ok().map(|p| (src.to_owned(), p)))
        .collect();
    GuardInput { privileged, trusted_admin, allow, protected, engine_own, own_userdata, resolved }
}

/// Podman's layout: the bundle is `<graph root>/<driver>-containers/<id>/userdata`, and the
/// files it bind-mounts (hosts, resolv.conf, .containerenv) are in the same relative folder
/// under its run root, which may be anywhere. Gives the graph root and that relative folder.
fn podman_userdata(bundle: &Path, id: &str) -> Option<(PathBuf, PathBuf)> {
    let container = bundle.parent().filter(|_| bundle.file_name().is_some_and(|n| n == "userdata"))?;
    let store = container.parent().filter(|_| container.file_name().is_some_and(|n| n == id))?;
    let driver = store.file_name()?.to_str().filter(|n| n.ends_with("-containers"))?;
    Some((store.parent()?.to_path_buf(), [driver, id, "userdata"].iter().collect()))
}

/// [`plan_seen`] over `spec` itself, patched in place instead of a copy; `base` gives the rest
/// of the input. An error before the modifiers ran (a GPU refusal the caller may retry as
/// admin) leaves `spec` as it was.
fn plan_in_place(
    base: &CreateInput,
    spec: &mut Value,
    inventory: &[Gpu],
    allocate: &mut Allocator,
    seen: &mut Seen,
    admin: bool,
) -> Result<Plan> {
    debug_assert!(spec.is_object(), "planned over a document a previous plan took");
    let d = decide(&CreateInput { original: spec, ..*base }, inventory, allocate, seen, admin)?;
    let notes = d.apply(spec)?;
    Ok(d.into_plan(std::mem::take(spec), notes))
}

/// The bundle directory of a create: `--bundle`, else the current directory.
pub fn bundle_dir(inv: &Invocation) -> PathBuf {
    inv.bundle.as_deref().filter(|b| !b.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

/// runc's state root for this call (`--root`, else runc's default).
pub fn runc_root(inv: &Invocation) -> String {
    inv.root.as_deref().map(|r| r.to_string_lossy().into_owned()).unwrap_or_else(|| "/run/runc".into())
}

/// Set in the low-level runtime's environment after a create was patched, so that a chained
/// runtime that calls `runc` (this shim, when interposed) passes the same create straight on.
pub const DONE_ENV: &str = "DS01_RUNTIME_DONE";

/// True when this create was already patched by an outer ds01-runtime in the chain.
pub fn already_done(inv: &Invocation) -> bool {
    match (std::env::var_os(DONE_ENV), inv.container_id.as_deref()) {
        (Some(done), Some(id)) => done == id,
        _ => false,
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// A container's own entries in the allocation state, kept to undo a reservation.
struct Entries {
    allocations: Vec<alloc::Allocation>,
    containers: Vec<alloc::Live>,
}

impl Entries {
    fn of(state: &alloc::State, id: &str) -> Entries {
        Entries {
            allocations: state.allocations.iter().filter(|a| a.container == id).cloned().collect(),
            containers: state.containers.iter().filter(|c| c.container == id).cloned().collect(),
        }
    }

    /// Puts the container's entries back as they were (a hold it had stays held).
    fn restore(self, state: &mut alloc::State, id: &str) {
        state.allocations.retain(|a| a.container != id);
        state.containers.retain(|c| c.container != id);
        state.allocations.extend(self.allocations);
        state.containers.extend(self.containers);
    }
}

/// Everything `create` does before exec: returns the low-level runtime to exec. `ev` is the
/// audit event, filled in as far as the create got (the caller records it on failure); `nvml`
/// is asked for the inventory when its cache is stale.
pub fn prepare(inv: &Invocation, settings: &Settings, ev: &mut Event, nvml: &dyn Querier) -> Result<PathBuf> {
    let id = inv
        .container_id
        .as_deref()
        .and_then(OsStr::to_str)
        .ok_or_else(|| Error::failed("container id is not valid UTF-8"))?;
    ev.container = Some(id.to_owned());
    let runtime = crate::exec::resolve_runtime(
        OsStr::new(&settings.low_level_runtime),
        std::env::var_os("PATH").as_deref(),
    )?;
    let dir = bundle_dir(inv);
    let mut bundle = Bundle::load(&dir)?;
    // The document is patched in place: decided from as loaded, then changed by the modifiers.
    let mut spec = std::mem::take(&mut bundle.spec);
    let policy = Policy::load_cached(&settings.policy, &settings.state_dir.join("cache"))?;
    let meta = docker::load(&settings.docker_root, id)?;
    if let Some(m) = &meta {
        ev.name = m.engine.name.clone();
        ev.image = m.engine.image.clone();
        ev.labels = m.engine.labels.clone();
    } else if let Some(a) = spec.get("annotations").and_then(Value::as_object) {
        ev.labels = a.clone();
    }
    let base = CreateInput {
        settings,
        policy: &policy,
        original: &Value::Null,
        bundle_dir: &dir,
        container_id: id,
        systemd_cgroup: inv.systemd_cgroup,
        docker: meta.as_ref(),
    };
    let (req, _) = gpu_request(&spec, meta.as_ref(), settings)?;
    let local = counts_locally(&spec, settings);
    // Everything after the plan: the audit record, the slice (cgroupfs driver), then the bundle
    // write, last.
    let finish = |plan: &Plan, ev: &mut Event, extra: Vec<Event>| -> Result<()> {
        describe(ev, plan);
        let mut lines: String = extra.iter().map(Event::to_line).collect();
        let mut done = ev.clone();
        done.outcome = "allowed".into();
        lines.push_str(&done.to_line());
        audit::record(settings, &lines)?;
        if !inv.systemd_cgroup && !plan.owner.placement.is_engine_cgroup() {
            let limits = slice_limits(&policy, &plan.owner);
            cgroups::ensure(&Tree::Host, &plan.owner.placement, limits.as_ref(), &settings.state_dir)?;
        }
        bundle.write(&plan.spec)?;
        Ok(())
    };
    let who = |owner: &Owner| Who {
        container: id.to_owned(),
        name: meta.as_ref().and_then(|m| m.engine.name.clone()),
        owner: owner.user.clone().unwrap_or_default(),
        group: owner.group.clone().unwrap_or_default(),
        pid: std::process::id(),
        runc_root: runc_root(inv),
        docker: meta.is_some(),
    };
    let inv_gpus = if req == Request::None {
        Vec::new()
    } else {
        inventory::load(&settings.gpu, &settings.state_dir, nvml)?
    };
    let counted = |owner: &Owner| local && owner.user.is_some() && max_containers(&policy, owner).is_some();
    // Without GPUs and without a container cap, no lock is taken.
    let mut seen = Seen::default();
    let noted = |ev: &mut Event, seen: &Seen| {
        if let Some(o) = &seen.owner {
            ev.owner = o.user.clone();
            ev.group = o.group.clone();
            ev.identity_source = Some(o.source_name().to_owned());
            ev.slice = Some(o.placement.leaf().to_owned());
        }
    };
    let plan0 = match req {
        Request::None => {
            match plan_in_place(&base, &mut spec, &[], &mut |_, _, _| Ok(Vec::new()), &mut seen, false) {
                Ok(p) => Some(p),
                Err(e) => {
                    noted(ev, &seen);
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    // On success the documents are not freed (std::mem::forget): the process execs runc next,
    // and walking them to free every node was a fifth of a create's instructions.
    if let Some(p) = plan0.as_ref().filter(|p| !counted(&p.owner)) {
        finish(p, ev, Vec::new())?;
        std::mem::forget(plan0);
    } else {
        let mut plan0 = plan0;
        let mig_per_gpu = policy.file.gpu_allocation.mig_instances_per_gpu;
        let world = HostWorld { docker_root: settings.docker_root.clone() };
        let store = Store::new(&settings.state_dir);
        let now = now_secs();
        // The lock covers only read, decide and write of the state: the GPUs are reserved for
        // this container (its entry carries this pid, so a crash before runc leaves nothing for
        // good: reconcile drops it), then the slower rest runs unlocked, and on failure the
        // container's own entries are put back as they were. A GPU request refused under the
        // owner's quota is tried once more, as admin, if the owner turns out to be one: that
        // lookup (maybe LDAP) runs between the two, outside the lock.
        let mut admin = false;
        let reserved = loop {
            let mut tried = Seen::default();
            let reserved = store.locked(|state, waited| {
                ev.lock_wait_ms = Some(ev.lock_wait_ms.unwrap_or(0.0) + waited.as_secs_f64() * 1000.0);
                let before = Entries::of(state, id);
                let mut extra: Vec<Event> = alloc::reconcile(state, now, &world)
                    .iter()
                    .map(|a| gpu_event(AuditKind::Reclaim, a, "released", "its container no longer exists"))
                    .collect();
                let plan = match plan0.take() {
                    Some(p) => p,
                    None => {
                        let pool =
                            alloc::Pool { inv: &inv_gpus, mig_per_gpu, exclusive: settings.gpu.exclusive };
                        let mut allocate = |owner: &Owner, req: &Request, q: &Quota| {
                            // On a copy: a refused try must leave nothing behind for a second one.
                            let mut trial = state.clone();
                            let units = alloc::decide(&mut trial, pool, req, &who(owner), q, now)?;
                            *state = trial;
                            Ok(units)
                        };
                        plan_in_place(&base, &mut spec, &inv_gpus, &mut allocate, &mut tried, admin)?
                    }
                };
                describe(ev, &plan);
                if local && plan.owner.user.is_some() {
                    alloc::admit(state, &who(&plan.owner), max_containers(&policy, &plan.owner), now)?;
                }
                if let Some(a) = state.allocations.iter().find(|a| a.container == id && !plan.gpus.is_empty())
                {
                    extra.push(gpu_event(AuditKind::GpuAllocate, a, "ok", ""));
                }
                Ok(((plan, extra, before), true))
            });
            if tried.owner.is_some() {
                seen = tried;
            }
            match reserved {
                Err(_) if !admin && seen.admin_would_pass(&policy) => admin = true,
                other => break other,
            }
        };
        let (plan, extra, before) = match reserved {
            Ok(((plan, extra, before), _)) => (plan, extra, before),
            Err(e) => {
                noted(ev, &seen);
                return Err(e);
            }
        };
        if let Err(e) = finish(&plan, ev, extra) {
            let undone = store.locked(|state, _| {
                before.restore(state, id);
                Ok(((), true))
            });
            return Err(match undone {
                Ok(_) => e,
                Err(u) => e.context(format_args!("and the GPU reservation could not be undone ({u})")),
            });
        }
        std::mem::forget(plan);
    }
    std::mem::forget(bundle);
    std::mem::forget(policy);
    std::mem::forget(meta);
    // Edition 2021: set_var is safe; the process is single-threaded and execs next.
    std::env::set_var(DONE_ENV, id);
    Ok(runtime)
}

#[cfg(test)]
mod tests {
    use super::podman_userdata;
    use std::path::{Path, PathBuf};

    #[test]
    fn podman_layout_is_read_from_the_bundle() {
        let b = Path::new("/srv/graph/vfs-containers/abc/userdata");
        let (graph, rel) = podman_userdata(b, "abc").unwrap();
        assert_eq!(graph, PathBuf::from("/srv/graph"));
        assert_eq!(rel, PathBuf::from("vfs-containers/abc/userdata"));
        assert!(podman_userdata(b, "abd").is_none(), "another container's id");
        assert!(podman_userdata(Path::new("/run/containerd/moby/abc"), "abc").is_none());
        assert!(podman_userdata(Path::new("/x/abc/userdata"), "abc").is_none());
    }
}
