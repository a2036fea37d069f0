//! The shim in front of the real runc (Debian's runc, busybox-static rootfs): the whole life of
//! a container, pass-through calls, and every bad input's one-line error with nothing changed.

mod common;

use common::*;
use std::fs;

/// create, start, state, kill, delete through the shim; the container sees its slice.
#[test]
fn lifecycle_through_the_shim_lands_in_the_owner_slice() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("life", "");
    let user = unique("alice");
    let bundle =
        busybox_bundle(&rc.tmp.path().join("b"), "cat /proc/self/cgroup; sleep 30", &[("ds01.user", &user)]);
    let id = unique("c");
    let out_file = rc.tmp.path().join("out.txt");
    let out = rc.shim_with(&["create", "--bundle", bundle.to_str().unwrap(), &id], |c| {
        c.stdout(fs::File::create(&out_file).unwrap());
    });
    assert!(out.status.success(), "create failed: {}", stderr(&out));
    assert!(rc.shim(&["start", &id]).status.success());
    let want = format!("/ds01.slice/ds01-student.slice/ds01-student-{user}.slice/docker-{id}.scope");
    let seen = wait_for(10, || fs::read_to_string(&out_file).ok().filter(|s| s.contains("memory:")));
    let seen = seen.expect("the container printed /proc/self/cgroup");
    assert!(seen.lines().any(|l| l.ends_with(&format!("memory:{want}"))), "inside: {seen}");
    assert!(seen.lines().any(|l| l.ends_with(&format!("pids:{want}"))), "inside: {seen}");

    let state = rc.shim(&["state", &id]);
    assert!(state.status.success());
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).expect("state prints only JSON");
    assert_eq!(state["status"], "running");
    let ann = &state["annotations"];
    assert_eq!(ann["ds01.user"], user.as_str());
    assert_eq!(ann["ds01.group"], "student");
    assert_eq!(ann["ds01.slice"], format!("ds01-student-{user}.slice"));
    assert_eq!(ann["ds01.managed"], "true");
    assert_eq!(ann["ds01.identity-source"], "annotation");

    assert!(rc.shim(&["kill", &id, "KILL"]).status.success());
    wait_for(10, || (stdout(&rc.runc(&["state", &id])).contains("stopped")).then_some(()));
    assert!(rc.shim(&["delete", &id]).status.success());
    assert!(!rc.runc(&["state", &id]).status.success(), "deleted");
    remove_slices("student", &user);
}

/// `runc run` (create + start in one) is patched too.
#[test]
fn run_subcommand_is_patched() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("run", "");
    let user = unique("bob");
    let bundle = busybox_bundle(&rc.tmp.path().join("b"), "cat /proc/self/cgroup", &[("ds01.user", &user)]);
    let id = unique("r");
    let out = rc.shim(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("ds01-student-{user}.slice/docker-{id}.scope")),
        "{}",
        stdout(&out)
    );
    remove_slices("student", &user);
}

/// Pass-through calls print exactly what runc prints (engines parse state and features).
#[test]
fn pass_through_output_is_runcs_own() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("pass", "");
    let user = unique("carl");
    let bundle = busybox_bundle(&rc.tmp.path().join("b"), "sleep 30", &[("ds01.user", &user)]);
    let id = unique("p");
    assert!(rc.shim(&["create", "--bundle", bundle.to_str().unwrap(), &id]).status.success());
    for args in [
        vec!["state", id.as_str()],
        vec!["list", "--format", "json"],
        // `ps`'s table has a CPU% column that moves between calls; its json form is the pid list.
        vec!["ps", "--format", "json", id.as_str()],
        vec!["features"],
    ] {
        let ours = rc.shim(&args);
        let theirs = rc.runc(&args);
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
        assert_eq!(stdout(&ours), stdout(&theirs), "{args:?}");
        assert_eq!(stderr(&ours), stderr(&theirs), "{args:?}");
    }
    // runc's own errors stay runc's, with runc's exit code.
    let ours = rc.shim(&["state", "no-such-container"]);
    let theirs = rc.runc(&["state", "no-such-container"]);
    assert_eq!(ours.status.code(), theirs.status.code());
    assert!(!stderr(&ours).contains("ds01"), "{}", stderr(&ours));
    // Our own flag never reaches runc (runc would reject it).
    let o = std::process::Command::new(shim())
        .arg(format!("--ds01-config={}", rc.settings.display()))
        .arg("--root")
        .arg(&rc.root)
        .args(["state", &id])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(rc.shim(&["delete", "--force", &id]).status.success());
    remove_slices("student", &user);
}

