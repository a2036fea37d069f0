//! Per-user aggregates on this machine's real cgroups, through the real runc: a user's
//! containers together are held at the user's memory (one is OOM-killed) while another user's
//! is not; a fork bomb stops at tasks_max; the values read back from the cgroup files (v1 or v2,
//! whichever the host has); the container cap per user.

mod common;

use common::*;

const POLICY: &str = "defaults:\n  memory: 200m\n  memory_swap: 200m\n  pids_limit: 1000\n  max_cpus: 2\n  max_containers_per_user: 2\n\
enforcement:\n  aggregate_limits: true\ndefault_group: lim\ngroups:\n  lim:\n    aggregate:\n      memory_max: 64M\n      memory_high: 60M\n      cpu_quota: \"150%\"\n      tasks_max: 20\n";

#[test]
fn a_users_containers_share_the_users_memory_and_tasks() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("agg", "");
    write_policy(rc.tmp.path(), POLICY);
    let (a, b) = (unique("ma"), unique("mb"));
    // Each container puts 40 MiB in its tmpfs /dev/shm (charged to its memory cgroup, exactly,
    // with no transient), says how much it got, and lives a little.
    let eat = "dd if=/dev/zero of=/dev/shm/f bs=1M count=40 2>/dev/null; echo size $(wc -c < /dev/shm/f); sleep 4; echo survived";
    let mut runs = vec![];
    for (n, user) in [(0, &a), (1, &a), (2, &b)] {
        let dir = rc.tmp.path().join(format!("m{n}"));
        let bundle = busybox_bundle(&dir, eat, &[("ds01.user", user)]);
        let id = unique("m");
        let settings = rc.settings.clone();
        let root = rc.root.clone();
        runs.push(std::thread::spawn(move || {
            let out = std::process::Command::new(shim())
                .env("DS01_RUNTIME_CONFIG", settings)
                .args(["--root", root.to_str().unwrap(), "run", "--bundle", bundle.to_str().unwrap(), &id])
                .output()
                .unwrap();
            (out.status.code(), stdout(&out), stderr(&out))
        }));
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    let results: Vec<_> = runs.into_iter().map(|t| t.join().unwrap()).collect();
    let survived =
        |r: &(Option<i32>, String, String)| r.1.contains("size 41943040") && r.1.contains("survived");
    let a_survivors = results[..2].iter().filter(|r| survived(r)).count();
    assert!(a_survivors <= 1, "alice's two containers cannot both hold 80 MiB under 64M: {results:?}");
    assert!(survived(&results[2]), "bob's container is not held by alice's slice: {:?}", results[2]);
    let f = slice_files("lim", &a);
    let oom = &f.oom;
    assert!(oom.lines().any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0") || a_survivors < 2, "{oom}");
    // The values read back from the cgroup files.
    assert_eq!(f.memory_max, "67108864");
    assert_eq!(f.memory_high, "62914560");
    assert_eq!(f.cpu_quota, "150000");
    assert_eq!(f.cpu_period, "100000");
    assert_eq!(f.tasks_max, "20");
    for u in [&a, &b] {
        remove_slices("lim", u);
    }
}

#[test]
fn a_fork_bomb_stops_at_tasks_max() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("bomb", "");
    write_policy(rc.tmp.path(), POLICY);
    let user = unique("fb");
    // An inner shell forks until it cannot (and dies of it); the outer one then counts with
    // builtins only, since no fork is left: pids.current of its cgroup, which runc mounts at
    // /sys/fs/cgroup/pids on v1, and which is at its /proc/self/cgroup path below the whole
    // hierarchy on v2 (the spec has no cgroup namespace).
    let bomb = "sh -c 'i=0; while [ $i -lt 60 ]; do sleep 3 & i=$((i+1)); done'; \
                f=/sys/fs/cgroup/pids/pids.current; \
                [ -r $f ] || { read l < /proc/self/cgroup; f=/sys/fs/cgroup${l#0::}/pids.current; }; \
                read c < $f; echo $c; wait";
    let b = busybox_bundle(&rc.tmp.path().join("b"), bomb, &[("ds01.user", &user)]);
    let out = rc.shim(&["run", "--bundle", b.to_str().unwrap(), &unique("f")]);
    let procs: usize = stdout(&out).trim().parse().unwrap_or(usize::MAX);
    assert!(procs <= 20, "at most tasks_max=20 processes, saw {procs}: {} {}", stdout(&out), stderr(&out));
    assert!(procs >= 10, "the bomb did run: {procs}");
    assert!(stderr(&out).contains("can't fork"), "forks were refused: {}", stderr(&out));
    // The container's own cap is 1000 (pids_limit): it is the user's slice that stopped it.
    assert_eq!(slice_files("lim", &user).tasks_max, "20");
    remove_slices("lim", &user);
}

#[test]
fn max_containers_per_user_counts_live_containers() {
    if !require_runc() {
        return;
    }
    let rc = Runc::new("count", "");
    write_policy(rc.tmp.path(), POLICY);
    let user = unique("cc");
    let mut ids = vec![];
    for n in 0..3 {
        let b = busybox_bundle(&rc.tmp.path().join(format!("b{n}")), "sleep 30", &[("ds01.user", &user)]);
        let id = unique("c");
        let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]);
        if n < 2 {
            assert!(out.status.success(), "{}", stderr(&out));
            ids.push(id);
        } else {
            assert!(
                stderr(&out).contains(&format!(
                    "{user} already runs 2 containers (max_containers_per_user 2, defaults)"
                )),
                "{}",
                stderr(&out)
            );
        }
    }
    // A deleted container no longer counts; one the engine lost (runc deleted it behind our
    // back) is reconciled away too.
    assert!(rc.shim(&["delete", "--force", &ids[0]]).status.success());
    assert!(rc.runc(&["delete", "--force", &ids[1]]).status.success());
    let b = busybox_bundle(&rc.tmp.path().join("b9"), "sleep 30", &[("ds01.user", &user)]);
    let id = unique("c");
    wait_for(5, || {
        let out = rc.shim(&["create", "--bundle", b.to_str().unwrap(), &id]);
        out.status.success().then_some(())
    })
    .expect("admitted again after the deletes");
    rc.shim(&["delete", "--force", &id]);
    remove_slices("lim", &user);
}
