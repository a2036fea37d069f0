//! The shim behind a real, private containerd (Debian's 1.6) driven with `ctr`: containerd's
//! runc v2 shim calls it for every runc call, with DS01_RUNTIME_CONFIG inherited from
//! containerd's environment. Owners from `--annotation`, refusals readable in `ctr run`, fake
//! GPUs one node at a time, and the form a Kubernetes node uses (the runc v2 runtime whose
//! `BinaryName` option names the shim, CRI annotations, the kubelet's cgroup kept).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::dockerd::unmount_below;
use common::*;
use serde_json::Value;

/// Root, runc, busybox-static, containerd and ctr.
fn require_containerd() -> bool {
    require_runc()
        && require(which("containerd").is_some(), "needs containerd (apt-get install containerd)")
        && require(which("ctr").is_some(), "needs ctr (apt-get install containerd)")
        && require(
            which("containerd-shim-runc-v2").is_some(),
            "needs containerd-shim-runc-v2 (apt-get install containerd)",
        )
}

/// A running private containerd: its own config, root, state, socket, runc root and busybox
/// rootfs; the shim's settings in its environment. Stopped, with its containers, shims and
/// folders, on drop, also when the test fails.
struct Containerd {
    tmp: TempDir,
    sock: PathBuf,
    rootfs: PathBuf,
    child: Option<Child>,
    /// Owners whose slices, and cgroupfs paths, removed on drop.
    users: std::cell::RefCell<Vec<String>>,
    cgroups: std::cell::RefCell<Vec<String>>,
}

impl Containerd {
    /// Starts containerd with `extra` settings YAML and `gpus` fake GPUs (static inventory).
    fn start(tag: &str, gpus: u32, extra: &str) -> Containerd {
        let tmp = TempDir::in_dir(Path::new("/tmp"), &format!("c01{tag}"));
        let dir = tmp.path().to_path_buf();
        let gpu_settings = if gpus > 0 { static_gpus(&fake_dev(&dir, gpus), gpus) } else { String::new() };
        let settings = settings(&dir, &format!("{gpu_settings}{extra}"));
        let sock = dir.join("c.sock");
        // Only what a private instance needs: its own folders and socket, no CRI (no CNI, no
        // image service for pods), and the `opt` plugin's folder inside ours (else /opt/containerd).
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
             [grpc]\n  address = \"{sock}\"\n\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n",
            d = dir.display(),
            sock = sock.display(),
        );
        std::fs::write(dir.join("config.toml"), config).expect("write config.toml");
        let rootfs = dir.join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).expect("rootfs dir");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for tool in ["sh", "cat", "sleep", "true", "ls", "grep", "sort", "tr"] {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).expect("busybox link");
        }
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd.log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&sock)
            // The settings reach the runtime through containerd's environment: containerd
            // starts containerd-shim-runc-v2 with it, and the shim runs the runtime with it.
            .env("DS01_RUNTIME_CONFIG", &settings)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            tmp,
            sock,
            rootfs,
            child: Some(child),
            users: Default::default(),
            cgroups: Default::default(),
        };
        let up = wait_for(30, || c.ctr(&["version"]).status.success().then_some(()));
        assert!(up.is_some(), "private containerd did not come up: {}", c.log());
        c
    }

    /// A unique owner name; the owner's (student) slice is removed on drop.
    fn user(&self, tag: &str) -> String {
        let u = unique(tag);
        self.users.borrow_mut().push(u.clone());
        u
    }

    /// Runs ctr against this containerd.
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// `ctr run` of the busybox rootfs through the shim: `--runc-binary` sets the runc v2
    /// shim's `BinaryName` option (the same field a CRI runtime handler's `options.BinaryName`
    /// fills), `--runc-root` its `Root` (runc's state in our folder, not /run/containerd/runc).
    /// `--rootfs` runs the folder without an image, so there is no image PATH: it is given.
    fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
        let shim = shim();
        let runc_root = self.tmp.path().join("runc");
        let rootfs = self.rootfs.to_string_lossy().into_owned();
        let mut args = vec![
            "run",
            "--rootfs",
            "--runc-binary",
            shim.to_str().expect("shim path is UTF-8"),
            "--runc-root",
            runc_root.to_str().expect("tmp path is UTF-8"),
            "--env",
            "PATH=/bin",
        ];
        args.extend_from_slice(flags);
        args.push(&rootfs);
        args.push(id);
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// The audit log's events.
    fn events(&self) -> Vec<Value> {
        audit_events(self.tmp.path())
    }

    /// The allocations in the GPU state file (none when there is no file yet).
    fn allocations(&self) -> Vec<Value> {
        gpu_allocations(self.tmp.path())
    }

    /// containerd's log, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids = self.ctr(&["containers", "list", "-q"]);
        for id in stdout(&ids).split_whitespace() {
            let _ = self.ctr(&["tasks", "delete", "--force", id]);
            let _ = self.ctr(&["containers", "delete", id]);
        }
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, 10);
        }
        // A runc v2 shim outlives containerd; its command line names our socket.
        kill_naming(self.tmp.path());
        unmount_below(self.tmp.path());
        for u in self.users.borrow().iter() {
            remove_slices("student", u);
        }
        for cg in self.cgroups.borrow().iter() {
            remove_cgroup(cg);
        }
    }
}

