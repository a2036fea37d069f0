//! The engine that created the container, detected once per create. Everything that differs
//! between engines is asked of [`Engine`]: the prefix of its scopes, its own files the guard lets
//! through, its metadata (owner hints, name, image), the GPUs it says were asked for or
//! assigned, and what its defaults are. Adding an engine is one variant here plus its tests.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::Result;
use crate::gpu::request::{self, Request};
#[cfg(doc)]
use crate::owner::docker;
use crate::owner::docker::DockerMeta;
use crate::owner::identity::EngineMeta;
use crate::owner::kubernetes::{self, Pod};
use crate::spec;

/// Docker's default `/dev/shm` size (64 MiB): a container that did not ask for another.
pub const DOCKER_DEFAULT_SHM: u64 = 64 << 20;

/// Who created the container.
#[derive(Debug, Clone)]
pub enum Engine {
    /// dockerd: its metadata (name, labels, image, hostconfig) read from its own files.
    Docker(Box<DockerMeta>),
    /// Podman (`io.container.manager=libpod`).
    Podman,
    /// A Kubernetes node's CRI (containerd's CRI plugin, or CRI-O when `crio`), with the pod
    /// its annotations describe.
    Cri {
        /// The pod the container belongs to.
        pod: Pod,
        /// CRI-O rather than containerd's CRI plugin.
        crio: bool,
    },
    /// containerd's own clients (ctr, nerdctl): a `/<namespace>/<id>` cgroup path.
    Containerd,
    /// runc called directly, or an engine this runtime does not know.
    Runc,
}

impl Engine {
    /// Detects the engine of container `id`: Docker when Docker keeps metadata for it
    /// (`docker`, read by [`docker::load`]), else from the spec. Pod annotations on a Docker or
    /// Podman container are the creator's claim, not a kubelet's: they are dropped from `spec`.
    pub fn detect(spec: &mut Value, id: &str, docker: Option<DockerMeta>) -> Engine {
        if let Some(meta) = docker {
            kubernetes::forget_claimed_pod(spec);
            return Engine::Docker(Box::new(meta));
        }
        Engine::of_spec(spec, id)
    }

    /// The engine as the spec alone shows it (no Docker metadata read); drops a claimed pod
    /// from a Podman spec like [`Engine::detect`].
    pub fn of_spec(spec: &mut Value, id: &str) -> Engine {
        if spec::annotation(spec, "io.container.manager") == Some("libpod") {
            kubernetes::forget_claimed_pod(spec);
            return Engine::Podman;
        }
        if let Some(pod) = kubernetes::of(spec) {
            let crio = spec::annotation(spec, "io.kubernetes.cri-o.ContainerType").is_some();
            return Engine::Cri { pod, crio };
        }
        let path = spec::get(spec, &["linux", "cgroupsPath"]).and_then(Value::as_str).unwrap_or("");
        let containerd_own = path
            .strip_prefix('/')
            .and_then(|p| p.strip_suffix(id))
            .and_then(|ns| ns.strip_suffix('/'))
            .is_some_and(|ns| !ns.is_empty() && !ns.contains('/') && ns != "docker");
        if containerd_own {
            Engine::Containerd
        } else {
            Engine::Runc
        }
    }

