//! GPUs through the real runc on fake device nodes (mknod 195:N): exactly the allocated nodes
//! and device rules inside, every leak route closed, quotas refused with their reason, 50
//! parallel creates never double-allocate, holds after delete, reclaim after a crash.

mod common;

use common::*;
use std::fs;
use std::path::Path;

const SHOW: &str = "ls /dev | grep nvidia | sort | tr '\\n' ' '; echo; grep -E '^c (195|235|236):' /sys/fs/cgroup/devices/devices.list | sort | tr '\\n' ' '";

fn gpu_runc(tag: &str, n: u32, hold: &str) -> (Runc, std::path::PathBuf) {
    let tmp_dev = TempDir::new(&format!("{tag}-dev"));
    let dev = fake_dev(tmp_dev.path(), n);
    std::mem::forget(tmp_dev); // removed with the Runc's own dir below
    let rc = Runc::new(tag, &static_gpus(&dev, n));
    write_policy(rc.tmp.path(), &gpu_policy(hold));
    let moved = rc.tmp.path().join("fakedev");
    fs::rename(dev.parent().unwrap(), &moved).unwrap();
    let text = fs::read_to_string(&rc.settings)
        .unwrap()
        .replace(&dev.display().to_string(), &moved.join("dev").display().to_string());
    fs::write(&rc.settings, text).unwrap();
    (rc, moved.join("dev"))
}

fn state(rc: &Runc) -> serde_json::Value {
    serde_json::from_slice(
        &fs::read(rc.tmp.path().join("state/gpus.json")).unwrap_or_else(|_| b"{}".to_vec()),
    )
    .unwrap()
}

