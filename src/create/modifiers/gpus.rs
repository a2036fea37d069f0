//! GPUs: everything NVIDIA that was not allocated to this container is taken out of the spec
//! (device nodes, device cgroup rules, NVIDIA_VISIBLE_DEVICES, NVIDIA's hook), then exactly the
//! allocated devices are put in: nodes, allow rules, NVIDIA_VISIBLE_DEVICES, annotation.

use oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType};
use serde_json::Value;

use super::{Context, Note, SpecModifier};
use crate::error::{Context as _, Error, Result};
use crate::gpu::inventory::Node;
use crate::spec;

/// One allocated GPU or MIG instance and the nodes it needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Granted {
    /// UUID (what NVIDIA_VISIBLE_DEVICES names).
    pub uuid: String,
    /// Device nodes: /dev/nvidia<minor>, and for MIG the /dev/nvidia-caps nodes.
    pub nodes: Vec<Node>,
}

/// The GPU side of a create: what was allocated and what the host's NVIDIA nodes look like.
#[derive(Debug, Clone, Default)]
pub struct GpuGrant {
    /// Allocated units, in CUDA order.
    pub devices: Vec<Granted>,
    /// nvidiactl, nvidia-uvm, nvidia-uvm-tools, nvidia-modeset (those present).
    pub control: Vec<Node>,
    /// Majors of NVIDIA devices on this host.
    pub majors: Vec<i64>,
    /// NVIDIA CDI edits for the allocated devices, when a CDI spec exists and NVIDIA's toolkit
    /// is not in the chain (applied by the `cdi` modifier).
    pub cdi: Option<crate::gpu::cdi::Resolved>,
}

/// Applies a [`GpuGrant`].
pub struct Gpus;

/// True for a hook of NVIDIA's container toolkit (its legacy hook, or nvidia-ctk's CDI hooks).
pub fn is_nvidia_hook(h: &Value) -> bool {
    let path = h.get("path").and_then(Value::as_str).unwrap_or("");
    let args = h
        .get("args")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    ["nvidia-container-runtime-hook", "nvidia-container-toolkit", "nvidia-ctk"]
        .iter()
        .any(|n| path.contains(n) || args.contains(n))
}

