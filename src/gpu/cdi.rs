//! NVIDIA's CDI specs (Container Device Interface, as written by `nvidia-ctk cdi generate` into
//! /etc/cdi or /var/run/cdi): found, parsed, and resolved to the container edits of exactly the
//! allocated devices plus the specs' common edits. Never the `all` device: that is how a
//! container would reach GPUs nobody allocated. Applying the edits is the `cdi` modifier's job.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The vendor part of the CDI kinds this runtime applies (`nvidia.com/gpu`, `nvidia.com/mig`).
pub const VENDOR: &str = "nvidia.com/";

/// OCI hook phases a CDI hook may name.
const HOOK_PHASES: [&str; 6] =
    ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

/// One CDI spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecFile {
    #[serde(default)]
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Vec<Device>,
    #[serde(default)]
    container_edits: Edits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Device {
    name: String,
    #[serde(default)]
    container_edits: Edits,
}

/// Container edits, as the CDI spec defines them (fields this runtime does not apply, such as
/// intelRdt or netDevices, are ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    /// `NAME=value` entries for process.env.
    #[serde(default)]
    pub env: Vec<String>,
    /// Device nodes to create in the container.
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    /// OCI hooks, each with the phase it runs in.
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Mounts (driver libraries and binaries).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Extra groups for the container's process.
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// A CDI device node. Type, major and minor are filled in from the host node when left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    /// Path in the container.
    pub path: String,
    /// Path on the host (default: `path`).
    #[serde(default)]
    pub host_path: Option<String>,
    /// `c`, `b`, `u` or `p`.
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
    /// Major number.
    #[serde(default)]
    pub major: Option<i64>,
    /// Minor number.
    #[serde(default)]
    pub minor: Option<i64>,
    /// File mode of the node in the container.
    #[serde(default)]
    pub file_mode: Option<u32>,
    /// Cgroup access (`rwm` when left out).
    #[serde(default)]
    pub permissions: Option<String>,
    /// Owner uid in the container.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Owner gid in the container.
    #[serde(default)]
    pub gid: Option<u32>,
}

/// A CDI hook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// OCI phase: prestart, createRuntime, createContainer, startContainer, poststart, poststop.
    pub hook_name: String,
    /// Executable on the host.
    pub path: String,
    /// argv, including argv[0].
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Seconds.
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// A CDI mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Source on the host.
    pub host_path: String,
    /// Destination in the container.
    pub container_path: String,
    /// Mount type.
    #[serde(default, rename = "type")]
    pub typ: Option<String>,
    /// Mount options.
    #[serde(default)]
    pub options: Vec<String>,
}

impl Edits {
    fn append(&mut self, other: &Edits) {
        self.env.extend(other.env.iter().cloned());
        self.device_nodes.extend(other.device_nodes.iter().cloned());
        self.hooks.extend(other.hooks.iter().cloned());
        self.mounts.extend(other.mounts.iter().cloned());
        self.additional_gids.extend(other.additional_gids.iter().copied());
    }
}

/// The edits to apply for one container, and the CDI devices they came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Qualified CDI names applied, e.g. `nvidia.com/gpu=0`, in allocation order.
    pub devices: Vec<String>,
    /// The spec files used.
    pub files: Vec<PathBuf>,
    /// Device edits in allocation order, then each used file's common edits.
    pub edits: Edits,
}

/// Every NVIDIA device found in the CDI directories.
#[derive(Debug, Default)]
pub struct Registry {
    files: Vec<(PathBuf, SpecFile)>,
    /// Device name → (file index, device index). Later directories override earlier ones, as
    /// in CDI (/var/run/cdi over /etc/cdi); one name twice in one directory is an error.
    by_name: BTreeMap<String, (usize, usize)>,
}

