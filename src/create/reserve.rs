//! Phase 2, reserve: under the allocation lock, only when GPUs or a container cap are involved.
//! Reconcile the state against the world, decide the GPUs, admit the container under its
//! owner's cap, and write the decision as a reservation carrying this process's pid. Nothing in
//! it forks, asks NSS or resolves a path. A GPU refusal under the owner's quota is decided once
//! more as admin if the owner is one: that lookup runs between the two tries, outside the lock.

use super::gather::Gathered;
use super::host::Host;
use super::Call;
use crate::audit::gpu_events::{dropped_event, gpu_event};
use crate::audit::{Event, Kind as AuditKind};
use crate::error::{Result, Rule};
use crate::gpu::alloc::{self, Pool, Unit, Who};
use crate::policy::quota::max_containers;
use crate::policy::settings::Settings;

/// What the lock decided: the units granted, and how to undo it.
#[derive(Default)]
pub struct Reservation {
    /// The GPU units granted (empty for none).
    pub units: Vec<Unit>,
    /// Audit events of the reconcile and the grant, recorded with the create.
    pub events: Vec<Event>,
    /// The container's entries before, when the state was changed.
    before: Option<Entries>,
}

/// Decides under the lock; `ev` gets the lock's wait and whether the GPU rule refused.
pub fn reserve(
    host: &dyn Host,
    g: &Gathered,
    call: &Call,
    s: &Settings,
    ev: &mut Event,
) -> Result<Reservation> {
    if !(g.wants_gpus() || g.counted) {
        return Ok(Reservation::default());
    }
    let who = Who {
        container: call.id.clone(),
        name: g.engine.meta().and_then(|m| m.name.clone()),
        owner: g.owner.user.clone().unwrap_or_default(),
        group: g.owner.group.clone().unwrap_or_default(),
        pid: call.pid,
        runc_root: call.runc_root.clone(),
        docker: g.engine.docker().is_some(),
    };
    let limit = max_containers(&g.policy, g.owner.user_group());
    let now = host.now();
    let attempt = |admin: bool, ev: &mut Event| -> Result<Reservation> {
        let mut out = None;
        let waited = host.locked(s, &mut |state, _, world| {
            let before = Entries::of(state, &who.container);
            let mut events: Vec<Event> =
                alloc::reconcile(state, now, world).iter().map(|a| dropped_event(a, now)).collect();
            let pool = Pool { inv: &g.inventory, exclusive: s.gpu.exclusive };
            let units = g.allocate(admin, &mut |req, q| alloc::decide(state, pool, req, &who, q, now))?;
            if g.counted {
                alloc::admit(state, &who, limit.clone(), now)?;
            }
            if let Some(a) =
                state.allocations.iter().find(|a| a.container == who.container && !units.is_empty())
            {
                events.push(gpu_event(AuditKind::GpuAllocate, a, "ok", ""));
            }
            out = Some(Reservation { units, events, before: Some(before) });
            Ok(true)
        });
        ev.lock_wait_ms =
            Some(ev.lock_wait_ms.unwrap_or(0.0) + waited.as_ref().map_or(0.0, |w| w.as_secs_f64() * 1000.0));
        waited?;
        Ok(out.unwrap_or_default())
    };
    let first = attempt(false, ev);
    let decided = match first {
        Err(e) if g.owner_is_admin(host, &e) => attempt(true, ev),
        other => other,
    };
    decided.inspect_err(|e| ev.gpu_refused = e.refused_by(Rule::Gpu))
}

/// Puts the container's own entries back as they were before [`reserve`] (a hold it had stays
/// held); nothing to do when the state was not changed.
pub fn undo(host: &dyn Host, r: Reservation, call: &Call, s: &Settings) -> Result<()> {
    let Some(before) = r.before else { return Ok(()) };
    let mut before = Some(before);
    host.locked(s, &mut |state, _, _| {
        if let Some(b) = before.take() {
            b.restore(state, &call.id);
        }
        Ok(true)
    })
    .map(|_| ())
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

    fn restore(self, state: &mut alloc::State, id: &str) {
        state.allocations.retain(|a| a.container != id);
        state.containers.retain(|c| c.container != id);
        state.allocations.extend(self.allocations);
        state.containers.extend(self.containers);
    }
}
