//! Containers a Kubernetes node's CRI creates: which pod and namespace they belong to (the CRI's
//! annotations), whether they are the pod's sandbox (pause) container, and which GPUs the
//! kubelet's device plugin assigned (CDI annotations, or `NVIDIA_VISIBLE_DEVICES`).

use serde_json::Value;

use crate::gpu::request::Request;
use crate::spec;

/// What containerd's CRI plugin sets.
const CONTAINERD_TYPE: &str = "io.kubernetes.cri.container-type";
const CONTAINERD_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CONTAINERD_POD: &str = "io.kubernetes.cri.sandbox-name";
const CONTAINERD_CONTAINER: &str = "io.kubernetes.cri.container-name";
/// What CRI-O sets.
const CRIO_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const POD_NAME: &str = "io.kubernetes.pod.name";
const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// The prefix of the CDI device annotations the kubelet passes on from a device plugin.
const CDI_PREFIX: &str = "cdi.k8s.io/";
/// Every pod annotation [`of`] reads.
const POD_KEYS: [&str; 8] = [
    CONTAINERD_TYPE,
    CONTAINERD_NAMESPACE,
    CONTAINERD_POD,
    CONTAINERD_CONTAINER,
    CRIO_TYPE,
    POD_NAMESPACE,
    POD_NAME,
    CONTAINER_NAME,
];

/// A container of a Kubernetes pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: Option<String>,
    /// The container's name in the pod (none for the sandbox).
    pub container: Option<String>,
    /// The pod's sandbox (pause) container: no GPUs, no quota.
    pub sandbox: bool,
}

impl Pod {
    /// `namespace/pod[/container]`, for the audit and the annotations.
    pub fn describe(&self) -> String {
        let mut s = self.namespace.clone();
        for part in [&self.name, &self.container].into_iter().flatten() {
            s.push('/');
            s.push_str(part);
        }
        s
    }
}

/// Drops the pod annotations from a spec that a CRI did not write (Docker's or Podman's):
/// there they are the creator's own, and a claimed pod would keep the kubelet's choices
/// (masked paths, OOM score, placement, GPUs) for a container no kubelet made. Only the keys
/// this module reads go: Podman's own `io.kubernetes.cri-o.Created` and `.TTY` stay.
pub fn forget_claimed_pod(spec: &mut Value) {
    if let Some(a) = spec.get_mut("annotations").and_then(Value::as_object_mut) {
        a.retain(|k, _| !(POD_KEYS.contains(&k.as_str()) || k.starts_with(CDI_PREFIX)));
    }
}

/// The pod a container belongs to, when a CRI created it.
pub fn of(spec: &Value) -> Option<Pod> {
    let a = |k: &str| spec::annotation(spec, k).filter(|v| !v.is_empty()).map(str::to_owned);
    let namespace = a(CONTAINERD_NAMESPACE).or_else(|| a(POD_NAMESPACE))?;
    let kind = a(CONTAINERD_TYPE).or_else(|| a(CRIO_TYPE));
    Some(Pod {
        namespace,
        name: a(CONTAINERD_POD).or_else(|| a(POD_NAME)),
        container: a(CONTAINERD_CONTAINER).or_else(|| a(CONTAINER_NAME)),
        sandbox: kind.as_deref() == Some("sandbox"),
    })
}

/// The GPUs the kubelet assigned: the device names of `nvidia.com/gpu=…` in `cdi.k8s.io/*`
/// annotations, else a list of GPUs in `NVIDIA_VISIBLE_DEVICES`. `all`, `void` and `none` are
/// not an assignment (CUDA images carry `all` as a default; a device plugin names devices).
pub fn assigned_gpus(spec: &Value) -> Request {
    let cdi: Vec<String> = spec::get(spec, &["annotations"])
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(CDI_PREFIX))
        .filter_map(|(_, v)| v.as_str())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().strip_prefix("nvidia.com/gpu="))
        .filter(|d| !d.is_empty() && *d != "all")
        .map(str::to_owned)
        .collect();
    if !cdi.is_empty() {
        return Request::Devices(cdi);
    }
    match spec::env_var(spec, "NVIDIA_VISIBLE_DEVICES").map(|v| Request::parse(v, false)) {
        Some(Ok(r @ Request::Devices(_))) => r,
        _ => Request::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_claimed_pod_is_forgotten() {
        let mut spec = json!({"annotations": {
            "io.kubernetes.pod.namespace": "kube-system", "io.kubernetes.cri.sandbox-namespace": "x",
            "cdi.k8s.io/gpu": "nvidia.com/gpu=0", "org.example": "kept",
            "io.kubernetes.cri-o.TTY": "false"
        }});
        assert!(of(&spec).is_some());
        forget_claimed_pod(&mut spec);
        assert!(of(&spec).is_none());
        assert_eq!(spec["annotations"], json!({"org.example": "kept", "io.kubernetes.cri-o.TTY": "false"}));
    }

    #[test]
    fn containerd_and_crio_annotations_name_the_pod() {
        let spec = json!({"annotations": {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.sandbox-namespace": "vision",
            "io.kubernetes.cri.sandbox-name": "train-0",
            "io.kubernetes.cri.container-name": "trainer"}});
        let p = of(&spec).unwrap();
        assert_eq!((p.describe(), p.sandbox), ("vision/train-0/trainer".to_owned(), false));
        let spec = json!({"annotations": {
            "io.kubernetes.cri-o.ContainerType": "sandbox",
            "io.kubernetes.pod.namespace": "vision",
            "io.kubernetes.pod.name": "train-0"}});
        let p = of(&spec).unwrap();
        assert_eq!((p.describe(), p.sandbox), ("vision/train-0".to_owned(), true));
        assert_eq!(of(&json!({"annotations": {"ds01.user": "x"}})), None);
    }

    #[test]
    fn gpus_come_from_cdi_annotations_or_a_device_list() {
        let spec = json!({"annotations": {
            "cdi.k8s.io/nvidia-device-plugin_uuid": "nvidia.com/gpu=GPU-fake-1,nvidia.com/gpu=GPU-fake-3"},
            "process": {"env": ["NVIDIA_VISIBLE_DEVICES=all"]}});
        assert_eq!(assigned_gpus(&spec), Request::Devices(vec!["GPU-fake-1".into(), "GPU-fake-3".into()]));
        let spec = json!({"process": {"env": ["NVIDIA_VISIBLE_DEVICES=GPU-fake-2"]}});
        assert_eq!(assigned_gpus(&spec), Request::Devices(vec!["GPU-fake-2".into()]));
        for v in ["all", "void", "none", ""] {
            let spec = json!({"process": {"env": [format!("NVIDIA_VISIBLE_DEVICES={v}")]}});
            assert_eq!(assigned_gpus(&spec), Request::None, "{v}");
        }
    }
}
