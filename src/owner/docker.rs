//! Docker's metadata edge: what dockerd wrote to disk about container `<id>` before it asked the
//! runtime to create it (`<docker_root>/containers/<id>/config.v2.json` and `hostconfig.json`).
//!
//! Docker 20.10 puts no labels, name or annotations into config.json, and the Docker API cannot
//! be asked from inside create (dockerd holds the container's lock while it starts it), so these
//! files are the only source of a Docker container's name, labels and requested devices.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
pub use crate::gpu::request::DeviceRequest;
use crate::owner::identity::EngineMeta;

/// `hostconfig.json`: the parts the runtime enforces policy on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct HostConfig {
    /// `--privileged`.
    pub privileged: bool,
    /// `--device` mappings.
    pub devices: Option<Vec<DeviceMapping>>,
    /// `--gpus` requests.
    pub device_requests: Option<Vec<DeviceRequest>>,
    /// `--device-cgroup-rule`.
    pub device_cgroup_rules: Option<Vec<String>>,
    /// `--cgroup-parent`.
    pub cgroup_parent: String,
    /// `--memory` in bytes (0 = none).
    pub memory: i64,
    /// `--memory-swap` in bytes (0 = none, -1 = unlimited).
    pub memory_swap: i64,
    /// `--cpus` in billionths of a CPU.
    pub nano_cpus: i64,
    /// `--pids-limit` (None or ≤0 = none).
    pub pids_limit: Option<i64>,
    /// `--shm-size` in bytes.
    pub shm_size: i64,
    /// The runtime name dockerd chose.
    pub runtime: String,
    /// `--log-driver`.
    pub log_config: LogConfig,
}

/// The container's log driver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct LogConfig {
    /// Driver name (`json-file`, `none`, …).
    #[serde(rename = "Type")]
    pub driver: String,
}

/// One `--device` mapping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DeviceMapping {
    /// Host path, e.g. /dev/nvidia3.
    pub path_on_host: String,
    /// Path inside the container.
    pub path_in_container: String,
    /// rwm.
    pub cgroup_permissions: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ConfigV2 {
    name: String,
    config: ContainerConfig,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ContainerConfig {
    labels: Option<serde_json::Map<String, Value>>,
    image: String,
}

/// A Docker container's metadata.
#[derive(Debug, Clone, Default)]
pub struct DockerMeta {
    /// Name, labels, image.
    pub engine: EngineMeta,
    /// hostconfig.json.
    pub host: HostConfig,
}

impl DockerMeta {
    /// A build container of Docker's classic builder: it runs the previous step's image by its
    /// id (`sha256:…`, never a name) with the `none` log driver. Anyone can start a container
    /// that looks the same (`docker run --log-driver none sha256:…`), so what a build
    /// container gets must be nothing more than an ordinary one.
    pub fn is_classic_build(&self) -> bool {
        let image = self.engine.image.as_deref().unwrap_or("");
        let id = image.strip_prefix("sha256:").unwrap_or("");
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) && self.host.log_config.driver == "none"
    }
}

/// Reads the metadata of container `id` under `docker_root`; `None` when Docker has no such
/// container (another engine, or plain runc). A file that exists but cannot be read or parsed
/// is an error: dockerd wrote it, so something is wrong.
pub fn load(docker_root: &Path, id: &str) -> Result<Option<DockerMeta>> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Ok(None);
    }
    let dir = docker_root.join("containers").join(id);
    let cfg_path = dir.join("config.v2.json");
    let bytes = match std::fs::read(&cfg_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::failed(format!("cannot read Docker metadata {}: {e}", cfg_path.display())))
        }
    };
    let cfg: ConfigV2 = serde_json::from_slice(&bytes)
        .map_err(|e| Error::failed(format!("malformed Docker metadata {}: {e}", cfg_path.display())))?;
    let host_path = dir.join("hostconfig.json");
    let host: HostConfig = match std::fs::read(&host_path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| Error::failed(format!("malformed Docker metadata {}: {e}", host_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => HostConfig::default(),
        Err(e) => {
            return Err(Error::failed(format!("cannot read Docker metadata {}: {e}", host_path.display())))
        }
    };
    let name = cfg.name.trim_start_matches('/').to_owned();
    Ok(Some(DockerMeta {
        engine: EngineMeta {
            name: (!name.is_empty()).then_some(name),
            labels: cfg.config.labels.unwrap_or_default(),
            image: (!cfg.config.image.is_empty()).then_some(cfg.config.image),
        },
        host,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_name_labels_image_and_hostconfig() {
        let root = std::env::temp_dir().join(format!("ds01-docker-meta-{}", std::process::id()));
        let dir = root.join("containers/abc123");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.v2.json"),
            r#"{"ID":"abc123","Name":"/proj._.alice","Config":{"Labels":{"ds01.user":"alice","x":"y"},"Image":"busybox"},"Future":1}"#,
        )
        .unwrap();
        std::fs::write(
            dir.join("hostconfig.json"),
            r#"{"Privileged":true,"Devices":[{"PathOnHost":"/dev/nvidia3","PathInContainer":"/dev/nvidia3","CgroupPermissions":"rwm"}],
                "DeviceRequests":[{"Driver":"","Count":2,"DeviceIDs":null,"Capabilities":[["gpu"]],"Options":{}}],
                "DeviceCgroupRules":["c 195:* rwm"],"CgroupParent":"","Memory":268435456,"PidsLimit":100,"Runtime":"ds01"}"#,
        )
        .unwrap();
        let m = load(&root, "abc123").unwrap().unwrap();
        assert_eq!(m.engine.name.as_deref(), Some("proj._.alice"));
        assert_eq!(m.engine.labels["ds01.user"], "alice");
        assert_eq!(m.engine.image.as_deref(), Some("busybox"));
        assert!(m.host.privileged);
        assert_eq!(m.host.devices.as_ref().unwrap()[0].path_on_host, "/dev/nvidia3");
        assert_eq!(m.host.device_requests.as_ref().unwrap()[0].count, 2);
        assert_eq!(m.host.memory, 256 << 20);
        assert_eq!(m.host.pids_limit, Some(100));
        assert!(load(&root, "nope").unwrap().is_none());
        assert!(load(&root, "../x").unwrap().is_none());
        std::fs::write(dir.join("hostconfig.json"), "{").unwrap();
        assert!(load(&root, "abc123").unwrap_err().to_string().contains("malformed Docker metadata"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
