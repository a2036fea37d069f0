//! The cgroup edge (cgroupfs driver): make sure ds01.slice, ds01-<group>.slice and
//! ds01-<group>-<user>.slice exist in every mounted hierarchy, and that the user's slice carries
//! the aggregate limits, so that all of a user's containers together cannot exceed them.
//! Written with cgroups-rs, for cgroup v1 (legacy or hybrid) and v2; re-applied only when the
//! limits changed (a marker in the state directory remembers what was written).

use std::path::{Path, PathBuf};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::hierarchies;
use cgroups_rs::fs::memory::{MemController, SetMemory};
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, Hierarchy, MaxValue, Subsystem};

use crate::error::{Error, Result};
use crate::naming::Placement;

/// CFS period for slice quotas.
const PERIOD: u64 = 100_000;

/// The aggregate limits of a user's slice (None = unlimited).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SliceLimits {
    /// Hard memory limit, bytes.
    pub memory_max: Option<u64>,
    /// Soft memory limit (v2 memory.high; v1 soft limit), bytes.
    pub memory_high: Option<u64>,
    /// CPU quota in percent of one CPU.
    pub cpu_percent: Option<f64>,
    /// Max tasks.
    pub tasks_max: Option<u64>,
}

impl SliceLimits {
    /// A stable text form, for the "already applied" marker.
    pub fn fingerprint(&self) -> String {
        format!("{:?}", self)
    }
}

/// Which hierarchy to write: the host's (detected by cgroups-rs), or a v2 tree at another root
/// (tests use a fake one).
#[derive(Debug, Clone)]
pub enum Tree {
    /// cgroups-rs' own detection: v1 when /sys/fs/cgroup is not cgroup2.
    Host,
    /// A cgroup v2 tree at this root.
    V2At(PathBuf),
}

impl Tree {
    fn hierarchy(&self) -> Box<dyn Hierarchy> {
        match self {
            Tree::Host => hierarchies::auto(),
            Tree::V2At(root) => Box::new(RootedV2 { root: root.clone() }),
        }
    }

    /// Whether the user's slice directory exists (in the memory hierarchy on v1).
    pub fn exists(&self, placement: &Placement) -> bool {
        let dir = placement.cgroupfs_dir();
        let base = match self {
            Tree::V2At(root) => root.clone(),
            Tree::Host if hierarchies::is_cgroup2_unified_mode() => PathBuf::from("/sys/fs/cgroup"),
            Tree::Host => PathBuf::from("/sys/fs/cgroup/memory"),
        };
        base.join(dir.trim_start_matches('/')).is_dir()
    }
}

/// Creates the slice chain and writes the user's limits (unlimited values are written as such,
/// so that a policy that lifted a limit lifts it here too).
pub fn apply(tree: &Tree, placement: &Placement, limits: Option<&SliceLimits>) -> Result<()> {
    let mut path = String::new();
    let mut leaf = None;
    for s in &placement.slices {
        if !path.is_empty() {
            path.push('/');
        }
        path.push_str(s);
        let cg = Cgroup::new(tree.hierarchy(), path.as_str())
            .map_err(|e| Error::failed(format!("cannot create cgroup {path}: {e}")))?;
        leaf = Some(cg);
    }
    let (Some(cg), Some(l)) = (leaf, limits) else { return Ok(()) };
    let fail = |what: &str, e: cgroups_rs::fs::error::Error| {
        Error::failed(format!("cannot set {what} on {}: {e}", placement.leaf()))
    };
    let max = |v: Option<u64>| v.map(|n| MaxValue::Value(n as i64)).unwrap_or(MaxValue::Max);
    if let Some(mem) = cg.controller_of::<MemController>() {
        if cg.v2() {
            let set = SetMemory {
                max: Some(max(l.memory_max)),
                high: Some(max(l.memory_high)),
                low: None,
                min: None,
            };
            mem.set_mem(set).map_err(|e| fail("memory.max/memory.high", e))?;
        } else {
            mem.set_limit(l.memory_max.map(|n| n as i64).unwrap_or(-1))
                .map_err(|e| fail("memory.limit_in_bytes", e))?;
            mem.set_soft_limit(l.memory_high.map(|n| n as i64).unwrap_or(-1))
                .map_err(|e| fail("memory.soft_limit_in_bytes", e))?;
        }
    }
    if let Some(cpu) = cg.controller_of::<CpuController>() {
        let quota = l.cpu_percent.map(|p| (p / 100.0 * PERIOD as f64).round() as i64).unwrap_or(-1);
        cpu.set_cfs_quota_and_period(Some(quota), Some(PERIOD)).map_err(|e| fail("cpu quota", e))?;
    }
    if let Some(pids) = cg.controller_of::<PidController>() {
        pids.set_pid_max(max(l.tasks_max)).map_err(|e| fail("pids.max", e))?;
    }
    Ok(())
}