impl SpecModifier for Gpus {
    fn name(&self) -> &'static str {
        "gpus"
    }

    fn apply(&self, spec: &mut Value, ctx: &Context) -> Result<Vec<Note>> {
        let g = ctx.gpus;
        let mut notes = Vec::new();
        let is_nvidia_major = |m: Option<i64>| m.is_some_and(|m| g.majors.contains(&m));

        // 1. Strip every NVIDIA node and allow rule that came in with the spec.
        if let Some(devs) = spec::get(spec, &["linux", "devices"]).and_then(Value::as_array).cloned() {
            let keep: Vec<Value> = devs
                .iter()
                .filter(|d| {
                    let path = d.get("path").and_then(Value::as_str).unwrap_or("");
                    !(path.starts_with("/dev/nvidia")
                        || is_nvidia_major(d.get("major").and_then(Value::as_i64)))
                })
                .cloned()
                .collect();
            if keep.len() != devs.len() {
                notes.push(Note {
                    path: "linux.devices".into(),
                    why: format!(
                        "removed {} NVIDIA device(s) not allocated to this container",
                        devs.len() - keep.len()
                    ),
                });
                spec::object_mut(spec, &["linux"])?.insert("devices".into(), Value::Array(keep));
            }
        }
        if let Some(rules) =
            spec::get(spec, &["linux", "resources", "devices"]).and_then(Value::as_array).cloned()
        {
            let keep: Vec<Value> = rules
                .iter()
                .filter(|r| {
                    !(r.get("allow").and_then(Value::as_bool) == Some(true)
                        && is_nvidia_major(r.get("major").and_then(Value::as_i64)))
                })
                .cloned()
                .collect();
            if keep.len() != rules.len() {
                notes.push(Note {
                    path: "linux.resources.devices".into(),
                    why: "removed allow rules for NVIDIA devices not allocated".into(),
                });
                spec::object_mut(spec, &["linux", "resources"])?.insert("devices".into(), Value::Array(keep));
            }
        }
        if g.devices.is_empty() {
            for phase in ["prestart", "createRuntime", "createContainer"] {
                if let Some(hooks) = spec::get(spec, &["hooks", phase]).and_then(Value::as_array).cloned() {
                    let keep: Vec<Value> = hooks.iter().filter(|h| !is_nvidia_hook(h)).cloned().collect();
                    if keep.len() != hooks.len() {
                        notes.push(Note {
                            path: format!("hooks.{phase}"),
                            why: "removed NVIDIA's hook: no GPU allocated".into(),
                        });
                        spec::object_mut(spec, &["hooks"])?.insert(phase.into(), Value::Array(keep));
                    }
                }
            }
        }

        // 2. NVIDIA_VISIBLE_DEVICES names exactly the allocation (or nothing).
        let visible = if g.devices.is_empty() {
            "void".to_owned()
        } else {
            g.devices.iter().map(|d| d.uuid.as_str()).collect::<Vec<_>>().join(",")
        };
        let has_env = spec::env_var(spec, "NVIDIA_VISIBLE_DEVICES").is_some();
        if has_env || !g.devices.is_empty() {
            set_env(spec, "NVIDIA_VISIBLE_DEVICES", &visible)?;
            notes.push(Note { path: "process.env".into(), why: format!("NVIDIA_VISIBLE_DEVICES={visible}") });
        }
        if g.devices.is_empty() {
            return Ok(notes);
        }

        // 3. The allocated nodes and their allow rules.
        let mut nodes: Vec<&Node> = g.control.iter().collect();
        for d in &g.devices {
            for n in &d.nodes {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        let mut dev_values = Vec::new();
        let mut rule_values = Vec::new();
        for n in &nodes {
            let dev = LinuxDeviceBuilder::default()
                .path(&n.path)
                .typ(LinuxDeviceType::C)
                .major(n.major)
                .minor(n.minor)
                .file_mode(0o666u32)
                .uid(0u32)
                .gid(0u32)
                .build()
                .context(format_args!("device {}", n.path))?;
            dev_values.push(serde_json::to_value(dev).context("device")?);
            let rule = LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(n.major)
                .minor(n.minor)
                .access("rwm")
                .build()
                .context(format_args!("device rule {}", n.path))?;
            rule_values.push(serde_json::to_value(rule).context("device rule")?);
        }
        let linux = spec::object_mut(spec, &["linux"])?;
        let devs = linux.entry("devices").or_insert_with(|| Value::Array(Vec::new()));
        let Some(devs) = devs.as_array_mut() else {
            return Err(Error::failed("config.json: linux.devices is not an array"));
        };
        devs.extend(dev_values);
        let res = spec::object_mut(spec, &["linux", "resources"])?;
        let rules = res.entry("devices").or_insert_with(|| Value::Array(Vec::new()));
        let Some(rules) = rules.as_array_mut() else {
            return Err(Error::failed("config.json: linux.resources.devices is not an array"));
        };
        rules.extend(rule_values);
        let shown: Vec<&str> = nodes.iter().map(|n| n.path.as_str()).collect();
        notes.push(Note { path: "linux.devices".into(), why: format!("allocated: {}", shown.join(" ")) });
        Ok(notes)
    }
}

/// Sets `NAME=value` in process.env, replacing every earlier definition in place.
pub(super) fn set_env(spec: &mut Value, name: &str, value: &str) -> Result<()> {
    let process = spec::object_mut(spec, &["process"])?;
    let env = process.entry("env").or_insert_with(|| Value::Array(Vec::new()));
    let Some(env) = env.as_array_mut() else {
        return Err(Error::failed("config.json: process.env is not an array"));
    };
    let prefix = format!("{name}=");
    let entry = Value::String(format!("{name}={value}"));
    let mut placed = false;
    env.retain_mut(|e| {
        if e.as_str().is_some_and(|s| s.starts_with(&prefix)) {
            if placed {
                return false;
            }
            *e = entry.clone();
            placed = true;
        }
        true
    });
    if !placed {
        env.push(entry);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::modifiers::fixtures;
    use serde_json::json;

    fn node(path: &str, major: i64, minor: i64) -> Node {
        Node { path: path.into(), major, minor }
    }

    fn run(spec: &mut Value, grant: &GpuGrant) -> Vec<Note> {
        crate::create::modifiers::with_test_context(grant, |ctx| Gpus.apply(spec, ctx).unwrap())
    }

    fn host() -> GpuGrant {
        GpuGrant {
            devices: vec![],
            control: vec![node("/dev/nvidiactl", 195, 255), node("/dev/nvidia-uvm", 508, 0)],
            majors: vec![195, 508],
            cdi: None,
        }
    }

    #[test]
    fn injects_exactly_the_allocation() {
        let mut spec = fixtures::docker();
        let mut g = host();
        g.devices = vec![Granted { uuid: "GPU-2".into(), nodes: vec![node("/dev/nvidia2", 195, 2)] }];
        run(&mut spec, &g);
        let devs = spec["linux"]["devices"].as_array().unwrap();
        let paths: Vec<&str> = devs.iter().map(|d| d["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia2"]);
        assert_eq!(devs[2]["type"], "c");
        assert_eq!(devs[2]["major"], 195);
        assert_eq!(devs[2]["minor"], 2);
        let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
        assert!(rules
            .iter()
            .any(|r| r["major"] == 195 && r["minor"] == 2 && r["allow"] == true && r["access"] == "rwm"));
        assert_eq!(crate::spec::env_var(&spec, "NVIDIA_VISIBLE_DEVICES"), Some("GPU-2"));
        crate::create::modifiers::with_test_context(&g, |ctx| {
            crate::create::modifiers::Labels.apply(&mut spec, ctx).unwrap()
        });
        assert_eq!(spec["annotations"]["ds01.gpus"], "GPU-2", "the record names the grant");
    }

    #[test]
    fn strips_every_leak_route_when_nothing_is_allocated() {
        let mut spec = fixtures::docker();
        spec["process"]["env"].as_array_mut().unwrap().push(json!("NVIDIA_VISIBLE_DEVICES=all"));
        spec["linux"]["devices"] = json!([{"path": "/dev/nvidia3", "type": "c", "major": 195, "minor": 3}, {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]);
        spec["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "major": 195, "minor": 3, "access": "rwm"}));
        spec["hooks"]["prestart"].as_array_mut().unwrap().push(json!({"path": "/usr/bin/nvidia-container-runtime-hook", "args": ["nvidia-container-runtime-hook", "prestart"]}));
        let before_rules = fixtures::docker()["linux"]["resources"]["devices"].clone();
        run(&mut spec, &host());
        assert_eq!(
            spec["linux"]["devices"],
            json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}])
        );
        assert_eq!(spec["linux"]["resources"]["devices"], before_rules);
        assert_eq!(crate::spec::env_var(&spec, "NVIDIA_VISIBLE_DEVICES"), Some("void"));
        let hooks = spec["hooks"]["prestart"].as_array().unwrap();
        assert_eq!(hooks.len(), 1, "only libnetwork's hook stays");
        assert!(spec.get("annotations").is_none());
    }

    #[test]
    fn untouched_spec_stays_untouched_without_gpus() {
        let mut spec = fixtures::docker();
        let notes = run(&mut spec, &host());
        assert!(notes.is_empty());
        assert_eq!(spec, fixtures::docker());
    }

    #[test]
    fn env_replaced_in_place_once() {
        let mut spec = json!({"process": {"env": ["A=1", "NVIDIA_VISIBLE_DEVICES=0,1", "B=2", "NVIDIA_VISIBLE_DEVICES=all"]}});
        set_env(&mut spec, "NVIDIA_VISIBLE_DEVICES", "GPU-1").unwrap();
        assert_eq!(spec["process"]["env"], json!(["A=1", "NVIDIA_VISIBLE_DEVICES=GPU-1", "B=2"]));
    }
}
