//! The create pipeline: load bundle, resolve owner, decide GPUs, run the modifiers, write
//! atomically; the caller then execs the low-level runtime. A create that asks for GPUs runs
//! under the allocation lock from decision to bundle write, and records its allocation only
//! when the bundle was written: a refusal or failure at any step leaks nothing.

pub mod bundle;
pub mod modifiers;
pub mod opaque;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::audit::{self, Event, Kind as AuditKind};
use crate::create::bundle::Bundle;
use crate::error::{Error, Result};
use crate::gpu::alloc::{self, Quota, Unit, Who};
use crate::gpu::cdi;
use crate::gpu::inventory::{self, Node};
use crate::gpu::nvml::Querier;
use crate::gpu::request::{self, Request};
use crate::gpu::store::{HostWorld, Store};
use crate::gpu::Gpu;
use crate::host::cgroups::{self, SliceLimits, Tree};
use crate::host::users;
use crate::naming::Placement;
use crate::owner::docker::{self, DockerMeta};
use crate::owner::identity::{self, Clues, Owner, USER_KEY};
use crate::owner::kubernetes;
use crate::policy::settings::{GpuSettings, KubePlacement, Settings};
use crate::policy::{Nullable, Policy};
use crate::shim::argv::Invocation;
use modifiers::{
    Cap, ContainerCaps, Context, Engine, GpuGrant, Granted, GuardInput, Note, DOCKER_DEFAULT_SHM,
};

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

/// Runs the whole pipeline over a copy of the spec: [`gather`], the GPU decision through
/// `allocate`, the modifiers. `ds01ctl explain` and the tests use it; a create runs the same
/// phases with the allocation lock around the GPU decision only.
///
/// `carried` are the parts of config.json cut out unparsed, when `r.original` was parsed so.
pub fn plan(
    r: &CreateInput,
    carried: &[crate::create::opaque::Part],
    inventory: &[Gpu],
    allocate: &mut Allocator,
) -> Result<Plan> {
    let mut spec = r.original.clone();
    if r.docker.is_some() || crate::spec::annotation(&spec, "io.container.manager") == Some("libpod") {
        kubernetes::forget_claimed_pod(&mut spec);
    }
    let r = &CreateInput { original: &spec, ..*r };
    let g = gather(r, carried)?;
    let units = match g.allocate(r.policy, false, allocate) {
        Err(e) if g.owner_is_admin(r.policy, &e) => g.allocate(r.policy, true, allocate)?,
        other => other?,
    };
    let host = GpuHost::read(&r.settings.gpu, inventory, g.wants_gpus() && !g.chained)?;
    let d = g.decide(inventory, &host, units)?;
    let mut spec = spec.clone();
    let notes = d.apply(&mut spec)?;
    Ok(d.into_plan(spec, notes))
}

/// Everything a create learns from the host before any lock is taken: the owner (the user
/// database may ask NSS), the guard's input (mount sources resolved on disk, the admin's
/// seccomp profiles read), the caps and the GPU request. After this nothing forks, asks NSS or
/// resolves a path. Whether the owner is an admin (for the GPU quota) is asked only after a
/// refusal under the owner's own quota, outside the lock ([`Gathered::owner_is_admin`]): the
/// group lookup may fork `getent`, which every GPU create paid for otherwise.
pub struct Gathered {
    /// Whose container it is.
    pub owner: Owner,
    /// A build container of Docker's classic builder.
    pub build: bool,
    /// What GPUs it asks for.
    pub request: Request,
    /// Who asked (`docker --gpus`, `annotation`, …).
    pub request_source: &'static str,
    /// Scheduler-assigned GPUs (Kubernetes): recorded, not held to the local quota.
    scheduled: bool,
    /// Counts towards the owner's container cap.
    pub counted: bool,
    chained: bool,
    guard: GuardInput,
    limits: ContainerCaps,
    container_id: String,
    systemd_cgroup: bool,
    scope_prefix: String,
    engine_name: Option<String>,
    engine_image: Option<String>,
    settings_file: Option<PathBuf>,
}

