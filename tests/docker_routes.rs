//! Every route around the policy, tried through a real private dockerd as a non-admin and as
//! an admin named by a trusted source: capabilities, security profiles, host namespaces and
//! devices, `docker update`, `docker exec`, two owner labels; and `docker build` with no labels.

mod common;

use common::dockerd::{require_docker, Dockerd, Opts};
use common::*;

const IMG: &str = "ds01-busybox:test";
const ADMIN: &str = "datasciencelab";

fn trusting_labels() -> Opts<'static> {
    Opts { settings_extra: "identity:\n  trusted_for_admin: [label]\n", ..Opts::default() }
}

/// Each route, refused before runc for a student with its one-line reason in `docker run`'s
/// error, and allowed for an admin named by a trusted label.
#[test]
fn routes_beyond_the_defaults_are_refused_for_users_and_open_to_trusted_admins() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("routes", trusting_labels());
    let alice = unique("alice");
    let blk = d.tmp.path().join("blk");
    let ok = std::process::Command::new("mknod").arg(&blk).args(["b", "7", "200"]).status().unwrap();
    assert!(ok.success(), "mknod");
    let device = format!("{}:/dev/xd", blk.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--cap-add", "SYS_ADMIN"], "capability SYS_ADMIN (--cap-add) is refused"),
        (vec!["--cap-add", "ALL"], "capability DAC_READ_SEARCH (--cap-add) is refused"),
        (vec!["--security-opt", "seccomp=unconfined"], "seccomp=unconfined (--security-opt) is refused"),
        (vec!["--pid", "host"], "pid namespace of the host (--pid host) is refused"),
        (vec!["--ipc", "host"], "ipc namespace of the host (--ipc host) is refused"),
        (vec!["--uts", "host"], "uts namespace of the host (--uts host) is refused"),
        (vec!["--device", &device], "block device /dev/xd (--device) is refused"),
        (
            vec!["--device-cgroup-rule", "b *:* rwm"],
            "device rule 'b *:* rwm' (--device-cgroup-rule) is refused",
        ),
        (
            vec!["--device-cgroup-rule", "c 4:* rwm"],
            "device rule 'c 4:* rwm' (--device-cgroup-rule) is refused",
        ),
        (
            vec!["--security-opt", "systempaths=unconfined"],
            "systempaths=unconfined (--security-opt) is refused",
        ),
        (vec!["--oom-score-adj", "-500"], "--oom-score-adj -500 is refused"),
        (vec!["--privileged"], "privileged containers are refused"),
    ];
    for (opts, want) in &cases {
        let user = format!("ds01.user={alice}");
        let mut args = vec!["--label", &user];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[IMG, "true"]);
        let o = d.run_ds01(&args);
        assert!(!o.status.success(), "{opts:?} ran for a student");
        let err = stderr(&o);
        assert!(err.contains(&format!("ds01-runtime: {want}")), "{opts:?}: {err}");
        assert!(
            err.contains("only admins named by a trusted identity source may") || opts[0] == "--privileged",
            "{err}"
        );
    }
    let admin = format!("ds01.user={ADMIN}");
    for (opts, _) in &cases {
        let mut args = vec!["--label", &admin];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[IMG, "true"]);
        let o = d.run_ds01(&args);
        // This VM's own bounding set lacks a few capabilities, so runc itself may fail on ALL
        // or --privileged; what matters is that the runtime let it through.
        assert!(
            !stderr(&o).contains("ds01-runtime:"),
            "{opts:?} refused for a trusted admin: {}",
            stderr(&o)
        );
        assert!(o.status.success() || stderr(&o).contains("runc create failed"), "{opts:?}: {}", stderr(&o));
    }
    // A rule for every NVIDIA device is taken out (no GPU was granted): the container runs
    // without it, and its device cgroup opens no GPU.
    let o = d.run_ds01(&[
        "--label",
        &format!("ds01.user={alice}"),
        "--device-cgroup-rule",
        "c 195:* rwm",
        IMG,
        "cat",
        "/sys/fs/cgroup/devices/devices.list",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("c 195:"), "{}", stdout(&o));
    // A volume whose local driver options bind a host folder is the host's folder.
    let o = d.docker(&[
        "volume",
        "create",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        "device=/etc",
        "hostetc",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.run_ds01(&["--label", &format!("ds01.user={alice}"), "-v", "hostetc:/x", IMG, "true"]);
    assert!(!o.status.success(), "a bind volume of /etc ran for a student");
    assert!(
        stderr(&o).contains("ds01-runtime: a volume that mounts none /etc (--mount volume-opt) is refused"),
        "{}",
        stderr(&o)
    );
    let o = d.docker(&["volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "scratch"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.run_ds01(&["--label", &format!("ds01.user={alice}"), "-v", "scratch:/x", IMG, "true"]);
    assert!(o.status.success(), "a tmpfs volume: {}", stderr(&o));
    // Allowed by default: SYS_PTRACE (debuggers), and used inside.
    let user = format!("ds01.user={alice}");
    let o = d.run_ds01(&[
        "--label",
        &user,
        "--cap-add",
        "SYS_PTRACE",
        IMG,
        "grep",
        "CapEff",
        "/proc/self/status",
    ]);
    assert!(o.status.success(), "SYS_PTRACE: {}", stderr(&o));
    // Two owner labels naming different users.
    let o = d.run_ds01(&["--label", &format!("DS01_USER={alice}"), "--label", "ds01.user=bob", IMG, "true"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ds01-runtime: owner conflict: label ds01.user says bob, label DS01_USER says"),
        "{}",
        stderr(&o)
    );
    let o =
        d.run_ds01(&["--label", "aime.mlc.USER=bob", "--label", &format!("ds01.user={alice}"), IMG, "true"]);
    assert!(stderr(&o).contains("owner conflict"), "{}", stderr(&o));
    remove_slices("student", &alice);
}

/// `docker update` within the caps works and is recorded; over them, refused and recorded.
/// `docker exec` runs and is recorded with its command line; `--privileged`, refused.
#[test]
fn docker_update_and_exec_are_held_to_the_policy_and_recorded() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("upd", trusting_labels());
    let alice = unique("alice");
    let o = d.docker(&[
        "run",
        "-d",
        "--runtime",
        "ds01",
        "--label",
        &format!("ds01.user={alice}"),
        IMG,
        "sleep",
        "300",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();

    let o = d.docker(&["update", "--memory", "100g", "--memory-swap", "100g", &id]);
    assert!(!o.status.success(), "raised memory to 100g");
    assert!(
        stderr(&o).contains("ds01-runtime: update: memory 100g exceeds 32g per container"),
        "{}",
        stderr(&o)
    );
    let o = d.docker(&["update", "--pids-limit", "-1", &id]);
    assert!(!o.status.success(), "lifted pids to max");
    assert!(
        stderr(&o).contains("ds01-runtime: update: pids unlimited exceeds 4096 per container"),
        "{}",
        stderr(&o)
    );
    let o = d.docker(&["update", "--memory", "64m", "--memory-swap", "64m", "--pids-limit", "100", &id]);
    assert!(o.status.success(), "within the caps: {}", stderr(&o));
    let o = d.docker(&[
        "exec",
        &id,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
        "/sys/fs/cgroup/pids/pids.max",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).split_whitespace().collect::<Vec<_>>(), ["67108864", "100"], "applied");

    let o = d.docker(&["exec", "--privileged", &id, "true"]);
    assert!(!o.status.success(), "exec --privileged ran");
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(said.contains("ds01-runtime: exec: capability"), "{said}");
    let o = d.docker(&["exec", "--user", "0", &id, "echo", "hi there"]);
    assert!(o.status.success() && stdout(&o).contains("hi there"), "{}", stderr(&o));

    let settings_dir = d.settings.parent().unwrap().to_path_buf();
    let events = audit_events(&settings_dir);
    let updates = events_of(&events, &id, "update");
    let outcomes: Vec<&str> = updates.iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["refused", "refused", "allowed"], "{updates:?}");
    assert_eq!(updates[0]["limits"]["memory"], 100i64 << 30);
    assert_eq!(updates[2]["limits"]["pids"], 100);
    assert!(updates.iter().all(|e| e["owner"] == alice.as_str()));
    let execs = events_of(&events, &id, "exec");
    assert!(execs.iter().any(|e| e["outcome"] == "refused" && e["owner"] == alice.as_str()), "{execs:?}");
    assert!(
        execs
            .iter()
            .any(|e| e["outcome"] == "allowed" && e["command"] == serde_json::json!(["echo", "hi there"])),
        "{execs:?}"
    );
    assert!(execs.iter().all(|e| e["event_type"] == "container.exec"));
    let _ = d.docker(&["rm", "-f", &id]);
    remove_slices("student", &alice);
}

/// `docker build` (the classic builder) with no labels: its RUN steps run in the build slice.
#[test]
fn docker_build_runs_its_steps_in_the_build_slice() {
    if !require_docker() {
        return;
    }
    let d = Dockerd::start("build", Opts { default_runtime: true, ..Opts::default() });
    let ctx = d.tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {IMG}\nRUN grep memory /proc/self/cgroup > /cg\nCOPY f /f\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("f"), "hello\n").unwrap();
    let o = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .args(["build", "-t", "ds01-built:test"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(o.status.success(), "docker build: {}\n{}\n{}", stdout(&o), stderr(&o), d.log());
    let o = d.docker(&["run", "--rm", "--label", "ds01.user=rita", "ds01-built:test", "cat", "/cg", "/f"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("/ds01.slice/ds01-build.slice/docker-"),
        "the RUN step's cgroup: {}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("hello"));
    let events = audit_events(d.settings.parent().unwrap());
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "create" && e["outcome"] == "allowed" && e["slice"] == "ds01-build.slice"),
        "the build step's create is recorded"
    );
}
