use super::*;
use crate::gpu::Mig;

/// An inventory of `n` whole GPUs, `GPU-0`…
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

/// GPU `gpu` of `inv` in MIG mode with `n` instances `MIG-<gpu>-<j>` of 1, 2, 3, 1… sevenths.
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

/// Container `c` (Docker name `<c>-name`) of `owner`, group student.
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

/// No per-container or per-user limit, full GPUs allowed, held 900 s after a stop.
fn open_quota() -> Quota {
    Quota { per_container: None, per_user: None, allow_full: true, hold_secs: Some(900) }
}

/// The one limit a case is about, on top of another quota (usually [`open_quota`]).
trait Limit {
    /// `n` units per container, from group student.
    fn per_container(self, n: u32) -> Quota;
    /// `sevenths` GPU-equivalents per user.
    fn per_user(self, sevenths: u32) -> Quota;
    /// MIG instances only.
    fn mig_only(self) -> Quota;
    /// Held `secs` after a stop.
    fn hold(self, secs: u64) -> Quota;
}

impl Limit for Quota {
    fn per_container(self, n: u32) -> Quota {
        Quota { per_container: Some((n, "group student".into())), ..self }
    }
    fn per_user(self, sevenths: u32) -> Quota {
        Quota { per_user: Some(sevenths), ..self }
    }
    fn mig_only(self) -> Quota {
        Quota { allow_full: false, ..self }
    }
    fn hold(self, secs: u64) -> Quota {
        Quota { hold_secs: Some(secs), ..self }
    }
}

/// A request naming `ids` (indices, UUIDs, `<gpu>:<mig>`).
fn devices(ids: &[&str]) -> Request {
    Request::Devices(ids.iter().map(|id| id.to_string()).collect())
}

/// An inventory and the state decided over it: the set-up every allocation test shares.
struct Host {
    inv: Vec<Gpu>,
    st: State,
    exclusive: bool,
}

impl Host {
    /// Exclusive units (no GPU goes to two containers at once), nothing allocated yet.
    fn new(inv: Vec<Gpu>) -> Host {
        Host { inv, st: State::default(), exclusive: true }
    }

    /// Shared units.
    fn shared(inv: Vec<Gpu>) -> Host {
        Host { exclusive: false, ..Host::new(inv) }
    }

    /// [`decide`] for container `c` of `owner` at `now`.
    fn decide(&mut self, req: &Request, (c, owner): (&str, &str), q: &Quota, now: u64) -> Result<Vec<Unit>> {
        decide(&mut self.st, Pool { inv: &self.inv, exclusive: self.exclusive }, req, &who(c, owner), q, now)
    }

    /// The UUIDs granted, in CUDA order; a refusal fails the test.
    fn grant(&mut self, req: &Request, cw: (&str, &str), q: &Quota, now: u64) -> Vec<String> {
        let units = self.decide(req, cw, q, now).unwrap_or_else(|e| panic!("{cw:?} {req:?}: {e}"));
        units.into_iter().map(|u| u.uuid).collect()
    }

    /// The refusal's message, after checking that it is a refusal that recorded nothing.
    fn refuse(&mut self, req: &Request, cw: (&str, &str), q: &Quota, now: u64) -> String {
        let before = self.st.clone();
        let e = self.decide(req, cw, q, now).expect_err(&format!("{cw:?} {req:?} is refused"));
        assert_eq!(e.kind, crate::error::Kind::Refused, "{e}");
        assert_eq!(self.st, before, "a refusal records nothing: {e}");
        e.to_string()
    }
}

#[test]
fn counts_take_free_gpus_in_order_and_are_exclusive() {
    let mut h = Host::new(gpus(4));
    let q = open_quota();
    assert_eq!(h.grant(&Request::Count(2), ("c1", "alice"), &q, 10), ["GPU-0", "GPU-1"]);
    assert_eq!(h.grant(&Request::Count(2), ("c2", "bob"), &q, 10), ["GPU-2", "GPU-3"]);
    assert_eq!(h.refuse(&Request::Count(1), ("c3", "carl"), &q, 10), "1 GPU requested; 0 of 4 GPUs free");
    assert_eq!(h.st.allocations.len(), 2, "a refusal records nothing");
}

