//! The calls on a container that could lift it above its policy, through the shim in front of
//! the real runc: `update -r -` and `-r FILE`, `exec --process`, `restore`, argv the scan
//! cannot read for sure, and a creator's forged `ds01.*` annotations.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::process::Stdio;

fn memory_limit(user: &str, id: &str) -> String {
    let p = format!(
        "/sys/fs/cgroup/memory/ds01.slice/ds01-student.slice/ds01-student-{user}.slice/docker-{id}.scope/memory.limit_in_bytes"
    );
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")).trim().to_owned()
}

/// A running container of a student, through the shim.
fn started(rc: &Runc, user: &str) -> String {
    let bundle = busybox_bundle(&rc.tmp.path().join(unique("b")), "sleep 60", &[("ds01.user", user)]);
    let id = unique("g");
    let o = rc.shim(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(o.status.success(), "create: {}", stderr(&o));
    assert!(rc.shim(&["start", &id]).status.success());
    id
}

/// The shim's `update` with `body` on its stdin, as containerd's go-runc sends it.
fn update_from_stdin(rc: &Runc, args: &[&str], body: &[u8]) -> std::process::Output {
    let mut child = std::process::Command::new(shim())
        .env("DS01_RUNTIME_CONFIG", &rc.settings)
        .arg("--root")
        .arg(&rc.root)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn update_from_stdin_or_a_file_is_held_to_the_caps() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("upd", "");
    let user = unique("ulla");
    let id = started(&rc, &user);
    assert_eq!(memory_limit(&user, &id), (32u64 << 30).to_string(), "the cap from create");

    let o =
        update_from_stdin(&rc, &["update", "--resources=-", &id], br#"{"memory":{"limit":107374182400}}"#);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).trim(), "ds01-runtime: update: memory 100g exceeds 32g per container, defaults");
    assert_eq!(memory_limit(&user, &id), (32u64 << 30).to_string(), "unchanged");

    // Under the cap, from stdin: runc reads the same bytes the shim judged.
    let o = update_from_stdin(&rc, &["update", "-r", "-", &id], br#"{"memory":{"limit":67108864}}"#);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(memory_limit(&user, &id), "67108864", "applied by runc");

    let file = rc.tmp.path().join("res.json");
    fs::write(&file, br#"{"pids":{"limit":-1}}"#).unwrap();
    let o = rc.shim(&["update", "-r", file.to_str().unwrap(), &id]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("update: pids unlimited exceeds 4096 per container"), "{}", stderr(&o));
    fs::write(&file, br#"{"memory":{"limit":134217728}}"#).unwrap();
    let o = rc.shim(&["update", "-r", file.to_str().unwrap(), &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(memory_limit(&user, &id), "134217728");

    let events = audit_events(rc.tmp.path());
    let got: Vec<&str> =
        events_of(&events, &id, "update").iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(got, ["refused", "allowed", "refused", "allowed"]);
    assert!(rc.shim(&["kill", &id, "KILL"]).status.success());
    remove_slices("student", &user);
}

#[test]
fn exec_with_more_than_the_container_is_refused_and_every_exec_recorded() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("exec", "");
    let user = unique("eve");
    let id = started(&rc, &user);
    let p = rc.tmp.path().join("p.json");
    let process = |caps: &[&str]| {
        serde_json::json!({
            "args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin"], "noNewPrivileges": true,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}
        })
    };
    fs::write(&p, process(&["CAP_KILL", "CAP_SYS_ADMIN"]).to_string()).unwrap();
    let o = rc.shim(&["exec", "--process", p.to_str().unwrap(), &id]);
    assert!(!o.status.success());
    assert!(stderr(&o).starts_with("ds01-runtime: exec: capability SYS_ADMIN is refused"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1);
    let o = rc.shim(&["exec", "--cap", "CAP_SYS_MODULE", &id, "true"]);
    assert!(stderr(&o).contains("exec: capability SYS_MODULE is refused"), "{}", stderr(&o));
    // A process file without noNewPrivileges runs without it (runc's default): refused.
    let mut without = process(&["CAP_KILL"]);
    without.as_object_mut().unwrap().remove("noNewPrivileges");
    fs::write(&p, without.to_string()).unwrap();
    let o = rc.shim(&["exec", "--process", p.to_str().unwrap(), &id]);
    assert!(stderr(&o).contains("exec: dropping no-new-privileges is refused"), "{}", stderr(&o));
    fs::write(&p, process(&["CAP_KILL"]).to_string()).unwrap();
    let o = rc.shim(&["exec", "--process", p.to_str().unwrap(), &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = rc.shim(&["exec", &id, "echo", "in"]);
    assert!(o.status.success() && stdout(&o).contains("in"), "{}", stderr(&o));
    let events = audit_events(rc.tmp.path());
    let execs = events_of(&events, &id, "exec");
    let got: Vec<(&str, &serde_json::Value)> =
        execs.iter().map(|e| (e["outcome"].as_str().unwrap(), &e["command"])).collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert_eq!(got[0].0, "refused");
    assert_eq!(got[2].0, "refused");
    assert_eq!(got[4], ("allowed", &serde_json::json!(["echo", "in"])));
    assert!(execs.iter().all(|e| e["owner"] == user.as_str()));
    assert!(rc.shim(&["kill", &id, "KILL"]).status.success());
    remove_slices("student", &user);
}

#[test]
fn restore_gets_the_create_pipeline() {
    if !require_runc() {
        return;
    }
    // docker_root is relative to the settings file: <tmp>/docker, where the engine's
    // checkpoints would be.
    let rc = Runc::new("restore", "docker_root: docker\n");
    let cp = rc.tmp.path().join("docker/containers/cp");
    fs::create_dir_all(&cp).unwrap();
    let cp = cp.to_str().unwrap().to_owned();
    let user = unique("rob");
    let dir = rc.tmp.path().join("b");
    let bundle = busybox_bundle(&dir, "sleep 1", &[("ds01.user", &user)]);
    let cfg = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    spec["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into());
    fs::write(&cfg, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let before = fs::read(&cfg).unwrap();
    let id = unique("rs");
    let o = rc.shim(&["restore", "--image-path", &cp, "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ds01-runtime: capability SYS_ADMIN (--cap-add) is refused"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&cfg).unwrap(), before, "bundle unchanged");

    let bundle = busybox_bundle(&dir, "sleep 1", &[("ds01.user", &user)]);
    let before = fs::read(&cfg).unwrap();
    // A checkpoint image of the user's own (it restores whatever credentials it holds), or a
    // security label of the user's choosing: refused, bundle unchanged.
    let own = rc.tmp.path().join("mine");
    fs::create_dir_all(&own).unwrap();
    for args in [
        vec!["restore", "--image-path", own.to_str().unwrap(), "-b", bundle.to_str().unwrap(), &id],
        vec![
            "restore",
            "--image-path",
            &cp,
            "--lsm-profile",
            "apparmor:unconfined",
            "-b",
            bundle.to_str().unwrap(),
            &id,
        ],
    ] {
        let o = rc.shim(&args);
        assert!(!o.status.success());
        assert!(
            stderr(&o).starts_with("ds01-runtime: restore ") && stderr(&o).contains("is refused"),
            "{}",
            stderr(&o)
        );
        assert_eq!(fs::read(&cfg).unwrap(), before, "bundle unchanged");
    }
    let o = rc.shim(&["restore", "--image-path", &cp, "-b", bundle.to_str().unwrap(), &id]);
    // runc itself fails (no checkpoint here); the bundle it was given was patched first.
    let patched: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(patched["annotations"]["ds01.managed"], "true", "{}", stderr(&o));
    assert!(patched["linux"]["cgroupsPath"]
        .as_str()
        .unwrap()
        .contains(&format!("ds01-student-{user}.slice")));
    let events = audit_events(rc.tmp.path());
    let got: Vec<&str> =
        events_of(&events, &id, "restore").iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(got, ["refused", "refused", "refused", "allowed"]);
    remove_slices("student", &user);
}

/// A global flag runc may take and the scan does not know, before a create: refused in one
/// line, nothing created, the bundle unchanged. The same flag before `state` passes to runc.
#[test]
fn argv_the_scan_cannot_read_fails_closed() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("argv", "");
    let bundle = busybox_bundle(&rc.tmp.path().join("b"), "true", &[("ds01.user", "nobody")]);
    let before = fs::read(bundle.join("config.json")).unwrap();
    let id = unique("u");
    for args in [
        vec!["--future-flag", "create", "--bundle", bundle.to_str().unwrap(), &id],
        vec!["create", "--future-flag", "--bundle", bundle.to_str().unwrap(), &id],
        vec!["frobnicate", "--bundle", bundle.to_str().unwrap(), &id],
    ] {
        let o = rc.shim(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.starts_with("ds01-runtime: ") && err.contains("unknown to ds01-runtime"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!rc.runc(&["state", &id]).status.success(), "nothing created");
        assert_eq!(fs::read(bundle.join("config.json")).unwrap(), before);
    }
    let log = fs::read_to_string(&rc.log).unwrap();
    let line: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert!(line["msg"].as_str().unwrap().contains("unknown to ds01-runtime"));
    // runc itself refuses the unknown flag before `state`: its own error, not ours.
    let o = rc.shim(&["--future-flag", "state", &id]);
    assert!(!o.status.success() && !stderr(&o).contains("ds01-runtime"), "{}", stderr(&o));
}

/// `ds01.name`, `ds01.slice`, `ds01.pod` written by the creator never reach an audit line:
/// the create drops them, and the follow-ups read only the runtime's record.
#[test]
fn forged_ds01_annotations_never_reach_the_audit() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("forge", "");
    let user = unique("mal");
    let bundle = busybox_bundle(
        &rc.tmp.path().join("b"),
        "sleep 30",
        &[
            ("ds01.user", &user),
            ("ds01.name", "forged-name"),
            ("ds01.slice", "forged-slice"),
            ("ds01.pod", "forged/pod/x"),
            ("ds01.image", "forged-image"),
            ("ds01.gpus", "none"),
        ],
    );
    let id = unique("f");
    assert!(rc.shim(&["create", "--bundle", bundle.to_str().unwrap(), &id]).status.success());
    assert!(rc.shim(&["start", &id]).status.success());
    let state: serde_json::Value = serde_json::from_slice(&rc.shim(&["state", &id]).stdout).unwrap();
    let ann = state["annotations"].as_object().unwrap();
    assert!(ann.values().all(|v| !v.as_str().unwrap_or("").starts_with("forged")), "{ann:?}");
    assert!(rc.shim(&["kill", &id, "KILL"]).status.success());
    wait_for(10, || stdout(&rc.runc(&["state", &id])).contains("stopped").then_some(()));
    assert!(rc.shim(&["delete", &id]).status.success());
    let events = wait_for(20, || {
        let e = audit_events(rc.tmp.path());
        (!events_of(&e, &id, "delete").is_empty()).then_some(e)
    })
    .expect("the delete is recorded");
    let text = fs::read_to_string(rc.tmp.path().join("log/events.jsonl")).unwrap();
    assert!(!text.contains("forged"), "{text}");
    assert_eq!(events_of(&events, &id, "kill")[0]["slice"], format!("ds01-student-{user}.slice"));
    remove_slices("student", &user);
}
