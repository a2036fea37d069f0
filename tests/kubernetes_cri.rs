//! CRI-shaped config.json (containerd's annotations for a pod's sandbox and for a workload
//! container with a GPU from the device plugin) through the whole create pipeline of the real
//! shim binary, with /bin/true standing in for runc: owner from the namespace map, the
//! kubelet's cgroup kept, exactly the assigned GPU, the sandbox without GPUs or quota.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

struct Node {
    tmp: TempDir,
    settings: PathBuf,
}

impl Node {
    fn new(tag: &str, kubernetes: &str) -> Node {
        let tmp = TempDir::new(tag);
        let dev = fake_dev(tmp.path(), 4);
        let settings = settings(tmp.path(), &format!("{}{kubernetes}", static_gpus(&dev, 4)));
        let text = fs::read_to_string(&settings)
            .unwrap()
            .replace("low_level_runtime: runc", "low_level_runtime: /bin/true");
        fs::write(&settings, text).unwrap();
        write_policy(tmp.path(), &gpu_policy("0"));
        Node { tmp, settings }
    }

    /// A bundle holding the fixture, with `edit` applied.
    fn bundle(&self, fixture: &str, id: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
        let dir = self.tmp.path().join(id);
        fs::create_dir_all(&dir).unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
        let mut spec: Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        edit(&mut spec);
        fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        dir
    }

    fn create(&self, bundle: &Path, id: &str) -> Output {
        Command::new(shim())
            .env("DS01_RUNTIME_CONFIG", &self.settings)
            .args(["--root", self.tmp.path().join("runc").to_str().unwrap(), "create", "--bundle"])
            .arg(bundle)
            .arg(id)
            .output()
            .unwrap()
    }

    fn events(&self) -> Vec<Value> {
        audit_events(self.tmp.path())
    }

    fn allocations(&self) -> Vec<Value> {
        gpu_allocations(self.tmp.path())
    }
}

fn spec(bundle: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(bundle.join("config.json")).unwrap()).unwrap()
}

