use super::*;
use crate::gpu::Mig;

fn gpus(n: u32) -> Vec<Gpu> {
    (0..n)
        .map(|i| Gpu {
            index: i,
            uuid: format!("GPU-{i}"),
            minor: i,
            name: "A100".into(),
            memory_mib: 0,
            mig_enabled: false,
            migs: vec![],
        })
        .collect()
}

fn with_mig(mut inv: Vec<Gpu>, gpu: usize, n: u32) -> Vec<Gpu> {
    inv[gpu].mig_enabled = true;
    inv[gpu].migs = (0..n)
        .map(|j| Mig {
            uuid: format!("MIG-{gpu}-{j}"),
            gi: j + 1,
            ci: 0,
            caps: vec![],
            slices: Some(j % 3 + 1),
        })
        .collect();
    inv
}

fn who(c: &str, owner: &str) -> Who {
    Who {
        container: c.into(),
        name: Some(format!("{c}-name")),
        owner: owner.into(),
        group: "student".into(),
        pid: 1,
        runc_root: "/r".into(),
        docker: false,
    }
}

fn open_quota() -> Quota {
    Quota { per_container: None, per_user: None, allow_full: true, hold_secs: Some(900) }
}

#[test]
fn counts_take_free_gpus_in_order_and_are_exclusive() {
    let inv = gpus(4);
    let mut st = State::default();
    let a = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(2),
        &who("c1", "alice"),
        &open_quota(),
        10,
    )
    .unwrap();
    assert_eq!(a.iter().map(|u| u.uuid.as_str()).collect::<Vec<_>>(), ["GPU-0", "GPU-1"]);
    let b = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(2),
        &who("c2", "bob"),
        &open_quota(),
        10,
    )
    .unwrap();
    assert_eq!(b.iter().map(|u| u.uuid.as_str()).collect::<Vec<_>>(), ["GPU-2", "GPU-3"]);
    let e = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(1),
        &who("c3", "carl"),
        &open_quota(),
        10,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "1 GPU requested; 0 of 4 GPUs free");
    assert_eq!(st.allocations.len(), 2, "a refusal records nothing");
}

#[test]
fn per_container_and_quota_refusals_say_what_and_why() {
    let inv = gpus(4);
    let mut st = State::default();
    let q = Quota { per_container: Some((1, "group student".into())), per_user: Some(21), ..open_quota() };
    let e =
        decide(&mut st, Pool { inv: &inv, exclusive: true }, &Request::Count(2), &who("c1", "alice"), &q, 0)
            .unwrap_err();
    assert_eq!(e.to_string(), "2 GPUs requested; group student allows 1 per container");
    assert_eq!(e.kind, crate::error::Kind::Refused);
    for c in ["c1", "c2", "c3"] {
        decide(&mut st, Pool { inv: &inv, exclusive: true }, &Request::Count(1), &who(c, "alice"), &q, 0)
            .unwrap();
    }
    let e =
        decide(&mut st, Pool { inv: &inv, exclusive: true }, &Request::Count(1), &who("c4", "alice"), &q, 0)
            .unwrap_err();
    assert_eq!(
        e.to_string(),
        "1 GPU requested; quota 3 GPU-equivalents, already holding 3 in c1-name, c2-name, c3-name"
    );
    // DS01's weights: a full GPU 1, a MIG instance its compute slices over 7. Per container
    // counts units; per user adds weights.
    let inv = with_mig(gpus(2), 1, 3); // MIG 1:0 1g (1/7), 1:1 2g (2/7), 1:2 3g (3/7)
    let mut st = State::default();
    let q = Quota { per_container: Some((2, "group student".into())), per_user: Some(7), ..open_quota() };
    let a = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["1:1".into(), "1:2".into()]),
        &who("m1", "alice"),
        &q,
        0,
    )
    .unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(st.allocations[0].sevenths, 5, "2/7 + 3/7");
    let e = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["0".into()]),
        &who("m2", "alice"),
        &q,
        0,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "1 GPU requested; quota 1 GPU-equivalents, already holding 0.71 in m1-name",
        "5/7 held + a full GPU exceeds 1.0"
    );
    decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["1:0".into()]),
        &who("m2", "alice"),
        &q,
        0,
    )
    .expect("5/7 + 1/7 fits within 1.0");
    let e = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["1:0".into(), "1:1".into(), "1:2".into()]),
        &who("m3", "bob"),
        &q,
        0,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "3 GPUs requested (0.86 GPU-equivalents); group student allows 2 per container"
    );
    assert_eq!((gpueq(14), gpueq(2), gpueq(17)), ("2".into(), "0.29".into(), "2.43".into()));
    // The policy's verdict wins over "busy".
    let mut st = State::default();
    decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::All,
        &who("big", "admin"),
        &open_quota(),
        0,
    )
    .unwrap();
    let q = Quota { per_container: Some((1, "group student".into())), ..open_quota() };
    let e =
        decide(&mut st, Pool { inv: &inv, exclusive: true }, &Request::Count(2), &who("c1", "alice"), &q, 0)
            .unwrap_err();
    assert!(e.to_string().contains("allows 1 per container"), "{e}");
}

