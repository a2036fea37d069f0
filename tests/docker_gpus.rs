//! GPUs through the private Docker engine: `--gpus`, quotas refused in `docker run`, every leak
//! route (`--device`, an image's NVIDIA_VISIBLE_DEVICES, `--privileged`) closed, holds across
//! `docker stop`/`start`, release on `docker rm -f`.

mod common;

use common::dockerd::{require_docker, Dockerd, Opts};
use common::*;

const IMG: &str = "ds01-busybox:test";

fn nvidia_nodes(d: &Dockerd, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&[IMG, "sh", "-c", "ls /dev | grep nvidia | sort | tr '\\n' ' '"]);
    let o = d.run_ds01(&all);
    assert!(o.status.success(), "docker {all:?}: {}", stderr(&o));
    stdout(&o).trim().to_owned()
}

fn run_err(d: &Dockerd, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend_from_slice(&[IMG, "true"]);
    let o = d.run_ds01(&all);
    assert!(!o.status.success(), "docker {all:?} should fail");
    stderr(&o)
}

#[test]
fn gpus_quotas_and_leak_routes_through_docker() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("gpu", Opts { gpus: 2, ..Opts::default() });
    write_policy(d.tmp.path(), &gpu_policy("1h"));
    let u = unique("gu");
    let label = format!("ds01.user={u}");
    assert_eq!(
        nvidia_nodes(&d, &["--label", &label, "--gpus", "1"]),
        "nvidia-uvm nvidia-uvm-tools nvidia0 nvidiactl"
    );
    // By index: exactly that GPU, never read as a count, never silently none.
    assert_eq!(
        nvidia_nodes(&d, &["--label", &label, "--gpus", "\"device=1\""]),
        "nvidia-uvm nvidia-uvm-tools nvidia1 nvidiactl"
    );
    assert_eq!(
        nvidia_nodes(&d, &["--label", &label, "--gpus", "\"device=0\""]),
        "nvidia-uvm nvidia-uvm-tools nvidia0 nvidiactl"
    );
    let e = run_err(&d, &["--label", &label, "--label", "ds01.gpus=0"]);
    assert!(e.contains("ds01-runtime: GPU request \"0\" is ambiguous"), "{e}");
    // Refusals readable in docker run.
    let e = run_err(&d, &["--label", &label, "--gpus", "2"]);
    assert!(e.contains("ds01-runtime: 2 GPUs requested; defaults allows 1 per container"), "{e}");
    let e = run_err(&d, &["--label", &label, "--gpus", "all"]);
    assert!(e.contains("ds01-runtime: 2 GPUs requested; defaults allows 1 per container"), "{e}");
    let e = run_err(&d, &["--label", &label, "--privileged"]);
    assert!(e.contains("ds01-runtime: privileged containers are refused"), "{e}");
    // Leak routes: a device flag, an image-style env, without asking for a GPU.
    let node = d.tmp.path().join("dev/nvidia1");
    let dev_flag = format!("{}:/dev/nvidia1", node.display());
    assert_eq!(nvidia_nodes(&d, &["--label", &label, "--device", &dev_flag]), "");
    let o = d.run_ds01(&[
        "--label",
        &label,
        "-e",
        "NVIDIA_VISIBLE_DEVICES=all",
        IMG,
        "sh",
        "-c",
        "echo $NVIDIA_VISIBLE_DEVICES",
    ]);
    assert_eq!(stdout(&o).trim(), "void", "{}", stderr(&o));
    let o = d.run_ds01(&["--label", &label, "-v", "/etc:/host-etc", IMG, "true"]);
    assert!(
        stderr(&o).contains("ds01-runtime: bind mount of /etc is refused: a system folder"),
        "{}",
        stderr(&o)
    );
    remove_slices("student", &u);
}

#[test]
fn stop_holds_start_returns_rm_releases() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("hold", Opts { gpus: 2, ..Opts::default() });
    write_policy(d.tmp.path(), &gpu_policy("1h"));
    let (a, b, c) = (unique("ha"), unique("hb"), unique("hc"));
    let show = "ls /dev | grep -E '^nvidia[0-9]' | tr '\\n' ' '";
    let start = |user: &str, name: &str| {
        let o = d.docker(&[
            "run",
            "-d",
            "--runtime",
            "ds01",
            "--gpus",
            "1",
            "--name",
            &format!("{name}._.{user}"),
            IMG,
            "sleep",
            "300",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    start(&a, "one");
    start(&b, "two");
    let first = stdout(&d.docker(&["exec", &format!("one._.{a}"), "sh", "-c", show]));
    let e = run_err(&d, &["--label", &format!("ds01.user={c}"), "--gpus", "1"]);
    assert!(e.contains("1 GPU requested; 0 of 2 GPUs free"), "{e}");
    // Stopped: still held for its owner.
    assert!(d.docker(&["stop", "-t", "1", &format!("one._.{a}")]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let e = run_err(&d, &["--label", &format!("ds01.user={c}"), "--gpus", "1"]);
    assert!(e.contains("0 of 2 GPUs free"), "held after stop: {e}");
    // Restarted: the same GPU.
    assert!(d.docker(&["start", &format!("one._.{a}")]).status.success());
    let again = stdout(&d.docker(&["exec", &format!("one._.{a}"), "sh", "-c", show]));
    assert_eq!(again, first, "same GPU after restart");
    // Removed: released.
    assert!(d.docker(&["rm", "-f", &format!("one._.{a}")]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let o = d.run_ds01(&["--label", &format!("ds01.user={c}"), "--gpus", "1", IMG, "sh", "-c", show]);
    assert!(o.status.success(), "free after rm -f: {}", stderr(&o));
    assert_eq!(stdout(&o), first);
    for u in [a, b, c] {
        remove_slices("student", &u);
    }
}

/// With a CDI spec and no NVIDIA runtime in the chain, `docker run` of a GPU container gets the
/// driver's files from the spec, for its own GPU only.
#[test]
fn cdi_edits_through_docker() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("cdi", Opts { gpus: 2, ..Opts::default() });
    write_policy(d.tmp.path(), &gpu_policy("0"));
    write_cdi(d.tmp.path(), &d.settings, 2);
    let label = format!("ds01.user={}", unique("cu"));
    let o = d.run_ds01(&[
        "--label",
        &label,
        "--label",
        "ds01.gpus=1",
        IMG,
        "sh",
        "-c",
        "cat /usr/lib/x86_64-linux-gnu/libcuda.so.1; ls /dev | grep nvidia | sort | tr '\\n' ' '",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "fake libcuda 535\nnvidia-uvm nvidia-uvm-tools nvidia0 nvidiactl");
    assert!(d.tmp.path().join("hook-state").exists(), "the CDI hook ran");
    // `--gpus` brings NVIDIA's hook (the toolkit is in the chain): it mounts the driver, not CDI.
    let o = d.run_ds01(&[
        "--label",
        &label,
        "--gpus",
        "1",
        IMG,
        "sh",
        "-c",
        "test -e /usr/lib/x86_64-linux-gnu/libcuda.so.1 && echo cdi || echo hook",
    ]);
    assert_eq!(stdout(&o).trim(), "hook", "{}", stderr(&o));
}
