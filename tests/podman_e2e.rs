//! The shim behind a real Podman (Debian's 4.3, conmon, cgroupfs manager, fully private
//! storage): `podman --runtime <shim>` puts a container in its owner's slice from the
//! `ds01.user` annotation, the refusal reaches `podman run`, the pass-through calls Podman makes
//! itself (start, exec, kill) work and are audited, and fake GPUs are given out one at a time
//! and come back after `podman rm`.
//!
//! Podman does not pass its environment on to the runtime: conmon (which runs `create` and
//! `exec`) gets a fixed few variables (PATH, HOME, XDG_RUNTIME_DIR, Podman's own) plus
//! containers.conf's `conmon_env_vars`, `start`/`kill`/`delete` run with only PATH and
//! XDG_RUNTIME_DIR, and `podman container cleanup` (conmon's exit command, which
//! does the `delete` after a container exits, also under `podman rm -f`) with no environment at
//! all. So DS01_RUNTIME_CONFIG in podman's environment never reaches the shim. The settings are
//! passed as the shim's own global flag instead: `--runtime-flag ds01-config=<file>` makes
//! Podman call `<shim> --ds01-config=<file> <subcommand> …` (conmon gets it as `--runtime-arg`)
//! on every call that a podman command with that flag makes itself; the shim strips it before
//! it execs runc. The exit command does not carry runtime flags, so the create records the
//! settings file in the container's `ds01.settings` annotation (runc keeps it in its state), and
//! the `delete` done by conmon's cleanup process finds its settings there: its audit line and
//! the GPU release land in this test's files, not the host's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::dockerd::unmount_below;
use common::*;
use serde_json::Value;

const IMG: &str = "localhost/ds01-busybox:test";
/// The audit log of a shim that was given no settings.
const HOST_AUDIT_LOG: &str = "/var/log/ds01/events.jsonl";

/// Root, runc, busybox-static and podman.
fn require_podman() -> bool {
    require_runc()
        && require(which("podman").is_some(), "needs podman (apt-get install podman)")
        && require(which("conmon").is_some(), "needs conmon (apt-get install podman)")
}

/// A private Podman: its own storage, tmpdir, network config dir and events file, the freshly
/// built shim as its runtime, and the runtime's settings beside them. Containers are removed
/// and the directory (with anything mounted below it) is cleaned on drop, also on failure.
struct Podman {
    tmp: TempDir,
    settings: PathBuf,
    /// Podman's graph root (its run root is the `r` folder beside it).
    storage: PathBuf,
    /// Owners whose slices are removed on drop.
    users: std::cell::RefCell<Vec<String>>,
    _host: HostDirs,
}

/// What rootful Podman 4.3 creates on the host whatever its flags say: containers/image's blob
/// info cache (`podman import`), netavark's run folder, and (cgroupfs manager) conmon's cgroup
/// `/libpod_parent/conmon` in every hierarchy.
const BLOB_CACHE: &str = "/var/lib/containers/cache/blob-info-cache-v1.boltdb";
const NETAVARK_RUN: &str = "/run/containers/networks";
const CONMON_CGROUP: &str = "libpod_parent/conmon";

/// Live `Podman`s of this process, and whether /var/lib/containers, /run/containers and the
/// libpod_parent cgroup were there before the first one started.
static HOST: std::sync::Mutex<(usize, Option<[bool; 3]>)> = std::sync::Mutex::new((0, None));

/// Counts a live `Podman`; when the last one goes, removes the leftovers above (only those
/// files and then-empty folders) where their top folders were not there before the first.
struct HostDirs;

impl HostDirs {
    fn new() -> HostDirs {
        let mut h = HOST.lock().unwrap_or_else(|e| e.into_inner());
        h.1.get_or_insert_with(|| {
            ["/var/lib/containers", "/run/containers", "/sys/fs/cgroup/pids/libpod_parent"]
                .map(|p| Path::new(p).exists())
        });
        h.0 += 1;
        HostDirs
    }
}

