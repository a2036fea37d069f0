//! Allocation: who holds which GPU or MIG instance. Pure: the state and the inventory in, a
//! decision (or a refusal that says what and why) out; the store locks and persists it.

use serde::{Deserialize, Serialize};

use super::request::Request;
use super::Gpu;
use crate::error::{Error, Refusal, Result};

/// Whether an allocation belongs to a live container or is held after a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The container exists (or is being created).
    Running,
    /// The container was deleted (stopped); held for its owner until `held_until`.
    Held,
}

/// One container's GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Container id.
    pub container: String,
    /// Docker name, where known.
    #[serde(default)]
    pub name: Option<String>,
    /// Owner.
    pub owner: String,
    /// Owner's group.
    pub group: String,
    /// UUIDs of the GPUs / MIG instances, in CUDA order.
    pub devices: Vec<String>,
    /// GPU-equivalents counted against the owner's quota, in sevenths ([`SLICES_PER_GPU`]).
    #[serde(default)]
    pub sevenths: u32,
    /// Since when (Unix seconds).
    pub since: u64,
    /// The creating runtime's pid (a create in flight is not stale).
    pub pid: u32,
    /// runc's --root for this container.
    pub runc_root: String,
    /// Created through Docker (its metadata dir tells whether it still exists).
    #[serde(default)]
    pub docker: bool,
    /// Running or held.
    pub status: Status,
    /// End of the hold (Unix seconds); None while running, or held indefinitely.
    #[serde(default)]
    pub held_until: Option<u64>,
    /// Hold after stop in seconds; None = indefinitely.
    #[serde(default)]
    pub hold_secs: Option<u64>,
}

/// A live container, counted against max_containers_per_user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// Container id.
    pub container: String,
    /// Docker name, where known.
    #[serde(default)]
    pub name: Option<String>,
    /// Owner.
    pub owner: String,
    /// runc's --root for this container.
    pub runc_root: String,
    /// The creating runtime's pid.
    pub pid: u32,
    /// Since when (Unix seconds).
    pub since: u64,
}

/// The state file: GPU allocations and live containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Every allocation.
    pub allocations: Vec<Allocation>,
    /// Every live container with an owner.
    #[serde(default)]
    pub containers: Vec<Live>,
}

/// Admits `who` under max_containers_per_user (None = unlimited) and records it as live.
pub fn admit(state: &mut State, who: &Who, max: Option<(u32, String)>, now: u64) -> Result<()> {
    state.containers.retain(|c| c.container != who.container);
    let mine: Vec<&Live> = state.containers.iter().filter(|c| c.owner == who.owner).collect();
    if let Some((m, origin)) = max {
        if mine.len() >= m as usize {
            let names: Vec<String> = mine
                .iter()
                .map(|c| c.name.clone().unwrap_or_else(|| c.container.chars().take(12).collect()))
                .collect();
            return Err(Refusal::Containers {
                owner: who.owner.clone(),
                running: mine.len(),
                limit: m,
                origin,
                names: names.join(", "),
            }
            .into());
        }
    }
    state.containers.push(Live {
        container: who.container.clone(),
        name: who.name.clone(),
        owner: who.owner.clone(),
        runc_root: who.runc_root.clone(),
        pid: who.pid,
        since: now,
    });
    Ok(())
}

/// Something that can be handed to one container: a full GPU or one MIG instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Index of the GPU in the inventory.
    pub gpu: usize,
    /// Index of the MIG instance in that GPU's list, for MIG units.
    pub mig: Option<usize>,
    /// UUID.
    pub uuid: String,
    /// Its weight in GPU-equivalents, in sevenths.
    pub sevenths: u32,
}

/// GPU-equivalents are counted in sevenths of a GPU, the compute slice of an A100/H100 that
/// DS01's allocator divides by: a full GPU weighs 7, a MIG instance its profile's compute
/// slices (a `2g.20gb` weighs 2, 2/7 of a GPU), so DS01's float weights add up exactly. A MIG
/// instance whose profile is unknown weighs a whole GPU (DS01 would count it free).
pub const SLICES_PER_GPU: u32 = 7;

