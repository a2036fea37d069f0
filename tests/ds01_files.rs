//! DS01's own files (tests/fixtures/ds01-resource-limits.yaml is DS01's resource-limits.yaml at
//! ds01-infra 2cf1a0e; user-overrides.yaml and lifecycle-exemptions.yaml in DS01's documented
//! formats) load unchanged, and for a user of every group `ds01ctl limits`, `ds01ctl explain`
//! and a real create through runc give DS01's numbers: per-container and per-user GPUs (float
//! GPU-equivalents), memory, CPUs, pids, shm, container counts and the slice's aggregates.
//! `ds01ctl doctor` names every setting the runtime does not enforce, and the audit log is
//! counted the way DS01's readers count it.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A sandbox with DS01's file as the policy, a members file per group, 8 simulated GPUs and
/// `overrides` as user-overrides.yaml.
fn ds01_host(tag: &str, overrides: &str) -> (Runc, PathBuf) {
    let rc = Runc::new(tag, "");
    let dev = fake_dev(rc.tmp.path(), 8);
    fs::write(&rc.settings, fs::read_to_string(&rc.settings).unwrap() + &static_gpus(&dev, 8)).unwrap();
    let policy = rc.tmp.path().join("policy");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ds01-resource-limits.yaml");
    fs::copy(fixture, policy.join("resource-limits.yaml")).unwrap();
    for (group, user) in [("researcher", "rhea"), ("faculty", "fay"), ("admin", "ada")] {
        fs::write(policy.join(format!("groups/{group}.members")), format!("# members\n{user}\n")).unwrap();
    }
    if !overrides.is_empty() {
        fs::write(policy.join("user-overrides.yaml"), overrides).unwrap();
    }
    (rc, policy)
}

/// DS01's numbers for a user of each group of its file.
struct Expect {
    group: &'static str,
    user: &'static str,
    per_container: Option<u32>,
    per_user: Option<u32>,
    memory: &'static str,
    memory_bytes: u64,
    cpus: u32,
    shm_bytes: u64,
    containers: u32,
    /// cpu_quota, memory_max, memory_high, tasks_max, gpu_limit as `ds01ctl limits` shows them.
    aggregate: Option<[&'static str; 5]>,
}

const G: u64 = 1 << 30;

const GROUPS: [Expect; 4] = [
    Expect {
        group: "student",
        user: "stu",
        per_container: Some(2),
        per_user: Some(2),
        memory: "32g",
        memory_bytes: 32 * G,
        cpus: 32,
        shm_bytes: 16 * G,
        containers: 3,
        aggregate: Some(["9600%", "96G", "86G", "12288", "2"]),
    },
    Expect {
        group: "researcher",
        user: "rhea",
        per_container: Some(3),
        per_user: Some(4),
        memory: "64g",
        memory_bytes: 64 * G,
        cpus: 48,
        shm_bytes: 32 * G,
        containers: 5,
        aggregate: Some(["24000%", "320G", "288G", "327680", "4"]),
    },
    Expect {
        group: "faculty",
        user: "fay",
        per_container: Some(4),
        per_user: Some(4),
        memory: "128g",
        memory_bytes: 128 * G,
        cpus: 64,
        shm_bytes: 64 * G,
        containers: 5,
        aggregate: Some(["32000%", "640G", "576G", "327680", "4"]),
    },
    Expect {
        group: "admin",
        user: "ada",
        per_container: None,
        per_user: None,
        memory: "128g",
        memory_bytes: 128 * G,
        cpus: 64,
        shm_bytes: 64 * G,
        containers: 10,
        aggregate: None,
    },
];

fn shown(n: Option<u32>) -> String {
    n.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into())
}

fn ctl(settings: &Path, args: &[&str]) -> std::process::Output {
    Command::new(ds01ctl()).arg("--config").arg(settings).args(args).output().unwrap()
}

fn limits(settings: &Path, user: &str) -> String {
    let o = Command::new(ds01ctl()).arg("--config").arg(settings).args(["limits", user]).output().unwrap();
    assert!(o.status.success(), "ds01ctl limits {user}: {}", stderr(&o));
    stdout(&o)
}