impl Drop for HostDirs {
    fn drop(&mut self) {
        let mut h = HOST.lock().unwrap_or_else(|e| e.into_inner());
        h.0 -= 1;
        let Some([var_was, run_was, cgroup_was]) = h.1 else { return };
        if h.0 > 0 {
            return;
        }
        if !var_was {
            let _ = std::fs::remove_file(BLOB_CACHE);
            let _ = std::fs::remove_dir("/var/lib/containers/cache");
            let _ = std::fs::remove_dir("/var/lib/containers");
        }
        if !run_was {
            let _ = std::fs::remove_dir(NETAVARK_RUN);
            let _ = std::fs::remove_dir("/run/containers");
        }
        if !cgroup_was {
            let hierarchies = std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten();
            for root in hierarchies.map(|e| e.path()).chain([PathBuf::from("/sys/fs/cgroup")]) {
                let _ = std::fs::remove_dir(root.join(CONMON_CGROUP));
                let _ = std::fs::remove_dir(root.join("libpod_parent"));
            }
        }
    }
}

impl Podman {
    /// Sets up the storage, the settings (with `gpus` fake GPUs on a static inventory) and
    /// imports the busybox image.
    fn start(tag: &str, gpus: u32) -> Podman {
        let host = HostDirs::new();
        let tmp = TempDir::in_dir(Path::new("/tmp"), &format!("p01{tag}"));
        let dir = tmp.path().to_path_buf();
        let gpu_settings = if gpus > 0 { static_gpus(&fake_dev(&dir, gpus), gpus) } else { String::new() };
        let settings = settings(&dir, &gpu_settings);
        // Podman keeps a container's config.json (the bundle) under the graph root and the
        // files it bind-mounts into it (hosts, hostname, resolv.conf, .containerenv) under the
        // run root, `<runroot>/<driver>-containers/<id>/userdata`: two folders of their own,
        // so the guard must know Podman's own files wherever the run root is.
        let storage = dir.join("s");
        for d in ["s", "r", "t", "n"] {
            std::fs::create_dir_all(dir.join(d)).expect("podman dirs");
        }
        let p = Podman { tmp, settings, storage, users: Default::default(), _host: host };
        p.import_busybox();
        p
    }

    /// A unique owner name; the owner's (student) slice is removed on drop.
    fn user(&self, tag: &str) -> String {
        let u = unique(tag);
        self.users.borrow_mut().push(u.clone());
        u
    }

    /// Podman's global flags: private storage, the cgroupfs manager (PID 1 is not systemd
    /// here), a file for events, a private network config dir (else Podman creates
    /// /etc/containers/networks), the shim as the runtime and its settings as a runtime flag.
    fn global(&self) -> Vec<String> {
        let d = self.tmp.path();
        let s = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "--root".into(),
            s(&self.storage),
            "--runroot".into(),
            s(&d.join("r")),
            "--tmpdir".into(),
            s(&d.join("t")),
            "--network-config-dir".into(),
            s(&d.join("n")),
            "--storage-driver".into(),
            "vfs".into(),
            "--cgroup-manager=cgroupfs".into(),
            "--events-backend=file".into(),
            "--runtime".into(),
            s(&shim()),
            "--runtime-flag".into(),
            format!("ds01-config={}", self.settings.display()),
        ]
    }

    /// Runs podman with the global flags and `args`.
    fn podman(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .args(self.global())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    /// `podman run` with what every container here needs (no network; rlimits this machine
    /// allows: Podman's default nofile/nproc are above the hard limits here), then `args`.
    fn run(&self, args: &[&str]) -> Output {
        let mut all =
            vec!["run", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];
        all.extend_from_slice(args);
        self.podman(&all)
    }

    fn import_busybox(&self) {
        let rootfs = self.tmp.path().join("img");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).expect("image dir");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        for tool in ["sh", "cat", "sleep", "true", "ls", "grep", "sort", "tr"] {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).expect("busybox link");
        }
        let tar = self.tmp.path().join("img.tar");
        let ok = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status();
        assert!(ok.is_ok_and(|s| s.success()), "tar of the busybox rootfs");
        let o = self.podman(&["import", &tar.to_string_lossy(), IMG]);
        assert!(o.status.success(), "podman import: {}", stderr(&o));
    }

    /// The audit log's events.
    fn events(&self) -> Vec<Value> {
        audit_events(self.tmp.path())
    }

    /// The allocations in the GPU state file (none when there is no file yet).
    fn allocations(&self) -> Vec<Value> {
        gpu_allocations(self.tmp.path())
    }

    /// `ds01ctl gpus` with these settings.
    fn ctl_gpus(&self) -> String {
        let o = Command::new(ds01ctl())
            .arg("--config")
            .arg(&self.settings)
            .arg("gpus")
            .output()
            .expect("run ds01ctl gpus");
        assert!(o.status.success(), "ds01ctl gpus: {}", stderr(&o));
        stdout(&o)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        // Anything still naming our folder (a conmon of a container Podman lost track of).
        kill_naming(self.tmp.path());
        unmount_below(self.tmp.path());
        for u in self.users.borrow().iter() {
            remove_slices("student", u);
        }
    }
}