/// The NVIDIA nodes in `ls /dev` output, sorted.
fn nvidia_nodes(ls: &str) -> Vec<String> {
    let mut v: Vec<String> =
        ls.split_whitespace().filter(|n| n.starts_with("nvidia")).map(str::to_owned).collect();
    v.sort();
    v
}

/// Removes an empty cgroupfs path and its empty parents from every hierarchy (best effort).
fn remove_cgroup(rel: &str) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    let mut roots: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for r in roots {
        let mut p = PathBuf::from(rel.trim_start_matches('/'));
        loop {
            let _ = std::fs::remove_dir(r.join(&p));
            if !p.pop() || p.as_os_str().is_empty() {
                break;
            }
        }
    }
}

/// Standard base64 (with padding), as ctr prints protobuf values.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A length-delimited protobuf field `field` of `msg` (top level, no nesting), as a string.
fn proto_string(msg: &[u8], field: u64) -> Option<String> {
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*i)?;
            *i += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let mut i = 0;
    while i < msg.len() {
        let key = varint(&mut i)?;
        match key & 7 {
            0 => {
                varint(&mut i)?;
            }
            2 => {
                let len = varint(&mut i)? as usize;
                let bytes = msg.get(i..i + len)?;
                i += len;
                if key >> 3 == field {
                    return Some(String::from_utf8_lossy(bytes).into_owned());
                }
            }
            _ => return None,
        }
    }
    None
}