fn row<'a>(report: &'a str, key: &str) -> &'a str {
    report.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("no {key} in {report}"))
}

#[test]
fn ds01s_file_loads_unchanged_and_limits_gives_ds01s_numbers_for_every_group() {
    let (rc, _) = ds01_host("ds01files", "");
    for e in &GROUPS {
        let r = limits(&rc.settings, e.user);
        let member = if e.group == "student" {
            "default_group student".to_owned()
        } else {
            format!("member of {}", e.group)
        };
        assert!(r.contains(&member), "{}: {r}", e.user);
        assert!(
            r.contains(&format!(
                "GPUs per container {}, per user {} GPU-equivalents, full GPUs allowed",
                shown(e.per_container),
                shown(e.per_user)
            )),
            "{}: {r}",
            e.user
        );
        assert!(row(&r, "memory ").contains(e.memory), "{}: {r}", e.user);
        assert!(row(&r, "max_cpus").contains(&e.cpus.to_string()), "{}: {r}", e.user);
        assert!(row(&r, "pids_limit").contains("4096"), "{}: {r}", e.user);
        assert!(row(&r, "shm_size").contains(&format!("{}g", e.shm_bytes / G)), "{}: {r}", e.user);
        assert!(row(&r, "max_containers_per_user").contains(&e.containers.to_string()), "{}: {r}", e.user);
        match e.aggregate {
            Some([cpu, max, high, tasks, gpu]) => {
                let want = format!(
                    "cpu_quota {cpu}  memory_max {max}  memory_high {high}  tasks_max {tasks}  gpu_limit {gpu}"
                );
                assert!(r.contains(&want), "{}: {r}", e.user);
                let slice = format!("CPUQuota={cpu}  MemoryMax={max}  MemoryHigh={high}  TasksMax={tasks}");
                assert!(r.contains(&slice), "{}: the slice carries it: {r}", e.user);
            }
            None => assert!(r.contains("aggregate                  none"), "{}: {r}", e.user),
        }
        // The settings the runtime does not enforce, with what does, for this user's group.
        if e.group != "student" {
            let k = format!("groups.{}.max_runtime_h", e.group);
            assert!(row(&r, &k).contains("enforce-max-runtime.sh"), "{}: {r}", e.user);
        }
        assert!(row(&r, "defaults.idle_timeout_h = 0.5").contains("check-idle-containers.sh"), "{r}");
        assert!(!r.contains("groups.student.policies") || e.group == "student", "{}: {r}", e.user);
    }
    let r = limits(&rc.settings, "stu");
    assert!(
        row(&r, "max_gpu_equivalents").contains("2")
            && row(&r, "max_gpu_equivalents").contains("group student"),
        "{r}"
    );
    assert!(row(&r, "gpu_hold_after_stop").contains("0.25"), "gpu_hold_after_stop_h: {r}");
}

