//! `ds01ctl install` / `uninstall` on a temp prefix: daemon.json merged (other keys kept,
//! backup first, idempotent), dry-run diff, unparseable daemon.json untouched, exact reversal.

mod common;

use common::*;
use serde_json::Value;
use std::fs;
use std::process::Command;

struct Host {
    tmp: TempDir,
}

impl Host {
    fn new(tag: &str) -> Host {
        Host { tmp: TempDir::new(tag) }
    }
    fn p(&self, rel: &str) -> std::path::PathBuf {
        self.tmp.path().join(rel)
    }
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let bin = ds01ctl();
        // The shim as built for installing (musl, staged beside ds01ctl), not cargo's glibc one.
        let staged = shim();
        let from = staged.parent().unwrap();
        let mut cmd = Command::new(&bin);
        cmd.args(args);
        if args[0] == "install" {
            cmd.arg("--prefix").arg(self.p("usr")).arg("--config-dir").arg(self.p("etc/ds01"));
            cmd.arg("--daemon-json").arg(self.p("etc/docker/daemon.json")).arg("--from").arg(from);
        }
        cmd.arg("--state-dir").arg(self.p("var/lib/ds01"));
        cmd.output().unwrap()
    }
    fn daemon(&self) -> String {
        fs::read_to_string(self.p("etc/docker/daemon.json")).unwrap()
    }
    fn backups(&self) -> usize {
        fs::read_dir(self.p("etc/docker"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("ds01-backup"))
            .count()
    }
}

const ORIGINAL: &str = r#"{
  "log-driver": "json-file",
  "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}},
  "default-runtime": "nvidia",
  "storage-driver": "overlay2",
  "exec-opts": ["native.cgroupdriver=systemd"]
}
"#;

#[test]
fn install_merges_backs_up_is_idempotent_and_uninstall_reverses_it() {
    let h = Host::new("inst");
    fs::create_dir_all(h.p("etc/docker")).unwrap();
    fs::write(h.p("etc/docker/daemon.json"), ORIGINAL).unwrap();
    fs::create_dir_all(h.p("etc/ds01")).unwrap();
    fs::write(h.p("etc/ds01/resource-limits.yaml"), "# the admin's own policy\n").unwrap();

    let dry = h.ctl(&["install", "--default", "--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let out = stdout(&dry);
    assert!(out.contains("+    \"ds01\": {") && out.contains("-  \"default-runtime\": \"nvidia\""), "{out}");
    assert_eq!(h.daemon(), ORIGINAL, "dry run writes nothing");
    assert!(!h.p("usr/bin/ds01-runtime").exists());

    let o = h.ctl(&["install", "--default"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Reload Docker to apply:"), "{}", stdout(&o));
    let v: Value = serde_json::from_str(&h.daemon()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["log-driver", "runtimes", "default-runtime", "storage-driver", "exec-opts"]);
    assert_eq!(v["runtimes"]["nvidia"]["path"], "nvidia-container-runtime");
    assert_eq!(v["runtimes"]["ds01"]["path"], h.p("usr/bin/ds01-runtime").to_str().unwrap());
    let arg = format!("--ds01-config={}", h.p("etc/ds01/runtime.yaml").display());
    assert_eq!(v["runtimes"]["ds01"]["runtimeArgs"][0], arg.as_str());
    assert!(
        stdout(&o).contains("DS01_RUNTIME_CONFIG="),
        "a custom settings path says how to avoid the sh wrapper"
    );
    assert_eq!(v["default-runtime"], "ds01");
    assert_eq!(v["exec-opts"][0], "native.cgroupdriver=systemd");
    assert_eq!(h.backups(), 1);
    assert!(h.p("usr/bin/ds01-runtime").exists() && h.p("usr/bin/ds01ctl").exists());
    assert!(h.p("etc/ds01/runtime.yaml").exists() && h.p("etc/ds01/groups/admin.members").exists());
    assert_eq!(
        fs::read_to_string(h.p("etc/ds01/resource-limits.yaml")).unwrap(),
        "# the admin's own policy\n"
    );

    let after_first = h.daemon();
    let again = h.ctl(&["install", "--default"]);
    assert!(again.status.success());
    assert_eq!(stdout(&again).trim(), "nothing to change");
    assert_eq!(h.daemon(), after_first);
    assert_eq!(h.backups(), 1, "no new backup when nothing changes");

    let u = h.ctl(&["uninstall"]);
    assert!(u.status.success(), "{}", stderr(&u));
    let back: Value = serde_json::from_str(&h.daemon()).unwrap();
    let orig: Value = serde_json::from_str(ORIGINAL).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&orig).unwrap());
    assert!(!h.p("usr/bin/ds01-runtime").exists());
    assert!(!h.p("etc/ds01/runtime.yaml").exists());
    assert!(h.p("etc/ds01/resource-limits.yaml").exists(), "the admin's file stays");
    assert!(!h.p("var/lib/ds01/install.json").exists());
    let twice = h.ctl(&["uninstall"]);
    assert!(!twice.status.success() && stderr(&twice).contains("nothing to undo"));
}

#[test]
fn unparseable_daemon_json_is_never_overwritten() {
    let h = Host::new("bad");
    fs::create_dir_all(h.p("etc/docker")).unwrap();
    let bad = "{ \"log-driver\": \"json-file\", }\n";
    fs::write(h.p("etc/docker/daemon.json"), bad).unwrap();
    let o = h.ctl(&["install"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("daemon.json does not parse") && e.contains("not changing it"), "{e}");
    assert_eq!(fs::read_to_string(h.p("etc/docker/daemon.json")).unwrap(), bad);
    assert_eq!(h.backups(), 0);
}

#[test]
fn missing_daemon_json_is_created_and_removed_again() {
    let h = Host::new("fresh");
    let o = h.ctl(&["install"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&h.daemon()).unwrap();
    assert!(v.get("default-runtime").is_none());
    assert!(v["runtimes"]["ds01"].is_object());
    assert!(h.ctl(&["uninstall"]).status.success());
    assert!(!h.p("etc/docker/daemon.json").exists());
}

#[test]
fn interpose_links_runc_and_never_clobbers_a_foreign_one() {
    let h = Host::new("interpose");
    let o = h.ctl(&["install", "--interpose"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let link = h.p("usr/sbin/runc");
    assert_eq!(fs::read_link(&link).unwrap(), h.p("usr/bin/ds01-runtime"));
    assert!(h.ctl(&["install", "--interpose"]).status.success(), "idempotent");
    assert!(h.ctl(&["uninstall"]).status.success());
    assert!(link.symlink_metadata().is_err());

    let h = Host::new("foreign");
    fs::create_dir_all(h.p("usr/sbin")).unwrap();
    fs::write(h.p("usr/sbin/runc"), "#!/bin/sh\n").unwrap();
    let o = h.ctl(&["install", "--interpose"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not ds01-runtime; not replacing it"), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(h.p("usr/sbin/runc")).unwrap(), "#!/bin/sh\n");
}
