//! CDI: applies the NVIDIA CDI edits resolved for the allocated devices (driver mounts, hooks,
//! device nodes with their allow rules, env, groups), so that CUDA works in the container without
//! NVIDIA's runtime in the chain. It runs after the guard: these edits come from the admin's CDI
//! spec, not from the container's creator, so the bind-mount rules do not apply to them.
//! NVIDIA_VISIBLE_DEVICES stays the allocation's (the spec's `void` is for NVIDIA's own hook).

use serde_json::{json, Map, Value};

use super::gpus::set_env;
use super::{Context, Note, SpecModifier};
use crate::error::{Error, Result};
use crate::gpu::cdi::{DeviceNode, Hook, Mount};
use crate::spec;

/// Applies `ctx.gpus.cdi`.
pub struct Cdi;

impl SpecModifier for Cdi {
    fn name(&self) -> &'static str {
        "cdi"
    }

    fn apply(&self, spec: &mut Value, ctx: &Context) -> Result<Vec<Note>> {
        let Some(r) = &ctx.gpus.cdi else {
            return Ok(Vec::new());
        };
        let e = &r.edits;
        let mut notes = Vec::new();
        let mut note = |path: &str, why: String| notes.push(Note { path: path.into(), why });
        let shown = r.devices.join(",");

        let env: Vec<&String> = e.env.iter().filter(|v| !v.starts_with("NVIDIA_VISIBLE_DEVICES=")).collect();
        for v in &env {
            let (k, val) = v.split_once('=').unwrap_or((v.as_str(), ""));
            set_env(spec, k, val)?;
        }
        if !env.is_empty() {
            note("process.env", format!("{} variable(s) from CDI {shown}", env.len()));
        }

        let added = add_nodes(spec, &e.device_nodes)?;
        if added > 0 {
            note("linux.devices", format!("{added} device node(s) from CDI {shown}"));
        }
        let hooks = add_hooks(spec, &e.hooks)?;
        if hooks > 0 {
            note("hooks", format!("{hooks} hook(s) from CDI {shown}"));
        }
        let mounts = add_mounts(spec, &e.mounts)?;
        if mounts > 0 {
            note("mounts", format!("{mounts} driver mount(s) from CDI {shown}"));
        }
        let gids = add_gids(spec, &e.additional_gids)?;
        if gids > 0 {
            note("process.user.additionalGids", format!("{gids} group(s) from CDI {shown}"));
        }
        Ok(notes)
    }
}

fn array_at<'a>(spec: &'a mut Value, path: &[&str], key: &str) -> Result<&'a mut Vec<Value>> {
    let obj = spec::object_mut(spec, path)?;
    let slot = obj.entry(key.to_owned()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    let shown = [path, &[key]].concat().join(".");
    slot.as_array_mut().ok_or_else(|| Error::failed(format!("config.json: {shown} is not an array")))
}

