//! The front door with real users (useradd), the real docker CLI run with their uids, and a
//! real dockerd behind it whose own socket only root can reach.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::dockerd::require_docker;
use common::front_door::{user, Door, User};
use common::*;

const IMAGE: &str = "ds01-busybox:test";

fn first_line(o: &std::process::Output) -> String {
    stderr(o).lines().next().unwrap_or("").to_owned()
}

/// The audit events of one container id.
fn events_of_container(door: &Door, id: &str) -> Vec<serde_json::Value> {
    audit_events(door.d.tmp.path()).into_iter().filter(|e| e["container"] == id).collect()
}

fn users(door: &Door, names: &[&str]) -> Vec<User> {
    names.iter().map(|n| user(n, door.d.tmp.path())).collect()
}

/// Makes `name` an admin of the test policy (`access_control.admin_users`).
fn make_admin(door: &Door, name: &str) {
    let p = door.d.tmp.path().join("policy/resource-limits.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    let text = text.replace(
        "  admin_users:\n    - datasciencelab\n",
        &format!("  admin_users:\n    - datasciencelab\n    - {name}\n"),
    );
    assert!(text.contains(&format!("- {name}")), "the shipped policy's admin_users changed shape");
    std::fs::write(p, text).unwrap();
}

#[test]
fn the_caller_owns_what_it_creates_and_cannot_claim_for_another() {
    if !require_docker() {
        return;
    }
    let mut door = Door::start("fdid", "");
    let [alice, bob]: [User; 2] = users(&door, &["fdalice", "fdbob"]).try_into().ok().unwrap();

    // A plain run, no label, no name: the caller's slice, recorded as verified.
    let o = door.docker(&alice, &["run", "--name", "plain", IMAGE, "cat", "/proc/self/cgroup"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), door.door_log());
    assert!(stdout(&o).contains("/ds01-student-fdalice.slice/"), "{}", stdout(&o));
    let id = stdout(&door.root_docker(&["inspect", "-f", "{{.Id}}", "plain"])).trim().to_owned();
    let create = events_of_container(&door, &id).into_iter().find(|e| e["event"] == "create").unwrap();
    assert_eq!(create["owner"], "fdalice");
    assert_eq!(create["identity_source"], "verified");
    let label = door.docker(&bob, &["inspect", "-f", "{{index .Config.Labels \"ds01.user\"}}", "plain"]);
    assert_eq!(stdout(&label).trim(), "fdalice", "listing and inspect stay open: {}", stderr(&label));

    // Claims for someone else, in every form: one line, Docker's error form.
    let claims: &[(&[&str], &str)] = &[
        (&["--label", "ds01.user=fdbob"], "label ds01.user"),
        (&["--label", "DS01_USER=fdbob"], "label DS01_USER"),
        (&["--label", "aime.mlc.USER=fdbob"], "label aime.mlc.USER"),
        (&["--name", "web._.fdbob"], "name"),
        (&["--cgroup-parent", "ds01-student-fdbob.slice"], "cgroup parent"),
    ];
    for (flags, said) in claims {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[IMAGE, "true"]);
        let o = door.docker(&alice, &args);
        assert!(!o.status.success());
        let line = first_line(&o);
        assert!(
            line.starts_with(
                "docker: Error response from daemon: ds01: fdalice may not create a container for fdbob ("
            ),
            "{flags:?}: {}",
            stderr(&o)
        );
        assert!(line.contains(said), "{line}");
    }
    // The annotation form has no docker 20.10 flag: the API, as curl sends it.
    let o = door
        .command(&alice, "curl")
        .args(["-s", "--unix-socket"])
        .arg(&door.sock)
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(format!(r#"{{"Image":"{IMAGE}","HostConfig":{{"Annotations":{{"ds01.user":"fdbob"}}}}}}"#))
        .arg("http://docker/v1.41/containers/create")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o).trim(),
        r#"{"message":"ds01: fdalice may not create a container for fdbob (annotation ds01.user)"}"#
    );
    // Claims for oneself are fine.
    let o = door.docker(
        &alice,
        &["run", "--rm", "--label", "ds01.user=fdalice", "--name", "me._.fdalice", IMAGE, "true"],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // docker build: the RUN step in the caller's slice, with the caller's limits.
    let ctx = alice.home.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMAGE}\nRUN cat /proc/self/cgroup > /cg\nCOPY note /note\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("note"), "hi\n").unwrap();
    let o = door.docker(&bob, &["build", "-q", "-t", "fdbob-img", alice.home.join("ctx").to_str().unwrap()]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), door.door_log());
    let o = door.docker(&bob, &["run", "--rm", "fdbob-img", "cat", "/cg", "/note"]);
    assert!(stdout(&o).contains("/ds01-student-fdbob.slice/"), "{}", stdout(&o));
    assert!(stdout(&o).contains("hi"));
    let records: Vec<_> = std::fs::read_dir(door.d.tmp.path().join("verified"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("build-"))
        .collect();
    assert!(records.is_empty(), "a build's record outlived it: {records:?}");
    let o = door.docker(&bob, &["build", "--cgroup-parent", "/elsewhere", "-q", ctx.to_str().unwrap()]);
    assert!(stderr(&o).contains("ds01: fdbob may not choose a cgroup parent (/elsewhere)"), "{}", stderr(&o));

    // The record of a container removed on dockerd's own socket is swept when the front door
    // starts; a live container's stays.
    let o = door.docker(&alice, &["create", "--name", "kept", IMAGE, "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let kept = stdout(&o).trim().to_owned();
    let records = door.d.tmp.path().join("verified");
    assert!(records.join(&id).exists() && records.join(&kept).exists());
    let o = door.root_docker(&["rm", "-f", "plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    door.restart_door();
    let swept = wait_for(10, || (!records.join(&id).exists()).then_some(()));
    assert!(swept.is_some(), "the removed container's record was not swept: {}", door.door_log());
    assert!(records.join(&kept).exists(), "a live container's record was swept");
}

#[test]
fn users_stay_out_of_each_others_containers_and_an_admin_does_not() {
    if !require_docker() {
        return;
    }
    let door = Door::start("fdiso", "identity:\n  trusted_for_admin: [verified]\n");
    let [alice, bob, ada]: [User; 3] = users(&door, &["fdalice", "fdbob", "fdada"]).try_into().ok().unwrap();
    make_admin(&door, "fdada");
    let o =
        door.docker(&alice, &["run", "-d", "--name", "work", IMAGE, "sh", "-c", "echo started; sleep 600"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let src = bob.home.join("f");
    std::fs::write(&src, "x").unwrap();
    let refused: &[(&[&str], &str)] = &[
        (&["stop", "-t", "0", "work"], "stop"),
        (&["restart", "-t", "0", "work"], "restart"),
        (&["kill", "work"], "kill"),
        (&["pause", "work"], "pause"),
        (&["rm", "-f", "work"], "remove"),
        (&["rename", "work", "mine"], "rename"),
        (&["update", "--cpus", "1", "work"], "update"),
        (&["exec", "work", "true"], "exec into"),
        (&["logs", "work"], "read the logs of"),
        (&["cp", "work:/bin/sh", "out"], "copy"),
        (&["cp", "f", "work:/f"], "copy"),
        (&["commit", "work"], "commit"),
        (&["export", "-o", "x.tar", "work"], "export"),
        (&["start", "work"], "start"),
        (&["network", "connect", "none", "work"], "connect or disconnect"),
    ];
    for (args, verb) in refused {
        let o = door.docker(&bob, args);
        assert!(!o.status.success(), "{args:?} was let through");
        let line = first_line(&o);
        let expected = format!("ds01: fdbob may not {verb}");
        assert!(
            line.contains(&expected) && line.ends_with("fdalice's container work"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // An attach is an upgrade: the CLI shows only the status of a refused one; the front
    // door's log names the owner.
    let o = door.docker(&bob, &["attach", "--no-stdin", "work"]);
    assert!(first_line(&o).contains("received 403"), "{}", stderr(&o));
    assert!(
        door.door_log().contains("ds01: fdbob may not attach to fdalice's container work"),
        "{}",
        door.door_log()
    );
    // Prune removes only the caller's own stopped containers.
    let o = door.docker(&alice, &["create", "--name", "idle", IMAGE, "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = door.docker(&bob, &["container", "prune", "-f"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(door.root_docker(&["inspect", "idle"]).status.success(), "bob's prune removed alice's container");
    // dockerd reads a form body before the query: such a body is refused, whatever it says.
    let o = door
        .command(&bob, "curl")
        .args(["-s", "--unix-socket"])
        .arg(&door.sock)
        .args(["-d", "container=work", "http://docker/v1.41/commit?container=mine"])
        .output()
        .unwrap();
    assert!(stdout(&o).contains("ds01: a form-encoded body is refused"), "{}", stdout(&o));
    // Plugins and the swarm are the admins'.
    let o = door.docker(&bob, &["swarm", "init"]);
    assert!(first_line(&o).contains("ds01: fdbob may not change the swarm: admins only"), "{}", stderr(&o));

    // The owner and an admin may.
    let o = door.docker(&alice, &["exec", "work", "echo", "mine"]);
    assert_eq!(stdout(&o).trim(), "mine", "{}", stderr(&o));
    let o = door.docker(&ada, &["logs", "work"]);
    assert_eq!(stdout(&o).trim(), "started", "{}", stderr(&o));
    let o = door.docker(&ada, &["exec", "work", "echo", "admin"]);
    assert_eq!(stdout(&o).trim(), "admin", "{}", stderr(&o));
    let o = door.docker(&ada, &["rm", "-f", "work", "idle"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // A verified owner may be trusted for admin rights: the admin's container with an extra
    // capability runs, a user's is refused by the runtime.
    let o = door.docker(&ada, &["run", "--rm", "--cap-add", "SYS_ADMIN", IMAGE, "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = door.docker(&alice, &["run", "--rm", "--cap-add", "SYS_ADMIN", IMAGE, "true"]);
    assert!(!o.status.success() && stderr(&o).contains("SYS_ADMIN"), "{}", stderr(&o));

    // Every refusal is in the audit log, with the caller and the request.
    let refused: Vec<_> = audit_events(door.d.tmp.path())
        .into_iter()
        .filter(|e| e["event_type"] == "docker.request_refused")
        .collect();
    assert!(
        refused.iter().any(|e| e["user"] == "fdbob"
            && e["name"].as_str().is_some_and(|n| n.starts_with("POST /v1.41/containers/work/stop"))
            && e["reason"].as_str().is_some_and(|r| r.contains("fdalice's container work"))),
        "{refused:#?}"
    );
}

#[test]
fn streams_terminals_compose_and_a_restarted_dockerd_work_through_it() {
    if !require_docker() {
        return;
    }
    let mut door = Door::start("fdstr", "");
    let [alice]: [User; 1] = users(&door, &["fdalice"]).try_into().ok().unwrap();

    // stdin through an attach, half-closed at its end.
    let o = door.docker_in(
        &alice,
        &["run", "--rm", "-i", IMAGE, "sh", "-c", "wc -c"],
        Some(&vec![b'z'; 300_000]),
    );
    assert_eq!(stdout(&o).trim(), "300000", "{}", stderr(&o));
    let o = door.docker(
        &alice,
        &[
            "run",
            "-d",
            "--name",
            "st",
            IMAGE,
            "sh",
            "-c",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // exec -it through a pty (script gives the CLI a terminal).
    let o = door
        .command(&alice, "script")
        .args(["-qec", "docker exec -it st sh -c 'tty && echo via-tty'", "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&o).replace('\r', "");
    assert!(out.contains("/dev/pts/") && out.contains("via-tty"), "{out}\n{}", stderr(&o));
    // run -it with a TTY.
    let o = door
        .command(&alice, "script")
        .args(["-qec", &format!("docker run --rm -it {IMAGE} sh -c 'tty; echo tty-run'"), "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(stdout(&o).contains("tty-run"), "{}\n{}", stdout(&o), stderr(&o));
    // logs -f streams as it is written.
    let mut follow = door.command(&alice, "docker");
    follow
        .args(["logs", "-f", "st"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = follow.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let n = out.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).lines().filter(|l| l.starts_with("tick")).count() > 12 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let ticks: Vec<u32> = String::from_utf8_lossy(&seen)
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .collect();
    assert!(ticks.len() > 12, "logs -f: {}", String::from_utf8_lossy(&seen));
    assert!(ticks.windows(2).all(|w| w[1] == w[0] + 1), "logs -f lost or reordered lines: {ticks:?}");
    // docker cp both ways, 8 MiB.
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(alice.home.join("big"), &big).unwrap();
    let o = door.docker(&alice, &["cp", "big", "st:/big"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = door.docker(&alice, &["cp", "st:/big", "back"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read(alice.home.join("back")).unwrap() == big, "docker cp changed bytes");
    // docker save and load: a tar streamed out, then in.
    let o = door.docker(&alice, &["save", "-o", "img.tar", IMAGE]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = door.docker(&alice, &["load", "-i", "img.tar"]);
    assert!(o.status.success() && stdout(&o).contains(IMAGE), "{}{}", stdout(&o), stderr(&o));
    let o = door.docker(&alice, &["stats", "--no-stream", "--format", "{{.Name}}"]);
    assert!(stdout(&o).contains("st"), "{}", stderr(&o));
    // events stream.
    let mut ev = door.command(&alice, "docker");
    ev.args(["events", "--format", "{{.Action}} {{.Actor.Attributes.name}}"])
        .stdout(std::process::Stdio::piped());
    let mut events = ev.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let o = door.docker(&alice, &["rm", "-f", "st"]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let mut text = String::new();
    let _ = events.stdout.take().unwrap().read_to_string(&mut text);
    let _ = events.wait();
    assert!(text.contains("destroy st"), "events: {text}");

    // Debian's docker-compose, up and down as the user.
    if require(which("docker-compose").is_some(), "needs docker-compose (apt-get install docker-compose)") {
        let proj = alice.home.join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        std::os::unix::fs::chown(&proj, Some(alice.uid), None).unwrap();
        std::fs::write(
            proj.join("docker-compose.yml"),
            format!("version: '2.4'\nservices:\n  app:\n    image: {IMAGE}\n    command: sleep 600\n    network_mode: none\n"),
        )
        .unwrap();
        let compose = |args: &[&str]| {
            let mut c = door.command(&alice, "docker-compose");
            c.current_dir(&proj).args(args);
            c.output().unwrap()
        };
        let o = compose(&["up", "-d"]);
        assert!(o.status.success(), "compose up: {}", stderr(&o));
        let o = door.root_docker(&[
            "ps",
            "--filter",
            "label=com.docker.compose.project=proj",
            "--format",
            "{{.Label \"ds01.user\"}}",
        ]);
        assert_eq!(stdout(&o).trim(), "fdalice", "{}", stderr(&o));
        let o = compose(&["down", "-t", "0"]);
        assert!(o.status.success(), "compose down: {}", stderr(&o));
    }

    // Garbage, half-sent and slow requests cost their own connection only.
    let mut slow = UnixStream::connect(&door.sock).unwrap();
    slow.write_all(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d").unwrap();
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /containers/create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
        b"\x00\xff\r\n\r\n",
    ] {
        let mut s = UnixStream::connect(&door.sock).unwrap();
        s.write_all(junk).unwrap();
        let _ = s.shutdown(std::net::Shutdown::Write);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
    }
    let o = door.docker(&alice, &["ps", "-a"]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(slow);

    // dockerd down: the usual one line; back up: the next call works, with no restart of ours.
    door.d.stop();
    let o = door.docker(&alice, &["ps"]);
    assert!(first_line(&o).contains("Cannot connect to the Docker daemon at unix://"), "{}", stderr(&o));
    door.d.restart();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&door.d.sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = door.docker(&alice, &["run", "--rm", IMAGE, "echo", "back"]);
    assert_eq!(stdout(&o).trim(), "back", "{}", stderr(&o));
}