#[test]
fn explain_and_a_real_create_through_runc_give_ds01s_numbers_for_every_group() {
    if !require_runc() {
        return;
    }
    let (rc, _) = ds01_host("ds01create", "");
    for e in &GROUPS {
        // explain: one GPU over the per-container cap is refused with DS01's number.
        if let Some(n) = e.per_container {
            let b = busybox_bundle(
                &rc.tmp.path().join(format!("x-{}", e.user)),
                "true",
                &[("ds01.gpus", &(n + 1).to_string())],
            );
            let o = ctl(&rc.settings, &["explain", b.to_str().unwrap(), "--user", e.user]);
            let text = stdout(&o);
            assert!(
                text.contains(&format!(
                    "{} GPUs requested; group {} allows {n} per container",
                    n + 1,
                    e.group
                )),
                "{}: {text}{}",
                e.user,
                stderr(&o)
            );
        }
        // A real create with the per-container number of GPUs (an admin: 5 of 8).
        let first = e.per_container.unwrap_or(5);
        let b = busybox_bundle(
            &rc.tmp.path().join(format!("a-{}", e.user)),
            "sleep 30",
            &[("ds01.user", e.user), ("ds01.gpus", &first.to_string())],
        );
        let mut cfg: Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
        for m in cfg["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/dev/shm" {
                m["options"].as_array_mut().unwrap().retain(|o| !o.as_str().unwrap().starts_with("size="));
            }
        }
        fs::write(b.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
        let id = unique("d");
        let o = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]);
        assert!(o.status.success(), "{}: {}", e.user, stderr(&o));
        let mut ids = vec![id];
        let spec: Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
        let res = &spec["linux"]["resources"];
        assert_eq!(res["memory"]["limit"], e.memory_bytes, "{}", e.user);
        let (quota, period) = (res["cpu"]["quota"].as_i64().unwrap(), res["cpu"]["period"].as_u64().unwrap());
        assert_eq!(quota as u64, u64::from(e.cpus) * period, "{}", e.user);
        assert_eq!(res["pids"]["limit"], 4096, "{}", e.user);
        let shm = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/dev/shm").unwrap();
        assert!(
            shm["options"].as_array().unwrap().contains(&Value::from(format!("size={}", e.shm_bytes))),
            "{shm}"
        );
        let slice = format!("ds01-{}-{}.slice", e.group, e.user);
        assert!(
            spec["linux"]["cgroupsPath"].as_str().unwrap().contains(&slice),
            "{}",
            spec["linux"]["cgroupsPath"]
        );
        let gpus = spec["linux"]["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["major"] == 195 && d["minor"] != 255)
            .count();
        assert_eq!(gpus as u32, first, "{}: GPU nodes", e.user);
        let mut live = 1;
        // The per-user quota in GPU-equivalents: one more than it allows is refused.
        let more = e.per_user.map_or(3, |q| q - first + 1);
        let b2 = busybox_bundle(
            &rc.tmp.path().join(format!("b-{}", e.user)),
            "sleep 30",
            &[("ds01.user", e.user), ("ds01.gpus", &more.to_string())],
        );
        let id = unique("d");
        let o = rc.shim(&["create", "--bundle", b2.to_str().unwrap(), &id]);
        ids.push(id);
        match e.per_user {
            Some(q) => {
                let want = format!("quota {q} GPU-equivalents, already holding {first}");
                assert!(stderr(&o).contains(&want), "{}: {}", e.user, stderr(&o));
            }
            None => {
                assert!(o.status.success(), "{}: {}", e.user, stderr(&o));
                live += 1;
            }
        }
        // The container count: up to DS01's number, then refused.
        while live < e.containers {
            let b = busybox_bundle(&rc.tmp.path().join(unique("c")), "sleep 30", &[("ds01.user", e.user)]);
            let id = unique("d");
            let o = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]);
            assert!(o.status.success(), "{} container {live}: {}", e.user, stderr(&o));
            ids.push(id);
            live += 1;
        }
        let b = busybox_bundle(&rc.tmp.path().join(unique("c")), "sleep 30", &[("ds01.user", e.user)]);
        let o = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &unique("d")]);
        let want =
            format!("already runs {} containers (max_containers_per_user {}", e.containers, e.containers);
        assert!(stderr(&o).contains(&want), "{}: {}", e.user, stderr(&o));
        // The aggregates on the user's slice, read back from the cgroup files (v1 or v2).
        if let Some([cpu, max, _, tasks, _]) = e.aggregate {
            let f = slice_files(e.group, e.user);
            let max_bytes: u64 = max.trim_end_matches('G').parse::<u64>().unwrap() * G;
            assert_eq!(f.memory_max, max_bytes.to_string(), "{}", e.user);
            assert_eq!(f.tasks_max, tasks, "{}", e.user);
            let cpus: u64 = cpu.trim_end_matches('%').parse::<u64>().unwrap() / 100;
            let period: u64 = f.cpu_period.parse().unwrap();
            assert_eq!(f.cpu_quota, (cpus * period).to_string(), "{}", e.user);
        }
        // Gone without a stop (no hold): the next group finds the GPUs free.
        for id in &ids {
            rc.runc(&["delete", "--force", id]);
        }
    }
    drop(rc);
    for e in &GROUPS {
        remove_slices(e.group, e.user);
    }
}