/// All units of an inventory: MIG instances of MIG-enabled GPUs, full GPUs otherwise.
pub fn units(inv: &[Gpu]) -> Vec<Unit> {
    let mut out = Vec::new();
    for (gi, g) in inv.iter().enumerate() {
        if g.mig_enabled && !g.migs.is_empty() {
            for (mi, m) in g.migs.iter().enumerate() {
                let sevenths = m.slices.unwrap_or(SLICES_PER_GPU);
                out.push(Unit { gpu: gi, mig: Some(mi), uuid: m.uuid.clone(), sevenths });
            }
        } else if !g.mig_enabled {
            out.push(Unit { gpu: gi, mig: None, uuid: g.uuid.clone(), sevenths: SLICES_PER_GPU });
        }
    }
    out
}

/// Sevenths of a GPU as GPU-equivalents, the way DS01 prints them: `2`, `0.29`, `2.43`.
pub fn gpueq(sevenths: u32) -> String {
    if sevenths.is_multiple_of(SLICES_PER_GPU) {
        return (sevenths / SLICES_PER_GPU).to_string();
    }
    let s = format!("{:.2}", f64::from(sevenths) / f64::from(SLICES_PER_GPU));
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The owner's limits for GPUs, as resolved from the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// GPUs and MIG instances per container (None = unlimited), and where that comes from.
    pub per_container: Option<(u32, String)>,
    /// GPU-equivalents across the owner's containers, in sevenths (None = unlimited).
    pub per_user: Option<u32>,
    /// Whether full GPUs may be handed out.
    pub allow_full: bool,
    /// Hold after stop, seconds (None = indefinitely).
    pub hold_secs: Option<u64>,
}

impl Quota {
    /// No local limit and no hold: the devices a cluster scheduler assigned, taken as decided.
    pub fn scheduler() -> Quota {
        Quota { per_container: None, per_user: None, allow_full: true, hold_secs: Some(0) }
    }
}

/// The container asking.
#[derive(Debug, Clone)]
pub struct Who {
    /// Container id.
    pub container: String,
    /// Docker name, where known.
    pub name: Option<String>,
    /// Owner.
    pub owner: String,
    /// Group.
    pub group: String,
    /// The creating runtime's pid.
    pub pid: u32,
    /// runc's --root.
    pub runc_root: String,
    /// Created through Docker.
    pub docker: bool,
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

fn shown(a: &Allocation) -> String {
    a.name.clone().unwrap_or_else(|| a.container.chars().take(12).collect())
}

/// The GPUs to hand out and how.
#[derive(Debug, Clone, Copy)]
pub struct Pool<'a> {
    /// The inventory.
    pub inv: &'a [Gpu],
    /// No unit goes to two containers at once.
    pub exclusive: bool,
}