#[test]
fn ctr_run_lands_in_the_owners_slice_and_refusals_reach_ctr() {
    if !require_containerd() {
        return;
    }
    let c = Containerd::start("own", 0, "");
    let user = c.user("cat");
    let id = unique("own");
    let o =
        c.run(&["--rm", "--annotation", &format!("ds01.user={user}")], &id, &["cat", "/proc/self/cgroup"]);
    assert!(o.status.success(), "ctr run: {}\n{}", stderr(&o), c.log());
    let out = stdout(&o);
    let want = format!("/ds01.slice/ds01-student.slice/ds01-student-{user}.slice/containerd-{id}.scope");
    assert!(!out.trim().is_empty(), "no output: {}", stderr(&o));
    for l in out.lines() {
        assert!(l.ends_with(&format!(":{want}")), "{l}\n{out}");
    }
    // Audited with the settings from containerd's environment: the create, and the start and
    // delete of `ctr run --rm` (pass-through calls that got the settings too).
    let mine =
        |ev: &[Value], kind: &str| events_of(ev, &id, kind).iter().any(|e| e["owner"] == user.as_str());
    let ev = wait_for(10, || {
        let ev = c.events();
        ["create", "start", "delete"].iter().all(|k| mine(&ev, k)).then_some(ev)
    })
    .unwrap_or_else(|| panic!("create, start and delete audited: {:?}", c.events()));
    let create = events_of(&ev, &id, "create");
    assert_eq!(create.len(), 1, "{ev:?}");
    assert_eq!(create[0]["outcome"], "allowed");
    assert_eq!(create[0]["owner"], user.as_str());
    assert_eq!(create[0]["identity_source"], "annotation");
    assert_eq!(create[0]["slice"], format!("ds01-student-{user}.slice"));

    // No owner: ctr shows the shim's one line, and containerd keeps no container.
    let none = unique("none");
    let o = c.run(&["--rm"], &none, &["true"]);
    assert!(!o.status.success(), "a container with no owner must be refused");
    let err = stderr(&o);
    assert!(err.contains("OCI runtime create failed: ds01-runtime: container has no owner"), "{err}");
    let refused =
        events_of(&c.events(), &none, "create").iter().map(|e| e["outcome"].clone()).collect::<Vec<_>>();
    assert_eq!(refused, ["refused"]);
    let ls = c.ctr(&["containers", "list", "-q"]);
    assert!(!stdout(&ls).contains(&none), "ctr run --rm removed it: {}", stdout(&ls));
    // The runc v2 shim deletes twice (the task, then its own clean-up); only the delete runc
    // did is recorded, with its owner. (Checked this late so the second one has long run.)
    let ev = c.events();
    let deletes = events_of(&ev, &id, "delete");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0]["owner"], user.as_str());
}

#[test]
fn ctr_gpus_one_node_and_nothing_leaks() {
    if !require_containerd() {
        return;
    }
    let c = Containerd::start("gpu", 2, "");
    write_policy(c.tmp.path(), &gpu_policy("0"));
    let user = c.user("cgu");
    let owner = format!("ds01.user={user}");

    // A refused create holds nothing.
    let refused = unique("two");
    let o = c.run(&["--rm", "--annotation", &owner, "--annotation", "ds01.gpus=2"], &refused, &["true"]);
    assert!(!o.status.success(), "2 GPUs must be refused");
    assert!(
        stderr(&o).contains("ds01-runtime: 2 GPUs requested; defaults allows 1 per container"),
        "{}",
        stderr(&o)
    );
    assert!(c.allocations().is_empty(), "a refused create leaked: {:?}", c.allocations());

    // Exactly one GPU node, with the control nodes; released with the container.
    let id = unique("one");
    let o = c.run(&["--rm", "--annotation", &owner, "--annotation", "ds01.gpus=1"], &id, &["ls", "/dev"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), c.log());
    assert_eq!(nvidia_nodes(&stdout(&o)), ["nvidia-uvm", "nvidia-uvm-tools", "nvidia0", "nvidiactl"]);
    let ev = wait_for(10, || Some(c.events()).filter(|ev| !events_of(ev, &id, "gpu_release").is_empty()))
        .unwrap_or_else(|| panic!("gpu_release audited after ctr run --rm: {:?}", c.events()));
    assert!(c.allocations().is_empty(), "released after ctr run --rm: {:?}", c.allocations());
    assert_eq!(events_of(&ev, &id, "gpu_allocate").len(), 1, "{ev:?}");
    assert_eq!(events_of(&ev, &id, "gpu_release").len(), 1, "{ev:?}");
    assert_eq!(events_of(&ev, &id, "create")[0]["gpus"][0], "GPU-fake-0");
}

