//! DS01's own resource-limits.yaml (tests/fixtures/ds01-resource-limits.yaml, DS01's file at
//! ds01-infra 2cf1a0e) loads unchanged, and `ds01ctl limits` gives DS01's numbers for a user of
//! each group: its float GPU quotas (`max_gpu_equivalents`, `aggregate.gpu_limit: 2.0`), its
//! `max_gpu_slots_per_container`, its `*_h` lifecycle keys and its empty `gpu_allocation:`.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn limits(settings: &Path, user: &str) -> String {
    let o = Command::new(ds01ctl()).arg("--config").arg(settings).args(["limits", user]).output().unwrap();
    assert!(o.status.success(), "ds01ctl limits {user}: {}", stderr(&o));
    stdout(&o)
}

fn row<'a>(report: &'a str, key: &str) -> &'a str {
    report.lines().find(|l| l.trim_start().starts_with(key)).unwrap_or_else(|| panic!("no {key} in {report}"))
}

#[test]
fn ds01s_file_loads_unchanged_and_gives_ds01s_numbers_for_every_group() {
    let tmp = TempDir::new("ds01files");
    let s = settings(tmp.path(), "");
    let policy = tmp.path().join("policy");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ds01-resource-limits.yaml");
    fs::copy(fixture, policy.join("resource-limits.yaml")).unwrap();
    for (group, user) in [("researcher", "rhea"), ("faculty", "fay"), ("admin", "ada")] {
        fs::write(policy.join(format!("groups/{group}.members")), format!("# members\n{user}\n")).unwrap();
    }
    // (group, user, per container, per user, memory, cpus)
    for (group, user, per_container, per_user, memory, cpus) in [
        ("student", "stu", "2", "2", "32g", "32"),
        ("researcher", "rhea", "3", "4", "64g", "48"),
        ("faculty", "fay", "4", "4", "128g", "64"),
        ("admin", "ada", "unlimited", "unlimited", "128g", "64"),
    ] {
        let r = limits(&s, user);
        let member = if group == "student" {
            "default_group student".to_owned()
        } else {
            format!("member of {group}")
        };
        assert!(r.contains(&member), "{user}: {r}");
        assert!(
            r.contains(&format!(
                "GPUs per container {per_container}, per user {per_user}, full GPUs allowed"
            )),
            "{user}: {r}"
        );
        assert!(row(&r, "memory ").contains(memory), "{user}: {r}");
        assert!(row(&r, "max_cpus").contains(cpus), "{user}: {r}");
        assert!(row(&r, "pids_limit").contains("4096"), "{user}: {r}");
    }
    let r = limits(&s, "stu");
    assert!(
        row(&r, "max_gpu_equivalents").contains("2")
            && row(&r, "max_gpu_equivalents").contains("group student"),
        "{r}"
    );
    assert!(r.contains("gpu_limit 2"), "the float aggregate: {r}");
    assert!(row(&r, "gpu_hold_after_stop").contains("0.25"), "gpu_hold_after_stop_h: {r}");
}
