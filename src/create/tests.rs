//! The create's phases on a machine in memory ([`Memory`]): no root, no runc, no files.

use std::path::Path;

use serde_json::{json, Value};

use super::host::Memory;
use super::{plan, run, Call};
use crate::audit::{Event, Kind as AuditKind};
use crate::error::{Error, Result, Rule};
use crate::gpu::alloc::State;
use crate::gpu::Gpu;
use crate::owner::docker::DockerMeta;
use crate::policy::settings::Settings;
use crate::policy::Policy;

/// Students: one GPU per container, two GPU-equivalents in all, two containers; `boss` is an
/// admin by name.
const POLICY: &str = "default_group: student\ndefaults:\n  max_gpu_slots_per_container: 1\n  \
    max_gpu_equivalents: 2\n  allow_full_gpu: true\n  max_containers_per_user: 2\n  memory: 8g\n\
    access_control:\n  admin_users: [boss]\n";

fn gpus(n: u32) -> Vec<Gpu> {
    (0..n)
        .map(|i| {
            serde_json::from_value(json!({"index": i, "uuid": format!("GPU-{i}"), "minor": i, "name": "T"}))
                .unwrap()
        })
        .collect()
}

/// runc's own spec with `annotations`, on a machine with `n` GPUs.
fn host(annotations: Value, n: u32) -> Memory {
    let mut spec: Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/runc-1.1-spec-config.json"
    )))
    .unwrap();
    spec["annotations"] = annotations;
    let policy = Policy::parse(POLICY, Path::new("/p.yaml"), None, Path::new("/o.yaml")).unwrap();
    Memory { gpus: gpus(n), ..Memory::new(serde_json::to_vec(&spec).unwrap(), policy) }
}

fn call(id: &str) -> Call {
    Call {
        id: id.into(),
        bundle: "/b".into(),
        runc_root: "/run/runc".into(),
        systemd_cgroup: false,
        restore: None,
        pid: 7,
    }
}

fn create(h: &Memory, id: &str) -> (Result<()>, Event) {
    let mut ev = Event::new(AuditKind::Create, std::time::SystemTime::UNIX_EPOCH, "allowed");
    (run(h, &call(id), &Settings::default(), &mut ev), ev)
}

fn refused(r: (Result<()>, Event)) -> (Error, Event) {
    (r.0.expect_err("refused"), r.1)
}

#[test]
fn a_create_gathers_reserves_modifies_and_commits() {
    let h = host(json!({"ds01.user": "alice", "ds01.gpus": "1"}), 2);
    let (r, ev) = create(&h, "c1");
    r.unwrap();
    let spec = h.written.borrow().clone().expect("config.json written");
    assert_eq!(
        spec["linux"]["cgroupsPath"],
        "/ds01.slice/ds01-student.slice/ds01-student-alice.slice/docker-c1.scope"
    );
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 8u64 << 30);
    let nodes: Vec<&Value> =
        spec["linux"]["devices"].as_array().unwrap().iter().map(|d| &d["path"]).collect();
    assert!(
        nodes.contains(&&json!("/dev/nvidia0")) && nodes.contains(&&json!("/dev/nvidiactl")),
        "{nodes:?}"
    );
    assert_eq!(spec["annotations"]["ds01.user"], "alice");
    let state = h.state.borrow();
    assert_eq!(state.allocations.len(), 1);
    assert_eq!((state.allocations[0].container.as_str(), state.allocations[0].pid), ("c1", 7));
    assert_eq!(state.containers.len(), 1, "admitted under the container cap");
    let lines = h.recorded.borrow();
    assert!(lines[0].contains("\"gpu.allocated\"") && lines[1].contains("\"container.create\""), "{lines:?}");
    assert_eq!(*h.slices.borrow(), ["ds01-student-alice.slice"]);
    assert_eq!(ev.gpus, ["GPU-0"]);
}

#[test]
fn a_gpu_refusal_is_typed_and_leaves_nothing() {
    let h = host(json!({"ds01.user": "alice", "ds01.gpus": "2"}), 2);
    let (e, ev) = refused(create(&h, "c1"));
    assert!(e.refused_by(Rule::Gpu), "{e}");
    assert_eq!(e.to_string(), "2 GPUs requested; defaults allows 1 per container");
    assert!(ev.gpu_refused, "the audit says the GPU rule refused");
    assert_eq!(*h.state.borrow(), State::default(), "nothing reserved");
    assert!(h.written.borrow().is_none() && h.recorded.borrow().is_empty() && h.slices.borrow().is_empty());
}