#[test]
fn per_container_and_quota_refusals_say_what_and_why() {
    let mut h = Host::new(gpus(4));
    let q = open_quota().per_container(1).per_user(21);
    assert_eq!(
        h.refuse(&Request::Count(2), ("c1", "alice"), &q, 0),
        "2 GPUs requested; group student allows 1 per container"
    );
    for c in ["c1", "c2", "c3"] {
        h.grant(&Request::Count(1), (c, "alice"), &q, 0);
    }
    assert_eq!(
        h.refuse(&Request::Count(1), ("c4", "alice"), &q, 0),
        "1 GPU requested; quota 3 GPU-equivalents, already holding 3 in c1-name, c2-name, c3-name"
    );
}

#[test]
fn mig_instances_weigh_their_compute_slices() {
    // DS01's weights: a full GPU 1, a MIG instance its compute slices over 7. Per container
    // counts units; per user adds weights.
    let mut h = Host::new(with_mig(gpus(2), 1, 3)); // MIG 1:0 1g (1/7), 1:1 2g (2/7), 1:2 3g (3/7)
    let q = open_quota().per_container(2).per_user(7);
    assert_eq!(h.grant(&devices(&["1:1", "1:2"]), ("m1", "alice"), &q, 0).len(), 2);
    assert_eq!(h.st.allocations[0].sevenths, 5, "2/7 + 3/7");
    assert_eq!(
        h.refuse(&devices(&["0"]), ("m2", "alice"), &q, 0),
        "1 GPU requested; quota 1 GPU-equivalents, already holding 0.71 in m1-name",
        "5/7 held + a full GPU exceeds 1.0"
    );
    assert_eq!(h.grant(&devices(&["1:0"]), ("m2", "alice"), &q, 0), ["MIG-1-0"], "5/7 + 1/7 fits within 1.0");
    assert_eq!(
        h.refuse(&devices(&["1:0", "1:1", "1:2"]), ("m3", "bob"), &q, 0),
        "3 GPUs requested (0.86 GPU-equivalents); group student allows 2 per container"
    );
}

#[test]
fn gpu_equivalents_print_like_ds01s() {
    for (sevenths, shown) in [(14, "2"), (2, "0.29"), (17, "2.43")] {
        assert_eq!(gpueq(sevenths), shown, "{sevenths} sevenths");
    }
}

#[test]
fn the_policys_verdict_wins_over_busy() {
    let mut h = Host::new(with_mig(gpus(2), 1, 3));
    h.grant(&Request::All, ("big", "admin"), &open_quota(), 0);
    let e = h.refuse(&Request::Count(2), ("c1", "alice"), &open_quota().per_container(1), 0);
    assert!(e.contains("allows 1 per container"), "{e}");
}

#[test]
fn full_gpus_need_allow_full_gpu_and_mig_is_least_allocated_first() {
    let mut h = Host::new(with_mig(with_mig(gpus(3), 1, 2), 2, 2));
    let q = open_quota().mig_only();
    assert_eq!(h.grant(&Request::Count(1), ("c1", "a"), &q, 0), ["MIG-1-0"]);
    assert_eq!(
        h.grant(&Request::Count(1), ("c2", "b"), &q, 0),
        ["MIG-2-0"],
        "the GPU with fewer allocated instances"
    );
    assert_eq!(h.grant(&devices(&["2:1"]), ("c4", "c"), &q, 0), ["MIG-2-1"]);
    // (id asked for, quota, the refusal or a part of it, whether it is the whole); a refusal
    // records nothing, so each is judged against the same state.
    let refusals = [
        ("0", &q, "full GPUs are not allowed for group student", false),
        ("1", &open_quota(), "GPU 1 is in MIG mode", false),
        ("MIG-2-1", &q, "GPU 2 is in use by c4-name (c)", true),
        ("GPU-9", &q, "GPU GPU-9 does not exist on this host", true),
    ];
    for (id, q, want, whole) in refusals {
        let e = h.refuse(&devices(&[id]), ("c5", "d"), q, 0);
        assert!(if whole { e == want } else { e.contains(want) }, "{id}: {e}");
    }
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

/// A world where the runtime knows `runc`, Docker has `docker` and only pid 1 (every test
/// container's creator) is alive when `creator_alive`.
fn world(runc: &[&'static str], docker: &[&'static str], creator_alive: bool) -> FakeWorld {
    FakeWorld {
        runc: runc.to_vec(),
        docker: docker.to_vec(),
        alive: if creator_alive { vec![1] } else { vec![] },
    }
}

#[test]
fn holds_restarts_and_reclaims() {
    let mut h = Host::new(gpus(2));
    let q = open_quota();
    let first = h.grant(&Request::Count(1), ("c1", "alice"), &q, 100);
    let held = on_deleted(&mut h.st, "c1", 200).unwrap();
    assert_eq!((held.status, held.held_until), (Status::Held, Some(1100)));
    // Nobody else gets it meanwhile.
    h.grant(&Request::Count(1), ("c2", "bob"), &q, 300);
    let e = h.refuse(&Request::Count(1), ("c3", "bob"), &q, 300);
    assert!(e.contains("0 of 2 GPUs free"), "{e}");
    // The restart of the same container gets the same GPU back.
    assert_eq!(h.grant(&Request::Count(1), ("c1", "alice"), &q, 400), first);
    assert_eq!(h.st.allocations.iter().find(|a| a.container == "c1").unwrap().status, Status::Running);
    // Expired holds, containers Docker removed, and running entries whose runtime state and
    // creator are both gone are reclaimed.
    on_deleted(&mut h.st, "c1", 500);
    let w = world(&["c2"], &[], false);
    assert!(reconcile(&mut h.st, 600, &w).is_empty());
    let dropped = reconcile(&mut h.st, 1401, &w);
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].container, "c1");
    let mut st2 = h.st.clone();
    st2.allocations[0].docker = true;
    st2.allocations[0].status = Status::Held;
    st2.allocations[0].held_until = Some(5000);
    assert_eq!(reconcile(&mut st2, 1500, &w).len(), 1, "docker rm'd: released");
    assert_eq!(reconcile(&mut h.st, 1500, &world(&[], &[], false)).len(), 1, "engine crashed: released");
    assert!(h.st.allocations.is_empty());
}

