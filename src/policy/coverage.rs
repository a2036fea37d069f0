//! Which settings of DS01's files this runtime enforces, and for each one it does not, what
//! does: so that an admin never believes a limit holds because it is written down.
//!
//! The table follows DS01's own readers (ds01-infra 2cf1a0e): lifecycle timers are DS01's cron
//! scripts, idle thresholds its idle checker, the wrapper section its Docker wrapper. Unknown
//! keys are accepted and named as ignored.

use std::fmt::Write;
use std::path::Path;

use serde_yaml_ng::Value;

use crate::error::{Error, Result};

/// A setting present in the files that the runtime does not enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unenforced {
    /// Where it is written, e.g. `groups.student.idle_timeout_h` or
    /// `user-overrides.yaml: alice.max_runtime_h`.
    pub key: String,
    /// The value as written (a section shows its keys).
    pub value: String,
    /// What enforces it instead, or why nothing does.
    pub by: &'static str,
}

const IDLE: &str = "DS01's check-idle-containers.sh (cron), with lifecycle-exemptions.yaml";
const RUNTIME: &str = "DS01's enforce-max-runtime.sh (cron), with lifecycle-exemptions.yaml";
const CLEANUP: &str = "DS01's cleanup-stale-containers.sh (cron)";
const IDLE_CHECK: &str = "DS01's check-idle-containers.sh (cron)";
const NOTHING: &str = "nothing: no DS01 script reads it either";

/// Settings of a limits layer (`defaults`, a group, an override) that are DS01's lifecycle or
/// bookkeeping, not a limit this runtime applies.
fn layer_key(k: &str) -> Option<&'static str> {
    Some(match k {
        "idle_timeout_h" => IDLE,
        "max_runtime_h" => RUNTIME,
        "container_hold_after_stop_h" => CLEANUP,
        "policies" => "DS01's check-idle-containers.sh (idle thresholds per group)",
        "max_tasks" => "nothing: no DS01 script reads it; a slice's task cap is aggregate.tasks_max",
        "priority" => "DS01's allocator ordering; this runtime hands out the least-allocated GPU first",
        _ => return None,
    })
}

/// Keys of a limits layer the runtime applies.
const LAYER_ENFORCED: &[&str] = &[
    "max_gpu_equivalents",
    "max_gpu_slots_per_container",
    "max_gpu_slots",
    "max_gpus_per_user",
    "max_mig_instances",
    "max_gpus_per_container",
    "max_mig_per_container",
    "allow_full_gpu",
    "max_cpus",
    "memory",
    "memory_swap",
    "shm_size",
    "pids_limit",
    "max_containers_per_user",
    "gpu_hold_after_stop",
    "gpu_hold_after_stop_h",
    "aggregate",
];

/// Top-level sections and keys, by dotted path (a section covers everything under it).
fn top_key(path: &str) -> Option<&'static str> {
    Some(match path {
        "policies.gpu_idle_threshold"
        | "policies.cpu_idle_threshold"
        | "policies.network_idle_threshold"
        | "policies.idle_detection_window"
        | "policies.grace_period_m"
        | "policies.high_demand_threshold"
        | "policies.high_demand_idle_reduction" => IDLE_CHECK,
        "policies.sigterm_grace_s" => "DS01's check-idle-containers.sh and enforce-max-runtime.sh (stop grace)",
        "policies.created_container_timeout_m" => CLEANUP,
        "policies.keepalive_max_duration_h" | "policies.gpu_hold_after_manual_stop_m" => NOTHING,
        "container_types" => {
            "DS01's cron scripts (check-idle-containers.sh, enforce-max-runtime.sh, cleanup-stale-containers.sh)"
        }
        "monitoring" => "nothing: DS01's gpu-state-reader.py hard-codes the same list and label",
        "bare_metal_access" => "DS01's bare-metal-access tool and profile.d scripts (host logins, not containers)",
        "access_control.wrapper" => "DS01's Docker wrapper, which reads its environment, not this key",
        "gpu_allocation.mig_instances_per_gpu" | "gpu_allocation.slots_per_gpu" => {
            "nothing: a full GPU counts 1.0, a MIG instance its compute slices over 7, as DS01's allocator counts"
        }
        "gpu_allocation" => "nothing: DS01 marks these not implemented",
        _ => return None,
    })
}

/// Top-level keys the runtime reads.
const TOP_ENFORCED: &[&str] = &[
    "defaults",
    "default_group",
    "groups",
    "user_overrides",
    "access_control.admin_users",
    "access_control.admin_group",
    "enforcement.aggregate_limits",
    "enforcement.cgroup_driver",
];

/// Every setting in the policy directory the runtime does not enforce: resource-limits.yaml,
/// user-overrides.yaml and lifecycle-exemptions.yaml beside it.
pub fn scan(policy_path: &Path) -> Result<Vec<Unenforced>> {
    let dir = policy_path.parent().unwrap_or(Path::new("/"));
    let mut out = Vec::new();
    if let Some(doc) = read(policy_path)? {
        scan_policy(&doc, &mut out);
    }
    if let Some(doc) = read(&dir.join("user-overrides.yaml"))? {
        for (user, layer) in entries(&doc) {
            scan_layer(&format!("user-overrides.yaml: {user}"), layer, &mut out);
        }
    }
    if let Some(doc) = read(&dir.join("lifecycle-exemptions.yaml"))? {
        let n = doc.get("exemptions").and_then(Value::as_sequence).map_or(0, Vec::len);
        out.push(Unenforced {
            key: "lifecycle-exemptions.yaml".into(),
            value: format!("{n} exemption(s)"),
            by: "DS01's idle and max-runtime scripts; this runtime enforces no lifecycle timer to exempt from",
        });
    }
    Ok(out)
}

