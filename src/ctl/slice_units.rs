//! The systemd driver's side of the aggregates: systemd owns the cgroup tree, so the limits are
//! slice units. Rendering is pure (the policy in, unit files out); applying writes only what
//! changed and asks systemd to reload once.

use std::path::{Path, PathBuf};

use crate::error::{Context, Result};
use crate::host::cgroups::SliceLimits;
use crate::host::fs::write_atomic;
use crate::naming;
use crate::policy::Policy;

/// One unit file: its path relative to the unit directory, and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// e.g. `ds01-student-alice.slice.d/10-resource-limits.conf`.
    pub rel: PathBuf,
    /// The file's text.
    pub text: String,
}

const ACCOUNTING: &str =
    "CPUAccounting=true\nMemoryAccounting=true\nTasksAccounting=true\nIOAccounting=true\n";

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
}

/// systemd's value for a byte count (exact K/M/G/T when it divides, else bytes).
fn bytes(n: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", n >> shift);
        }
    }
    n.to_string()
}

/// The drop-in with a user's aggregate limits (`infinity` where the policy says null).
pub fn limits_conf(l: &SliceLimits) -> String {
    let cpu = l.cpu_percent.map(|p| format!("{}%", p.round() as u64)).unwrap_or_default();
    let mem = |v: Option<u64>| v.map(bytes).unwrap_or_else(|| "infinity".into());
    let tasks = l.tasks_max.map(|t| t.to_string()).unwrap_or_else(|| "infinity".into());
    format!(
        "# Written by ds01ctl slices from the DS01 policy; changes here are overwritten.\n[Slice]\nCPUQuota={cpu}\nMemoryMax={}\nMemoryHigh={}\nTasksMax={tasks}\n",
        mem(l.memory_max),
        mem(l.memory_high)
    )
}

/// Every unit for the policy: ds01.slice, one slice per group (accounting on), and per known
/// user a slice plus its `10-resource-limits.conf` drop-in (when their group has aggregates).
pub fn render(policy: &Policy, fallback_group: &str) -> Result<Vec<UnitFile>> {
    let mut out = vec![UnitFile {
        rel: "ds01.slice".into(),
        text: format!("[Unit]\nDescription=DS01 GPU Server Container Slice\nBefore=slices.target\n\n[Slice]\n{ACCOUNTING}"),
    }];
    for g in policy.file.groups.keys() {
        let sg = naming::sanitize(g)?;
        out.push(UnitFile {
            rel: format!("ds01-{sg}.slice").into(),
            text: format!(
                "[Unit]\nDescription=DS01 {} Group\nBefore=slices.target\n\n[Slice]\n{ACCOUNTING}",
                capitalized(g)
            ),
        });
    }
    for (user, group) in policy.known_users(fallback_group) {
        let (sg, su) = (naming::sanitize(&group)?, naming::sanitize(&user)?);
        let unit = format!("ds01-{sg}-{su}.slice");
        out.push(UnitFile {
            rel: unit.clone().into(),
            text: format!(
                "[Unit]\nDescription=DS01 {} - {user} ({su})\nBefore=slices.target\n\n[Slice]\n{ACCOUNTING}",
                capitalized(&group)
            ),
        });
        if let Some((_, agg)) = policy.slice_aggregate(&user, &group) {
            out.push(UnitFile {
                rel: PathBuf::from(format!("{unit}.d/10-resource-limits.conf")),
                text: limits_conf(&agg.slice_limits()),
            });
        }
    }
    Ok(out)
}

/// Writes the units under `dir` whose content differs; returns the paths written.
pub fn write_changed(dir: &Path, units: &[UnitFile]) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for u in units {
        let path = dir.join(&u.rel);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == u.text) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).context(format_args!("cannot create {}", parent.display()))?;
        }
        write_atomic(&path, u.text.as_bytes(), 0o644, None)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_ds01_units_for_known_users() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/resource-limits.yaml"));
        let mut p = Policy::parse(
            text,
            Path::new("/p"),
            Some("rita:\n  aggregate:\n    memory_max: 500G\n"),
            Path::new("/o"),
        )
        .unwrap();
        p.members.insert("researcher".into(), vec!["rita".into()]);
        p.members.insert("student".into(), vec!["h.baker@uni.example".into()]);
        let units = render(&p, "student").unwrap();
        let find = |rel: &str| units.iter().find(|u| u.rel == Path::new(rel)).map(|u| u.text.clone());
        assert!(find("ds01.slice").unwrap().contains("MemoryAccounting=true"));
        assert!(find("ds01-researcher.slice").unwrap().contains("Description=DS01 Researcher Group"));
        assert!(find("ds01-student-h_baker.slice")
            .unwrap()
            .contains("Description=DS01 Student - h.baker@uni.example (h_baker)"));
        assert_eq!(
            find("ds01-student-h_baker.slice.d/10-resource-limits.conf").unwrap(),
            "# Written by ds01ctl slices from the DS01 policy; changes here are overwritten.\n[Slice]\nCPUQuota=9600%\nMemoryMax=96G\nMemoryHigh=86G\nTasksMax=12288\n"
        );
        // The override's aggregate replaces the group's (DS01 semantics: the section, whole).
        let rita = find("ds01-researcher-rita.slice.d/10-resource-limits.conf").unwrap();
        assert!(rita.contains("MemoryMax=500G") && rita.contains("TasksMax=infinity"), "{rita}");
        // Admins have no aggregate: no drop-in.
        assert!(find("ds01-admin-datasciencelab.slice.d/10-resource-limits.conf").is_none());
    }

    #[test]
    fn writes_only_what_changed() {
        let dir = std::env::temp_dir().join(format!("ds01-units-{}", std::process::id()));
        let units = vec![
            UnitFile { rel: "a.slice".into(), text: "x\n".into() },
            UnitFile { rel: "b.slice.d/10.conf".into(), text: "y\n".into() },
        ];
        assert_eq!(write_changed(&dir, &units).unwrap().len(), 2);
        assert!(write_changed(&dir, &units).unwrap().is_empty());
        std::fs::write(dir.join("a.slice"), "edited\n").unwrap();
        assert_eq!(write_changed(&dir, &units).unwrap(), vec![dir.join("a.slice")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