#[test]
fn doctor_names_every_setting_the_runtime_does_not_enforce() {
    // DS01's documented formats for the files beside resource-limits.yaml.
    let (rc, policy) = ds01_host(
        "ds01doctor",
        "204214@hertie-school.lan:\n  idle_timeout_h: null    # No timeout\n  max_runtime_h: null\n  memory: 96g\n",
    );
    fs::write(
        policy.join("lifecycle-exemptions.yaml"),
        "exemptions:\n  - username: rhea\n    exempt_from: [idle_timeout_h]\n    expires_on: null\n    reason: thesis\n",
    )
    .unwrap();
    let o =
        ctl(&rc.settings, &["doctor", "--daemon-json", rc.tmp.path().join("none.json").to_str().unwrap()]);
    let text = stdout(&o);
    assert!(text.contains("warn  policy settings"), "{text}");
    // Every key of DS01's file that is not a limit here, with what enforces it.
    let want: &[(&str, &str)] = &[
        ("defaults.max_runtime_h = 24", "enforce-max-runtime.sh"),
        ("defaults.idle_timeout_h = 0.5", "check-idle-containers.sh"),
        ("defaults.container_hold_after_stop_h = 0.5", "cleanup-stale-containers.sh"),
        ("defaults.max_tasks = 32768", "nothing"),
        ("groups.student.policies", "check-idle-containers.sh"),
        ("groups.researcher.max_runtime_h = 48", "enforce-max-runtime.sh"),
        ("groups.researcher.idle_timeout_h = 1", "check-idle-containers.sh"),
        ("groups.researcher.max_tasks", "nothing"),
        ("groups.researcher.policies", "check-idle-containers.sh"),
        ("groups.faculty.max_runtime_h = 72", "enforce-max-runtime.sh"),
        ("groups.faculty.idle_timeout_h = 2", "check-idle-containers.sh"),
        ("groups.faculty.max_tasks", "nothing"),
        ("groups.faculty.policies", "check-idle-containers.sh"),
        ("groups.admin.idle_timeout_h = 1", "check-idle-containers.sh"),
        ("groups.admin.max_runtime_h = 24", "enforce-max-runtime.sh"),
        ("groups.admin.max_tasks = null", "nothing"),
        ("policies.high_demand_threshold", "check-idle-containers.sh"),
        ("policies.high_demand_idle_reduction", "check-idle-containers.sh"),
        ("policies.gpu_idle_threshold", "check-idle-containers.sh"),
        ("policies.cpu_idle_threshold", "check-idle-containers.sh"),
        ("policies.network_idle_threshold", "check-idle-containers.sh"),
        ("policies.idle_detection_window", "check-idle-containers.sh"),
        ("policies.grace_period_m", "check-idle-containers.sh"),
        ("policies.keepalive_max_duration_h", "nothing"),
        ("policies.sigterm_grace_s", "enforce-max-runtime.sh"),
        ("policies.gpu_hold_after_manual_stop_m", "nothing"),
        ("policies.created_container_timeout_m", "cleanup-stale-containers.sh"),
        ("container_types = {devcontainer, compose, docker, api, unknown}", "cron scripts"),
        ("monitoring", "nothing"),
        ("bare_metal_access", "bare-metal-access"),
        ("access_control.wrapper", "Docker wrapper"),
        ("user-overrides.yaml: 204214@hertie-school.lan.idle_timeout_h = null", "check-idle-containers.sh"),
        ("user-overrides.yaml: 204214@hertie-school.lan.max_runtime_h = null", "enforce-max-runtime.sh"),
        ("lifecycle-exemptions.yaml = 1 exemption(s)", "no lifecycle timer"),
    ];
    for (key, by) in want {
        let line =
            text.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("{key}: {text}"));
        assert!(line.contains(by), "{key}: {line}");
    }
    let listed = text.lines().filter(|l| l.contains(" → ")).count();
    assert_eq!(listed, want.len(), "exactly these, no limit among them: {text}");
    assert!(text.contains(&format!("{} setting(s) are not enforced", want.len())), "{text}");
    // The override's memory is a limit: enforced, not listed; and it loads.
    assert!(!text.contains("204214@hertie-school.lan.memory"), "{text}");
    let r = limits(&rc.settings, "204214@hertie-school.lan");
    assert!(row(&r, "memory ").contains("96g") && row(&r, "memory ").contains("user override"), "{r}");
}

