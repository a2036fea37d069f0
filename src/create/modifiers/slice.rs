//! Slice placement: linux.cgroupsPath becomes the owner's slice.

use serde_json::Value;

use super::{Context, Note, SpecModifier};
use crate::error::Result;
use crate::spec;

/// Sets linux.cgroupsPath to `ds01-<group>-<user>.slice:<prefix>:<id>` (systemd driver) or
/// `/ds01.slice/ds01-<group>.slice/ds01-<group>-<user>.slice/<prefix>-<id>.scope` (cgroupfs).
pub struct SlicePlacement;

impl SpecModifier for SlicePlacement {
    fn name(&self) -> &'static str {
        "slice"
    }

    fn apply(&self, spec: &mut Value, ctx: &Context) -> Result<Vec<Note>> {
        if ctx.owner.placement.is_engine_cgroup() {
            return Ok(Vec::new());
        }
        let path = ctx.owner.placement.cgroups_path(ctx.systemd_cgroup, ctx.scope_prefix, ctx.container_id);
        let linux = spec::object_mut(spec, &["linux"])?;
        let old = linux.get("cgroupsPath").and_then(Value::as_str).map(str::to_owned);
        linux.insert("cgroupsPath".into(), Value::String(path.clone()));
        let why = match (&ctx.owner.user, old) {
            (Some(u), Some(old)) => {
                format!("owner {u} ({} source): {old} -> {path}", ctx.owner.source_name())
            }
            (Some(u), None) => format!("owner {u} ({} source)", ctx.owner.source_name()),
            (None, _) => "no owner; unattributed policy places it".to_owned(),
        };
        Ok(vec![Note { path: "linux.cgroupsPath".into(), why }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::modifiers::fixtures;
    use crate::create::modifiers::TestParts;
    use crate::naming::Placement;
    use crate::owner::identity::Owner;
    use crate::policy::settings::Source;

    fn alice() -> Owner {
        Owner {
            user: Some("alice".into()),
            group: Some("student".into()),
            source: Some(Source::Label),
            placement: Placement::for_owner("student", "alice"),
        }
    }

    #[test]
    fn cgroupfs_and_systemd_paths_on_real_specs() {
        let owner = alice();
        for systemd in [false, true] {
            for mut spec in [fixtures::docker(), fixtures::podman()] {
                let t =
                    TestParts { id: "c1", owner: owner.clone(), systemd_cgroup: systemd, ..TestParts::new() };
                let notes = SlicePlacement.apply(&mut spec, &t.ctx()).unwrap();
                let want = if systemd {
                    "ds01-student-alice.slice:docker:c1"
                } else {
                    "/ds01.slice/ds01-student.slice/ds01-student-alice.slice/docker-c1.scope"
                };
                assert_eq!(spec["linux"]["cgroupsPath"], want);
                assert_eq!(notes[0].path, "linux.cgroupsPath");
            }
        }
    }

    #[test]
    fn creates_linux_when_absent_and_refuses_non_object() {
        let owner = alice();
        let t = TestParts { id: "c1", owner, systemd_cgroup: true, ..TestParts::new() };
        let ctx = t.ctx();
        let mut spec = serde_json::json!({"ociVersion": "1.0.2"});
        SlicePlacement.apply(&mut spec, &ctx).unwrap();
        assert_eq!(
            spec.to_string(),
            r#"{"ociVersion":"1.0.2","linux":{"cgroupsPath":"ds01-student-alice.slice:docker:c1"}}"#
        );
        let mut bad = serde_json::json!({"linux": 3});
        assert!(SlicePlacement.apply(&mut bad, &ctx).is_err());
    }
}