/// The owner's slice, as it appears in /proc/self/cgroup (cgroupfs driver, Podman's scope prefix libpod).
fn slice_dir(group: &str, user: &str) -> String {
    format!("/ds01.slice/ds01-{group}.slice/ds01-{group}-{user}.slice/libpod-")
}

/// The NVIDIA nodes in `ls /dev` output, sorted.
fn nvidia_nodes(ls: &str) -> Vec<String> {
    let mut v: Vec<String> =
        ls.split_whitespace().filter(|n| n.starts_with("nvidia")).map(str::to_owned).collect();
    v.sort();
    v
}

#[test]
fn podman_run_lands_in_the_owners_slice_and_refusals_reach_podman() {
    if !require_podman() {
        return;
    }
    let p = Podman::start("own", 0);
    let user = p.user("pat");
    let ann = format!("ds01.user={user}");
    let host_log_len = || std::fs::metadata(HOST_AUDIT_LOG).map(|m| m.len()).ok();
    let host_log_before = host_log_len();

    // (a) The owner from the annotation: every hierarchy of /proc/self/cgroup in the slice.
    let o = p.run(&["--rm", "--annotation", &ann, IMG, "cat", "/proc/self/cgroup"]);
    assert!(o.status.success(), "podman run: {}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(!lines.is_empty(), "no output: {}", stderr(&o));
    for l in &lines {
        assert!(l.contains(&slice_dir("student", &user)), "{l}\n{out}");
    }
    let events = p.events();
    let create = events
        .iter()
        .find(|e| e["event"] == "create" && e["owner"] == user.as_str())
        .unwrap_or_else(|| panic!("the create is audited: {events:?}"));
    assert_eq!(create["outcome"], "allowed", "{create}");
    assert_eq!(create["identity_source"], "annotation", "{create}");
    assert_eq!(create["slice"], format!("ds01-student-{user}.slice"), "{create}");
    assert_eq!(create["labels"]["io.container.manager"], "libpod", "Podman's own annotations: {create}");
    // --rm: conmon's cleanup deleted it, without runtime flags or environment; the follow-up
    // found this test's settings through the container's own annotation.
    let rm_id = create["container"].as_str().unwrap_or_default().to_owned();
    let deleted = wait_for(10, || {
        let ev = p.events();
        let d = events_of(&ev, &rm_id, "delete");
        (!d.is_empty()).then(|| d.into_iter().cloned().collect::<Vec<Value>>())
    });
    let deleted = deleted.unwrap_or_else(|| panic!("the cleanup's delete audited here: {:?}", p.events()));
    assert_eq!(deleted.len(), 1, "one delete line: {deleted:?}");
    assert_eq!(deleted[0]["owner"], user.as_str(), "{deleted:?}");
    assert_eq!(deleted[0]["outcome"], "ok", "{deleted:?}");

    // (b) No owner: the shim's one line reaches podman's stderr; nothing is left behind.
    let o = p.run(&["--rm", IMG, "true"]);
    assert!(!o.status.success(), "a container with no owner must be refused");
    let err = stderr(&o);
    assert!(err.contains("ds01-runtime: container has no owner"), "{err}");
    assert!(err.contains("OCI runtime error"), "podman names it a runtime error: {err}");
    let refused: Vec<Value> =
        p.events().into_iter().filter(|e| e["event"] == "create" && e["outcome"] == "refused").collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["reason"].as_str().is_some_and(|r| r.contains("container has no owner")));
    let ps = p.podman(&["ps", "-aq"]);
    assert!(ps.status.success() && stdout(&ps).trim().is_empty(), "--rm removed it: {}", stdout(&ps));

    // The guard judges Podman's mounts like Docker's: its own files pass, /etc does not.
    let o = p.run(&["--rm", "--annotation", &ann, "-v", "/etc:/host-etc", IMG, "true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ds01-runtime: bind mount of /etc is refused: a system folder"),
        "{}",
        stderr(&o)
    );

    // A detached container: the spec runc got, and the pass-through calls Podman makes itself
    // (start, exec through conmon, kill from `podman rm -f`) reach the shim with the flag.
    let o = p.run(&["-d", "--annotation", &ann, IMG, "sleep", "300"]);
    assert!(o.status.success(), "podman run -d: {}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_eq!(id.len(), 64, "podman prints the full id: {id:?}");
    let bundle = p.storage.join(format!("vfs-containers/{id}/userdata/config.json"));
    let spec: Value = serde_json::from_slice(&std::fs::read(&bundle).expect("podman's config.json"))
        .expect("config.json parses");
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        format!("/ds01.slice/ds01-student.slice/ds01-student-{user}.slice/libpod-{id}.scope")
    );
    assert_eq!(spec["annotations"]["ds01.user"], user.as_str());
    assert_eq!(spec["annotations"]["ds01.identity-source"], "annotation");
    let o = p.podman(&["exec", &id, "grep", "memory", "/proc/1/cgroup"]);
    assert!(o.status.success(), "podman exec: {}", stderr(&o));
    assert!(stdout(&o).contains(&format!("{}{id}.scope", slice_dir("student", &user))), "{}", stdout(&o));
    let o = p.podman(&["rm", "-f", "-t", "0", &id]);
    assert!(o.status.success(), "podman rm -f: {}", stderr(&o));
    let audited = wait_for(10, || {
        let ev = p.events();
        let done = ["create", "start", "kill"].iter().all(|k| !events_of(&ev, &id, k).is_empty());
        done.then_some(ev)
    });
    let ev = audited.unwrap_or_else(|| panic!("create, start and kill audited: {:?}", p.events()));
    for kind in ["create", "start", "kill"] {
        assert!(events_of(&ev, &id, kind).iter().any(|e| e["owner"] == user.as_str()), "{kind}: {ev:?}");
    }
    assert_eq!(events_of(&ev, &id, "kill")[0]["signal"], "9", "podman rm -f -t 0 kills with SIGKILL");
    assert_eq!(host_log_len(), host_log_before, "nothing reached the host's own {HOST_AUDIT_LOG}");
}