impl Registry {
    /// Reads every `*.json`, `*.yaml` and `*.yml` in `dirs` (missing folders are skipped) and
    /// keeps the NVIDIA ones. A file that does not parse is an error naming it.
    pub fn load(dirs: &[PathBuf]) -> Result<Registry> {
        let mut reg = Registry::default();
        for dir in dirs {
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::failed(format!("CDI folder {}: {e}", dir.display()))),
            };
            let mut paths: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "yaml" | "yml")))
                .collect();
            paths.sort();
            let mut seen_here: BTreeMap<String, PathBuf> = BTreeMap::new();
            for path in paths {
                let text = fs::read_to_string(&path)
                    .map_err(|e| Error::failed(format!("CDI spec {}: {e}", path.display())))?;
                let spec =
                    parse(&text).map_err(|e| Error::failed(format!("CDI spec {}: {e}", path.display())))?;
                if !spec.kind.starts_with(VENDOR) {
                    continue;
                }
                let fi = reg.files.len();
                for (di, d) in spec.devices.iter().enumerate() {
                    let qualified = format!("{}={}", spec.kind, d.name);
                    if let Some(other) = seen_here.insert(qualified.clone(), path.clone()) {
                        return Err(Error::failed(format!(
                            "CDI device {qualified} is defined in both {} and {}",
                            other.display(),
                            path.display()
                        )));
                    }
                    reg.by_name.insert(qualified, (fi, di));
                }
                reg.files.push((path, spec));
            }
        }
        Ok(reg)
    }

    /// How many NVIDIA CDI devices were found.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// True when no NVIDIA CDI spec was found.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The edits for the allocated units. Each unit gives its candidate device names (index,
    /// UUID, type-index), tried in order under each NVIDIA kind; a unit that no spec names is an
    /// error (`what` says which unit), since its driver files would be missing in the container.
    pub fn resolve(&self, units: &[(Vec<String>, String)]) -> Result<Resolved> {
        let mut out = Resolved::default();
        let mut used_files: Vec<usize> = Vec::new();
        let kinds: Vec<&str> = {
            let mut k: Vec<&str> = self.files.iter().map(|(_, s)| s.kind.as_str()).collect();
            // nvidia.com/gpu first, as nvidia-ctk names MIG devices under it too.
            k.sort_by_key(|k| (*k != "nvidia.com/gpu", *k));
            k.dedup();
            k
        };
        for (names, what) in units {
            let hit = names
                .iter()
                .filter(|n| n.as_str() != "all")
                .flat_map(|n| kinds.iter().map(move |k| format!("{k}={n}")))
                .find_map(|q| self.by_name.get(&q).map(|&at| (q, at)));
            let Some((qualified, (fi, di))) = hit else {
                let names: Vec<&str> = self.files.iter().filter_map(|(p, _)| p.to_str()).collect();
                return Err(Error::failed(format!(
                    "{what} has no device in the NVIDIA CDI spec ({}); regenerate it with `nvidia-ctk cdi generate`",
                    names.join(", ")
                )));
            };
            out.devices.push(qualified);
            out.edits.append(&self.files[fi].1.devices[di].container_edits);
            if !used_files.contains(&fi) {
                used_files.push(fi);
            }
        }
        for fi in used_files {
            let (path, spec) = &self.files[fi];
            out.edits.append(&spec.container_edits);
            out.files.push(path.clone());
        }
        Ok(out)
    }
}

fn parse(text: &str) -> std::result::Result<SpecFile, String> {
    let spec: SpecFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if !spec.cdi_version.is_empty()
        && !spec.cdi_version.starts_with("0.")
        && !spec.cdi_version.starts_with("1.")
    {
        return Err(format!("cdiVersion {} is not supported", spec.cdi_version));
    }
    let all = spec.devices.iter().map(|d| &d.container_edits).chain([&spec.container_edits]);
    for e in all {
        if let Some(h) = e.hooks.iter().find(|h| !HOOK_PHASES.contains(&h.hook_name.as_str())) {
            return Err(format!(
                "hook {} has hookName {:?}, which is not an OCI hook phase",
                h.path, h.hook_name
            ));
        }
        if let Some(n) = e.device_nodes.iter().find(|n| !n.path.starts_with('/')) {
            return Err(format!("device node path {:?} is not absolute", n.path));
        }
        if let Some(m) = e.mounts.iter().find(|m| !m.container_path.starts_with('/')) {
            return Err(format!("mount containerPath {:?} is not absolute", m.container_path));
        }
    }
    Ok(spec)
}

