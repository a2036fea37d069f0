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

/// Every file, link and directory under `root` (relative path → kind, mode, bytes or target),
/// leaving out daemon.json and its backups (compared as JSON: install merges into it).
fn tree(root: &std::path::Path) -> std::collections::BTreeMap<String, (char, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, (char, u32, Vec<u8>)>,
    ) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("etc/docker/daemon.json") {
                continue;
            }
            let m = p.symlink_metadata().unwrap();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                out.insert(rel, ('l', 0, fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()));
            } else if m.is_dir() {
                out.insert(rel, ('d', mode, Vec::new()));
                walk(root, &p, out);
            } else {
                out.insert(rel, ('f', mode, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Debian docker.io's own units in the host's /lib/systemd/system.
fn docker_units(h: &Host) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/systemd");
    fs::create_dir_all(h.p("lib/systemd/system")).unwrap();
    for unit in ["docker.service", "docker.socket"] {
        fs::copy(fixtures.join(unit), h.p("lib/systemd/system").join(unit)).unwrap();
    }
}

#[test]
fn front_door_install_moves_dockers_socket_and_uninstall_puts_every_byte_back() {
    let h = Host::new("door");
    // docker.io's units; an admin's drop-in read before ours; a hand-made unit of our name.
    docker_units(&h);
    fs::create_dir_all(h.p("etc/systemd/system/docker.socket.d")).unwrap();
    fs::write(h.p("etc/systemd/system/docker.socket.d/10-admin.conf"), "[Socket]\nSocketMode=0666\n")
        .unwrap();
    fs::write(h.p("etc/systemd/system/ds01-front-door.service"), "# a hand-made front door\n").unwrap();
    fs::create_dir_all(h.p("etc/docker")).unwrap();
    fs::write(h.p("etc/docker/daemon.json"), ORIGINAL).unwrap();
    let before = tree(h.tmp.path());
    let units = [
        "--front-door",
        "--unit-dir",
        h.p("etc/systemd/system").to_str().unwrap(),
        "--vendor-unit-dir",
        h.p("lib/systemd/system").to_str().unwrap(),
    ]
    .map(str::to_owned);
    let install = |extra: &[&str]| {
        let mut args = vec!["install"];
        args.extend(units.iter().map(String::as_str));
        args.extend(extra);
        h.ctl(&args)
    };
    let apply = "  systemctl daemon-reload\n  systemctl restart docker.socket docker.service\n  systemctl enable --now ds01-front-door.socket\n";

    let dry = install(&["--dry-run"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let out = stdout(&dry);
    let drop_in = h.p("etc/systemd/system/docker.socket.d/ds01-front-door.conf");
    assert!(out.contains(&format!("would install {}\n", drop_in.display())), "{out}");
    assert!(out.contains(&format!("would install {}\n", h.p("usr/bin/ds01-front-door").display())), "{out}");
    assert!(
        out.contains("+ListenStream=/run/ds01/dockerd.sock\n") && out.contains("+SocketGroup=docker\n"),
        "{out}"
    );
    assert!(out.contains("would replace ") && out.contains("ds01-front-door.service (kept as "), "{out}");
    assert!(out.contains(&format!("Then, to apply it:\n{apply}")), "{out}");
    assert_eq!(tree(h.tmp.path()), before, "a dry run writes nothing");
    assert_eq!(h.daemon(), ORIGINAL);

    let o = install(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("To apply it, run:\n{apply}")), "{}", stdout(&o));
    assert!(!stdout(&o).contains("Reload Docker"), "the restart reloads daemon.json too: {}", stdout(&o));
    let staged = shim().parent().unwrap().join("ds01-front-door");
    assert_eq!(fs::read(h.p("usr/bin/ds01-front-door")).unwrap(), fs::read(staged).unwrap());
    assert_eq!(
        fs::read_to_string(&drop_in).unwrap(),
        "# Written by `ds01ctl install --front-door` (`ds01ctl uninstall` removes it): dockerd's own\n\
         # socket is root's only; users reach Docker through ds01-front-door.\n\
         [Socket]\nListenStream=\nListenStream=/run/ds01/dockerd.sock\nSocketMode=0600\nSocketUser=root\nSocketGroup=root\n"
    );
    assert_eq!(
        fs::read_to_string(h.p("etc/systemd/system/ds01-front-door.socket")).unwrap(),
        "# Written by `ds01ctl install --front-door`; `ds01ctl uninstall` removes it.\n[Unit]\n\
         Description=ds01 front door socket: the Docker socket users reach\n\n[Socket]\n\
         ListenStream=/var/run/docker.sock\nSocketMode=0660\nSocketUser=root\nSocketGroup=docker\n\
         Service=ds01-front-door.service\n\n[Install]\nWantedBy=sockets.target\n"
    );
    assert_eq!(
        fs::read_to_string(h.p("etc/systemd/system/ds01-front-door.service")).unwrap(),
        format!(
            "# Written by `ds01ctl install --front-door`; `ds01ctl uninstall` removes it.\n[Unit]\n\
             Description=ds01 front door: each user's Docker calls, known by uid, forwarded to dockerd\n\
             After=docker.service\nRequires=ds01-front-door.socket\n\n[Service]\nExecStart={}\n\
             Environment=DS01_RUNTIME_CONFIG={}\nRestart=on-failure\nLimitNOFILE=1048576\n",
            h.p("usr/bin/ds01-front-door").display(),
            h.p("etc/ds01/runtime.yaml").display()
        )
    );
    let kept: Vec<String> = fs::read_dir(h.p("etc/systemd/system"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ds01-front-door.service.ds01-backup-"))
        .collect();
    assert_eq!(kept.len(), 1, "the hand-made unit is kept: {kept:?}");
    assert_eq!(
        fs::read_to_string(h.p("etc/systemd/system").join(&kept[0])).unwrap(),
        "# a hand-made front door\n"
    );
    let v: Value = serde_json::from_str(&h.daemon()).unwrap();
    assert_eq!(v["runtimes"]["ds01"]["path"], h.p("usr/bin/ds01-runtime").to_str().unwrap());
    let manifest: Value =
        serde_json::from_slice(&fs::read(h.p("var/lib/ds01/install.json")).unwrap()).unwrap();
    assert_eq!(manifest["front_door"], true);

    let again = install(&[]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stdout(&again).trim(), "nothing to change");

    // What `systemctl enable --now ds01-front-door.socket` leaves.
    fs::create_dir_all(h.p("etc/systemd/system/sockets.target.wants")).unwrap();
    std::os::unix::fs::symlink(
        h.p("etc/systemd/system/ds01-front-door.socket"),
        h.p("etc/systemd/system/sockets.target.wants/ds01-front-door.socket"),
    )
    .unwrap();
    let u = h.ctl(&["uninstall"]);
    assert!(u.status.success(), "{}", stderr(&u));
    let out = stdout(&u);
    assert!(
        out.contains(
            "To apply it, run:\n  systemctl stop ds01-front-door.socket ds01-front-door.service\n  systemctl daemon-reload\n  systemctl restart docker.socket docker.service\n"
        ),
        "{out}"
    );
    let mut after = tree(h.tmp.path());
    // The wants folder systemctl made is not install's to remove; its link is.
    assert_eq!(after.remove("etc/systemd/system/sockets.target.wants").map(|e| e.0), Some('d'));
    assert_eq!(after, before, "uninstall puts every file back as it was, byte for byte");
    let back: Value = serde_json::from_str(&h.daemon()).unwrap();
    let orig: Value = serde_json::from_str(ORIGINAL).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&orig).unwrap());
}

#[test]
fn front_door_install_is_refused_while_dockerd_listens_where_users_reach() {
    let h = Host::new("doorno");
    docker_units(&h);
    fs::create_dir_all(h.p("etc/docker")).unwrap();
    let daemon = "{\"hosts\": [\"unix:///var/run/docker.sock\"]}\n";
    fs::write(h.p("etc/docker/daemon.json"), daemon).unwrap();
    let before = tree(h.tmp.path());
    let o = h.ctl(&[
        "install",
        "--front-door",
        "--unit-dir",
        h.p("etc/systemd/system").to_str().unwrap(),
        "--vendor-unit-dir",
        h.p("lib/systemd/system").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("daemon.json \"hosts\" lists unix:///var/run/docker.sock (a socket dockerd makes at /var/run/docker.sock for group docker): remove it from \"hosts\""),
        "{e}"
    );
    assert_eq!(tree(h.tmp.path()), before, "nothing written");
    assert_eq!(h.daemon(), daemon);

    // Without Docker's units there is nothing to move.
    fs::write(h.p("etc/docker/daemon.json"), "{}\n").unwrap();
    fs::remove_file(h.p("lib/systemd/system/docker.socket")).unwrap();
    let o = h.ctl(&[
        "install",
        "--front-door",
        "--unit-dir",
        h.p("etc/systemd/system").to_str().unwrap(),
        "--vendor-unit-dir",
        h.p("lib/systemd/system").to_str().unwrap(),
    ]);
    assert!(!o.status.success() && stderr(&o).contains("no docker.socket in "), "{}", stderr(&o));
}