    /// A short name, for messages and the audit.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Docker(_) => "docker",
            Engine::Podman => "podman",
            Engine::Cri { crio: true, .. } => "cri-o",
            Engine::Cri { .. } => "containerd-cri",
            Engine::Containerd => "containerd",
            Engine::Runc => "runc",
        }
    }

    /// Docker's metadata, for a Docker container.
    pub fn docker(&self) -> Option<&DockerMeta> {
        match self {
            Engine::Docker(m) => Some(m),
            _ => None,
        }
    }

    /// The name, labels and image the engine keeps beside config.json (the owner hints).
    pub fn meta(&self) -> Option<&EngineMeta> {
        self.docker().map(|d| &d.engine)
    }

    /// The pod, for a container a Kubernetes CRI created.
    pub fn pod(&self) -> Option<&Pod> {
        match self {
            Engine::Cri { pod, .. } => Some(pod),
            _ => None,
        }
    }

    /// The prefix the engine gives its containers' scopes: the one in a systemd-form cgroup
    /// path (`slice:prefix:id`) when there is one, else the engine's own (`docker`, `libpod`,
    /// `cri-containerd`, `crio`, `containerd`; `docker` for runc called directly).
    pub fn scope_prefix<'a>(&self, spec: &'a Value) -> &'a str {
        let path = spec::get(spec, &["linux", "cgroupsPath"]).and_then(Value::as_str).unwrap_or("");
        if let [_, prefix, _] = path.split(':').collect::<Vec<_>>()[..] {
            if !prefix.is_empty()
                && prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return prefix;
            }
        }
        match self {
            Engine::Docker(_) | Engine::Runc => "docker",
            Engine::Podman => "libpod",
            Engine::Cri { crio: true, .. } => "crio",
            Engine::Cri { .. } => "cri-containerd",
            Engine::Containerd => "containerd",
        }
    }

    /// True for a build container of Docker's classic builder ([`DockerMeta::is_classic_build`]).
    pub fn is_classic_build(&self) -> bool {
        self.docker().is_some_and(DockerMeta::is_classic_build)
    }

    /// True when the engine asked for a privileged container (`--privileged`).
    pub fn privileged(&self, spec: &Value) -> bool {
        match self {
            Engine::Docker(d) => d.host.privileged,
            Engine::Podman => spec::annotation(spec, "io.podman.annotations.privileged")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            _ => false,
        }
    }

    /// True when the engine writes its own default seccomp profile into every spec, so a spec
    /// without one was asked for (`seccomp=unconfined`).
    pub fn sets_seccomp(&self) -> bool {
        matches!(self, Engine::Docker(_) | Engine::Podman)
    }

    /// True when `/dev/shm` is the engine's default size (the policy's `shm_size` may then
    /// replace it).
    pub fn shm_is_default(&self) -> bool {
        self.docker().is_some_and(|d| d.host.shm_size == 0 || d.host.shm_size as u64 == DOCKER_DEFAULT_SHM)
    }

    /// True unless the engine says the swap limit in the spec is only its default (Docker
    /// writes swap = 2 × memory when `--memory-swap` was not given).
    pub fn swap_explicit(&self) -> bool {
        self.docker().map(|d| d.host.memory_swap != 0).unwrap_or(true)
    }

    /// What GPUs the container asks for, and who asked: for a CRI container only what the
    /// kubelet assigned (nothing for the pod's sandbox), otherwise [`request::find`] over the
    /// spec and this engine's labels and device requests.
    pub fn gpu_request(&self, spec: &Value, env_is_request: bool) -> Result<(Request, &'static str)> {
        match self {
            Engine::Cri { pod, .. } if pod.sandbox => Ok((Request::None, "none (Kubernetes sandbox)")),
            Engine::Cri { .. } => Ok((kubernetes::assigned_gpus(spec), "the kubelet")),
            Engine::Docker(d) => request::find(
                spec,
                Some(&d.engine.labels),
                d.host.device_requests.as_deref().unwrap_or_default(),
                env_is_request,
            ),
            _ => request::find(spec, None, &[], env_is_request),
        }
    }

    /// True when the container counts towards its owner's container cap: a CRI container does
    /// only under `kubernetes.local_quota`, and a pod's sandbox never.
    pub fn counts_locally(&self, local_quota: bool) -> bool {
        match self.pod() {
            Some(p) => local_quota && !p.sandbox,
            None => true,
        }
    }

    /// True when the GPUs are the scheduler's (a CRI container without `kubernetes.local_quota`):
    /// recorded, not held to the local quota.
    pub fn gpus_scheduled(&self, local_quota: bool) -> bool {
        self.pod().is_some() && !local_quota
    }

    /// The engine's own files for this container, which it bind-mounts itself (hosts,
    /// resolv.conf, volumes, a CRI's sandbox files): the guard lets these through. `bundle` is
    /// the bundle directory, resolved.
    pub fn own_paths(&self, docker_root: &Path, id: &str, bundle: Option<&Path>) -> OwnPaths {
        let mut paths = vec![
            docker_root.join("containers").join(id),
            docker_root.join("volumes"),
            // Podman's defaults, also for a config.json read away from its bundle (`ds01ctl explain`).
            PathBuf::from(format!("/var/lib/containers/storage/overlay-containers/{id}")),
            PathBuf::from(format!("/run/containers/storage/overlay-containers/{id}")),
            PathBuf::from("/var/lib/containers/storage/volumes"),
            PathBuf::from("/run/containerd/io.containerd.grpc.v1.cri/sandboxes"),
            PathBuf::from("/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes"),
        ];
        let mut userdata = None;
        if let Some(b) = bundle {
            if let Some((graph_root, rel)) = podman_userdata(b, id) {
                paths.push(graph_root.join("volumes"));
                userdata = Some(rel);
            }
            paths.push(b.to_path_buf());
        }
        OwnPaths { paths, userdata }
    }

    /// The folders where engines keep their state and checkpoints (Docker's data root, and the
    /// defaults of Docker, Podman and containerd): a restore's image must be under one of them
    /// unless an admin restores, and the guard refuses bind mounts of them.
    pub fn state_dirs(docker_root: &Path) -> Vec<PathBuf> {
        vec![
            docker_root.to_path_buf(),
            PathBuf::from("/var/lib/docker"),
            PathBuf::from("/var/lib/containers"),
            PathBuf::from("/var/lib/containerd"),
            PathBuf::from("/run/containerd"),
            PathBuf::from("/run/containers"),
        ]
    }
}