/// What a Kubernetes GPU node does, without the kubelet: containerd's runc v2 runtime with the
/// shim as its `BinaryName` (in a CRI config: `[plugins."io.containerd.grpc.v1.cri".containerd.
/// runtimes.ds01.options] BinaryName = …`). ctr has no CRI runtime handlers; `ctr run --runtime
/// io.containerd.runc.v2 --runc-binary <shim>` stores exactly that option with the container
/// (containerd.runc.v1.Options field 6, `binary_name`). `--runtime-config-path` is not the way:
/// for runc v2 ctr ignores it (it only fills `ConfigPath` for other runtimes' options). The
/// CRI's annotations and the kubelet's cgroup are given by hand.
#[test]
fn the_runc_v2_runtime_naming_the_shim_serves_a_kubernetes_pod() {
    if !require_containerd() {
        return;
    }
    let user = unique("kub");
    let c =
        Containerd::start("k8s", 2, &format!("kubernetes:\n  namespaces:\n    vision: {{user: {user}}}\n"));
    write_policy(c.tmp.path(), &gpu_policy("0"));
    let id = unique("train");
    let pod_cgroup = format!("/{}/pod6a1e2c44", unique("ds01kubepods"));
    let cgroup = format!("{pod_cgroup}/{id}");
    c.cgroups.borrow_mut().push(pod_cgroup.clone());
    let o = c.run(
        &[
            "--detach",
            "--null-io",
            "--runtime",
            "io.containerd.runc.v2",
            "--cgroup",
            &cgroup,
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            "io.kubernetes.cri.sandbox-namespace=vision",
            "--annotation",
            "io.kubernetes.cri.sandbox-name=train-0",
            "--annotation",
            "io.kubernetes.cri.container-name=trainer",
            "--annotation",
            "cdi.k8s.io/nvidia-device-plugin_uuid=nvidia.com/gpu=GPU-fake-1",
        ],
        &id,
        &["sleep", "300"],
    );
    assert!(o.status.success(), "ctr run -d: {}\n{}", stderr(&o), c.log());

    // The container record names the runc v2 runtime with the shim as BinaryName.
    let info: Value =
        serde_json::from_slice(&c.ctr(&["containers", "info", &id]).stdout).expect("ctr info is JSON");
    assert_eq!(info["Runtime"]["Name"], "io.containerd.runc.v2");
    assert_eq!(info["Runtime"]["Options"]["type_url"], "containerd.runc.v1.Options");
    let opts = base64_decode(info["Runtime"]["Options"]["value"].as_str().unwrap_or_default());
    assert_eq!(proto_string(&opts, 6), Some(shim().to_string_lossy().into_owned()), "BinaryName: {info}");

    // Inside: the kubelet's cgroup (placement: pod), exactly the assigned GPU. `ctr task exec`
    // goes through the shim too.
    let o = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "look",
        &id,
        "sh",
        "-c",
        "grep memory /proc/1/cgroup; ls /dev",
    ]);
    assert!(o.status.success(), "ctr task exec: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().next().is_some_and(|l| l.ends_with(&format!(":{cgroup}"))), "{out}");
    assert_eq!(nvidia_nodes(&out), ["nvidia-uvm", "nvidia-uvm-tools", "nvidia1", "nvidiactl"], "{out}");
    let ev = c.events();
    let create = events_of(&ev, &id, "create");
    assert_eq!(create.len(), 1, "{ev:?}");
    assert_eq!(create[0]["owner"], user.as_str());
    assert_eq!(create[0]["identity_source"], "kubernetes");
    assert_eq!(create[0]["gpus"][0], "GPU-fake-1");
    assert_eq!(create[0]["slice"], cgroup.as_str(), "the audit names the cgroup it runs in");
    let held: Vec<Value> = c.allocations().iter().map(|a| a["container"].clone()).collect();
    assert_eq!(held, [Value::from(id.as_str())], "the kubelet's GPU is recorded");

    // Stopped and removed: released.
    let o = c.ctr(&["tasks", "delete", "--force", &id]);
    assert!(o.status.success(), "ctr task delete: {}", stderr(&o));
    let o = c.ctr(&["containers", "delete", &id]);
    assert!(o.status.success(), "ctr container delete: {}", stderr(&o));
    let released = wait_for(10, || c.allocations().is_empty().then_some(()));
    assert!(released.is_some(), "released: {:?}", c.allocations());
}