fn devices_of(st: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = st["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["devices"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn the_container_sees_exactly_its_gpu() {
    if !require_runc() {
        return;
    }
    let (rc, _dev) = gpu_runc("gpu1", 4, "0");
    let user = unique("gina");
    let b = busybox_bundle(&rc.tmp.path().join("b"), SHOW, &[("ds01.user", &user), ("ds01.gpus", "1")]);
    let id = unique("g");
    let out = rc.shim(&["run", "--bundle", b.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap().trim(), "nvidia-uvm nvidia-uvm-tools nvidia0 nvidiactl", "{text}");
    assert_eq!(lines.next().unwrap().trim(), "c 195:0 rwm c 195:255 rwm c 235:0 rwm c 235:1 rwm", "{text}");
    let cfg: serde_json::Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["annotations"]["ds01.gpus"], "GPU-fake-0");
    assert!(cfg["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "NVIDIA_VISIBLE_DEVICES=GPU-fake-0"));
    remove_slices("student", &user);
}

#[test]
fn leak_routes_are_closed() {
    if !require_runc() {
        return;
    }
    let (rc, dev) = gpu_runc("leak", 4, "0");
    let user = unique("lea");
    // No GPU asked: an image's NVIDIA_VISIBLE_DEVICES=all, a --device /dev/nvidia3 and its rule.
    let b = busybox_bundle(&rc.tmp.path().join("b"), SHOW, &[("ds01.user", &user)]);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    cfg["process"]["env"].as_array_mut().unwrap().push("NVIDIA_VISIBLE_DEVICES=all".into());
    cfg["linux"]["devices"] = serde_json::json!([{"path": "/dev/nvidia3", "type": "c", "major": 195, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0}]);
    cfg["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"allow": true, "type": "c", "major": 195, "minor": 3, "access": "rwm"}));
    fs::write(b.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = rc.shim(&["run", "--bundle", b.to_str().unwrap(), &unique("l")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.trim(), "", "no NVIDIA node and no rule inside: {text:?}");
    let after: serde_json::Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    assert!(after["process"]["env"].as_array().unwrap().iter().any(|e| e == "NVIDIA_VISIBLE_DEVICES=void"));
    assert!(state(&rc)["allocations"].as_array().is_none_or(|a| a.is_empty()), "nothing allocated");

    // A bind mount of the device tree, and an allow-all device rule, are refused.
    let b2 = busybox_bundle(&rc.tmp.path().join("b2"), "true", &[("ds01.user", &user)]);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(b2.join("config.json")).unwrap()).unwrap();
    cfg["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/dev/nvidia3", "type": "bind", "source": dev.join("nvidia3"), "options": ["rbind"]}));
    fs::write(b2.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let before = fs::read(b2.join("config.json")).unwrap();
    let out = rc.shim(&["create", "--bundle", b2.to_str().unwrap(), &unique("l")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is refused: only"), "{}", stderr(&out));
    assert_eq!(fs::read(b2.join("config.json")).unwrap(), before);
    let mut cfg: serde_json::Value = serde_json::from_slice(&before).unwrap();
    cfg["mounts"].as_array_mut().unwrap().pop();
    cfg["linux"]["resources"]["devices"] = serde_json::json!([{"allow": true, "access": "rwm"}]);
    fs::write(b2.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let out = rc.shim(&["create", "--bundle", b2.to_str().unwrap(), &unique("l")]);
    assert!(stderr(&out).contains("device rules that open every device are refused"), "{}", stderr(&out));
    remove_slices("student", &user);
}

#[test]
fn quota_refusals_say_why_and_leak_nothing() {
    if !require_runc() {
        return;
    }
    let (rc, _dev) = gpu_runc("quota", 4, "0");
    let user = unique("quinn");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "sleep 30", &[("ds01.user", &user), ("ds01.gpus", "2")]);
    let before = fs::read(b.join("config.json")).unwrap();
    let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &unique("q")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("2 GPUs requested; defaults allows 1 per container"), "{}", stderr(&out));
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before, "bundle unchanged");
    assert!(devices_of(&state(&rc)).is_empty(), "no allocation leaked");
    // Two containers of one GPU each fill the user's quota of 2; the third is refused.
    let mut ids = vec![];
    for n in 0..3 {
        let b = busybox_bundle(
            &rc.tmp.path().join(format!("b{n}")),
            "sleep 30",
            &[("ds01.user", &user), ("ds01.gpus", "1")],
        );
        let id = unique("q");
        let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]);
        if n < 2 {
            assert!(out.status.success(), "{}", stderr(&out));
            ids.push(id);
        } else {
            assert!(
                stderr(&out).contains("1 GPU requested; quota 2 GPU-equivalents, already holding 2 in"),
                "{}",
                stderr(&out)
            );
        }
    }
    assert_eq!(devices_of(&state(&rc)).len(), 2);
    // A broken GPU state file is an error, never a silent reset.
    for id in &ids {
        rc.shim(&["delete", "--force", id]);
    }
    remove_slices("student", &user);
}

#[test]
fn fifty_parallel_creates_never_share_a_gpu() {
    if !require_runc() {
        return;
    }
    let (rc, _dev) = gpu_runc("fifty", 4, "0");
    let rootfs = rc.tmp.path().join("shared");
    busybox_bundle(&rootfs, "true", &[]);
    let mut children = vec![];
    for n in 0..50 {
        let dir = rc.tmp.path().join(format!("p{n}"));
        fs::create_dir_all(&dir).unwrap();
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&fs::read(rootfs.join("config.json")).unwrap()).unwrap();
        cfg["root"] = serde_json::json!({"path": rootfs.join("rootfs"), "readonly": true});
        cfg["process"]["args"] = serde_json::json!(["sleep", "30"]);
        cfg["annotations"] = serde_json::json!({"ds01.user": format!("par{n}"), "ds01.gpus": "1"});
        fs::write(dir.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
        let id = format!("{}-{n}", unique("par"));
        let err = fs::File::create(dir.join("err")).unwrap();
        let child = std::process::Command::new(shim())
            .env("DS01_RUNTIME_CONFIG", &rc.settings)
            .args(["--root", rc.root.to_str().unwrap(), "create", "--bundle", dir.to_str().unwrap(), &id])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        children.push((id, dir, child));
    }
    let mut winners = vec![];
    for (id, dir, mut child) in children {
        let ok = child.wait().unwrap().success();
        let err = fs::read_to_string(dir.join("err")).unwrap();
        if ok {
            winners.push(id);
        } else {
            assert!(err.contains("1 GPU requested; 0 of 4 GPUs free"), "a clear refusal: {err}");
        }
    }
    assert_eq!(winners.len(), 4, "exactly 4 winners");
    let devs = devices_of(&state(&rc));
    assert_eq!(devs, ["GPU-fake-0", "GPU-fake-1", "GPU-fake-2", "GPU-fake-3"], "no double allocation");
    for id in &winners {
        assert!(rc.runc(&["state", id]).status.success());
        rc.runc(&["delete", "--force", id]);
    }
    for n in 0..50 {
        remove_slices("student", &format!("par{n}"));
    }
}

#[test]
fn delete_holds_for_the_owner_then_releases_and_crashes_are_reclaimed() {
    if !require_runc() {
        return;
    }
    let (rc, _dev) = gpu_runc("hold", 1, "3s");
    let user = unique("hol");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "sleep 30", &[("ds01.user", &user), ("ds01.gpus", "1")]);
    let pristine = fs::read(b.join("config.json")).unwrap();
    let id = unique("h");
    assert!(rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]).status.success());
    assert!(rc.shim(&["delete", "--force", &id]).status.success());
    let held = wait_for(10, || (state(&rc)["allocations"][0]["status"] == "held").then_some(()));
    assert!(held.is_some(), "held after delete: {}", state(&rc));
    // Meanwhile nobody else gets it; the same container gets it back.
    let other = busybox_bundle(
        &rc.tmp.path().join("o"),
        "sleep 30",
        &[("ds01.user", "someoneelse"), ("ds01.gpus", "1")],
    );
    let out = rc.shim(&["create", "--bundle", other.to_str().unwrap(), &unique("o")]);
    assert!(stderr(&out).contains("0 of 1 GPUs free"), "{}", stderr(&out));
    fs::write(b.join("config.json"), &pristine).unwrap();
    let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]);
    assert!(out.status.success(), "restart gets its GPU back: {}", stderr(&out));
    assert_eq!(state(&rc)["allocations"][0]["status"], "running");
    // After the hold, it is free again.
    assert!(rc.shim(&["delete", "--force", &id]).status.success());
    wait_for(10, || (state(&rc)["allocations"][0]["status"] == "held").then_some(()));
    std::thread::sleep(std::time::Duration::from_secs(4));
    let id2 = unique("o");
    let out = rc.shim(&["create", "--bundle", other.to_str().unwrap(), &id2]);
    assert!(out.status.success(), "free after the hold: {}", stderr(&out));
    // The engine "crashes": runc deletes it behind our back; the next create reclaims it.
    assert!(rc.runc(&["delete", "--force", &id2]).status.success());
    fs::write(b.join("config.json"), &pristine).unwrap();
    let id3 = unique("h");
    let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id3]);
    assert!(out.status.success(), "reclaimed: {}", stderr(&out));
    assert_eq!(state(&rc)["allocations"].as_array().unwrap().len(), 1);
    rc.shim(&["delete", "--force", &id3]);
    remove_slices("student", &user);
    remove_slices("student", "someoneelse");
    let _ = Path::new("");
}

