//! Phase 4, commit: the audit record, the owner's slice (cgroupfs driver), then the bundle write;
//! the caller undoes the reservation when any of them fails.

use serde_json::Value;

use super::gather::Gathered;
use super::host::Host;
use super::reserve::Reservation;
use super::Call;
use crate::audit::Event;
use crate::error::Result;
use crate::gpu::alloc::Unit;
use crate::owner::identity::Owner;
use crate::policy::quota::slice_limits;
use crate::policy::settings::Settings;

/// Records the create (with the reservation's events), places the slice, writes config.json.
pub fn commit(
    host: &dyn Host,
    g: &Gathered,
    call: &Call,
    s: &Settings,
    ev: &mut Event,
    r: &Reservation,
) -> Result<()> {
    describe(ev, &g.owner, &g.spec, &r.units);
    let mut lines: String = r.events.iter().map(Event::to_line).collect();
    let mut done = ev.clone();
    done.outcome = "allowed".into();
    lines.push_str(&done.to_line());
    host.record(s, &lines)?;
    if !call.systemd_cgroup && !g.owner.placement.is_engine_cgroup() {
        let limits = slice_limits(&g.policy, g.owner.user_group());
        host.ensure_slice(s, &g.owner.placement, limits.as_ref())?;
    }
    host.write_bundle(&g.bundle, &g.spec)
}

/// Fills the audit event from a plan: owner, placement, GPUs, the limits in the final spec.
fn describe(ev: &mut Event, owner: &Owner, spec: &Value, units: &[Unit]) {
    ev.owner = owner.user.clone();
    ev.group = owner.group.clone();
    ev.identity_source = Some(owner.source_name().to_owned());
    ev.slice = if owner.placement.is_engine_cgroup() {
        crate::spec::get(spec, &["linux", "cgroupsPath"]).and_then(Value::as_str).map(str::to_owned)
    } else {
        Some(owner.placement.leaf().to_owned())
    };
    ev.gpus = units.iter().map(|u| u.uuid.clone()).collect();
    let res = |path: &[&str]| crate::spec::get(spec, path).filter(|v| !v.is_null()).cloned();
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
