//! Phase 1, gather: everything a create reads from the host, before any lock. The bundle, the
//! policy, the engine and its metadata, the owner (the user database may ask NSS), the GPU
//! request, the caps, the guard's input (mount sources resolved, profiles read), the GPU
//! inventory, device nodes and CDI specs. After this nothing forks, asks NSS or resolves a path,
//! except whether the owner is an admin, asked only after a GPU refusal under the owner's own
//! quota ([`Gathered::owner_is_admin`]): the group lookup may fork `getent`.

use serde_json::Value;

use super::bundle::Bundle;
use super::grant::{toolkit_chained, GpuHost};
use super::guard_input::{guard_input, restore_refusal, Subject};
use super::host::Host;
use super::modifiers::GuardInput;
use super::Call;
use crate::audit::Event;
use crate::error::{Error, Refusal, Result, Rule};
use crate::gpu::alloc::{Quota, Unit};
use crate::gpu::request::{Request, GPUS_KEY};
use crate::gpu::Gpu;
use crate::naming::Placement;
use crate::owner::engine::Engine;
use crate::owner::identity::{self, Clues, Owner, USER_KEY};
use crate::policy::caps::{build_caps, caps, ContainerCaps};
use crate::policy::quota::{max_containers, quota_as};
use crate::policy::settings::{KubePlacement, Settings};
use crate::policy::Policy;

/// What a create learned from the host: the document to patch and every input of the decision.
pub struct Gathered {
    /// config.json as loaded; its document is in `spec`.
    pub bundle: Bundle,
    /// The document, patched in place by the modifiers after the decision.
    pub spec: Value,
    /// The policy.
    pub policy: Policy,
    /// The engine that made the container.
    pub engine: Engine,
    /// Whose container it is.
    pub owner: Owner,
    /// A build container of Docker's classic builder.
    pub build: bool,
    /// What GPUs it asks for.
    pub request: Request,
    /// Who asked (`docker --gpus`, `annotation`, …).
    pub request_source: &'static str,
    /// Scheduler-assigned GPUs (Kubernetes): recorded, not held to the local quota.
    pub scheduled: bool,
    /// Counts towards the owner's container cap.
    pub counted: bool,
    /// NVIDIA's toolkit is in the chain and mounts the driver itself.
    pub chained: bool,
    /// What the guard judges against.
    pub guard: GuardInput,
    /// The per-container caps.
    pub limits: ContainerCaps,
    /// The scope prefix (`docker` in `docker-<id>.scope`).
    pub scope_prefix: String,
    /// The GPUs, when GPUs are asked for.
    pub inventory: Vec<Gpu>,
    /// Their device nodes and CDI specs.
    pub gpu_host: GpuHost,
}