#[test]
fn cdi_edits_bring_the_driver_without_nvidias_runtime() {
    if !require_runc() {
        return;
    }
    let (rc, _dev) = gpu_runc("cdi", 4, "0");
    let cdi = write_cdi(rc.tmp.path(), &rc.settings, 4);
    let user = unique("cora");
    let script = "cat /usr/lib/x86_64-linux-gnu/libcuda.so.1; echo \"$NVIDIA_DRIVER_CAPABILITIES $NVIDIA_VISIBLE_DEVICES\"; ls /dev | grep nvidia | sort | tr '\\n' ' '";
    let b = busybox_bundle(&rc.tmp.path().join("b"), script, &[("ds01.user", &user), ("ds01.gpus", "1")]);
    let id = unique("c");
    let out = rc.shim(&["run", "--bundle", b.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["fake libcuda 535", "compute,utility GPU-fake-0", "nvidia-uvm nvidia-uvm-tools nvidia0 nvidiactl"]
    );
    let hook = fs::read_to_string(rc.tmp.path().join("hook-state")).unwrap();
    assert!(hook.contains(&id), "the CDI hook ran with the container's state: {hook}");
    let cfg: serde_json::Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["annotations"]["ds01.cdi"], "nvidia.com/gpu=0");

    // A container that asks for no GPU never reads CDI: a broken spec does not touch it.
    fs::write(cdi.join("broken.yaml"), "kind: nvidia.com/gpu\ndevices: {oops").unwrap();
    let b = busybox_bundle(&rc.tmp.path().join("b2"), "true", &[("ds01.user", &user)]);
    let out = rc.shim(&["run", "--bundle", b.to_str().unwrap(), &unique("c")]);
    assert!(out.status.success(), "{}", stderr(&out));
    // One that does is refused with the file named, its bundle unchanged, nothing allocated.
    let b = busybox_bundle(&rc.tmp.path().join("b3"), "true", &[("ds01.user", &user), ("ds01.gpus", "1")]);
    let before = fs::read(b.join("config.json")).unwrap();
    let refused = unique("c");
    let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &refused]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("broken.yaml"), "{err}");
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before);
    let st = state(&rc);
    let holders: Vec<&str> =
        st["allocations"].as_array().into_iter().flatten().filter_map(|a| a["container"].as_str()).collect();
    assert!(!holders.contains(&refused.as_str()), "no allocation leaked: {st}");
    remove_slices("student", &user);
}