fn nvidia_nodes(spec: &Value) -> Vec<String> {
    let mut v: Vec<String> = spec["linux"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str())
        .filter(|p| p.starts_with("/dev/nvidia"))
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

const VISION: &str =
    "kubernetes:\n  namespaces:\n    vision: {user: rita, group: researcher}\n    lab: {user: alice}\n";

#[test]
fn a_pod_on_a_gpu_node_gets_its_owner_its_kubelet_cgroup_and_exactly_its_gpu() {
    if !require(nix::unistd::geteuid().is_root(), "needs root (mknod of the fake GPU nodes)") {
        return;
    }
    let node = Node::new("k8s", VISION);

    // The sandbox (pause) container: owner from the namespace, no GPU, no quota, cgroup kept.
    let sandbox = node.bundle("cri-containerd-config.json", "sandbox", |s| {
        let a = s["annotations"].as_object_mut().unwrap();
        a.remove("ds01.user");
        a.insert("io.kubernetes.cri.sandbox-namespace".into(), "vision".into());
    });
    let before = spec(&sandbox);
    let o = node.create(&sandbox, "0f7c6f2e9a8b");
    assert!(o.status.success(), "{}", stderr(&o));
    let s = spec(&sandbox);
    assert_eq!(s["linux"]["cgroupsPath"], before["linux"]["cgroupsPath"], "the kubelet's pod cgroup stays");
    assert_eq!(s["linux"]["resources"], before["linux"]["resources"], "the pod's own limits stay");
    assert!(nvidia_nodes(&s).is_empty());
    let ann = &s["annotations"];
    assert_eq!((ann["ds01.user"].as_str(), ann["ds01.group"].as_str()), (Some("rita"), Some("researcher")));
    assert_eq!(ann["ds01.identity-source"], "kubernetes");
    assert_eq!(ann["ds01.pod"], "vision/gpu-job");
    assert!(ann.get("ds01.slice").is_none(), "no ds01 slice when the pod cgroup is kept");

    // The workload container: the device plugin named GPU-fake-1; that one GPU, and it is
    // recorded for rita even though the policy's students could not take a full GPU by count.
    let train = node.bundle("cri-containerd-container-config.json", "train", |_| {});
    let before = spec(&train);
    let o = node.create(&train, "5b8c1d9e7f20");
    assert!(o.status.success(), "{}", stderr(&o));
    let s = spec(&train);
    assert_eq!(s["linux"]["cgroupsPath"], before["linux"]["cgroupsPath"]);
    assert_eq!(
        nvidia_nodes(&s),
        ["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
            .map(String::from)
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(s["annotations"]["ds01.pod"], "vision/train-0/trainer");
    let allocs = node.allocations();
    assert_eq!(allocs.len(), 1, "{allocs:?}");
    assert_eq!(allocs[0]["container"], "5b8c1d9e7f20");
    assert_eq!(allocs[0]["owner"], "rita");
    let ev = node.events().into_iter().rev().find(|e| e["event"] == "create").unwrap();
    assert_eq!(ev["owner"], "rita");
    assert_eq!(ev["gpus"][0], "GPU-fake-1");
    assert_eq!(ev["slice"], before["linux"]["cgroupsPath"], "the audit names the cgroup it ran in");

    // runc (here /bin/true) would now hold the container: its state file keeps the record.
    let state = node.tmp.path().join("runc/5b8c1d9e7f20");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("state.json"), "{}").unwrap();

    // A second pod the scheduler put on GPU-fake-1 too (the local record says it is taken):
    // refused in one line, its bundle unchanged, nothing allocated for it.
    let clash = node.bundle("cri-containerd-container-config.json", "clash", |s| {
        s["annotations"]["io.kubernetes.cri.sandbox-namespace"] = "lab".into();
    });
    let before = fs::read(clash.join("config.json")).unwrap();
    let o = node.create(&clash, "77aa");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("GPU-fake-1") || err.contains("GPU 1"), "{err}");
    assert_eq!(fs::read(clash.join("config.json")).unwrap(), before);
    assert!(node.allocations().iter().all(|a| a["container"] != "77aa"));

    // The CDI form of the device plugin's answer.
    let cdi = node.bundle("cri-containerd-container-config.json", "cdi", |s| {
        s["annotations"]["io.kubernetes.cri.sandbox-namespace"] = "lab".into();
        s["annotations"]["cdi.k8s.io/nvidia-device-plugin_uuid"] = "nvidia.com/gpu=GPU-fake-2".into();
    });
    let o = node.create(&cdi, "88bb");
    assert!(o.status.success(), "{}", stderr(&o));
    let nodes = nvidia_nodes(&spec(&cdi));
    assert!(
        nodes.contains(&"/dev/nvidia2".to_owned()) && !nodes.contains(&"/dev/nvidia1".to_owned()),
        "{nodes:?}"
    );
    assert_eq!(spec(&cdi)["annotations"]["ds01.user"], "alice");
}

#[test]
fn an_unmapped_namespace_is_refused_and_slice_placement_is_a_setting() {
    if !require(nix::unistd::geteuid().is_root(), "needs root (mknod of the fake GPU nodes)") {
        return;
    }
    let node = Node::new("k8s-map", VISION);
    let b = node.bundle("cri-containerd-container-config.json", "other", |s| {
        s["annotations"]["io.kubernetes.cri.sandbox-namespace"] = "kube-public".into();
    });
    let before = fs::read(b.join("config.json")).unwrap();
    let o = node.create(&b, "99cc");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("namespace kube-public is not in kubernetes.namespaces"), "{}", stderr(&o));
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before, "bundle unchanged");
    assert!(node.allocations().is_empty(), "no GPU taken by a refused create");

    // placement: slice puts the pod's containers in the owner's slice, with the owner's limits,
    // under the CRI's own scope name.
    let node = Node::new("k8s-slice", &format!("{VISION}  placement: slice\n"));
    let b = node.bundle("cri-containerd-container-config.json", "train", |_| {});
    let o = node.create(&b, "5b8c1d9e7f20");
    assert!(o.status.success(), "{}", stderr(&o));
    let s = spec(&b);
    assert_eq!(
        s["linux"]["cgroupsPath"],
        "/ds01.slice/ds01-researcher.slice/ds01-researcher-rita.slice/cri-containerd-5b8c1d9e7f20.scope"
    );
    assert_eq!(s["annotations"]["ds01.slice"], "ds01-researcher-rita.slice");
}