/// Reads the host for one create; `carried` are the parts of config.json cut out unparsed.
pub fn gather(r: &CreateInput, carried: &[crate::create::opaque::Part]) -> Result<Gathered> {
    let s = r.settings;
    let build = r.docker.is_some_and(DockerMeta::is_classic_build);
    let clues = Clues {
        spec: r.original,
        engine: r.docker.map(|d| &d.engine),
        kubernetes: Some(&s.kubernetes),
        build,
    };
    let mut owner = identity::resolve(&s.identity, r.policy, &clues, &users::to_login)?;
    let pod = kubernetes::of(r.original);
    if pod.is_some() && s.kubernetes.placement == KubePlacement::Pod {
        owner.placement = Placement::engine_cgroup();
    }
    let (mut request, mut request_source) = gpu_request(r.original, r.docker, s)?;
    if build && request != Request::None {
        // Build steps never get GPUs: what they run is what any Dockerfile says.
        (request, request_source) = (Request::None, "none (build container)");
    }
    if request != Request::None && owner.user.is_none() {
        return Err(Error::refused(format!(
            "GPUs requested ({request_source}) by a container with no owner"
        )));
    }
    let guard = guard_input(r, &owner, carried)?;
    let limits =
        if owner.user.is_none() && build { build_caps(&s.build) } else { caps(r.policy, &owner, r.docker) };
    let scope_prefix = match s.scope_prefix.as_deref() {
        Some(p) => p.to_owned(),
        None => crate::naming::engine_scope_prefix(r.original, r.container_id, r.docker.is_some()).to_owned(),
    };
    Ok(Gathered {
        scheduled: pod.is_some() && !s.kubernetes.local_quota,
        counted: counts_locally(r.original, s)
            && owner.user.is_some()
            && max_containers(r.policy, &owner).is_some(),
        chained: toolkit_chained(r),
        owner,
        build,
        request,
        request_source,
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

/// The GPU host files a grant needs, read before the lock: the device nodes of every GPU in
/// the inventory, the control nodes and majors, and NVIDIA's CDI specs.
#[derive(Default)]
pub struct GpuHost {
    nodes: Vec<(String, Node)>,
    control: Vec<Node>,
    majors: Vec<i64>,
    cdi: Option<cdi::Registry>,
    dev_root: PathBuf,
}

impl GpuHost {
    /// Reads the nodes of `inventory`'s GPUs and MIG caps under `s.dev_root`, and the CDI
    /// registry when `with_cdi`.
    pub fn read(s: &GpuSettings, inventory: &[Gpu], with_cdi: bool) -> Result<GpuHost> {
        let mut nodes = Vec::new();
        for g in inventory {
            let rels = std::iter::once(format!("nvidia{}", g.minor)).chain(
                g.migs.iter().flat_map(|m| m.caps.iter().map(|c| c.trim_start_matches("/dev/").to_owned())),
            );
            for rel in rels {
                if let Some(n) = inventory::node(&s.dev_root, &rel) {
                    nodes.push((rel, n));
                }
            }
        }
        let cdi = if with_cdi && !inventory.is_empty() {
            Some(cdi::Registry::load(&s.cdi_dirs)?).filter(|r| !r.is_empty())
        } else {
            None
        };
        Ok(GpuHost {
            nodes,
            control: inventory::control_nodes(&s.dev_root),
            majors: inventory::nvidia_majors(&s.dev_root),
            cdi,
            dev_root: s.dev_root.clone(),
        })
    }

    fn node(&self, rel: &str) -> Option<Node> {
        self.nodes.iter().find(|(r, _)| r == rel).map(|(_, n)| n.clone())
    }
}

impl Gathered {
    /// True when the container asks for GPUs.
    pub fn wants_gpus(&self) -> bool {
        self.request != Request::None
    }

    /// The quota the GPU decision is held to: the owner's, or none when `admin`.
    pub fn quota(&self, policy: &Policy, admin: bool) -> Quota {
        if self.scheduled {
            Quota::scheduler()
        } else {
            quota_as(policy, &self.owner, admin)
        }
    }

    /// The GPU decision through `allocate` (under the lock in a create); none asked, none given.
    pub fn allocate(&self, policy: &Policy, admin: bool, allocate: &mut Allocator) -> Result<Vec<Unit>> {
        if !self.wants_gpus() {
            return Ok(Vec::new());
        }
        allocate(&self.owner, &self.request, &self.quota(policy, admin))
    }

    /// After a GPU refusal under the owner's quota: whether to decide again as admin. Asks the
    /// group database (maybe `getent`), so it runs outside the lock.
    pub fn owner_is_admin(&self, policy: &Policy, refused: &Error) -> bool {
        refused.kind == crate::error::Kind::Refused
            && self.wants_gpus()
            && !self.scheduled
            && self.owner.user.as_deref().is_some_and(|u| policy.is_admin(u))
    }

    /// The decision for the modifiers, from the units granted.
    pub fn decide(self, inventory: &[Gpu], host: &GpuHost, units: Vec<Unit>) -> Result<Decision> {
        let grant = grant(host, inventory, &units, self.chained)?;
        Ok(Decision { g: self, units, grant })
    }
}

/// Everything the modifiers are given. It owns what it holds, so that the create can then
/// patch that same document in place instead of a copy.
pub struct Decision {
    g: Gathered,
    units: Vec<Unit>,
    grant: GpuGrant,
}

impl Decision {
    /// Runs the modifiers over `spec`; gives what changed and why.
    pub fn apply(&self, spec: &mut Value) -> Result<Vec<Note>> {
        let g = &self.g;
        let ctx = Context {
            container_id: &g.container_id,
            owner: &g.owner,
            systemd_cgroup: g.systemd_cgroup,
            scope_prefix: &g.scope_prefix,
            gpus: &self.grant,
            guard: &g.guard,
            limits: &g.limits,
            engine: Engine { name: g.engine_name.as_deref(), image: g.engine_image.as_deref() },
            settings_file: g.settings_file.as_deref(),
            build: g.build,
        };
        modifiers::apply_all(&modifiers::pipeline(), spec, &ctx)
    }

    /// The plan: `spec` as [`Decision::apply`] left it.
    pub fn into_plan(self, spec: Value, notes: Vec<Note>) -> Plan {
        Plan { spec, owner: self.g.owner, notes, gpus: self.units.into_iter().map(|u| u.uuid).collect() }
    }
}

/// The per-container caps of a build container that names no owner (`build` in the settings).
pub fn build_caps(b: &crate::policy::settings::BuildSettings) -> ContainerCaps {
    let origin = || "build settings".to_owned();
    ContainerCaps {
        cpus: b.max_cpus.map(|value| Cap { value, origin: origin() }),
        memory: b.memory.as_ref().map(|m| Cap { value: m.bytes, origin: origin() }),
        swap: b.memory.as_ref().map(|m| Cap { value: m.bytes, origin: origin() }),
        shm: None,
        pids: b.pids_limit.map(|value| Cap { value, origin: origin() }),
        shm_is_engine_default: true,
        swap_explicit: false,
    }
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
    let pc = policy.resolve(user, group, |l| &l.max_gpu_slots_per_container);
    let per_container = match pc.value {
        Nullable::Value(n) => Some((n, pc.origin.to_string())),
        Nullable::Unlimited => None,
        Nullable::Unset => Some((1, "DS01's default".into())),
    };
    // GPU-equivalents in sevenths of a GPU, the unit every GPU and MIG instance weighs in.
    let per_gpu = alloc::SLICES_PER_GPU;
    let total = match policy.resolve(user, group, |l| &l.max_gpu_equivalents).value {
        Nullable::Value(n) => Some(n.units(per_gpu)),
        Nullable::Unlimited => None,
        Nullable::Unset => Some(per_gpu),
    };
    let agg = policy.aggregate(user, group).and_then(|(_, a)| a.gpu_limit.value().map(|g| g.units(per_gpu)));
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
    if let Some((origin, agg)) = policy.slice_aggregate(user, group) {
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

/// The audit event of an allocation reconciling dropped: a hold that ended or whose container
/// was removed is DS01's `gpu.released`; a container that vanished while running,
/// `gpu.removed_stale`.
pub fn dropped_event(a: &alloc::Allocation, now: u64) -> Event {
    if a.status == alloc::Status::Held {
        let why = if a.held_until.is_some_and(|t| t <= now) {
            "the hold after stop ended"
        } else {
            "its container was removed"
        };
        gpu_event(AuditKind::GpuRelease, a, "ok", why)
    } else {
        gpu_event(AuditKind::Reclaim, a, "released", "its container no longer exists")
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
    policy.slice_aggregate(user, group).map(|(_, a)| SliceLimits::from_aggregate(a))
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
fn cdi_edits(host: &GpuHost, inv: &[Gpu], units: &[Unit]) -> Result<Option<cdi::Resolved>> {
    let Some(reg) = &host.cdi else { return Ok(None) };
    let names: Vec<_> = units.iter().map(|u| cdi_names(inv, u)).collect();
    let mut r = reg.resolve(&names)?;
    cdi::fill_nodes(&mut r.edits, &host.dev_root)?;
    Ok(Some(r))
}

/// The device nodes of the granted units, from the nodes read before the lock, and the CDI
/// edits.
fn grant(host: &GpuHost, inv: &[Gpu], units: &[Unit], chained: bool) -> Result<GpuGrant> {
    let missing = |what: String, rel: &str| {
        Error::failed(format!("{what}: device node {} is missing", host.dev_root.join(rel).display()))
    };
    let mut devices = Vec::new();
    for u in units {
        let g = &inv[u.gpu];
        let rel = format!("nvidia{}", g.minor);
        let mut nodes =
            vec![host.node(&rel).ok_or_else(|| missing(format!("GPU {} ({})", g.index, g.uuid), &rel))?];
        if let Some(m) = u.mig {
            for cap in &g.migs[m].caps {
                let rel = cap.trim_start_matches("/dev/");
                nodes.push(host.node(rel).ok_or_else(|| missing(format!("MIG {}", u.uuid), rel))?);
            }
        }
        devices.push(Granted { uuid: u.uuid.clone(), nodes });
    }
    let control = if devices.is_empty() { Vec::new() } else { host.control.clone() };
    let cdi = if units.is_empty() || chained { None } else { cdi_edits(host, inv, units)? };
    Ok(GpuGrant { devices, control, majors: host.majors.clone(), cdi })
}

/// What the guard checks against, gathered from the settings, the engine and the filesystem.
fn guard_input(
    r: &CreateInput,
    owner: &Owner,
    carried: &[crate::create::opaque::Part],
) -> Result<GuardInput> {
    let s = r.settings;
    let id = r.container_id;
    let privileged = r.docker.is_some_and(|d| d.host.privileged)
        || crate::spec::annotation(r.original, "io.podman.annotations.privileged")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    // Admin rights are looked up only for an owner named by a source trusted for them (none by
    // default), so an ordinary create asks no group database here.
    let trusted_admin = owner.source.is_some_and(|src| s.identity.trusted_for_admin.contains(&src))
        && owner.user.as_deref().is_some_and(|u| r.policy.is_admin(u));
    let mut seccomp_extra = crate::create::modifiers::seccomp::Extra::default();
    for f in &s.guard.seccomp_profiles {
        let text = std::fs::read_to_string(f).map_err(|e| {
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
    if let Ok(b) = crate::host::realpath::canonical(r.bundle_dir) {
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
        .filter_map(|src| crate::host::realpath::canonical(Path::new(src)).ok().map(|p| (src.to_owned(), p)))
        .collect();
    let host_volumes = crate::spec::get(r.original, &["mounts"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("source").and_then(Value::as_str))
        .filter_map(|src| host_volume(&s.docker_root, src).map(|what| (src.to_owned(), what)))
        .collect();
    Ok(GuardInput {
        host_volumes,
        privileged,
        trusted_admin,
        allow,
        protected,
        engine_own,
        own_userdata,
        resolved,
        carried: carried.iter().map(|(p, raw)| (*p, raw.get().to_owned())).collect(),
        engine_sets_seccomp: r.docker.is_some()
            || crate::spec::annotation(r.original, "io.container.manager") == Some("libpod"),
        cap_allow: s.guard.cap_allow.iter().map(|c| crate::create::modifiers::cap_name(c)).collect(),
        seccomp_extra,
        apparmor: apparmor_enabled().then(|| s.guard.apparmor_profiles.clone()),
        selinux_types: s.guard.selinux_types.clone(),
        host_namespaces: host_namespaces(r.original),
        device_allow,
    })
}

/// What a Docker volume under `<docker_root>/volumes/<name>/_data` mounts, when its local
/// driver options (`opts.json`) make it a bind of a host path, a host device or a kernel file
/// system; network and tmpfs volumes pass.
fn host_volume(docker_root: &Path, src: &str) -> Option<String> {
    let rest = Path::new(src).strip_prefix(docker_root.join("volumes")).ok()?;
    let name = rest.components().next()?.as_os_str().to_str()?;
    let text = std::fs::read_to_string(docker_root.join("volumes").join(name).join("opts.json")).ok()?;
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
fn restore_refusal(inv: &Invocation, settings: &Settings) -> Option<Error> {
    for flag in ["lsm-profile", "lsm-mount-context"] {
        if inv.flag(&[flag]).is_some() {
            return Some(Error::refused(format!(
                "restore --{flag} is refused: only admins named by a trusted identity source may choose the restored container's security labels"
            )));
        }
    }
    let image = inv.flag(&["image-path"]).map(Path::new).unwrap_or(Path::new("checkpoint"));
    let real = crate::host::realpath::canonical(image).ok();
    let engine_dirs = [
        settings.docker_root.clone(),
        PathBuf::from("/var/lib/docker"),
        PathBuf::from("/var/lib/containers"),
        PathBuf::from("/var/lib/containerd"),
        PathBuf::from("/run/containerd"),
        PathBuf::from("/run/containers"),
    ];
    let engines = real.as_deref().is_some_and(|r| engine_dirs.iter().any(|d| r.starts_with(d)));
    (!engines).then(|| {
        Error::refused(format!(
            "restore from {} is refused: a checkpoint image outside the engine's own folders restores whatever credentials it holds; only admins named by a trusted identity source may",
            image.display()
        ))
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

/// True when the host confines processes with AppArmor (runc then applies the spec's profile).
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|v| v.trim() == "Y")
}

/// The namespace types whose `path` in the spec is the host's own namespace (the one this
/// process, started by the engine on the host, is in): joining them is sharing the host's.
fn host_namespaces(spec: &Value) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let ours = |t: &str| {
        let name = match t {
            "network" => "net",
            "mount" => "mnt",
            other => other,
        };
        std::fs::metadata(format!("/proc/self/ns/{name}")).ok().map(|m| (m.dev(), m.ino()))
    };
    crate::spec::get(spec, &["linux", "namespaces"])
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let t = n.get("type")?.as_str()?;
            let path = n.get("path")?.as_str().filter(|p| !p.is_empty())?;
            // A path that does not resolve here cannot be joined by runc either: it fails.
            let theirs = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))?;
            (Some(theirs) == ours(t)).then(|| t.to_owned())
        })
        .collect()
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
///
/// The phases: gather from the host (bundle, policy, engine metadata, owner, guard input,
/// inventory, device nodes, CDI) → under the allocation lock, only when GPUs or a container
/// cap are involved: reconcile, decide, reserve → apply the pure modifiers → commit (audit,
/// slice, bundle) or undo the reservation.
pub fn prepare(inv: &Invocation, settings: &Settings, ev: &mut Event, nvml: &dyn Querier) -> Result<PathBuf> {
    let id = inv
        .container_id
        .as_deref()
        .and_then(OsStr::to_str)
        .ok_or_else(|| Error::failed("container id is not valid UTF-8"))?;
    ev.container = Some(id.to_owned());
    let runtime = crate::host::exec::resolve_runtime(
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
    ev.container_type = Some(crate::audit::container_type::of(&ev.labels, ev.name.as_deref()));
    // Only the owner and GPU requests of the creator's ds01.* keys are recorded as asked.
    ev.labels.retain(|k, _| {
        !k.starts_with(crate::spec::annotations::PREFIX) || k == USER_KEY || k == request::GPUS_KEY
    });
    // Pod annotations on a Docker or Podman container are the creator's claim, not a kubelet's.
    if meta.is_some() || crate::spec::annotation(&spec, "io.container.manager") == Some("libpod") {
        kubernetes::forget_claimed_pod(&mut spec);
    }
    let input = CreateInput {
        settings,
        policy: &policy,
        original: &spec,
        bundle_dir: &dir,
        container_id: id,
        systemd_cgroup: inv.systemd_cgroup,
        docker: meta.as_ref(),
    };

    // 1. Gather: everything that reads the host, before any lock.
    let g = gather(&input, bundle.carried())?;
    ev.owner = g.owner.user.clone();
    ev.group = g.owner.group.clone();
    ev.identity_source = Some(g.owner.source_name().to_owned());
    ev.slice = Some(g.owner.placement.leaf().to_owned());
    if ev.event == AuditKind::Restore.as_str() && !g.guard.trusted_admin {
        if let Some(e) = restore_refusal(inv, settings) {
            return Err(e);
        }
    }
    let inv_gpus =
        if g.wants_gpus() { inventory::load(&settings.gpu, &settings.state_dir, nvml)? } else { Vec::new() };
    let host = GpuHost::read(&settings.gpu, &inv_gpus, g.wants_gpus() && !g.chained)?;
    let who = Who {
        container: id.to_owned(),
        name: meta.as_ref().and_then(|m| m.engine.name.clone()),
        owner: g.owner.user.clone().unwrap_or_default(),
        group: g.owner.group.clone().unwrap_or_default(),
        pid: std::process::id(),
        runc_root: runc_root(inv),
        docker: meta.is_some(),
    };

    // 2. Reserve, under the lock, only when GPUs or a container cap are involved: read,
    //    reconcile, decide, write gpus.json. Nothing in it forks, asks NSS or resolves a path.
    let store = Store::new(&settings.state_dir);
    let locked = g.wants_gpus() || g.counted;
    let mut extra: Vec<Event> = Vec::new();
    let (units, before) = if locked {
        let world = HostWorld { docker_root: settings.docker_root.clone() };
        let now = now_secs();
        let limit = max_containers(&policy, &g.owner);
        // A GPU refusal under the owner's quota is decided once more as admin if the owner is
        // one: that lookup runs between the two, outside the lock.
        let mut gpu_refused: Option<Error> = None;
        let mut reserve = |admin: bool, gpu_refused: &mut Option<Error>| {
            store.locked(|state, waited| {
                ev.lock_wait_ms = Some(ev.lock_wait_ms.unwrap_or(0.0) + waited.as_secs_f64() * 1000.0);
                let before = Entries::of(state, id);
                let mut events: Vec<Event> =
                    alloc::reconcile(state, now, &world).iter().map(|a| dropped_event(a, now)).collect();
                let pool = alloc::Pool { inv: &inv_gpus, exclusive: settings.gpu.exclusive };
                let units = g
                    .allocate(&policy, admin, &mut |_, req, q| alloc::decide(state, pool, req, &who, q, now))
                    .inspect_err(|e| *gpu_refused = Some(e.clone()))?;
                if g.counted {
                    alloc::admit(state, &who, limit.clone(), now)?;
                }
                if let Some(a) = state.allocations.iter().find(|a| a.container == id && !units.is_empty()) {
                    events.push(gpu_event(AuditKind::GpuAllocate, a, "ok", ""));
                }
                Ok(((units, Some(before), events), true))
            })
        };
        let reserved = match reserve(false, &mut gpu_refused) {
            Err(_) if gpu_refused.as_ref().is_some_and(|e| g.owner_is_admin(&policy, e)) => {
                reserve(true, &mut None)
            }
            other => other,
        };
        let ((units, before, events), _) =
            reserved.inspect_err(|_| ev.gpu_refused = gpu_refused.is_some())?;
        extra = events;
        (units, before)
    } else {
        (Vec::new(), None)
    };

    // 3. Apply the pure modifiers, then 4. commit; any failure puts the reservation back.
    let committed = (|| {
        let d = g.decide(&inv_gpus, &host, units)?;
        let notes = d.apply(&mut spec)?;
        let plan = d.into_plan(std::mem::take(&mut spec), notes);
        describe(ev, &plan);
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
        // On success the documents are not freed: the process execs runc next, and walking
        // them to free every node was a fifth of a create's instructions.
        std::mem::forget(plan);
        Ok(())
    })();
    if let Err(e) = committed {
        let Some(before) = before else { return Err(e) };
        let undone = store.locked(|state, _| {
            before.restore(state, id);
            Ok(((), true))
        });
        return Err(match undone {
            Ok(_) => e,
            Err(u) => e.context(format_args!("and the GPU reservation could not be undone ({u})")),
        });
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
    fn a_namespace_path_to_the_hosts_own_is_the_host() {
        let spec = serde_json::json!({"linux": {"namespaces": [
            {"type": "pid", "path": "/proc/self/ns/pid"},
            {"type": "ipc", "path": "/proc/1/ns/ipc"},
            {"type": "uts", "path": "/nonexistent/ns/uts"},
            {"type": "mount"}
        ]}});
        let host = super::host_namespaces(&spec);
        assert!(host.contains(&"pid".to_owned()), "{host:?}");
        assert!(!host.contains(&"uts".to_owned()) && !host.contains(&"mount".to_owned()), "{host:?}");
        assert!(super::parse_device("c 10:229") == Some((10, Some(229))));
        assert!(super::parse_device("c 136:*") == Some((136, None)));
        assert!(super::parse_device("b 7:0").is_none() && super::parse_device("c x:1").is_none());
    }

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
