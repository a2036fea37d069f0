//! The per-container caps the policy gives an owner (CPUs, memory, swap, /dev/shm, pids), each
//! with where it comes from; the `limits` modifier and the `update` gate hold containers to them.

use super::Policy;

/// One cap and where it comes from ("group student", "user override alice", "defaults").
#[derive(Debug, Clone, PartialEq)]
pub struct Cap<T> {
    /// The limit.
    pub value: T,
    /// Its origin, for messages.
    pub origin: String,
}

/// The caps that apply to this container (None = unlimited).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerCaps {
    /// CPUs.
    pub cpus: Option<Cap<f64>>,
    /// Memory bytes.
    pub memory: Option<Cap<u64>>,
    /// Memory + swap bytes.
    pub swap: Option<Cap<u64>>,
    /// /dev/shm bytes.
    pub shm: Option<Cap<u64>>,
    /// Processes.
    pub pids: Option<Cap<i64>>,
    /// The engine wrote Docker's default /dev/shm size, not the user (`--shm-size` unused).
    pub shm_is_engine_default: bool,
    /// The user set memory+swap explicitly (Docker's `--memory-swap`); otherwise the engine's
    /// derived value is lowered to the cap instead of refused.
    pub swap_explicit: bool,
}

/// The per-container caps for an owner (defaults only when unattributed); the two flags are
/// the engine's ([`crate::owner::engine::Engine::shm_is_default`], `swap_explicit`).
pub fn caps(
    policy: &Policy,
    owner: Option<(&str, &str)>,
    shm_is_engine_default: bool,
    swap_explicit: bool,
) -> ContainerCaps {
    let (user, group) = owner.unwrap_or(("", ""));
    fn cap<T: Clone, U>(r: super::Resolved<T>, f: impl Fn(&T) -> U) -> Option<Cap<U>> {
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
        shm_is_engine_default,
        swap_explicit,
    }
}

/// The per-container caps of a build container that names no owner (`build` in the settings).
pub fn build_caps(b: &super::settings::BuildSettings) -> ContainerCaps {
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