#[test]
fn full_gpus_need_allow_full_gpu_and_mig_is_least_allocated_first() {
    let inv = with_mig(with_mig(gpus(3), 1, 2), 2, 2);
    let mut st = State::default();
    let q = Quota { allow_full: false, ..open_quota() };
    let a = decide(&mut st, Pool { inv: &inv, exclusive: true }, &Request::Count(1), &who("c1", "a"), &q, 0)
        .unwrap();
    assert_eq!(a[0].uuid, "MIG-1-0");
    let b = decide(&mut st, Pool { inv: &inv, exclusive: true }, &Request::Count(1), &who("c2", "b"), &q, 0)
        .unwrap();
    assert_eq!(b[0].uuid, "MIG-2-0", "the GPU with fewer allocated instances");
    let e = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["0".into()]),
        &who("c3", "c"),
        &q,
        0,
    )
    .unwrap_err();
    assert!(e.to_string().contains("full GPUs are not allowed for group student"), "{e}");
    let e = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["1".into()]),
        &who("c3", "c"),
        &open_quota(),
        0,
    )
    .unwrap_err();
    assert!(e.to_string().contains("GPU 1 is in MIG mode"), "{e}");
    let c = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["2:1".into()]),
        &who("c4", "c"),
        &q,
        0,
    )
    .unwrap();
    assert_eq!(c[0].uuid, "MIG-2-1");
    let e = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["MIG-2-1".into()]),
        &who("c5", "d"),
        &q,
        0,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "GPU 2 is in use by c4-name (c)");
    let e = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Devices(vec!["GPU-9".into()]),
        &who("c5", "d"),
        &q,
        0,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "GPU GPU-9 does not exist on this host");
}

struct FakeWorld {
    runc: Vec<&'static str>,
    docker: Vec<&'static str>,
    alive: Vec<u32>,
}

impl World for FakeWorld {
    fn runc_has(&self, _root: &str, c: &str) -> bool {
        self.runc.contains(&c)
    }
    fn pid_alive(&self, pid: u32) -> bool {
        self.alive.contains(&pid)
    }
    fn docker_has(&self, c: &str) -> bool {
        self.docker.contains(&c)
    }
}

#[test]
fn holds_restarts_and_reclaims() {
    let inv = gpus(2);
    let mut st = State::default();
    let first = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(1),
        &who("c1", "alice"),
        &open_quota(),
        100,
    )
    .unwrap();
    let held = on_deleted(&mut st, "c1", 200).unwrap();
    assert_eq!((held.status, held.held_until), (Status::Held, Some(1100)));
    // Nobody else gets it meanwhile.
    decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(1),
        &who("c2", "bob"),
        &open_quota(),
        300,
    )
    .unwrap();
    let e = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(1),
        &who("c3", "bob"),
        &open_quota(),
        300,
    )
    .unwrap_err();
    assert!(e.to_string().contains("0 of 2 GPUs free"), "{e}");
    // The restart of the same container gets the same GPU back.
    let again = decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(1),
        &who("c1", "alice"),
        &open_quota(),
        400,
    )
    .unwrap();
    assert_eq!(again, first);
    assert_eq!(st.allocations.iter().find(|a| a.container == "c1").unwrap().status, Status::Running);
    // Expired holds, containers Docker removed, and running entries whose runtime state and
    // creator are both gone are reclaimed.
    on_deleted(&mut st, "c1", 500);
    let world = FakeWorld { runc: vec!["c2"], docker: vec![], alive: vec![] };
    assert!(reconcile(&mut st, 600, &world).is_empty());
    let dropped = reconcile(&mut st, 1401, &world);
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].container, "c1");
    let mut st2 = st.clone();
    st2.allocations[0].docker = true;
    st2.allocations[0].status = Status::Held;
    st2.allocations[0].held_until = Some(5000);
    assert_eq!(reconcile(&mut st2, 1500, &world).len(), 1, "docker rm'd: released");
    let gone = FakeWorld { runc: vec![], docker: vec![], alive: vec![] };
    assert_eq!(reconcile(&mut st, 1500, &gone).len(), 1, "engine crashed: released");
    assert!(st.allocations.is_empty());
    // A Docker container stopped without a delete seen (runtime state gone, Docker has it):
    // its hold starts now.
    decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(1),
        &who("d1", "x"),
        &open_quota(),
        1600,
    )
    .unwrap();
    st.allocations[0].docker = true;
    let stopped = FakeWorld { runc: vec![], docker: vec!["d1"], alive: vec![] };
    assert!(reconcile(&mut st, 1700, &stopped).is_empty());
    assert_eq!((st.allocations[0].status, st.allocations[0].held_until), (Status::Held, Some(2600)));
    st.allocations.clear();
    // A create in flight (runtime state not there yet, creator alive) is kept.
    decide(
        &mut st,
        Pool { inv: &inv, exclusive: true },
        &Request::Count(1),
        &who("c9", "x"),
        &open_quota(),
        2000,
    )
    .unwrap();
    let inflight = FakeWorld { runc: vec![], docker: vec![], alive: vec![1] };
    assert!(reconcile(&mut st, 2001, &inflight).is_empty());
}

