//! Audit events about GPU allocations: granted, and dropped by reconciling (a hold that ended,
//! a container removed or vanished).

use std::time::SystemTime;

use super::{Event, Kind as AuditKind};
use crate::gpu::alloc;

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
