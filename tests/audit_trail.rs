//! The audit trail through the real runc and the private dockerd: a container's whole life in
//! order, refusals with their reason, 100 writers at once with every line whole, a read-only
//! log under `audit_failure: allow` and `refuse`.

mod common;

use common::dockerd::{require_docker, Dockerd, Opts};
use common::*;
use serde_json::Value;
use std::fs;
use std::process::Command;

fn events(log: &std::path::Path) -> Vec<Value> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is whole JSON"))
        .collect()
}

fn audit(settings: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new(ds01ctl()).arg("--config").arg(settings).arg("audit").args(args).output().unwrap();
    assert!(o.status.success(), "ds01ctl audit: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn a_containers_life_in_order_through_runc() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("life", "");
    let user = unique("aud");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "sleep 30", &[("ds01.user", &user)]);
    let id = unique("a");
    assert!(rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]).status.success());
    assert!(rc.shim(&["start", &id]).status.success());
    assert!(rc.shim(&["kill", &id, "KILL"]).status.success());
    wait_for(10, || stdout(&rc.runc(&["state", &id])).contains("stopped").then_some(()));
    assert!(rc.shim(&["delete", &id]).status.success());
    let log = rc.tmp.path().join("log/events.jsonl");
    let seen = wait_for(10, || {
        let ev = events(&log);
        (ev.iter().filter(|e| e["container"] == id.as_str()).count() >= 4).then_some(ev)
    })
    .expect("four events recorded");
    let mine: Vec<&Value> = seen.iter().filter(|e| e["container"] == id.as_str()).collect();
    let kinds: Vec<&str> = mine.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["create", "start", "kill", "delete"]);
    // Read as DS01's readers read it: DS01's event names, `user`, `details.container`, and
    // timestamps Python 3.8's datetime.fromisoformat accepts.
    let types: Vec<&str> = mine.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["container.create", "container.start", "container.stop", "container.remove"]);
    for e in &mine {
        assert_eq!(e["owner"], user.as_str(), "{e}");
        assert_eq!(e["user"], user.as_str(), "{e}");
        assert_eq!(e["details"]["container"], id.as_str(), "{e}");
        assert_eq!(e["slice"], format!("ds01-student-{user}.slice"), "{e}");
        assert_eq!(e["source"], "ds01-runtime");
        assert!(python38_isoformat(e["timestamp"].as_str().unwrap()), "{e}");
        assert_eq!(e["timestamp"], e["time"]);
    }
    assert_eq!(mine[0]["outcome"], "allowed");
    assert_eq!(mine[0]["identity_source"], "annotation");
    assert_eq!(mine[0]["limits"]["memory"], 32u64 << 30);
    assert_eq!(mine[2]["signal"], "KILL");
    assert_eq!(mine[3]["outcome"], "ok");
    // The same through ds01ctl audit, filtered by user, as a table and as JSON.
    let table = audit(&rc.settings, &["--user", &user]);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(rows[0].contains("create") && rows[3].contains("delete"), "{table}");
    let json = audit(&rc.settings, &["--container", &id[..6], "--event", "kill", "--json"]);
    assert_eq!(json.lines().count(), 1, "{json}");
    // A refusal, with its reason.
    let bad = busybox_bundle(&rc.tmp.path().join("bad"), "true", &[]);
    let rid = unique("r");
    assert!(!rc.shim(&["create", "--bundle", bad.to_str().unwrap(), &rid]).status.success());
    let refused = audit(&rc.settings, &["--outcome", "refused", "--json"]);
    let r: Value = serde_json::from_str(refused.lines().last().unwrap()).unwrap();
    assert_eq!(r["container"], rid.as_str());
    assert!(r["reason"].as_str().unwrap().contains("container has no owner"), "{r}");
    remove_slices("student", &user);
}

#[test]
fn a_hundred_writers_leave_every_line_whole() {
    let tmp = TempDir::new("appenders");
    let log = tmp.path().join("events.jsonl");
    let mut children = vec![];
    for n in 0..100 {
        let log = log.clone();
        children.push(std::thread::spawn(move || {
            for k in 0..20 {
                let mut e =
                    ds01::audit::Event::new(ds01::audit::Kind::Start, std::time::SystemTime::now(), "ok");
                e.container = Some(format!("c{n}-{k}"));
                e.reason = Some("x".repeat(3000 + n * 37));
                ds01::audit::append(&log, &e.to_line()).unwrap();
            }
        }));
    }
    for c in children {
        c.join().unwrap();
    }
    let ev = events(&log);
    assert_eq!(ev.len(), 2000, "none lost");
    let mut ids: Vec<String> = ev.iter().map(|e| e["container"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2000, "none doubled");
}

#[test]
fn an_unwritable_log_allows_or_refuses_as_configured() {
    if !require_docker() {
        return;
    }
    for (policy, should_run) in [("allow", true), ("refuse", false)] {
        // The audit log's directory is a regular file: nothing can be written below it, root or not.
        let d = Dockerd::start(
            &format!("ro{policy}"),
            Opts { settings_extra: &format!("audit_failure: {policy}\n"), ..Opts::default() },
        );
        let text = fs::read_to_string(&d.settings)
            .unwrap()
            .replace("audit_log: log/events.jsonl", "audit_log: blocked/events.jsonl");
        fs::write(&d.settings, text).unwrap();
        fs::write(d.tmp.path().join("blocked"), "not a directory").unwrap();
        let user = unique("ro");
        let o = d.run_ds01(&["--label", &format!("ds01.user={user}"), "ds01-busybox:test", "echo", "ran"]);
        if should_run {
            assert!(o.status.success(), "allow: {}", stderr(&o));
            assert_eq!(stdout(&o).trim(), "ran");
        } else {
            assert!(!o.status.success());
            assert!(stderr(&o).contains("refusing the container (audit_failure: refuse)"), "{}", stderr(&o));
        }
        remove_slices("student", &user);
    }
}

#[test]
fn a_docker_containers_life_appears_in_order() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("audlife", Opts::default());
    let user = unique("dl");
    let name = format!("job._.{user}");
    assert!(d
        .docker(&["run", "-d", "--runtime", "ds01", "--name", &name, "ds01-busybox:test", "sleep", "300"])
        .status
        .success());
    assert!(d.docker(&["stop", "-t", "1", &name]).status.success());
    assert!(d.docker(&["rm", &name]).status.success());
    let want = ["create", "start", "kill", "delete"];
    let got = wait_for(10, || {
        let out = audit(&d.settings, &["--container", &name, "--json"]);
        let kinds: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].as_str().unwrap().to_owned())
            .collect();
        want.iter().all(|w| kinds.iter().any(|k| k == w)).then_some(kinds)
    })
    .expect("the whole life is recorded");
    let pos = |k: &str| got.iter().position(|x| x == k).unwrap();
    assert!(
        pos("create") < pos("start") && pos("start") < pos("kill") && pos("kill") < pos("delete"),
        "{got:?}"
    );
    let first: Value = serde_json::from_str(
        audit(&d.settings, &["--container", &name, "--event", "create", "--json"]).lines().next().unwrap(),
    )
    .unwrap();
    assert_eq!(first["name"], name.as_str());
    assert_eq!(first["image"], "ds01-busybox:test");
    assert_eq!(first["owner"], user.as_str());
    assert_eq!(first["identity_source"], "name");
    remove_slices("student", &user);
}
