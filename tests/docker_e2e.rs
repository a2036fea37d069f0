//! The shim behind a real, private Docker engine (Debian's docker.io 20.10): owners from
//! Docker's own metadata, refusals readable in `docker run`, restarts, default-runtime and the
//! interposed `runc` that closes `--runtime runc`.

mod common;

use common::dockerd::{require_docker, Dockerd, Opts};
use common::*;

const IMG: &str = "ds01-busybox:test";

/// The memory-controller line of /proc/self/cgroup seen inside a fresh container.
fn cgroup_of(d: &Dockerd, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[IMG, "grep", "memory", "/proc/self/cgroup"]);
    let o = d.docker(&all);
    assert!(o.status.success(), "docker {all:?}: {}\n{}", stderr(&o), d.log());
    stdout(&o)
}

fn slice_dir(group: &str, user: &str) -> String {
    format!("/ds01.slice/ds01-{group}.slice/ds01-{group}-{user}.slice/docker-")
}

#[test]
fn docker_run_lands_in_each_owners_slice() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("own", Opts::default());
    let alice = unique("alice");
    // By name convention, by label (rita is a researcher by members file), by uid in the name.
    let line = cgroup_of(&d, &["--runtime", "ds01", "--name", &format!("proj._.{alice}")]);
    assert!(line.contains(&slice_dir("student", &alice)), "{line}");
    let line = cgroup_of(&d, &["--runtime", "ds01", "--label", "ds01.user=rita"]);
    assert!(line.contains(&slice_dir("researcher", "rita")), "{line}");
    let line = cgroup_of(&d, &["--runtime", "ds01", "--name", &format!("{}._.65534", unique("job"))]);
    assert!(line.contains(&slice_dir("student", "nobody")), "uid 65534 is nobody: {line}");
    let line = cgroup_of(&d, &["--runtime", "ds01", "--label", "DS01_USER=rita"]);
    assert!(line.contains(&slice_dir("researcher", "rita")), "{line}");
    // Registered without runtimeArgs, dockerd calls the shim itself: no /bin/sh wrapper of its
    // own in front of every call.
    assert!(!d.data_root.join("runtimes/ds01").exists(), "dockerd wrote a wrapper script for ds01");

    // Refusals: the shim's own one-line reason reaches the docker user.
    let o = d.docker(&["run", "--rm", "--runtime", "ds01", IMG, "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ds01-runtime: container has no owner"), "{}", stderr(&o));
    let o = d.run_ds01(&["--label", "ds01.user=alice", "--name", "x._.bob", IMG, "true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ds01-runtime: owner conflict: label ds01.user says alice, name says bob"),
        "{}",
        stderr(&o)
    );
    remove_slices("student", &alice);
}

#[test]
fn restart_exec_logs_kill_and_rm_keep_working() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("life", Opts::default());
    let user = unique("bo");
    let name = format!("svc._.{user}");
    let o = d.docker(&[
        "run",
        "-d",
        "--runtime",
        "ds01",
        "--name",
        &name,
        IMG,
        "sh",
        "-c",
        "echo hello; sleep 300",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = stdout(&d.docker(&["exec", &name, "grep", "memory", "/proc/1/cgroup"]));
    assert!(first.contains(&slice_dir("student", &user)), "{first}");
    let logs = wait_for(10, || Some(stdout(&d.docker(&["logs", &name]))).filter(|l| l.contains("hello")));
    assert!(logs.is_some(), "docker logs shows the output");
    assert!(d.docker(&["stop", "-t", "1", &name]).status.success());
    assert!(d.docker(&["start", &name]).status.success());
    let second = stdout(&d.docker(&["exec", &name, "grep", "memory", "/proc/1/cgroup"]));
    assert!(second.contains(&slice_dir("student", &user)), "restarted into the same slice: {second}");
    assert!(d.docker(&["kill", &name]).status.success());
    assert!(d.docker(&["rm", "-f", &name]).status.success());
    remove_slices("student", &user);
}

#[test]
fn default_runtime_catches_plain_docker_run() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("def", Opts { default_runtime: true, ..Opts::default() });
    let user = unique("dee");
    let line = cgroup_of(&d, &["--label", &format!("ds01.user={user}")]);
    assert!(line.contains(&slice_dir("student", &user)), "{line}");
    remove_slices("student", &user);
}

#[test]
fn interposed_runc_closes_the_builtin_runtimes() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("ipose", Opts { interpose: true, ..Opts::default() });
    let user = unique("ivy");
    let label = format!("ds01.user={user}");
    for runtime in [None, Some("runc"), Some("io.containerd.runc.v2")] {
        let mut args = vec!["--label", label.as_str()];
        if let Some(r) = runtime {
            args.extend(["--runtime", r]);
        }
        let line = cgroup_of(&d, &args);
        assert!(line.contains(&slice_dir("student", &user)), "--runtime {runtime:?}: {line}");
    }
    // Registered and interposed at once: the create is patched once, then passed on.
    let line = cgroup_of(&d, &["--runtime", "ds01", "--label", &label]);
    assert!(line.contains(&slice_dir("student", &user)), "{line}");
    let o = d.docker(&["run", "--rm", "--runtime", "runc", IMG, "true"]);
    assert!(stderr(&o).contains("ds01-runtime: container has no owner"), "{}", stderr(&o));
    remove_slices("student", &user);
}

#[test]
fn caps_apply_and_over_asking_is_refused_in_docker_run() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("caps", Opts::default());
    let user = unique("cap");
    let label = format!("ds01.user={user}");
    // Asking for nothing: the caps of the shipped policy (defaults: 32g, 32 CPUs, 4096 pids, 16g shm).
    let o = d.run_ds01(&[
        "--label", &label, IMG, "sh", "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us; grep /dev/shm /proc/mounts",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[..3], [(32u64 << 30).to_string().as_str(), "4096", "3200000"], "{out}");
    assert!(lines[3].contains(&format!("size={}k", 16u64 << 20)), "{out}");
    // Asking for less keeps it.
    let o = d.run_ds01(&[
        "--label",
        &label,
        "-m",
        "256m",
        IMG,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(stdout(&o).trim(), "268435456", "{}", stderr(&o));
    // Asking for more: the shim's one line, naming the limit and where it comes from.
    for (flag, value, want) in [
        ("-m", "100g", "memory 100g exceeds 32g per container, defaults"),
        ("--cpu-quota", "6400000", "cpus 64 exceeds 32 per container, defaults"),
        ("--pids-limit", "100000", "pids 100000 exceeds 4096 per container, defaults"),
        ("--shm-size", "32g", "shm size 32g exceeds 16g per container, defaults"),
    ] {
        let o = d.docker(&["run", "--rm", "--runtime", "ds01", "--label", &label, flag, value, IMG, "true"]);
        assert!(!o.status.success(), "{flag} {value}");
        assert!(stderr(&o).contains(&format!("ds01-runtime: {want}")), "{flag}: {}", stderr(&o));
    }
    remove_slices("student", &user);
}