/// Reads the host for one create; fills `ev` as far as it gets.
pub fn gather(host: &dyn Host, call: &Call, s: &Settings, ev: &mut Event) -> Result<Gathered> {
    let mut bundle = host.load_bundle(&call.bundle)?;
    let mut spec = std::mem::take(&mut bundle.spec);
    let policy = host.load_policy(s)?;
    let engine = Engine::detect(&mut spec, &call.id, host.docker_meta(&s.docker_root, &call.id)?);
    describe_engine(ev, &engine, &spec);
    let build = engine.is_classic_build();
    let cgroups_path = crate::spec::get(&spec, &["linux", "cgroupsPath"]).and_then(Value::as_str);
    // A build token is looked for only in a build step's placement.
    let verified = host.verified_owner(s, &call.id, cgroups_path.filter(|_| build))?;
    let clues = Clues {
        spec: &spec,
        engine: engine.meta(),
        kubernetes: Some(&s.kubernetes),
        pod: engine.pod(),
        build,
        verified: verified.as_ref().map(|v| v.user.as_str()),
    };
    let mut owner = identity::resolve(&s.identity, &policy, &clues, &|n| host.to_login(n))?;
    if engine.pod().is_some() && s.kubernetes.placement == KubePlacement::Pod {
        owner.placement = Placement::engine_cgroup();
    }
    ev.owner = owner.user.clone();
    ev.group = owner.group.clone();
    ev.identity_source = Some(owner.source_name().to_owned());
    ev.slice = Some(owner.placement.leaf().to_owned());
    let (mut request, mut request_source) = engine.gpu_request(&spec, s.gpu.env_is_request)?;
    if build && request != Request::None {
        // Build steps never get GPUs: what they run is what any Dockerfile says.
        (request, request_source) = (Request::None, "none (build container)");
    }
    if request != Request::None && owner.user.is_none() {
        return Err(Refusal::GpusWithoutOwner { source: request_source }.into());
    }
    let subject = Subject { call, spec: &spec, carried: bundle.carried(), engine: &engine, owner: &owner };
    let guard = guard_input(host, s, &policy, &subject)?;
    if let Some(r) = call.restore.as_ref().filter(|_| !guard.trusted_admin) {
        if let Some(e) = restore_refusal(host, r, &s.docker_root) {
            return Err(e);
        }
    }
    let limits = if owner.user.is_none() && build {
        build_caps(&s.build)
    } else {
        caps(&policy, owner.user_group(), engine.shm_is_default(), engine.swap_explicit())
    };
    let scope_prefix = match s.scope_prefix.as_deref() {
        Some(p) => p.to_owned(),
        None => engine.scope_prefix(&spec).to_owned(),
    };
    let wants = request != Request::None;
    let chained = toolkit_chained(&s.low_level_runtime, &spec);
    let inventory = if wants { host.inventory(s)? } else { Vec::new() };
    let gpu_host = host.gpu_host(s, &inventory, wants && !chained)?;
    Ok(Gathered {
        scheduled: engine.gpus_scheduled(s.kubernetes.local_quota),
        counted: engine.counts_locally(s.kubernetes.local_quota)
            && owner.user.is_some()
            && max_containers(&policy, owner.user_group()).is_some(),
        bundle,
        spec,
        policy,
        engine,
        owner,
        build,
        request,
        request_source,
        chained,
        guard,
        limits,
        scope_prefix,
        inventory,
        gpu_host,
    })
}

/// The engine's name, image and labels on the audit event; of the creator's `ds01.*` keys only
/// the owner and GPU requests are recorded, as asked.
fn describe_engine(ev: &mut Event, engine: &Engine, spec: &Value) {
    if let Some(m) = engine.meta() {
        ev.name = m.name.clone();
        ev.image = m.image.clone();
        ev.labels = m.labels.clone();
    } else if let Some(a) = spec.get("annotations").and_then(Value::as_object) {
        ev.labels = a.clone();
    }
    ev.container_type = Some(crate::audit::container_type::of(&ev.labels, ev.name.as_deref()));
    ev.labels
        .retain(|k, _| !k.starts_with(crate::spec::annotations::PREFIX) || k == USER_KEY || k == GPUS_KEY);
}

impl Gathered {
    /// True when the container asks for GPUs.
    pub fn wants_gpus(&self) -> bool {
        self.request != Request::None
    }

    /// The quota the GPU decision is held to: the owner's, or none when `admin`.
    pub fn quota(&self, admin: bool) -> Quota {
        if self.scheduled {
            Quota::scheduler()
        } else {
            quota_as(&self.policy, self.owner.user_group(), admin)
        }
    }

    /// The GPU decision through `decide` (under the lock in a create); none asked, none given.
    pub fn allocate(
        &self,
        admin: bool,
        decide: &mut dyn FnMut(&Request, &Quota) -> Result<Vec<Unit>>,
    ) -> Result<Vec<Unit>> {
        if !self.wants_gpus() {
            return Ok(Vec::new());
        }
        decide(&self.request, &self.quota(admin))
    }

    /// After a GPU refusal under the owner's quota: whether to decide again as admin. Asks the
    /// group database (maybe `getent`), so it runs outside the lock.
    pub fn owner_is_admin(&self, host: &dyn Host, refused: &Error) -> bool {
        refused.refused_by(Rule::Gpu)
            && self.wants_gpus()
            && !self.scheduled
            && self.owner.user.as_deref().is_some_and(|u| host.is_admin(&self.policy, u))
    }
}