/// A create that fails after its GPU was reserved (here: the audit log cannot be written and
/// the settings say to refuse then) leaves no allocation behind.
#[test]
fn a_create_failing_after_the_reservation_gives_the_gpu_back() {
    if !require_runc() {
        return;
    }
    let (rc, _dev) = gpu_runc("undo", 4, "0");
    fs::write(rc.tmp.path().join("blocked"), "a file, not a folder").unwrap();
    let text = fs::read_to_string(&rc.settings)
        .unwrap()
        .replace("audit_log: log/events.jsonl", "audit_log: blocked/events.jsonl");
    fs::write(&rc.settings, text + "audit_failure: refuse\n").unwrap();
    let user = unique("uma");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "true", &[("ds01.user", &user), ("ds01.gpus", "1")]);
    let before = fs::read(b.join("config.json")).unwrap();
    let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &unique("u")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("blocked/events.jsonl"), "{}", stderr(&out));
    assert_eq!(fs::read(b.join("config.json")).unwrap(), before, "bundle unchanged");
    let st = state(&rc);
    assert!(devices_of(&st).is_empty(), "the reservation was undone: {st}");
    assert!(st["containers"].as_array().is_none_or(|c| c.is_empty()), "{st}");
}

#[test]
fn an_admin_is_decided_again_without_limits_after_a_quota_refusal() {
    if !require_runc() {
        return;
    }
    // The policy names `admin` in admin_users; a student asking for 3 GPUs is refused, the
    // admin asking the same gets them (the second decision, after the lookup outside the lock).
    let (rc, _dev) = gpu_runc("admin", 4, "0");
    let student = unique("stu");
    let b = busybox_bundle(&rc.tmp.path().join("s"), "true", &[("ds01.user", &student), ("ds01.gpus", "3")]);
    let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &unique("s")]);
    assert!(stderr(&out).contains("3 GPUs requested; defaults allows 1 per container"), "{}", stderr(&out));
    // DS01's readers count refusals from gpu.rejected, and creates only from container.create.
    let log = fs::read_to_string(rc.tmp.path().join("log/events.jsonl")).unwrap();
    let types: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["user"] == student.as_str())
        .map(|e| e["event_type"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(types, ["container.create_failed", "gpu.rejected"], "{log}");
    let b = busybox_bundle(
        &rc.tmp.path().join("a"),
        "ls /dev | grep -c '^nvidia[0-9]'",
        &[("ds01.user", "admin"), ("ds01.gpus", "3")],
    );
    let id = unique("a");
    let out = rc.shim(&["run", "--bundle", b.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "3", "the admin's container sees its 3 GPUs");
    assert_eq!(devices_of(&state(&rc)).len(), 3);
    let log = fs::read_to_string(rc.tmp.path().join("log/events.jsonl")).unwrap();
    let create = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["container"] == id.as_str() && e["event"] == "create")
        .expect("the admin's create is recorded");
    assert_eq!(create["outcome"], "allowed");
    assert!(create["lock_wait_ms"].as_f64().is_some(), "{create}");
    remove_slices("admin", "admin");
    remove_slices("student", &student);
}
