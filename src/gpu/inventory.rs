//! The GPU inventory: from NVML, else the driver's /proc tree plus the /dev/nvidia<N> nodes,
//! else the static list in the settings; MIG instances get their /dev/nvidia-caps nodes from the
//! driver's capabilities tree. Cached in the state directory, so that a create does not pay for
//! NVML's start-up: the cache holds until the next boot or a change of the /dev/nvidia* nodes.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::nvml::Querier;
use super::settings::{GpuSettings, InventorySource};
use super::Gpu;
use crate::error::{Error, Result};
use crate::host::fs::write_atomic;

/// A device node on the host, as it must appear in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Path inside the container, e.g. `/dev/nvidia0`.
    pub path: String,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
}

/// Stats `<dev_root>/<rel>` and returns the char device it is, if it is one.
pub fn node(dev_root: &Path, rel: &str) -> Option<Node> {
    let m = fs::metadata(dev_root.join(rel)).ok()?;
    if !m.file_type().is_char_device() {
        return None;
    }
    let rdev = m.rdev();
    Some(Node {
        path: format!("/dev/{rel}"),
        major: libc::major(rdev) as i64,
        minor: libc::minor(rdev) as i64,
    })
}

/// The control nodes every GPU container needs, those that exist.
pub fn control_nodes(dev_root: &Path) -> Vec<Node> {
    ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]
        .iter()
        .filter_map(|n| node(dev_root, n))
        .collect()
}

/// Majors of every NVIDIA device on the host (195, nvidia-uvm's, nvidia-caps'), for stripping.
pub fn nvidia_majors(dev_root: &Path) -> Vec<i64> {
    let mut majors = vec![195];
    let mut add = |n: Option<Node>| {
        if let Some(n) = n {
            if !majors.contains(&n.major) {
                majors.push(n.major);
            }
        }
    };
    add(node(dev_root, "nvidia-uvm"));
    if let Ok(rd) = fs::read_dir(dev_root.join("nvidia-caps")) {
        for e in rd.flatten() {
            add(node(dev_root, &format!("nvidia-caps/{}", e.file_name().to_string_lossy())));
        }
    }
    majors
}

#[derive(Serialize, Deserialize)]
struct Cache {
    key: String,
    gpus: Vec<Gpu>,
}

/// What invalidates the cache: the boot, the settings' GPU section, the /dev/nvidia* nodes.
fn cache_key(s: &GpuSettings) -> String {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut nodes: Vec<String> = fs::read_dir(&s.dev_root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("nvidia"))
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    // `v2`: MIG instances carry their compute slices.
    format!(
        "v2|{}|{:?}|{}|{}|{}|{}|{}",
        boot.trim(),
        s.inventory,
        s.nvml_library,
        s.dev_root.display(),
        s.proc_root.display(),
        serde_json::to_string(&s.static_gpus).unwrap_or_default(),
        nodes.join(",")
    )
}

/// The inventory, from the cache in `state_dir` when it is current, else queried and cached.
/// `nvml` is asked only when the source is NVML (or auto) and the cache is stale.
pub fn load(s: &GpuSettings, state_dir: &Path, nvml: &dyn Querier) -> Result<Vec<Gpu>> {
    let key = cache_key(s);
    let path = state_dir.join("inventory.json");
    if let Ok(bytes) = fs::read(&path) {
        if let Ok(c) = serde_json::from_slice::<Cache>(&bytes) {
            if c.key == key {
                return Ok(c.gpus);
            }
        }
    }
    let gpus = query(s, nvml)?;
    let bytes = serde_json::to_vec(&Cache { key, gpus: gpus.clone() }).unwrap_or_default();
    if fs::create_dir_all(state_dir).is_ok() {
        // A cache that cannot be written only costs the next create a query.
        let _ = write_atomic(&path, &bytes, 0o644, None);
    }
    Ok(gpus)
}

/// Queries the configured source now, bypassing the cache.
pub fn query(s: &GpuSettings, nvml: &dyn Querier) -> Result<Vec<Gpu>> {
    let mut gpus = match s.inventory {
        InventorySource::Nvml => nvml.query(s.nvml_library.as_ref())?,
        InventorySource::Proc => from_proc(&s.proc_root, &s.dev_root)?,
        InventorySource::Static => s.static_gpus.clone(),
        InventorySource::Auto => match nvml.query(s.nvml_library.as_ref()) {
            Ok(g) => g,
            Err(_) => {
                let g = from_proc(&s.proc_root, &s.dev_root).unwrap_or_default();
                if g.is_empty() {
                    s.static_gpus.clone()
                } else {
                    g
                }
            }
        },
    };
    for g in &mut gpus {
        for m in &mut g.migs {
            if m.caps.is_empty() {
                m.caps = mig_caps(&s.proc_root, g.minor, m.gi, m.ci);
            }
        }
    }
    gpus.sort_by_key(|g| g.index);
    Ok(gpus)
}

