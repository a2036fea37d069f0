//! `ds01ctl limits <user>`: a user's effective limits, each with where it comes from.

use std::fmt::Write;

use crate::error::Result;
use crate::naming::{self, Placement};
use crate::owner::identity::{Owner, FALLBACK_GROUP};
use crate::policy::caps::caps;
use crate::policy::quota::{quota, slice_limits};
use crate::policy::settings::{Settings, Source};
use crate::policy::{coverage, Nullable, Policy, Resolved};

fn shown<T: std::fmt::Display>(r: &Resolved<T>) -> (String, String) {
    let v = match &r.value {
        Nullable::Value(v) => v.to_string(),
        Nullable::Unlimited => "unlimited".into(),
        Nullable::Unset => "unlimited (not set)".into(),
    };
    (v, r.origin.to_string())
}

/// The report for `user`.
pub fn render(settings: &Settings, policy: &Policy, user: &str) -> Result<String> {
    let group = policy.group_of(user, FALLBACK_GROUP);
    let placement = Placement::for_owner(&naming::sanitize(&group)?, &naming::sanitize(user)?);
    let how = if policy.members.get(&group).is_some_and(|m| m.iter().any(|x| x == user)) {
        format!("member of {group}")
    } else {
        format!("in no group: default_group {group}")
    };
    let mut o = String::new();
    let _ = writeln!(o, "user    {user}  ({how})");
    let _ = writeln!(o, "slice   {}", placement.cgroupfs_dir());
    let _ = writeln!(o, "admin   {}", if policy.is_admin(user) { "yes (no GPU limits)" } else { "no" });
    let _ = writeln!(o, "\nper container                value                origin");
    let rows: Vec<(&str, (String, String))> = vec![
        ("max_cpus", shown(&policy.resolve(user, &group, |l| &l.max_cpus))),
        ("memory", shown(&policy.resolve(user, &group, |l| &l.memory))),
        ("memory_swap", shown(&policy.resolve(user, &group, |l| &l.memory_swap))),
        ("shm_size", shown(&policy.resolve(user, &group, |l| &l.shm_size))),
        ("pids_limit", shown(&policy.resolve(user, &group, |l| &l.pids_limit))),
        (
            "max_gpu_slots_per_container",
            shown(&policy.resolve(user, &group, |l| &l.max_gpu_slots_per_container)),
        ),
        ("allow_full_gpu", shown(&policy.resolve(user, &group, |l| &l.allow_full_gpu))),
    ];
    for (k, (v, origin)) in rows {
        let _ = writeln!(o, "  {k:<26} {v:<20} {origin}");
    }
    let _ = writeln!(o, "\nper user");
    for (k, (v, origin)) in [
        ("max_containers_per_user", shown(&policy.resolve(user, &group, |l| &l.max_containers_per_user))),
        ("max_gpu_equivalents", shown(&policy.resolve(user, &group, |l| &l.max_gpu_equivalents))),
        ("gpu_hold_after_stop", shown(&policy.resolve(user, &group, |l| &l.gpu_hold_after_stop))),
    ] {
        let _ = writeln!(o, "  {k:<26} {v:<20} {origin}");
    }
    match policy.aggregate(user, &group) {
        Some((origin, a)) => {
            let applied = if policy.aggregates_enforced() {
                ""
            } else {
                " (only gpu_limit applies: enforcement.aggregate_limits is not true, as in DS01)"
            };
            let f = |n: &Nullable<String>| match n {
                Nullable::Value(v) => v.clone(),
                _ => "unlimited".into(),
            };
            let _ = writeln!(
                o,
                "  aggregate ({origin}): cpu_quota {}  memory_max {}  memory_high {}  tasks_max {}  gpu_limit {}{applied}",
                f(&a.cpu_quota.clone().map_display()),
                f(&a.memory_max.clone().map_display()),
                f(&a.memory_high.clone().map_display()),
                f(&a.tasks_max.clone().map_display()),
                f(&a.gpu_limit.clone().map_display())
            );
        }
        None => {
            let _ = writeln!(o, "  aggregate                  none (no per-user cap)");
        }
    }
    let owner =
        Owner { user: Some(user.into()), group: Some(group.clone()), source: Some(Source::Label), placement };
    let q = quota(policy, owner.user_group());
    let c = caps(policy, owner.user_group(), false, true);
    let _ = writeln!(o, "\nas enforced");
    let _ = writeln!(
        o,
        "  GPUs per container {}, per user {} GPU-equivalents, full GPUs {}",
        q.per_container.map(|(n, _)| n.to_string()).unwrap_or_else(|| "unlimited".into()),
        q.per_user.map(crate::gpu::alloc::gpueq).unwrap_or_else(|| "unlimited".into()),
        if q.allow_full { "allowed" } else { "not allowed" }
    );
    if let Some(cpu) = c.cpus {
        let _ = writeln!(o, "  CPUs per container {} ({})", cpu.value, cpu.origin);
    }
    if let Some(l) = slice_limits(policy, owner.user_group()) {
        let conf = crate::ctl::slice_units::limits_conf(&l);
        let body: Vec<&str> = conf.lines().filter(|l| l.contains('=')).collect();
        let _ = writeln!(o, "  slice {}: {}", owner.placement.leaf(), body.join("  "));
    }
    let trusted: Vec<&str> = settings.identity.trusted_for_admin.iter().map(|s| s.as_str()).collect();
    let _ = writeln!(
        o,
        "\nbeyond an engine's defaults (capabilities, seccomp, AppArmor, host namespaces and devices)"
    );
    if policy.is_admin(user) && !trusted.is_empty() {
        let _ = writeln!(o, "  everything, when named by a trusted source ({})", trusted.join(", "));
    } else {
        let _ = writeln!(
            o,
            "  nothing, but: capabilities {}; devices {}",
            list(&settings.guard.cap_allow),
            list(&settings.guard.device_allow)
        );
    }
    let b = &settings.build;
    let _ = writeln!(
        o,
        "\nbuild containers (docker build) that name no owner: /ds01.slice/{}, never GPUs",
        naming::BUILD_SLICE
    );
    let _ = writeln!(
        o,
        "  max_cpus {}  memory {}  pids_limit {}  (build in the runtime's settings; with an owner named, the owner's slice and limits)",
        b.max_cpus.map(|c| c.to_string()).unwrap_or_else(|| "unlimited".into()),
        b.memory.as_ref().map(|m| m.to_string()).unwrap_or_else(|| "unlimited".into()),
        b.pids_limit.map(|p| p.to_string()).unwrap_or_else(|| "unlimited".into()),
    );
    let all = coverage::scan(&policy.path)?;
    let mine = coverage::for_user(&all, user, &group);
    if mine.is_empty() {
        let _ = writeln!(
            o,
            "
not enforced by this runtime: nothing in the policy files"
        );
    } else {
        let _ = writeln!(
            o,
            "
not enforced by this runtime (what enforces it instead)"
        );
        o.push_str(&coverage::render(&mine, "  "));
    }
    Ok(o)
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

trait MapDisplay {
    fn map_display(self) -> Nullable<String>;
}

impl<T: std::fmt::Display> MapDisplay for Nullable<T> {
    fn map_display(self) -> Nullable<String> {
        match self {
            Nullable::Value(v) => Nullable::Value(v.to_string()),
            Nullable::Unlimited => Nullable::Unlimited,
            Nullable::Unset => Nullable::Unset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_values_with_origins() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/resource-limits.yaml"));
        let mut p = Policy::parse(
            text,
            std::path::Path::new("/p"),
            Some("rita:\n  memory: 100g\n"),
            std::path::Path::new("/o"),
        )
        .unwrap();
        p.members.insert("researcher".into(), vec!["rita".into()]);
        let r = render(&Settings::default(), &p, "rita").unwrap();
        assert!(r.contains("member of researcher"), "{r}");
        assert!(r.contains("/ds01.slice/ds01-researcher.slice/ds01-researcher-rita.slice"), "{r}");
        let line = |k: &str| r.lines().find(|l| l.trim_start().starts_with(k)).unwrap_or_default().to_owned();
        assert!(line("memory ").contains("100g") && line("memory ").contains("user override rita"), "{r}");
        assert!(line("max_cpus").contains("48") && line("max_cpus").contains("group researcher"), "{r}");
        assert!(line("pids_limit").contains("4096") && line("pids_limit").contains("defaults"), "{r}");
        assert!(r.contains("aggregate (group researcher): cpu_quota 24000%  memory_max 320G"), "{r}");
        let nobody = render(&Settings::default(), &p, "zed").unwrap();
        assert!(nobody.contains("in no group: default_group student"), "{nobody}");
        assert!(r.contains("nothing, but: capabilities SYS_PTRACE; devices none"), "{r}");
        assert!(r.contains("/ds01.slice/ds01-build.slice, never GPUs"), "{r}");
        assert!(r.contains("max_cpus 4  memory 8g  pids_limit 4096"), "{r}");
    }
}