#[test]
fn a_docker_container_stopped_without_a_delete_is_held_from_now() {
    // Runtime state gone, Docker still has it: its hold starts now.
    let mut h = Host::new(gpus(2));
    h.grant(&Request::Count(1), ("d1", "x"), &open_quota(), 1600);
    h.st.allocations[0].docker = true;
    assert!(reconcile(&mut h.st, 1700, &world(&[], &["d1"], false)).is_empty());
    assert_eq!((h.st.allocations[0].status, h.st.allocations[0].held_until), (Status::Held, Some(2600)));
}

#[test]
fn a_create_in_flight_is_kept() {
    // Runtime state not there yet, creator alive.
    let mut h = Host::new(gpus(2));
    h.grant(&Request::Count(1), ("c9", "x"), &open_quota(), 2000);
    assert!(reconcile(&mut h.st, 2001, &world(&[], &[], true)).is_empty());
    assert_eq!(h.st.allocations.len(), 1);
}

#[test]
fn zero_hold_releases_at_once_and_no_gpus_host_refuses() {
    let q = open_quota().hold(0);
    let mut h = Host::new(gpus(1));
    h.grant(&Request::Count(1), ("c1", "a"), &q, 0);
    on_deleted(&mut h.st, "c1", 1);
    assert!(h.st.allocations.is_empty());
    let mut none = Host::new(vec![]);
    assert_eq!(none.refuse(&Request::Count(1), ("c1", "a"), &q, 0), "1 GPU requested; this host has no GPUs");
    assert!(none.grant(&Request::None, ("c1", "a"), &q, 0).is_empty());
}

#[test]
fn shared_mode_hands_out_least_allocated() {
    let mut h = Host::shared(gpus(2));
    let picks: Vec<String> =
        (0..4).flat_map(|i| h.grant(&Request::Count(1), (&format!("c{i}"), "a"), &open_quota(), 0)).collect();
    assert_eq!(picks, ["GPU-0", "GPU-1", "GPU-0", "GPU-1"]);
}

#[test]
fn container_count_is_capped_per_owner_and_reconciled() {
    let mut st = State::default();
    let max = || Some((2, "group student".to_string()));
    for (c, owner) in [("c1", "alice"), ("c2", "alice"), ("b1", "bob")] {
        admit(&mut st, &who(c, owner), max(), 0).unwrap();
    }
    let e = admit(&mut st, &who("c3", "alice"), max(), 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "alice already runs 2 containers (max_containers_per_user 2, group student): c1-name, c2-name"
    );
    admit(&mut st, &who("c1", "alice"), max(), 0).expect("the same container again is not one more");
    on_deleted(&mut st, "c1", 1);
    admit(&mut st, &who("c3", "alice"), max(), 0).unwrap();
    reconcile(&mut st, 700, &world(&["c3"], &[], false));
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
    let mut h = Host::new(gpus(4));
    h.st.allocations.push(old);
    assert_eq!(
        h.refuse(&Request::Count(1), ("c1", "alice"), &open_quota().per_user(14), 0),
        "1 GPU requested; quota 2 GPU-equivalents, already holding 2 in old"
    );
}
