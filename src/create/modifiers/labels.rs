//! Labels: OCI annotations saying whose the container is (shown by `runc state`).

use serde_json::Value;

use super::{Context, Note, SpecModifier};
use crate::error::Result;
use crate::spec;
use crate::spec::annotations::Record;

/// Drops every `ds01.*` annotation the creator wrote and writes the runtime's own record:
/// owner, group, slice, pod, engine name and image, granted GPUs and CDI devices, and the
/// settings file (runc keeps them in its state, so `delete` can be recorded by name, with the
/// right settings, after the engine has forgotten the container).
pub struct Labels;

impl SpecModifier for Labels {
    fn name(&self) -> &'static str {
        "labels"
    }

    fn apply(&self, spec: &mut Value, ctx: &Context) -> Result<Vec<Note>> {
        let owner = ctx.owner;
        let pod = ctx.engine.pod().map(|p| p.describe());
        let record = Record {
            user: owner.user.clone(),
            group: owner.group.clone(),
            slice: (!owner.placement.is_engine_cgroup()).then(|| owner.placement.leaf().to_owned()),
            pod,
            managed: true,
            identity_source: Some(owner.source_name().to_owned()),
            name: ctx.engine.meta().and_then(|m| m.name.clone()),
            image: ctx.engine.meta().and_then(|m| m.image.clone()),
            build: ctx.build,
            gpus: ctx.gpus.devices.iter().map(|d| d.uuid.clone()).collect(),
            cdi: ctx.gpus.cdi.as_ref().map(|r| r.devices.join(",")),
            // Only the shim names it: a user's own would steer the calls that read it.
            settings: ctx.settings_file.and_then(|f| f.to_str()).map(str::to_owned),
        };
        record.write(spec::object_mut(spec, &["annotations"])?);
        Ok(vec![Note { path: "annotations".into(), why: "ownership annotations (ds01.*)".into() }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::modifiers::TestParts;
    use crate::owner::engine::Engine;
    use crate::spec::annotations::Key;
    const SETTINGS_KEY: &str = Key::Settings.as_str();
    use crate::create::modifiers::fixtures;
    use crate::naming::Placement;
    use crate::owner::identity::Owner;
    use crate::policy::settings::Source;

    #[test]
    fn adds_annotations_keeping_existing_ones_and_order() {
        let owner = Owner {
            user: Some("carol".into()),
            group: Some("researcher".into()),
            source: Some(Source::Annotation),
            placement: Placement::for_owner("researcher", "carol"),
        };
        let meta = crate::owner::identity::EngineMeta {
            name: Some("nb1".into()),
            image: Some("pytorch:2".into()),
            ..Default::default()
        };
        let docker = crate::owner::docker::DockerMeta { engine: meta, ..Default::default() };
        let t = TestParts { owner, engine: Engine::Docker(Box::new(docker)), ..TestParts::new() };
        let ctx = t.ctx();
        let mut spec = fixtures::podman();
        spec["annotations"]["ds01.name"] = "forged".into();
        spec["annotations"]["ds01.pod"] = "kube-system/x/y".into();
        spec["annotations"]["ds01.slice"] = "ds01-admin-root.slice".into();
        let theirs = |s: &Value| -> Vec<String> {
            s["annotations"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| !k.starts_with("ds01."))
                .cloned()
                .collect()
        };
        let before = theirs(&spec);
        Labels.apply(&mut spec, &ctx).unwrap();
        assert_eq!(theirs(&spec), before, "the engine's keys keep their order");
        let ann = spec["annotations"].as_object().unwrap();
        assert_eq!(ann.keys().next().map(String::as_str), Some("ds01.user"), "the request's place kept");
        assert!(ann.get("ds01.pod").is_none(), "a creator's ds01.pod is dropped");
        assert_eq!(ann["io.container.manager"], "libpod");
        assert_eq!(ann["ds01.user"], "carol");
        assert_eq!(ann["ds01.group"], "researcher");
        assert_eq!(ann["ds01.slice"], "ds01-researcher-carol.slice", "the runtime's slice");
        assert_eq!(ann["ds01.managed"], "true");
        assert_eq!(ann["ds01.identity-source"], "annotation");
        assert_eq!(ann["ds01.name"], "nb1", "the engine's name, not the creator's");
        assert_eq!(ann["ds01.image"], "pytorch:2");
        assert!(ann.get(SETTINGS_KEY).is_none(), "no settings file named, none recorded");
    }

    #[test]
    fn the_settings_file_is_recorded_only_when_the_shim_names_it() {
        let file = std::path::Path::new("/srv/ds01/runtime.yaml");
        let t = TestParts::new();
        let base = &t.ctx();
        {
            let named = Context { settings_file: Some(file), ..t.ctx() };
            let mut spec = fixtures::podman();
            spec["annotations"][SETTINGS_KEY] = "/home/mallory/evil.yaml".into();
            Labels.apply(&mut spec, &named).unwrap();
            assert_eq!(spec["annotations"][SETTINGS_KEY], "/srv/ds01/runtime.yaml");
            spec["annotations"][SETTINGS_KEY] = "/home/mallory/evil.yaml".into();
            spec["annotations"]["ds01.settings=/home/mallory/evil.yaml"] = "".into();
            Labels.apply(&mut spec, base).unwrap();
            assert!(spec["annotations"].get(SETTINGS_KEY).is_none(), "a user's own is dropped");
            let keys: Vec<&String> = spec["annotations"].as_object().unwrap().keys().collect();
            assert!(keys.iter().all(|k| !k.contains('=')), "no key that reads as a label: {keys:?}");
        }
    }

    #[test]
    fn docker_spec_gets_an_annotations_object_at_the_end() {
        let owner = Owner { user: None, group: None, source: None, placement: Placement::unattributed() };
        let t = TestParts { owner, ..TestParts::new() };
        let ctx = t.ctx();
        let mut spec = fixtures::docker();
        assert!(spec.get("annotations").is_none());
        Labels.apply(&mut spec, &ctx).unwrap();
        let obj = spec.as_object().unwrap();
        assert_eq!(obj.keys().next_back().map(String::as_str), Some("annotations"));
        assert_eq!(spec["annotations"]["ds01.slice"], "ds01-unattributed.slice");
        assert_eq!(spec["annotations"]["ds01.identity-source"], "none");
        assert!(spec["annotations"].get("ds01.user").is_none());
        assert!(spec["annotations"].get("ds01.name").is_none(), "no engine name, no annotation");
    }
}