/// Adds the nodes not already in linux.devices (by path), with allow rules for char and block
/// nodes. Returns how many nodes were added.
fn add_nodes(spec: &mut Value, nodes: &[DeviceNode]) -> Result<usize> {
    let mut added = 0;
    for n in nodes {
        let devs = array_at(spec, &["linux"], "devices")?;
        if devs.iter().any(|d| d.get("path").and_then(Value::as_str) == Some(n.path.as_str())) {
            continue;
        }
        let typ = n.typ.clone().unwrap_or_else(|| "c".into());
        let mut d = Map::new();
        d.insert("path".into(), json!(n.path));
        d.insert("type".into(), json!(typ));
        for (k, v) in [("major", n.major), ("minor", n.minor)] {
            if let Some(v) = v {
                d.insert(k.into(), json!(v));
            }
        }
        for (k, v) in [("fileMode", n.file_mode), ("uid", n.uid), ("gid", n.gid)] {
            if let Some(v) = v {
                d.insert(k.into(), json!(v));
            }
        }
        devs.push(Value::Object(d));
        added += 1;
        if matches!(typ.as_str(), "c" | "b") {
            let rule = json!({
                "allow": true,
                "type": typ,
                "major": n.major,
                "minor": n.minor,
                "access": n.permissions.clone().unwrap_or_else(|| "rwm".into()),
            });
            let rules = array_at(spec, &["linux", "resources"], "devices")?;
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    Ok(added)
}

/// Appends each hook to its phase unless the same hook is there already.
fn add_hooks(spec: &mut Value, hooks: &[Hook]) -> Result<usize> {
    let mut added = 0;
    for h in hooks {
        let mut v = Map::new();
        v.insert("path".into(), json!(h.path));
        if !h.args.is_empty() {
            v.insert("args".into(), json!(h.args));
        }
        if !h.env.is_empty() {
            v.insert("env".into(), json!(h.env));
        }
        if let Some(t) = h.timeout {
            v.insert("timeout".into(), json!(t));
        }
        let v = Value::Object(v);
        let list = array_at(spec, &["hooks"], &h.hook_name)?;
        if !list.contains(&v) {
            list.push(v);
            added += 1;
        }
    }
    Ok(added)
}

/// Adds each mount, replacing a mount at the same destination (as CDI does).
fn add_mounts(spec: &mut Value, mounts: &[Mount]) -> Result<usize> {
    let mut added = 0;
    let list = array_at(spec, &[], "mounts")?;
    for m in mounts {
        let mut v = Map::new();
        v.insert("destination".into(), json!(m.container_path));
        let bind = m.options.iter().any(|o| o == "bind" || o == "rbind");
        if let Some(t) = m.typ.clone().or_else(|| bind.then(|| "bind".to_owned())) {
            v.insert("type".into(), json!(t));
        }
        v.insert("source".into(), json!(m.host_path));
        if !m.options.is_empty() {
            v.insert("options".into(), json!(m.options));
        }
        let v = Value::Object(v);
        if list.contains(&v) {
            continue;
        }
        list.retain(|x| x.get("destination").and_then(Value::as_str) != Some(m.container_path.as_str()));
        list.push(v);
        added += 1;
    }
    Ok(added)
}

/// Adds groups to process.user.additionalGids (never 0, as CDI).
fn add_gids(spec: &mut Value, gids: &[u32]) -> Result<usize> {
    let mut added = 0;
    for g in gids.iter().filter(|g| **g != 0) {
        let list = array_at(spec, &["process", "user"], "additionalGids")?;
        if !list.iter().any(|x| x.as_u64() == Some(u64::from(*g))) {
            list.push(json!(g));
            added += 1;
        }
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::modifiers::{fixtures, GpuGrant};
    use crate::gpu::cdi::{Edits, Resolved};

    fn edits() -> Edits {
        Edits {
            env: vec![
                "NVIDIA_VISIBLE_DEVICES=void".into(),
                "NVIDIA_DRIVER_CAPABILITIES=all".into(),
                "PATH=/x".into(),
            ],
            device_nodes: vec![
                DeviceNode {
                    path: "/dev/nvidia1".into(),
                    typ: Some("c".into()),
                    major: Some(195),
                    minor: Some(1),
                    file_mode: Some(0o666),
                    ..Default::default()
                },
                DeviceNode {
                    path: "/dev/dri/renderD128".into(),
                    typ: Some("c".into()),
                    major: Some(226),
                    minor: Some(128),
                    permissions: Some("rw".into()),
                    ..Default::default()
                },
            ],
            hooks: vec![Hook {
                hook_name: "createContainer".into(),
                path: "/usr/bin/nvidia-ctk".into(),
                args: vec!["nvidia-ctk".into(), "hook".into(), "update-ldcache".into()],
                ..Default::default()
            }],
            mounts: vec![
                Mount {
                    host_path: "/usr/lib/libcuda.so.535".into(),
                    container_path: "/usr/lib/libcuda.so.535".into(),
                    options: vec!["ro".into(), "bind".into()],
                    ..Default::default()
                },
                Mount {
                    host_path: "/usr/bin/nvidia-smi".into(),
                    container_path: "/etc/hosts".into(),
                    options: vec!["ro".into(), "bind".into()],
                    ..Default::default()
                },
            ],
            additional_gids: vec![0, 44],
        }
    }

    fn grant(e: Edits) -> GpuGrant {
        GpuGrant {
            cdi: Some(Resolved { devices: vec!["nvidia.com/gpu=1".into()], files: vec![], edits: e }),
            ..Default::default()
        }
    }

    #[test]
    fn applies_every_kind_of_edit_once() {
        let mut spec = fixtures::docker();
        crate::spec::object_mut(&mut spec, &["linux"]).unwrap().insert(
            "devices".into(),
            json!([{"path": "/dev/nvidia1", "type": "c", "major": 195, "minor": 1}]),
        );
        let g = grant(edits());
        crate::create::modifiers::with_test_context(&g, |ctx| Cdi.apply(&mut spec, ctx).unwrap());
        let env = crate::spec::get(&spec, &["process", "env"]).unwrap().as_array().unwrap();
        assert!(env.contains(&json!("NVIDIA_DRIVER_CAPABILITIES=all")));
        assert!(env.contains(&json!("PATH=/x")));
        assert!(!env.iter().any(|e| e == "NVIDIA_VISIBLE_DEVICES=void"));
        let devs = spec["linux"]["devices"].as_array().unwrap();
        assert_eq!(devs.len(), 2, "the node already there is not added twice");
        let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
        assert!(
            rules.contains(&json!({"allow": true, "type": "c", "major": 226, "minor": 128, "access": "rw"}))
        );
        assert_eq!(spec["hooks"]["createContainer"][0]["path"], "/usr/bin/nvidia-ctk");
        let mounts = spec["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["destination"] == "/usr/lib/libcuda.so.535" && m["type"] == "bind"));
        let hosts: Vec<&Value> = mounts.iter().filter(|m| m["destination"] == "/etc/hosts").collect();
        assert_eq!(hosts.len(), 1, "a CDI mount replaces the one at its destination");
        assert_eq!(hosts[0]["source"], "/usr/bin/nvidia-smi");
        let before =
            fixtures::docker()["process"]["user"]["additionalGids"].as_array().cloned().unwrap_or_default();
        let mut want = before.clone();
        want.push(json!(44));
        assert_eq!(spec["process"]["user"]["additionalGids"], json!(want), "44 added once, 0 never");

        // Applying the same edits again changes nothing (a spec Podman already patched).
        let once = spec.clone();
        crate::create::modifiers::with_test_context(&g, |ctx| Cdi.apply(&mut spec, ctx).unwrap());
        assert_eq!(spec, once);
    }

    #[test]
    fn nothing_without_cdi() {
        let mut spec = fixtures::docker();
        let notes = crate::create::modifiers::with_test_context(&GpuGrant::default(), |ctx| {
            Cdi.apply(&mut spec, ctx).unwrap()
        });
        assert!(notes.is_empty());
        assert_eq!(spec, fixtures::docker());
    }
}