#[test]
fn an_admin_is_decided_again_without_the_quota_and_only_after_a_refusal() {
    let h = host(json!({"ds01.user": "boss", "ds01.gpus": "2"}), 2);
    create(&h, "c1").0.unwrap();
    assert_eq!(h.state.borrow().allocations[0].devices, ["GPU-0", "GPU-1"]);
    assert_eq!(h.admin_lookups.get(), 1, "asked once, after the refusal, outside the lock");
    let h = host(json!({"ds01.user": "alice", "ds01.gpus": "1"}), 2);
    let h = Memory { admins: vec!["alice".into()], ..h };
    create(&h, "c2").0.unwrap();
    assert_eq!(h.state.borrow().allocations[0].devices, ["GPU-0"]);
    assert_eq!(h.admin_lookups.get(), 0, "within the quota nobody asks the group database");
}

#[test]
fn a_failed_commit_puts_the_reservation_back() {
    let h = Memory { fail_write: true, ..host(json!({"ds01.user": "alice", "ds01.gpus": "1"}), 1) };
    let (e, _) = refused(create(&h, "c1"));
    assert!(e.to_string().contains("disk full") && e.refusal().is_none(), "{e}");
    assert_eq!(*h.state.borrow(), State::default(), "the GPU and the admission are undone");
}

#[test]
fn the_container_cap_and_the_owner_are_rules_of_their_own() {
    let h = host(json!({"ds01.user": "alice"}), 0);
    let h = Memory { known: vec!["c1".into(), "c2".into()], ..h };
    create(&h, "c1").0.unwrap();
    create(&h, "c2").0.unwrap();
    let (e, ev) = refused(create(&h, "c3"));
    assert!(e.refused_by(Rule::Containers) && !ev.gpu_refused, "{e}");
    assert!(e.to_string().starts_with("alice already runs 2 containers (max_containers_per_user 2"), "{e}");

    let h = host(json!({"ds01.user": "alice"}), 0);
    let mut meta = DockerMeta::default();
    meta.engine.labels.insert("ds01.user".into(), json!("bob"));
    let h = Memory { docker: Some(meta), ..h };
    let (e, _) = refused(create(&h, "c1"));
    assert!(e.refused_by(Rule::Owner), "{e}");
    assert!(e.to_string().contains("annotation says alice, label ds01.user says bob"), "{e}");
}

#[test]
fn a_plan_is_the_same_pipeline_and_commits_nothing() {
    let h = host(json!({"ds01.user": "alice", "ds01.gpus": "1"}), 2);
    let p = plan(&h, &call("c1"), &Settings::default()).unwrap();
    assert_eq!(p.gpus, ["GPU-0"]);
    assert_eq!(p.request_source, "annotation");
    assert!(p.notes.iter().any(|n| n.path == "linux.cgroupsPath"), "{:?}", p.notes);
    assert!(h.written.borrow().is_none() && h.recorded.borrow().is_empty() && h.slices.borrow().is_empty());
}

#[test]
fn a_verified_owner_decides_over_the_claim_and_may_be_trusted_for_admin() {
    use crate::owner::verified::Verified;
    use crate::policy::settings::Source;
    // The creator claims boss (an admin); the front door verified alice.
    let mut h = host(json!({"ds01.user": "boss"}), 0);
    h.verified = Some(Verified { user: "alice".into(), uid: 1001, by: None });
    let (r, ev) = create(&h, "c1");
    r.unwrap();
    let spec = h.written.borrow().clone().expect("config.json written");
    assert_eq!(spec["annotations"]["ds01.user"], "alice");
    assert_eq!(spec["annotations"]["ds01.identity-source"], "verified");
    assert_eq!(ev.identity_source.as_deref(), Some("verified"));
    // The verified boss, trusted for admin, may add a capability; the claimed one may not.
    let caps = |h: &mut Memory| {
        let mut spec: Value = serde_json::from_slice(&h.config).unwrap();
        spec["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into());
        spec["process"]["capabilities"]["effective"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into());
        h.config = serde_json::to_vec(&spec).unwrap();
    };
    let mut s = Settings::default();
    s.identity.trusted_for_admin = vec![Source::Verified];
    let run_as = |h: &Memory| {
        let mut ev = Event::new(AuditKind::Create, std::time::SystemTime::UNIX_EPOCH, "allowed");
        run(h, &call("c2"), &s, &mut ev)
    };
    let mut claimed = host(json!({"ds01.user": "boss"}), 0);
    caps(&mut claimed);
    assert!(run_as(&claimed).unwrap_err().to_string().contains("SYS_ADMIN"));
    let mut verified = host(json!({}), 0);
    caps(&mut verified);
    verified.verified = Some(Verified { user: "boss".into(), uid: 1002, by: None });
    run_as(&verified).unwrap();
}