/// The engine's own files for one container ([`Engine::own_paths`]).
#[derive(Debug, Clone, Default)]
pub struct OwnPaths {
    /// Folders whose contents the engine itself bind-mounts.
    pub paths: Vec<PathBuf>,
    /// Podman's `<driver>-containers/<id>/userdata`, relative: its files under any run root.
    pub userdata: Option<PathBuf>,
}

/// Podman's layout: the bundle is `<graph root>/<driver>-containers/<id>/userdata`, and the
/// files it bind-mounts (hosts, resolv.conf, .containerenv) are in the same relative folder
/// under its run root, which may be anywhere. Gives the graph root and that relative folder.
fn podman_userdata(bundle: &Path, id: &str) -> Option<(PathBuf, PathBuf)> {
    let container = bundle.parent().filter(|_| bundle.file_name().is_some_and(|n| n == "userdata"))?;
    let store = container.parent().filter(|_| container.file_name().is_some_and(|n| n == id))?;
    let driver = store.file_name()?.to_str().filter(|n| n.ends_with("-containers"))?;
    Some((store.parent()?.to_path_buf(), [driver, id, "userdata"].iter().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::modifiers::fixtures;
    use serde_json::json;

    fn of(mut spec: Value, id: &str) -> Engine {
        Engine::of_spec(&mut spec, id)
    }

    #[test]
    fn each_engine_is_told_apart_and_gives_its_scope_prefix() {
        let docker_id = "ba78d9be3456711b8562d8ac4712aac05190757f63605f3adcdf7f6fd3d0b3ab";
        let cases = [
            (fixtures::docker(), docker_id, "runc", "docker", "/docker/<id> without metadata"),
            (json!({}), "c", "runc", "docker", "runc called directly"),
            (fixtures::podman(), "c", "podman", "libpod", "Podman"),
            (
                json!({"annotations": {"io.kubernetes.cri.sandbox-namespace": "ml"}}),
                "c",
                "containerd-cri",
                "cri-containerd",
                "containerd's CRI",
            ),
            (
                json!({"annotations": {"io.kubernetes.pod.namespace": "ml", "io.kubernetes.cri-o.ContainerType": "container"}}),
                "c",
                "cri-o",
                "crio",
                "CRI-O",
            ),
            (json!({"linux": {"cgroupsPath": "/default/web"}}), "web", "containerd", "containerd", "ctr"),
            (json!({"linux": {"cgroupsPath": "/default/web"}}), "other", "runc", "docker", "not its id"),
            (
                json!({"linux": {"cgroupsPath": "system.slice:nerdctl:web"}}),
                "web",
                "runc",
                "nerdctl",
                "the systemd form says",
            ),
        ];
        for (spec, id, name, prefix, why) in cases {
            let e = of(spec.clone(), id);
            assert_eq!((e.name(), e.scope_prefix(&spec)), (name, prefix), "{why}");
        }
        let docker = Engine::Docker(Box::default());
        assert_eq!(docker.scope_prefix(&json!({})), "docker", "Docker's metadata");
    }

    #[test]
    fn a_pod_claimed_on_podman_is_dropped() {
        let mut spec = fixtures::podman();
        spec["annotations"]["io.kubernetes.pod.namespace"] = json!("ml");
        let e = Engine::of_spec(&mut spec, "c");
        assert!(matches!(e, Engine::Podman) && e.pod().is_none());
        assert!(spec["annotations"].get("io.kubernetes.pod.namespace").is_none());
        assert!(spec["annotations"].get("io.kubernetes.cri-o.Created").is_some(), "Podman's own kept");
    }

    #[test]
    fn a_sandbox_asks_no_gpus_and_counts_for_nothing() {
        let spec = json!({"annotations": {"io.kubernetes.cri.sandbox-namespace": "ml",
            "io.kubernetes.cri.container-type": "sandbox", "cdi.k8s.io/x": "nvidia.com/gpu=0"}});
        let e = of(spec.clone(), "c");
        assert_eq!(e.gpu_request(&spec, false).unwrap().0, Request::None);
        assert!(!e.counts_locally(true) && e.gpus_scheduled(false));
    }

    #[test]
    fn podman_layout_is_read_from_the_bundle() {
        let b = Path::new("/srv/graph/vfs-containers/abc/userdata");
        let (graph, rel) = podman_userdata(b, "abc").unwrap();
        assert_eq!(graph, PathBuf::from("/srv/graph"));
        assert_eq!(rel, PathBuf::from("vfs-containers/abc/userdata"));
        assert!(podman_userdata(b, "abd").is_none(), "another container's id");
        assert!(podman_userdata(Path::new("/run/containerd/moby/abc"), "abc").is_none());
        assert!(podman_userdata(Path::new("/x/abc/userdata"), "abc").is_none());
        let own = Engine::Podman.own_paths(Path::new("/var/lib/docker"), "abc", Some(b));
        assert_eq!(own.userdata, Some(rel));
        assert!(own.paths.contains(&PathBuf::from("/srv/graph/volumes")));
    }
}
