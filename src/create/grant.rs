//! The GPU grant: the device nodes and CDI edits of exactly the units decided, from what was
//! read of the host before the lock ([`GpuHost`]).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::modifiers::{self, GpuGrant, Granted};
use crate::error::{Error, Result};
use crate::gpu::alloc::Unit;
use crate::gpu::cdi;
use crate::gpu::inventory::{self, Node};
use crate::gpu::settings::GpuSettings;
use crate::gpu::Gpu;

/// The GPU host files a grant needs, read before the lock: the device nodes of every GPU in
/// the inventory, the control nodes and majors, and NVIDIA's CDI specs.
#[derive(Default)]
pub struct GpuHost {
    /// Each GPU's and MIG cap's node, by its path under the device root (`nvidia0`).
    pub nodes: Vec<(String, Node)>,
    /// nvidiactl, nvidia-uvm, …
    pub control: Vec<Node>,
    /// The majors NVIDIA's devices use here.
    pub majors: Vec<i64>,
    /// NVIDIA's CDI specs, when there are any.
    pub cdi: Option<cdi::Registry>,
    /// Where the nodes are (`/dev`).
    pub dev_root: PathBuf,
}

impl GpuHost {
    /// Reads the nodes of `inventory`'s GPUs and MIG caps under `s.dev_root`, and the CDI
    /// registry when `with_cdi`.
    pub fn read(s: &GpuSettings, inventory: &[Gpu], with_cdi: bool) -> Result<GpuHost> {
        let mut nodes = Vec::new();
        for g in inventory {
            let rels = std::iter::once(format!("nvidia{}", g.minor)).chain(
                g.migs.iter().flat_map(|m| m.caps.iter().map(|c| c.trim_start_matches("/dev/").to_owned())),
            );
            for rel in rels {
                if let Some(n) = inventory::node(&s.dev_root, &rel) {
                    nodes.push((rel, n));
                }
            }
        }
        let cdi = if with_cdi && !inventory.is_empty() {
            Some(cdi::Registry::load(&s.cdi_dirs)?).filter(|r| !r.is_empty())
        } else {
            None
        };
        Ok(GpuHost {
            nodes,
            control: inventory::control_nodes(&s.dev_root),
            majors: inventory::nvidia_majors(&s.dev_root),
            cdi,
            dev_root: s.dev_root.clone(),
        })
    }

    fn node(&self, rel: &str) -> Option<Node> {
        self.nodes.iter().find(|(r, _)| r == rel).map(|(_, n)| n.clone())
    }
}

/// True when NVIDIA's toolkit is in the chain: the low-level runtime is NVIDIA's, or the spec
/// carries NVIDIA's hook. It then mounts the driver itself for NVIDIA_VISIBLE_DEVICES.
pub fn toolkit_chained(low_level_runtime: &str, spec: &Value) -> bool {
    let runtime = Path::new(low_level_runtime).file_name().and_then(OsStr::to_str).unwrap_or("");
    runtime.starts_with("nvidia-container-runtime")
        || crate::spec::get(spec, &["hooks"]).and_then(Value::as_object).is_some_and(|phases| {
            phases.values().filter_map(Value::as_array).flatten().any(modifiers::is_nvidia_hook)
        })
}

/// CDI names a unit may have in NVIDIA's spec (index, UUID, type-index), and how to name it.
fn cdi_names(inv: &[Gpu], u: &Unit) -> (Vec<String>, String) {
    let g = &inv[u.gpu];
    match u.mig {
        None => (
            vec![g.index.to_string(), g.uuid.clone(), format!("gpu{}", g.index)],
            format!("GPU {} ({})", g.index, g.uuid),
        ),
        Some(m) => (
            vec![format!("{}:{m}", g.index), u.uuid.clone(), format!("mig{}:{m}", g.index)],
            format!("MIG {} of GPU {}", u.uuid, g.index),
        ),
    }
}

/// The NVIDIA CDI edits for the granted units, when a spec exists and the toolkit is not chained.
fn cdi_edits(host: &GpuHost, inv: &[Gpu], units: &[Unit]) -> Result<Option<cdi::Resolved>> {
    let Some(reg) = &host.cdi else { return Ok(None) };
    let names: Vec<_> = units.iter().map(|u| cdi_names(inv, u)).collect();
    let mut r = reg.resolve(&names)?;
    cdi::fill_nodes(&mut r.edits, &host.dev_root)?;
    Ok(Some(r))
}

/// The device nodes of the granted units, from the nodes read before the lock, and the CDI
/// edits.
pub fn grant(host: &GpuHost, inv: &[Gpu], units: &[Unit], chained: bool) -> Result<GpuGrant> {
    let missing = |what: String, rel: &str| {
        Error::failed(format!("{what}: device node {} is missing", host.dev_root.join(rel).display()))
    };
    let mut devices = Vec::new();
    for u in units {
        let g = &inv[u.gpu];
        let rel = format!("nvidia{}", g.minor);
        let mut nodes =
            vec![host.node(&rel).ok_or_else(|| missing(format!("GPU {} ({})", g.index, g.uuid), &rel))?];
        if let Some(m) = u.mig {
            for cap in &g.migs[m].caps {
                let rel = cap.trim_start_matches("/dev/");
                nodes.push(host.node(rel).ok_or_else(|| missing(format!("MIG {}", u.uuid), rel))?);
            }
        }
        devices.push(Granted { uuid: u.uuid.clone(), nodes });
    }
    let control = if devices.is_empty() { Vec::new() } else { host.control.clone() };
    let cdi = if units.is_empty() || chained { None } else { cdi_edits(host, inv, units)? };
    Ok(GpuGrant { devices, control, majors: host.majors.clone(), cdi })
}