#[test]
fn podman_gpus_one_node_each_and_nothing_leaks() {
    if !require_podman() {
        return;
    }
    let p = Podman::start("gpu", 2);
    write_policy(p.tmp.path(), &gpu_policy("0"));
    let (a, b, c) = (p.user("pga"), p.user("pgb"), p.user("pgc"));
    let ann = |u: &str| format!("ds01.user={u}");

    // A refused create holds nothing.
    let o = p.run(&["--rm", "--annotation", &ann(&a), "--annotation", "ds01.gpus=2", IMG, "true"]);
    assert!(!o.status.success(), "2 GPUs must be refused");
    assert!(
        stderr(&o).contains("ds01-runtime: 2 GPUs requested; defaults allows 1 per container"),
        "{}",
        stderr(&o)
    );
    assert!(p.allocations().is_empty(), "a refused create leaked: {:?}", p.allocations());

    // Exactly one GPU node, with the control nodes.
    let o = p.run(&["--rm", "--annotation", &ann(&a), "--annotation", "ds01.gpus=1", IMG, "ls", "/dev"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(nvidia_nodes(&stdout(&o)), ["nvidia-uvm", "nvidia-uvm-tools", "nvidia0", "nvidiactl"]);
    // Gone with its container (released, or reclaimed once runc no longer has it).
    let free = wait_for(10, || {
        let t = p.ctl_gpus();
        (t.lines().filter(|l| l.contains("GPU-fake-") && l.contains("free")).count() == 2).then_some(())
    });
    assert!(free.is_some(), "both GPUs free after podman run --rm:\n{}", p.ctl_gpus());

    // Two running containers hold one GPU each; a third is refused.
    let mut ids = vec![];
    for u in [&a, &b] {
        let o = p.run(&["-d", "--annotation", &ann(u), "--annotation", "ds01.gpus=1", IMG, "sleep", "300"]);
        assert!(o.status.success(), "{}", stderr(&o));
        ids.push(stdout(&o).trim().to_owned());
    }
    let seen: Vec<Vec<String>> = ids
        .iter()
        .map(|id| {
            let o = p.podman(&["exec", id, "ls", "/dev"]);
            assert!(o.status.success(), "{}", stderr(&o));
            nvidia_nodes(&stdout(&o))
                .into_iter()
                .filter(|n| n.trim_start_matches("nvidia").parse::<u32>().is_ok())
                .collect()
        })
        .collect();
    assert_eq!(seen[0].len(), 1, "{seen:?}");
    assert_eq!(seen[1].len(), 1, "{seen:?}");
    assert_ne!(seen[0], seen[1], "never the same GPU twice");
    let o = p.run(&["--rm", "--annotation", &ann(&c), "--annotation", "ds01.gpus=1", IMG, "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ds01-runtime: 1 GPU requested; 0 of 2 GPUs free"), "{}", stderr(&o));
    let mut held: Vec<String> =
        p.allocations().iter().map(|x| x["container"].as_str().unwrap_or("").to_owned()).collect();
    held.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(held, want, "only the two running containers hold GPUs");

    // Removed: released by the delete's follow-up (conmon's cleanup, or podman rm itself)
    // with this test's settings, so gone from the state file, not only reclaimable; and
    // another user gets one.
    let o = p.podman(&["rm", "-f", "-t", "0", &ids[0], &ids[1]]);
    assert!(o.status.success(), "{}", stderr(&o));
    let released = wait_for(10, || p.allocations().is_empty().then_some(()));
    assert!(released.is_some(), "released in the state file: {:?}", p.allocations());
    let free = wait_for(10, || {
        let t = p.ctl_gpus();
        (t.lines().filter(|l| l.contains("GPU-fake-") && l.contains("free")).count() == 2).then_some(())
    });
    assert!(free.is_some(), "both GPUs free after podman rm -f:\n{}", p.ctl_gpus());
    let o = p.run(&["--rm", "--annotation", &ann(&c), "--annotation", "ds01.gpus=1", IMG, "ls", "/dev"]);
    assert!(o.status.success(), "a GPU for the next user: {}", stderr(&o));
    assert_eq!(nvidia_nodes(&stdout(&o)).len(), 4, "{}", stdout(&o));
}
