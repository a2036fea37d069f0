//! The NVML path for real: the shim loads a stand-in libnvidia-ml.so (8 GPUs, GPU 2 in MIG
//! mode with 3 instances), finds the MIG cap nodes in a fake driver proc tree, and the
//! container sees the MIG instance's nodes and nothing else.

mod common;

use common::*;
use std::fs;

#[test]
fn mig_instance_from_nvml_reaches_the_container() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("nvml", "");
    let Some(lib) = build_nvml_standin(rc.tmp.path()) else { return };
    let dev = fake_dev(rc.tmp.path(), 8);
    let proc_root = fake_mig_proc(rc.tmp.path(), 2, &[1, 2, 3]);
    let extra = format!(
        "gpu:\n  inventory: nvml\n  nvml_library: {}\n  dev_root: {}\n  proc_root: {}\n",
        lib.display(),
        dev.display(),
        proc_root.display()
    );
    fs::write(&rc.settings, fs::read_to_string(&rc.settings).unwrap() + &extra).unwrap();
    // Students may not take full GPUs: the request goes to a MIG instance.
    write_policy(
        rc.tmp.path(),
        "defaults:\n  max_mig_per_container: 1\n  max_mig_instances: 2\n  allow_full_gpu: false\ngpu_allocation:\n  mig_instances_per_gpu: 4\n",
    );
    let user = unique("mig");
    let b = busybox_bundle(
        &rc.tmp.path().join("b"),
        "ls /dev/nvidia-caps 2>/dev/null | tr '\\n' ' '; echo; ls /dev | grep nvidia | sort | tr '\\n' ' '",
        &[("ds01.user", &user), ("ds01.gpus", "1")],
    );
    let id = unique("m");
    let out = rc.shim_with(&["run", "--bundle", b.to_str().unwrap(), &id], |c| {
        c.env("FAKE_NVML_GPUS", "8").env("FAKE_NVML_MIG", "2:3");
    });
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap().trim(), "nvidia-cap3 nvidia-cap4", "{text}");
    assert_eq!(
        lines.next().unwrap().trim(),
        "nvidia-caps nvidia-uvm nvidia-uvm-tools nvidia2 nvidiactl",
        "{text}"
    );
    let cfg: serde_json::Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    let gpus = cfg["annotations"]["ds01.gpus"].as_str().unwrap();
    assert!(gpus.starts_with("MIG-"), "{gpus}");

    // The inventory was cached for the next create.
    let cache = fs::read_to_string(rc.tmp.path().join("state/inventory.json")).unwrap();
    assert_eq!(cache.matches("\"uuid\":\"GPU-").count(), 8);
    // A full GPU asked by index is refused with the reason.
    let b2 = busybox_bundle(&rc.tmp.path().join("b2"), "true", &[("ds01.user", &user), ("ds01.gpus", "0,1")]);
    let out = rc.shim(&["create", "--bundle", b2.to_str().unwrap(), &unique("m")]);
    assert!(stderr(&out).contains("full GPUs are not allowed for group student"), "{}", stderr(&out));
    // An instance weighs what DS01 weighs it: its profile's compute slices over 7 (instance j
    // of the stand-in is a (j % 3 + 1)g profile).
    let b3 = busybox_bundle(&rc.tmp.path().join("b3"), "true", &[("ds01.user", &user), ("ds01.gpus", "1")]);
    let id3 = unique("m");
    let out = rc.shim(&["create", "--bundle", b3.to_str().unwrap(), &id3]);
    assert!(out.status.success(), "{}", stderr(&out));
    let held = gpu_allocations(rc.tmp.path());
    let mine = held.iter().find(|a| a["container"] == id3.as_str()).expect("allocation recorded");
    let uuid = mine["devices"][0].as_str().unwrap();
    let j = u32::from_str_radix(uuid.rsplit('-').next().unwrap(), 16).unwrap();
    assert_eq!(mine["sevenths"], j % 3 + 1, "{mine}");
    remove_slices("student", &user);
}

#[test]
fn no_driver_means_normal_containers_still_run() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("nodriver", "gpu:\n  nvml_library: /nonexistent/libnvidia-ml.so.1\n  proc_root: /nonexistent\n  dev_root: /nonexistent\n");
    let user = unique("nod");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "echo fine", &[("ds01.user", &user)]);
    let out = rc.shim(&["run", "--bundle", b.to_str().unwrap(), &unique("n")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "fine");
    let b = busybox_bundle(&rc.tmp.path().join("b2"), "true", &[("ds01.user", &user), ("ds01.gpus", "1")]);
    let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &unique("n")]);
    assert!(stderr(&out).contains("1 GPU requested; this host has no GPUs"), "{}", stderr(&out));
    remove_slices("student", &user);
}

#[test]
fn nvml_is_asked_through_ds01ctl_and_its_failures_name_the_cause() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new(
        "nvmlerr",
        "gpu:\n  inventory: nvml\n  nvml_library: /nonexistent/libnvidia-ml.so.1\n  dev_root: /nonexistent\n",
    );
    let user = unique("nve");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "true", &[("ds01.user", &user), ("ds01.gpus", "1")]);
    let pristine = fs::read(b.join("config.json")).unwrap();
    // The helper's own message comes back, one line.
    let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &unique("e")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("NVML (/nonexistent/libnvidia-ml.so.1): cannot initialize"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(fs::read(b.join("config.json")).unwrap(), pristine, "bundle unchanged");
    // A shim without ds01ctl beside it says which program it could not run.
    let lonely = rc.tmp.path().join("lonely");
    fs::create_dir_all(&lonely).unwrap();
    fs::copy(shim(), lonely.join("ds01-runtime")).unwrap();
    let out = std::process::Command::new(lonely.join("ds01-runtime"))
        .env("DS01_RUNTIME_CONFIG", &rc.settings)
        .args(["--root", rc.root.to_str().unwrap(), "create", "--bundle", b.to_str().unwrap(), &unique("e")])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains(&format!("cannot run {}", lonely.join("ds01ctl").display())), "{err}");
    assert_eq!(fs::read(b.join("config.json")).unwrap(), pristine, "bundle unchanged");
    assert!(!rc.tmp.path().join("state/inventory.json").exists(), "no inventory cached from a failure");
    remove_slices("student", &user);
}