/// Fills in type, major and minor of device nodes from the host node (`hostPath`, else
/// `path`; a path under /dev is looked up under `dev_root`), as CDI does. A node that the spec
/// does not describe and the host lacks is an error.
pub fn fill_nodes(edits: &mut Edits, dev_root: &Path) -> Result<()> {
    for n in &mut edits.device_nodes {
        if n.typ.is_some() && n.major.is_some() && n.minor.is_some() {
            continue;
        }
        let named = n.host_path.as_deref().unwrap_or(&n.path);
        let host = match named.strip_prefix("/dev/") {
            Some(rel) => dev_root.join(rel),
            None => PathBuf::from(named),
        };
        let host = host.display().to_string();
        let m = fs::metadata(Path::new(&host))
            .map_err(|e| Error::failed(format!("CDI device node {host}: {e}")))?;
        let ft = m.file_type();
        let typ = if ft.is_char_device() {
            "c"
        } else if ft.is_block_device() {
            "b"
        } else if ft.is_fifo() {
            "p"
        } else {
            return Err(Error::failed(format!("CDI device node {host} is not a device")));
        };
        n.typ.get_or_insert_with(|| typ.to_owned());
        n.major.get_or_insert(libc::major(m.rdev()) as i64);
        n.minor.get_or_insert(libc::minor(m.rdev()) as i64);
        if n.file_mode.is_none() {
            n.file_mode = Some(m.mode() & 0o7777);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cdi/nvidia.yaml"));

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "ds01-cdi-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        fs::create_dir_all(&d).unwrap();
        for (name, text) in files {
            fs::write(d.join(name), text).unwrap();
        }
        d
    }

    fn unit(names: &[&str]) -> (Vec<String>, String) {
        (names.iter().map(|s| s.to_string()).collect(), format!("GPU {}", names[0]))
    }

    #[test]
    fn resolves_the_allocated_devices_and_the_common_edits() {
        let d = dir_with(&[
            ("nvidia.yaml", GENERATED),
            (
                "other-vendor.json",
                r#"{"cdiVersion":"0.5.0","kind":"vendor.com/fpga","devices":[{"name":"0","containerEdits":{"env":["FPGA=1"]}}]}"#,
            ),
            ("notes.txt", "not a spec"),
        ]);
        let reg = Registry::load(&[d.clone(), d.join("missing")]).unwrap();
        let r = reg.resolve(&[unit(&["1", "GPU-fake-1"])]).unwrap();
        assert_eq!(r.devices, ["nvidia.com/gpu=1"]);
        let nodes: Vec<&str> = r.edits.device_nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(nodes, ["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]);
        assert!(r.edits.mounts.iter().any(|m| m.container_path.ends_with("libcuda.so.1")));
        assert!(r.edits.hooks.iter().all(|h| h.hook_name == "createContainer"));
        assert!(!r.edits.env.iter().any(|e| e.starts_with("FPGA")));
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn uuid_and_mig_names_match_and_all_never_does() {
        let d = dir_with(&[("nvidia.yaml", GENERATED)]);
        let reg = Registry::load(std::slice::from_ref(&d)).unwrap();
        let r = reg.resolve(&[unit(&["7", "GPU-fake-2"]), unit(&["0:1", "MIG-fake-0-1"])]).unwrap();
        assert_eq!(r.devices, ["nvidia.com/gpu=GPU-fake-2", "nvidia.com/gpu=0:1"]);
        let e = reg.resolve(&[unit(&["all"])]).unwrap_err();
        assert!(e.message().contains("has no device in the NVIDIA CDI spec"), "{}", e.message());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn later_folders_override_and_conflicts_in_one_folder_are_errors() {
        let a = dir_with(&[(
            "a.json",
            r#"{"cdiVersion":"0.6.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"env":["FROM=etc"]}}]}"#,
        )]);
        let b = dir_with(&[(
            "b.json",
            r#"{"cdiVersion":"0.6.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"env":["FROM=run"]}}]}"#,
        )]);
        let r = Registry::load(&[a.clone(), b.clone()]).unwrap().resolve(&[unit(&["0"])]).unwrap();
        assert_eq!(r.edits.env, ["FROM=run"]);
        fs::copy(b.join("b.json"), a.join("c.json")).unwrap();
        let e = Registry::load(std::slice::from_ref(&a)).unwrap_err();
        assert!(e.message().contains("is defined in both"), "{}", e.message());
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }

    #[test]
    fn bad_specs_name_their_file_and_cause() {
        for (text, cause) in [
            ("kind: nvidia.com/gpu\ndevices: {}", "invalid type"),
            (
                "kind: nvidia.com/gpu\ncontainerEdits:\n  hooks: [{hookName: beforeLunch, path: /bin/true}]",
                "not an OCI hook phase",
            ),
            (
                "kind: nvidia.com/gpu\ncontainerEdits:\n  mounts: [{hostPath: /a, containerPath: rel}]",
                "not absolute",
            ),
            ("cdiVersion: 9.0.0\nkind: nvidia.com/gpu", "not supported"),
        ] {
            let d = dir_with(&[("nvidia.yaml", text)]);
            let e = Registry::load(std::slice::from_ref(&d)).unwrap_err();
            assert!(e.message().contains("nvidia.yaml") && e.message().contains(cause), "{}", e.message());
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn nodes_are_filled_from_the_host() {
        let mut e = Edits {
            device_nodes: vec![
                DeviceNode { path: "/dev/null".into(), ..Default::default() },
                DeviceNode {
                    path: "/dev/x".into(),
                    typ: Some("c".into()),
                    major: Some(1),
                    minor: Some(9),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        fill_nodes(&mut e, Path::new("/dev")).unwrap();
        assert_eq!(
            (e.device_nodes[0].typ.as_deref(), e.device_nodes[0].major, e.device_nodes[0].minor),
            (Some("c"), Some(1), Some(3))
        );
        let mut missing = Edits {
            device_nodes: vec![DeviceNode { path: "/dev/nvidia-none".into(), ..Default::default() }],
            ..Default::default()
        };
        assert!(fill_nodes(&mut missing, Path::new("/dev"))
            .unwrap_err()
            .message()
            .contains("/dev/nvidia-none"));
    }
}