/// Decides the units for `who`'s request and records them in `state` (not yet persisted).
/// A restart of the same container gets its held units back.
pub fn decide(
    state: &mut State,
    pool: Pool,
    req: &Request,
    who: &Who,
    quota: &Quota,
    now: u64,
) -> Result<Vec<Unit>> {
    let Pool { inv, exclusive } = pool;
    let all = units(inv);
    // The same container again (docker start after stop): its own entry first.
    if let Some(pos) = state.allocations.iter().position(|a| a.container == who.container) {
        let mine = state.allocations[pos].clone();
        let held: Vec<Unit> =
            mine.devices.iter().filter_map(|u| all.iter().find(|x| &x.uuid == u).cloned()).collect();
        let same = mine.owner == who.owner
            && held.len() == mine.devices.len()
            && match req {
                Request::None => false,
                Request::Count(n) => held.len() == *n as usize,
                Request::All => held.len() == all.len(),
                Request::Devices(ids) => {
                    ids.len() == held.len()
                        && ids
                            .iter()
                            .all(|id| resolve_id(id, inv, &all).ok().is_some_and(|u| held.contains(&u)))
                }
            };
        state.allocations.remove(pos);
        if same {
            let a = Allocation {
                status: Status::Running,
                held_until: None,
                pid: who.pid,
                runc_root: who.runc_root.clone(),
                ..mine
            };
            state.allocations.push(a);
            return Ok(held);
        }
    }
    let wanted = match req {
        Request::None => return Ok(Vec::new()),
        Request::Count(n) => *n as usize,
        Request::All => all.len(),
        Request::Devices(ids) => ids.len(),
    };
    if all.is_empty() {
        return Err(unavailable(format!("{} requested; this host has no GPUs", plural(wanted, "GPU"))));
    }
    let users_of = |u: &Unit| state.allocations.iter().filter(|a| a.devices.contains(&u.uuid)).count();
    let busy = |u: &Unit| exclusive && users_of(u) > 0;
    let mut chosen: Vec<Unit> = match req {
        Request::Devices(ids) => {
            let mut v = Vec::new();
            for id in ids {
                let u = resolve_id(id, inv, &all)?;
                if !v.contains(&u) {
                    v.push(u);
                }
            }
            v
        }
        _ => {
            // Eligible units, least-allocated first: fewest holders, MIG before full GPUs, the
            // GPU with the fewest allocated instances, then index order.
            let gpu_load = |g: usize| all.iter().filter(|x| x.gpu == g).map(&users_of).sum::<usize>();
            let mut cands: Vec<&Unit> = all.iter().filter(|u| quota.allow_full || u.mig.is_some()).collect();
            if cands.is_empty() {
                return Err(unavailable(format!(
                    "{} requested; full GPUs are not allowed for group {} and this host has no MIG instances",
                    plural(wanted, "GPU"),
                    who.group
                )));
            }
            cands.sort_by_key(|u| (users_of(u), u.mig.is_none(), gpu_load(u.gpu), u.gpu, u.mig));
            let free: Vec<Unit> = cands.iter().filter(|u| !busy(u)).map(|u| (*u).clone()).collect();
            if free.len() >= wanted {
                free.into_iter().take(wanted).collect()
            } else {
                // Not enough free: judge the request as if it could be met, so that a request
                // the policy forbids says so rather than "busy".
                let prospective: Vec<Unit> = cands.iter().take(wanted).map(|u| (*u).clone()).collect();
                check_limits(state, &prospective, who, quota)?;
                let kind = if quota.allow_full { "GPUs" } else { "MIG instances" };
                return Err(unavailable(format!(
                    "{} requested; {} of {} {kind} free",
                    plural(wanted, "GPU"),
                    free.len(),
                    cands.len()
                )));
            }
        }
    };
    chosen.sort_by_key(|u| (inv[u.gpu].index, u.mig));
    if !quota.allow_full && chosen.iter().any(|u| u.mig.is_none()) {
        return Err(unavailable(format!(
            "full GPUs are not allowed for group {}; ask for a MIG instance",
            who.group
        )));
    }
    let sevenths = check_limits(state, &chosen, who, quota)?;
    for u in &chosen {
        if let Some(a) = state.allocations.iter().find(|a| busy(u) && a.devices.contains(&u.uuid)) {
            return Err(unavailable(format!(
                "GPU {} is {} by {} ({})",
                inv[u.gpu].index,
                if a.status == Status::Held { "held after a stop" } else { "in use" },
                shown(a),
                a.owner
            )));
        }
    }
    state.allocations.push(Allocation {
        container: who.container.clone(),
        name: who.name.clone(),
        owner: who.owner.clone(),
        group: who.group.clone(),
        devices: chosen.iter().map(|u| u.uuid.clone()).collect(),
        sevenths,
        since: now,
        pid: who.pid,
        runc_root: who.runc_root.clone(),
        docker: who.docker,
        status: Status::Running,
        held_until: None,
        hold_secs: quota.hold_secs,
    });
    Ok(chosen)
}

/// Per-container (units) and per-user (GPU-equivalents) limits for `chosen`, as DS01's
/// allocator judges them; returns its weight in sevenths.
fn check_limits(state: &State, chosen: &[Unit], who: &Who, quota: &Quota) -> Result<u32> {
    let sevenths: u32 = chosen.iter().map(|u| u.sevenths).sum();
    let asked = if chosen.iter().any(|u| u.sevenths != SLICES_PER_GPU) {
        format!("{} requested ({} GPU-equivalents)", plural(chosen.len(), "GPU"), gpueq(sevenths))
    } else {
        format!("{} requested", plural(chosen.len(), "GPU"))
    };
    if let Some((limit, origin)) = &quota.per_container {
        if chosen.len() > *limit as usize {
            return Err(Refusal::GpusPerContainer { asked, limit: *limit, origin: origin.clone() }.into());
        }
    }
    if let Some(limit) = quota.per_user {
        let mine: Vec<&Allocation> = state.allocations.iter().filter(|a| a.owner == who.owner).collect();
        let holding: u32 = mine.iter().map(|a| weight(a)).sum();
        if holding + sevenths > limit {
            let names: Vec<String> = mine.iter().map(|a| shown(a)).collect();
            let holders = if names.is_empty() { String::new() } else { format!(" in {}", names.join(", ")) };
            return Err(
                Refusal::GpuQuota { asked, limit: gpueq(limit), holding: gpueq(holding), holders }.into()
            );
        }
    }
    Ok(sevenths)
}