#[test]
fn zero_hold_releases_at_once_and_no_gpus_host_refuses() {
    let inv = gpus(1);
    let mut st = State::default();
    let q = Quota { hold_secs: Some(0), ..open_quota() };
    decide(&mut st, Pool { inv: &inv, exclusive: true }, &Request::Count(1), &who("c1", "a"), &q, 0).unwrap();
    on_deleted(&mut st, "c1", 1);
    assert!(st.allocations.is_empty());
    let e = decide(&mut st, Pool { inv: &[], exclusive: true }, &Request::Count(1), &who("c1", "a"), &q, 0)
        .unwrap_err();
    assert_eq!(e.to_string(), "1 GPU requested; this host has no GPUs");
    assert!(decide(&mut st, Pool { inv: &[], exclusive: true }, &Request::None, &who("c1", "a"), &q, 0)
        .unwrap()
        .is_empty());
}

#[test]
fn shared_mode_hands_out_least_allocated() {
    let inv = gpus(2);
    let mut st = State::default();
    let picks: Vec<String> = (0..4)
        .map(|i| {
            decide(
                &mut st,
                Pool { inv: &inv, exclusive: false },
                &Request::Count(1),
                &who(&format!("c{i}"), "a"),
                &open_quota(),
                0,
            )
            .unwrap()[0]
                .uuid
                .clone()
        })
        .collect();
    assert_eq!(picks, ["GPU-0", "GPU-1", "GPU-0", "GPU-1"]);
}

#[test]
fn container_count_is_capped_per_owner_and_reconciled() {
    let mut st = State::default();
    let max = || Some((2, "group student".to_string()));
    admit(&mut st, &who("c1", "alice"), max(), 0).unwrap();
    admit(&mut st, &who("c2", "alice"), max(), 0).unwrap();
    admit(&mut st, &who("b1", "bob"), max(), 0).unwrap();
    let e = admit(&mut st, &who("c3", "alice"), max(), 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "alice already runs 2 containers (max_containers_per_user 2, group student): c1-name, c2-name"
    );
    admit(&mut st, &who("c1", "alice"), max(), 0).unwrap();
    on_deleted(&mut st, "c1", 1);
    admit(&mut st, &who("c3", "alice"), max(), 0).unwrap();
    let world = FakeWorld { runc: vec!["c3"], docker: vec![], alive: vec![] };
    reconcile(&mut st, 700, &world);
    assert_eq!(st.containers.iter().map(|c| c.container.as_str()).collect::<Vec<_>>(), ["c3"]);
}

#[test]
fn an_allocation_recorded_before_weights_counts_whole_gpus() {
    // gpus.json written by an older release: `slots`, no `sevenths`.
    let old: Allocation = serde_json::from_value(serde_json::json!({
        "container": "old", "owner": "alice", "group": "student", "devices": ["GPU-0", "GPU-1"],
        "slots": 2, "since": 0, "pid": 1, "runc_root": "/r", "status": "running"
    }))
    .unwrap();
    assert_eq!(old.sevenths, 0);
    let mut st = State { allocations: vec![old], ..State::default() };
    let inv = gpus(4);
    let q = Quota { per_user: Some(14), ..open_quota() };
    let e =
        decide(&mut st, Pool { inv: &inv, exclusive: true }, &Request::Count(1), &who("c1", "alice"), &q, 0)
            .unwrap_err();
    assert_eq!(e.to_string(), "1 GPU requested; quota 2 GPU-equivalents, already holding 2 in old");
}
