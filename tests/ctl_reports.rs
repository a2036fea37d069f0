//! `ds01ctl explain` on the reference config.json files, and `ds01ctl doctor` on each broken
//! piece it must report.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn ctl(settings: &Path, args: &[&str]) -> std::process::Output {
    Command::new(ds01ctl()).arg("--config").arg(settings).args(args).output().unwrap()
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn explain_shows_the_diff_with_reasons_and_writes_nothing() {
    let tmp = TempDir::new("explain");
    let s = settings(tmp.path(), "");
    let cfg = tmp.path().join("config.json");
    fs::copy(fixture("docker-20.10-config.json"), &cfg).unwrap();
    let before = fs::read(&cfg).unwrap();
    let o = ctl(&s, &["explain", cfg.to_str().unwrap(), "--user", "alice"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("owner alice (group student, from annotation), slice ds01-student-alice.slice"),
        "{out}"
    );
    assert!(
        out.contains("linux.cgroupsPath")
            && out.contains("owner alice (annotation source): /docker/ba78d9be"),
        "{out}"
    );
    assert!(out.contains("-    \"cgroupsPath\": \"/docker/ba78d9be3456711b8562d8ac4712aac05190757f63605f3adcdf7f6fd3d0b3ab\","), "{out}");
    assert!(out.contains("+    \"cgroupsPath\": \"/ds01.slice/ds01-student.slice/ds01-student-alice.slice/docker-ba78d9be3456711b8562d8ac4712aac05190757f63605f3adcdf7f6fd3d0b3ab.scope\","), "{out}");
    assert!(out.contains("+    \"ds01.managed\": \"true\""), "{out}");
    assert!(out.contains("linux.resources.cpu.quota") && out.contains("32 CPUs (defaults)"), "{out}");
    assert!(!out.contains("linux.resources.memory.limit"), "Docker's -m 256m is kept: {out}");
    assert_eq!(fs::read(&cfg).unwrap(), before, "explain writes nothing");
    // Without an owner: the refusal the runtime would give.
    let o = ctl(&s, &["explain", cfg.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("the runtime would refuse this container:\n  container has no owner"),
        "{}",
        stdout(&o)
    );
    // Podman's config names its owner itself.
    let o = ctl(&s, &["explain", fixture("podman-4.3-config.json").to_str().unwrap()]);
    assert!(stdout(&o).contains("owner carol (group student, from annotation)"), "{}", stdout(&o));
}

fn doctor(s: &Path, daemon: &Path) -> (bool, String) {
    // No processes: this machine's own dockerd, whoever can reach it, is not the setup judged.
    let procs = s.with_file_name("no-processes");
    fs::create_dir_all(&procs).unwrap();
    let o = ctl(
        s,
        &["doctor", "--daemon-json", daemon.to_str().unwrap(), "--proc-root", procs.to_str().unwrap()],
    );
    (o.status.success(), stdout(&o) + &stderr(&o))
}

#[test]
fn doctor_reports_each_broken_piece() {
    if !require(which("runc").is_some(), "needs runc (apt-get install runc)") {
        return;
    }
    let tmp = TempDir::new("doctor");
    let s = settings(tmp.path(), "");
    let daemon = tmp.path().join("daemon.json");
    let good = serde_json::json!({"runtimes": {"ds01": {"path": "/usr/local/bin/ds01-runtime"}}, "default-runtime": "ds01"});
    fs::write(&daemon, good.to_string()).unwrap();
    // DS01's own policy says systemd; these hosts run Docker on cgroupfs.
    let policy = tmp.path().join("policy/resource-limits.yaml");
    let ptext = fs::read_to_string(&policy).unwrap();
    assert!(ptext.contains("cgroup_driver: systemd"), "the shipped policy is DS01's (systemd)");
    fs::write(&policy, ptext.replace("cgroup_driver: systemd", "cgroup_driver: cgroupfs")).unwrap();
    let (ok, out) = doctor(&s, &daemon);
    assert!(ok, "a good setup passes: {out}");
    assert!(out.contains("ok    low-level runtime") && out.contains("runc version"), "{out}");
    assert!(
        out.contains("ok    daemon.json registration   runtime \"ds01\" registered and default"),
        "{out}"
    );

    // Missing runc.
    let text = fs::read_to_string(&s).unwrap();
    fs::write(&s, text.replace("low_level_runtime: runc", "low_level_runtime: /nonexistent/runc")).unwrap();
    let (ok, out) = doctor(&s, &daemon);
    assert!(!ok && out.contains("FAIL  low-level runtime") && out.contains("/nonexistent/runc"), "{out}");
    fs::write(&s, &text).unwrap();

    // daemon.json that does not parse.
    fs::write(&daemon, "{ \"runtimes\": ").unwrap();
    let (ok, out) = doctor(&s, &daemon);
    assert!(!ok && out.contains("FAIL  daemon.json registration") && out.contains("does not parse"), "{out}");

    // Wrong driver: Docker on cgroupfs, the policy wants systemd.
    fs::write(&daemon, good.to_string()).unwrap();
    fs::write(&policy, &ptext).unwrap();
    let (ok, out) = doctor(&s, &daemon);
    assert!(
        !ok && out.contains("FAIL  cgroup driver") && out.contains("enforcement.cgroup_driver says systemd"),
        "{out}"
    );
    fs::write(&policy, ptext.replace("cgroup_driver: systemd", "cgroup_driver: cgroupfs")).unwrap();
    let (_, out) = doctor(&s, &daemon);
    assert!(out.contains("ok    cgroup driver"), "{out}");

    // Unwritable log: its directory is a file.
    fs::write(tmp.path().join("blocked"), "x").unwrap();
    fs::write(&s, text.replace("audit_log: log/events.jsonl", "audit_log: blocked/events.jsonl")).unwrap();
    let (ok, out) = doctor(&s, &daemon);
    assert!(!ok && out.contains("FAIL  audit log"), "{out}");

    // A CDI spec that does not parse, then a good one.
    let cdi = tmp.path().join("cdi");
    fs::create_dir_all(&cdi).unwrap();
    fs::write(cdi.join("nvidia.yaml"), "kind: nvidia.com/gpu\ndevices: 3\n").unwrap();
    fs::write(&s, format!("{text}gpu:\n  cdi_dirs: [{}]\n", cdi.display())).unwrap();
    let (ok, out) = doctor(&s, &daemon);
    assert!(!ok && out.contains("FAIL  CDI") && out.contains("nvidia.yaml"), "{out}");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdi/nvidia.yaml"),
        cdi.join("nvidia.yaml"),
    )
    .unwrap();
    let (_, out) = doctor(&s, &daemon);
    assert!(out.contains("ok    CDI") && out.contains("NVIDIA CDI spec with 6 device(s)"), "{out}");
}