/// `/proc/driver/nvidia/gpus/<bus>/information`, in bus order (NVML's index order).
pub fn from_proc(proc_root: &Path, dev_root: &Path) -> Result<Vec<Gpu>> {
    let dir = proc_root.join("gpus");
    let mut buses: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::failed(format!("cannot read {}: {e}", dir.display()))),
    };
    buses.sort();
    let mut out = Vec::new();
    for (i, bus) in buses.iter().enumerate() {
        let info_path = bus.join("information");
        let text = fs::read_to_string(&info_path)
            .map_err(|e| Error::failed(format!("cannot read {}: {e}", info_path.display())))?;
        let field = |k: &str| {
            text.lines().find_map(|l| {
                l.strip_prefix(k).and_then(|r| r.trim_start().strip_prefix(':')).map(|v| v.trim().to_owned())
            })
        };
        let minor: u32 = field("Device Minor")
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| Error::failed(format!("{}: no Device Minor", info_path.display())))?;
        if node(dev_root, &format!("nvidia{minor}")).is_none() {
            continue;
        }
        out.push(Gpu {
            index: i as u32,
            uuid: field("GPU UUID").unwrap_or_default(),
            minor,
            name: field("Model").unwrap_or_default(),
            memory_mib: 0,
            mig_enabled: false,
            migs: Vec::new(),
        });
    }
    Ok(out)
}

/// The /dev/nvidia-caps nodes of MIG instance (gi, ci) on GPU `minor`, from the driver's
/// `capabilities/gpu<minor>/mig/gi<gi>/access` and `…/ci<ci>/access` files.
pub fn mig_caps(proc_root: &Path, minor: u32, gi: u32, ci: u32) -> Vec<String> {
    let base = proc_root.join(format!("capabilities/gpu{minor}/mig/gi{gi}"));
    [base.join("access"), base.join(format!("ci{ci}/access"))]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("DeviceFileMinor:").map(|v| v.trim().to_owned()))
                .map(|m| format!("/dev/nvidia-caps/nvidia-cap{m}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_tree_and_mig_caps() {
        let root = std::env::temp_dir().join(format!("ds01-inv-{}", std::process::id()));
        let proc_root = root.join("proc");
        for (bus, minor, uuid) in [("0000:3b:00.0", 1, "GPU-b"), ("0000:1a:00.0", 0, "GPU-a")] {
            let d = proc_root.join("gpus").join(bus);
            fs::create_dir_all(&d).unwrap();
            fs::write(
                d.join("information"),
                format!("Model: \t\t NVIDIA A100-SXM4-40GB\nIRQ:   \t\t 42\nGPU UUID: \t {uuid}\nDevice Minor: \t {minor}\n"),
            )
            .unwrap();
        }
        // /dev/null stands in for a char device node.
        let dev = root.join("dev");
        fs::create_dir_all(&dev).unwrap();
        std::os::unix::fs::symlink("/dev/null", dev.join("nvidia0")).unwrap();
        std::os::unix::fs::symlink("/dev/null", dev.join("nvidia1")).unwrap();
        let gpus = from_proc(&proc_root, &dev).unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!((gpus[0].index, gpus[0].minor, gpus[0].uuid.as_str()), (0, 0, "GPU-a"));
        assert_eq!((gpus[1].index, gpus[1].minor, gpus[1].uuid.as_str()), (1, 1, "GPU-b"));
        assert_eq!(gpus[0].name, "NVIDIA A100-SXM4-40GB");
        let gi = proc_root.join("capabilities/gpu0/mig/gi3");
        fs::create_dir_all(gi.join("ci0")).unwrap();
        fs::write(gi.join("access"), "DeviceFileMinor: 30\nDeviceFileMode: 292\n").unwrap();
        fs::write(gi.join("ci0/access"), "DeviceFileMinor: 31\n").unwrap();
        assert_eq!(
            mig_caps(&proc_root, 0, 3, 0),
            ["/dev/nvidia-caps/nvidia-cap30", "/dev/nvidia-caps/nvidia-cap31"]
        );
        assert!(from_proc(&root.join("none"), &dev).unwrap().is_empty());
        fs::remove_dir_all(&root).unwrap();
    }
}