/// Applies the limits unless the marker in `state_dir` says these very limits are in place.
pub fn ensure(
    tree: &Tree,
    placement: &Placement,
    limits: Option<&SliceLimits>,
    state_dir: &Path,
) -> Result<()> {
    let marker = state_dir.join("slices").join(placement.leaf());
    let want = limits.map(SliceLimits::fingerprint).unwrap_or_default();
    if tree.exists(placement) && std::fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(());
    }
    apply(tree, placement, limits)?;
    if let Some(dir) = marker.parent() {
        if std::fs::create_dir_all(dir).is_ok() {
            // A lost marker only costs the next create a re-apply.
            let _ = crate::host::fs::write_atomic(&marker, want.as_bytes(), 0o644, None);
        }
    }
    Ok(())
}

/// A cgroup v2 hierarchy mounted at `root` (cgroups-rs' own V2 is fixed to /sys/fs/cgroup).
#[derive(Debug)]
struct RootedV2 {
    root: PathBuf,
}

impl Hierarchy for RootedV2 {
    fn subsystems(&self) -> Vec<Subsystem> {
        let text = std::fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        let r = || self.root.clone();
        text.split_whitespace()
            .filter_map(|c| match c {
                "memory" => Some(Subsystem::Mem(MemController::new(r(), PathBuf::new(), true))),
                "cpu" => Some(Subsystem::Cpu(CpuController::new(r(), PathBuf::new(), true))),
                "pids" => Some(Subsystem::Pid(PidController::new(r(), PathBuf::new(), true))),
                _ => None,
            })
            .collect()
    }

    fn root(&self) -> PathBuf {
        self.root.clone()
    }

    fn root_control_group(&self) -> Cgroup {
        Cgroup::load(Box::new(RootedV2 { root: self.root.clone() }), "")
    }

    fn parent_control_group(&self, path: &str) -> Cgroup {
        let parent = Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        Cgroup::load(Box::new(RootedV2 { root: self.root.clone() }), parent)
    }

    fn v2(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v2 tree shaped like the kernel's: the files exist before they are written.
    fn fake_v2(root: &Path, placement: &Placement) {
        std::fs::create_dir_all(root).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        let mut dir = root.to_path_buf();
        for s in &placement.slices {
            dir.push(s);
            std::fs::create_dir_all(&dir).unwrap();
            for f in ["cgroup.subtree_control", "memory.max", "memory.high", "cpu.max", "pids.max"] {
                std::fs::write(dir.join(f), if f == "cpu.max" { "max 100000" } else { "max" }).unwrap();
            }
        }
    }

    #[test]
    fn v2_writes_against_a_fake_root() {
        let root = std::env::temp_dir().join(format!("ds01-cg2-{}", std::process::id()));
        let p = Placement::for_owner("student", "alice");
        fake_v2(&root, &p);
        let limits = SliceLimits {
            memory_max: Some(96 << 30),
            memory_high: Some(86 << 30),
            cpu_percent: Some(9600.0),
            tasks_max: Some(12288),
        };
        let state = root.join("state");
        ensure(&Tree::V2At(root.clone()), &p, Some(&limits), &state).unwrap();
        let leaf = root.join("ds01.slice/ds01-student.slice/ds01-student-alice.slice");
        let read = |f: &str| std::fs::read_to_string(leaf.join(f)).unwrap();
        assert_eq!(read("memory.max"), (96u64 << 30).to_string());
        assert_eq!(read("memory.high"), (86u64 << 30).to_string());
        assert_eq!(read("cpu.max"), "9600000 100000");
        assert_eq!(read("pids.max"), "12288");
        let enabled = std::fs::read_to_string(root.join("ds01.slice/cgroup.subtree_control")).unwrap();
        assert!(!enabled.is_empty(), "controllers enabled down the chain: {enabled:?}");
        // Unchanged limits are not rewritten; lifted ones are written as max.
        std::fs::write(leaf.join("pids.max"), "7").unwrap();
        ensure(&Tree::V2At(root.clone()), &p, Some(&limits), &state).unwrap();
        assert_eq!(read("pids.max"), "7", "marker says nothing changed");
        let lifted = SliceLimits { tasks_max: None, ..limits };
        ensure(&Tree::V2At(root.clone()), &p, Some(&lifted), &state).unwrap();
        assert_eq!(read("pids.max"), "max");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