/// Helper: a create that must fail with `want` in one line, leave config.json byte-identical and
/// create no container.
fn assert_refused(rc: &Runc, bundle: &std::path::Path, id: &str, want: &str) {
    let cfg = bundle.join("config.json");
    let before = fs::read(&cfg).ok();
    let out = rc.shim(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(!out.status.success(), "create must fail");
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(want), "wanted {want:?} in {err}");
    assert!(stdout(&out).is_empty());
    assert_eq!(fs::read(&cfg).ok(), before, "config.json unchanged");
    assert!(!rc.runc(&["state", id]).status.success(), "no container was created");
    // containerd shows the last error line of --log: JSON with an RFC 3339 time.
    let log = fs::read_to_string(&rc.log).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains(want));
    let t = last["time"].as_str().unwrap();
    assert!(t.len() >= 20 && t.ends_with('Z') && &t[4..5] == "-" && &t[10..11] == "T", "{t}");
    let leftovers: Vec<_> =
        fs::read_dir(bundle).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(
        !leftovers.iter().any(|n| n.to_string_lossy().ends_with(".tmp")),
        "no temp file left: {leftovers:?}"
    );
}

#[test]
fn malformed_config_json_is_a_clear_error() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("malformed", "");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "true", &[("ds01.user", "alice")]);
    fs::write(b.join("config.json"), b"{\"ociVersion\": \"1.0.2\", \"process\": {").unwrap();
    assert_refused(&rc, &b, &unique("m"), "malformed bundle config");
    fs::write(b.join("config.json"), b"[1, 2]").unwrap();
    assert_refused(&rc, &b, &unique("m"), "not a JSON object");
    // An annotation serde_json would read as its own marker: the runtime would see, and write,
    // other annotations than the ones runc reads.
    let b = busybox_bundle(&rc.tmp.path().join("r"), "true", &[("ds01.user", "alice")]);
    let text = fs::read_to_string(b.join("config.json")).unwrap();
    let hidden = text.replacen(
        "\"annotations\": {",
        "\"annotations\": {\"$serde_json::private::RawValue\": \"{}\", ",
        1,
    );
    assert_ne!(hidden, text, "the fixture has annotations");
    fs::write(b.join("config.json"), hidden).unwrap();
    assert_refused(&rc, &b, &unique("m"), "key \"$serde_json::private::RawValue\" is refused");
}

#[test]
fn unreadable_bundle_is_a_clear_error() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("unreadable", "");
    let missing = rc.tmp.path().join("no-such-bundle");
    assert_refused(&rc, &missing, &unique("u"), "cannot read bundle config");
    // A directory where config.json should be.
    let b = rc.tmp.path().join("dirbundle");
    fs::create_dir_all(b.join("config.json")).unwrap();
    assert_refused(&rc, &b, &unique("u"), "cannot read bundle config");
}

#[test]
fn bad_settings_file_is_a_clear_error() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("badsettings", "identity:\n  unattributed: sometimes\n");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "true", &[("ds01.user", "alice")]);
    assert_refused(&rc, &b, &unique("s"), "identity.unattributed");
    let e = fs::read_to_string(&rc.log).unwrap();
    // Line 8: the test settings' four lines and the front door's two come first.
    assert!(e.contains("runtime.yaml") && e.contains("line 8"), "{e}");
    // A bad policy file names its own file.
    let rc = Runc::new("badpolicy", "");
    fs::write(rc.tmp.path().join("policy/resource-limits.yaml"), "defaults:\n  memory: lots\n").unwrap();
    let b = busybox_bundle(&rc.tmp.path().join("b"), "true", &[("ds01.user", "alice")]);
    assert_refused(&rc, &b, &unique("s"), "resource-limits.yaml: line 2: defaults.memory");
}

#[test]
fn unattributed_containers_follow_the_policy() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("unattr", "");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "cat /proc/self/cgroup", &[]);
    assert_refused(&rc, &b, &unique("n"), "container has no owner");
    let rc = Runc::new("unattr-place", "identity:\n  unattributed: place\n");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "cat /proc/self/cgroup", &[]);
    let id = unique("n");
    let out = rc.shim(&["run", "--bundle", b.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("/ds01.slice/ds01-unattributed.slice/docker-{id}.scope")),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_runtime_that_is_the_shim_itself_is_refused_not_looped() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("loop", "");
    let text = fs::read_to_string(&rc.settings).unwrap();
    let text = text.replace("low_level_runtime: runc", &format!("low_level_runtime: {}", shim().display()));
    fs::write(&rc.settings, text).unwrap();
    let b = busybox_bundle(&rc.tmp.path().join("b"), "true", &[("ds01.user", "alice")]);
    assert_refused(&rc, &b, &unique("l"), "is this ds01-runtime itself");
    let out = rc.shim(&["state", "x"]);
    assert!(stderr(&out).contains("is this ds01-runtime itself"), "{}", stderr(&out));
}

#[test]
fn conflicting_or_unsafe_owner_is_refused() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("unsafe", "");
    let b = busybox_bundle(&rc.tmp.path().join("b"), "true", &[("ds01.user", "@@@")]);
    assert_refused(&rc, &b, &unique("x"), "empty once made safe");
}