/// An allocation's weight; one recorded before weights were (no `sevenths`) counts each of its
/// devices as a whole GPU.
fn weight(a: &Allocation) -> u32 {
    if a.sevenths > 0 {
        a.sevenths
    } else {
        a.devices.len() as u32 * SLICES_PER_GPU
    }
}

/// Finds a unit by index, `GPU-`/`MIG-` UUID or `<gpu>:<mig>` position.
fn resolve_id(id: &str, inv: &[Gpu], all: &[Unit]) -> Result<Unit> {
    let found = if let Some((g, m)) = id.split_once(':') {
        let (g, m) = (g.parse::<u32>().ok(), m.parse::<usize>().ok());
        all.iter().find(|u| Some(inv[u.gpu].index) == g && u.mig == m)
    } else if let Ok(i) = id.parse::<u32>() {
        if let Some(g) = inv.iter().find(|g| g.index == i) {
            if g.mig_enabled {
                return Err(unavailable(format!(
                    "GPU {i} is in MIG mode; ask for one of its MIG instances ({i}:0, …)"
                )));
            }
        }
        all.iter().find(|u| inv[u.gpu].index == i && u.mig.is_none())
    } else {
        all.iter().find(|u| u.uuid == id)
    };
    found.cloned().ok_or_else(|| unavailable(format!("GPU {id} does not exist on this host")))
}

fn unavailable(why: String) -> Error {
    Refusal::GpusUnavailable { why }.into()
}

/// What the reconciler needs to know about the world.
pub trait World {
    /// Does the low-level runtime (with this --root) still know this container?
    fn runc_has(&self, runc_root: &str, container: &str) -> bool;
    /// Is this pid alive?
    fn pid_alive(&self, pid: u32) -> bool;
    /// Does Docker still have this container?
    fn docker_has(&self, container: &str) -> bool;
}

/// Drops allocations that no longer hold anything: expired holds, held containers Docker
/// removed, and running ones the runtime no longer knows whose creator is gone (an engine that
/// crashed). A Docker container the runtime no longer runs but Docker still has was stopped:
/// its hold starts now. Returns what it dropped.
pub fn reconcile(state: &mut State, now: u64, world: &dyn World) -> Vec<Allocation> {
    let mut dropped = Vec::new();
    let mut keep = Vec::new();
    for mut a in state.allocations.drain(..) {
        if a.status == Status::Running
            && !world.runc_has(&a.runc_root, &a.container)
            && !(world.pid_alive(a.pid) && now.saturating_sub(a.since) < 600)
            && a.docker
            && world.docker_has(&a.container)
            && a.hold_secs != Some(0)
        {
            a.status = Status::Held;
            a.held_until = a.hold_secs.map(|h| now + h);
        }
        let live = match a.status {
            Status::Held => {
                a.held_until.is_none_or(|t| t > now) && (!a.docker || world.docker_has(&a.container))
            }
            Status::Running => {
                world.runc_has(&a.runc_root, &a.container)
                    || (world.pid_alive(a.pid) && now.saturating_sub(a.since) < 600)
            }
        };
        if live {
            keep.push(a);
        } else {
            dropped.push(a);
        }
    }
    state.allocations = keep;
    state.containers.retain(|c| {
        world.runc_has(&c.runc_root, &c.container)
            || (world.pid_alive(c.pid) && now.saturating_sub(c.since) < 600)
    });
    dropped
}

/// After `runc delete` of `container` finished: hold its units for the owner (or release them
/// when no hold applies). Returns the entry as it is now, if any.
pub fn on_deleted(state: &mut State, container: &str, now: u64) -> Option<Allocation> {
    state.containers.retain(|c| c.container != container);
    let pos = state.allocations.iter().position(|a| a.container == container)?;
    let a = &mut state.allocations[pos];
    match a.hold_secs {
        Some(0) => Some(state.allocations.remove(pos)),
        hold => {
            a.status = Status::Held;
            a.held_until = hold.map(|h| now + h);
            Some(a.clone())
        }
    }
}

#[cfg(test)]
mod tests;
