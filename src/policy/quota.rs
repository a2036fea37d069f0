//! What the policy allows an owner in GPUs (per container, per user in sevenths of a GPU, full
//! GPUs, the hold after stop) and in containers (`max_containers_per_user`), and the caps of the
//! owner's slice. An owner is `Some((user, group))`, `None` when unattributed.

use super::{Nullable, Policy};
use crate::gpu::alloc::{Quota, SLICES_PER_GPU};
use crate::host::cgroups::SliceLimits;

/// The owner's GPU limits; admins have none. Missing keys take DS01's own defaults (1 per
/// container, 1 per user, no full GPUs, no hold).
pub fn quota(policy: &Policy, owner: Option<(&str, &str)>) -> Quota {
    let admin = owner.is_some_and(|(u, _)| policy.is_admin(u));
    quota_as(policy, owner, admin)
}

/// The owner's GPU limits, with admin status already known.
pub fn quota_as(policy: &Policy, owner: Option<(&str, &str)>, admin: bool) -> Quota {
    let Some((user, group)) = owner else {
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
    let per_gpu = SLICES_PER_GPU;
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

/// max_containers_per_user for an owner, with its origin (None = unlimited or unattributed).
pub fn max_containers(policy: &Policy, owner: Option<(&str, &str)>) -> Option<(u32, String)> {
    let (user, group) = owner?;
    let r = policy.resolve(user, group, |l| &l.max_containers_per_user);
    r.value.value().map(|n| (*n, r.origin.to_string()))
}

/// The aggregate limits of an owner's slice (None: unattributed, or no aggregate section).
pub fn slice_limits(policy: &Policy, owner: Option<(&str, &str)>) -> Option<SliceLimits> {
    let (user, group) = owner?;
    policy.slice_aggregate(user, group).map(|(_, a)| a.slice_limits())
}

pub fn hold(policy: &Policy, user: &str, group: &str) -> Option<u64> {
    match policy.resolve(user, group, |l| &l.gpu_hold_after_stop).value {
        Nullable::Value(d) => Some(d.secs),
        Nullable::Unlimited => None,
        Nullable::Unset => Some(0),
    }
}