/// The unenforced settings of one parsed resource-limits.yaml.
pub fn scan_policy(doc: &Value, out: &mut Vec<Unenforced>) {
    if let Some(l) = doc.get("defaults") {
        scan_layer("defaults", l, out);
    }
    if let Some(groups) = doc.get("groups") {
        for (g, l) in entries(groups) {
            scan_layer(&format!("groups.{g}"), l, out);
        }
    }
    if let Some(o) = doc.get("user_overrides") {
        for (u, l) in entries(o) {
            scan_layer(&format!("user_overrides.{u}"), l, out);
        }
    }
    for (k, v) in entries(doc) {
        if !["defaults", "groups", "user_overrides"].contains(&k.as_str()) {
            scan_top(&k, v, out);
        }
    }
}

fn scan_layer(prefix: &str, layer: &Value, out: &mut Vec<Unenforced>) {
    for (k, v) in entries(layer) {
        let by = if let Some(by) = layer_key(&k) {
            by
        } else if LAYER_ENFORCED.contains(&k.as_str()) || (prefix.starts_with("groups.") && k == "members") {
            continue;
        } else {
            "nothing: not a key this runtime or DS01 knows (ignored)"
        };
        out.push(Unenforced { key: format!("{prefix}.{k}"), value: shown(v), by });
    }
}

fn scan_top(path: &str, v: &Value, out: &mut Vec<Unenforced>) {
    // A section with nothing under it (DS01's `gpu_allocation:`) sets nothing.
    if TOP_ENFORCED.contains(&path) || v.is_null() {
        return;
    }
    if let Some(by) = top_key(path) {
        out.push(Unenforced { key: path.to_owned(), value: shown(v), by });
        return;
    }
    match v {
        Value::Mapping(_) => {
            for (k, sub) in entries(v) {
                scan_top(&format!("{path}.{k}"), sub, out);
            }
        }
        _ => out.push(Unenforced {
            key: path.to_owned(),
            value: shown(v),
            by: "nothing: not a key this runtime or DS01 knows (ignored)",
        }),
    }
}

/// A mapping's entries with string keys (numbers as written).
fn entries(v: &Value) -> Vec<(String, &Value)> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| {
                    let k = match k {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k, v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A value as one short line: scalars as written, `null`, a list's items, a section's keys.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(s) => format!("[{}]", s.iter().map(shown).collect::<Vec<_>>().join(", ")),
        Value::Mapping(_) => {
            let keys: Vec<String> = entries(v).into_iter().map(|(k, _)| k).collect();
            format!("{{{}}}", keys.join(", "))
        }
        Value::Tagged(t) => shown(&t.value),
    }
}

fn read(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().is_empty() => Ok(None),
        Ok(t) => crate::policy::yaml::from_str(&t, "policy file", path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::failed(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The settings that apply to `user` of `group` (their layers and the global sections), as
/// `ds01ctl limits` lists them.
pub fn for_user<'a>(all: &'a [Unenforced], user: &str, group: &str) -> Vec<&'a Unenforced> {
    let mine = |k: &str| {
        let layer = k.split_once('.').map_or(k, |(head, _)| head);
        match layer {
            "defaults" | "policies" | "container_types" | "gpu_allocation" | "monitoring"
            | "access_control" | "bare_metal_access" => true,
            "groups" => k.strip_prefix("groups.").is_some_and(|r| r.starts_with(&format!("{group}."))),
            "user_overrides" => {
                k.strip_prefix("user_overrides.").is_some_and(|r| r.starts_with(&format!("{user}.")))
            }
            _ => {
                k == "lifecycle-exemptions.yaml"
                    || k.strip_prefix("user-overrides.yaml: ")
                        .is_some_and(|r| r.starts_with(&format!("{user}.")))
            }
        }
    };
    all.iter().filter(|u| mine(&u.key)).collect()
}

/// One line per setting: key, value, what enforces it.
pub fn render(list: &[&Unenforced], indent: &str) -> String {
    let mut o = String::new();
    for u in list {
        let _ = writeln!(o, "{indent}{} = {}  → {}", u.key, u.value, u.by);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_keys_are_named_with_their_enforcer_and_limits_are_not() {
        let doc: Value = serde_yaml_ng::from_str(
            "defaults:\n  memory: 32g\n  idle_timeout_h: 0.5\n  max_tasks: 10\n  colour: blue\n\
             groups:\n  student:\n    members: [a]\n    max_runtime_h: 24\n    aggregate:\n      gpu_limit: 2.0\n\
             gpu_allocation:\npolicies:\n  grace_period_m: 30\n  keepalive_max_duration_h: 24\n\
             access_control:\n  admin_users: [x]\n  wrapper:\n    enforcement_mode: full\n\
             enforcement:\n  aggregate_limits: true\nfuture_section: 1\n",
        )
        .unwrap();
        let mut out = Vec::new();
        scan_policy(&doc, &mut out);
        let keys: Vec<&str> = out.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "defaults.idle_timeout_h",
                "defaults.max_tasks",
                "defaults.colour",
                "groups.student.max_runtime_h",
                "policies.grace_period_m",
                "policies.keepalive_max_duration_h",
                "access_control.wrapper",
                "future_section"
            ]
        );
        assert_eq!(out[0].by, IDLE);
        assert_eq!(out[3].by, RUNTIME);
        assert_eq!(out[6].value, "{enforcement_mode}");
        assert!(out[2].by.contains("ignored"));
        let student = for_user(&out, "a", "student");
        assert!(student.iter().any(|u| u.key == "groups.student.max_runtime_h"));
        assert!(for_user(&out, "b", "faculty").iter().all(|u| !u.key.starts_with("groups.")));
    }
}