#[test]
fn events_count_right_the_way_ds01s_readers_read_them() {
    if !require_runc() {
        return;
    }
    // evy's GPUs are held 1.8 s after a stop (a user override, DS01's format).
    let (rc, _) = ds01_host("ds01events", "evy:\n  gpu_hold_after_stop_h: 0.0005\n");
    let create = |tag: &str, gpus: Option<&str>| {
        let mut ann = vec![("ds01.user", "evy")];
        if let Some(g) = gpus {
            ann.push(("ds01.gpus", g));
        }
        let b = busybox_bundle(&rc.tmp.path().join(tag), "sleep 30", &ann);
        let id = unique(tag);
        let o = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]);
        (id, o.status.success(), stderr(&o))
    };
    let (a, ok, err) = create("a", Some("2"));
    assert!(ok, "{err}");
    let (_, ok, err) = create("b", Some("1"));
    assert!(!ok && err.contains("quota 2 GPU-equivalents"), "{err}");
    assert!(rc.shim(&["start", &a]).status.success());
    assert!(rc.shim(&["kill", &a, "KILL"]).status.success());
    wait_for(10, || stdout(&rc.runc(&["state", &a])).contains("stopped").then_some(()));
    assert!(rc.shim(&["delete", &a]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // The next create finds the hold over and releases it.
    let (_, ok, err) = create("c", None);
    assert!(ok, "{err}");

    // Read as DS01's exporter and monthly report do: every line, `event_type`, `user`,
    // `details.*`, and a timestamp Python 3.8's datetime.fromisoformat accepts.
    let lines = audit_events(rc.tmp.path());
    let mine: Vec<&Value> = lines.iter().filter(|e| e["user"] == "evy").collect();
    assert!(mine.iter().all(|e| python38_isoformat(e["timestamp"].as_str().unwrap())), "{mine:?}");
    let count = |t: &str| mine.iter().filter(|e| e["event_type"] == t).count();
    let counts: Vec<(&str, usize)> = [
        "container.create",
        "container.create_failed",
        "gpu.rejected",
        "gpu.allocated",
        "container.start",
        "container.stop",
        "container.remove",
        "gpu.hold",
        "gpu.released",
        "gpu.removed_stale",
    ]
    .into_iter()
    .map(|t| (t, count(t)))
    .collect();
    assert_eq!(
        counts,
        [
            ("container.create", 2),
            ("container.create_failed", 1),
            ("gpu.rejected", 1),
            ("gpu.allocated", 1),
            ("container.start", 1),
            ("container.stop", 1),
            ("container.remove", 1),
            ("gpu.hold", 1),
            ("gpu.released", 1),
            ("gpu.removed_stale", 0)
        ],
        "{mine:#?}"
    );
    let of = |t: &str| *mine.iter().find(|e| e["event_type"] == t).unwrap();
    let allocated = of("gpu.allocated");
    assert_eq!(allocated["details"]["container"], a.as_str());
    assert_eq!(allocated["details"]["gpu"], "GPU-fake-0,GPU-fake-1");
    assert!(of("gpu.rejected")["details"]["reason"].as_str().unwrap().contains("quota 2"));
    assert_eq!(of("container.create")["details"]["container_type"], "docker");
    assert_eq!(of("gpu.hold")["details"]["gpu"], "GPU-fake-0,GPU-fake-1");
    assert!(of("gpu.released")["details"]["reason"].as_str().unwrap().contains("hold after stop ended"));
    drop(rc);
    remove_slices("student", "evy");
}
