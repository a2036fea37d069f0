use super::*;

const SHIPPED: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/runtime-config/resource-limits.yaml"));

fn shipped() -> Policy {
    let mut p =
        Policy::parse(SHIPPED, Path::new("/etc/ds01/resource-limits.yaml"), None, Path::new("/x")).unwrap();
    p.add_members("researcher", parse_members("# c\n\nrita   # PhD\nh.baker@uni.example\n"));
    p.add_members("admin", vec!["datasciencelab".into()]);
    p
}

#[test]
fn shipped_file_parses_with_ds01_shape() {
    let p = shipped();
    assert_eq!(p.file.default_group.as_deref(), Some("student"));
    assert_eq!(p.file.groups.keys().collect::<Vec<_>>(), ["student", "researcher", "faculty", "admin"]);
    assert_eq!(p.file.access_control.admin_users, ["datasciencelab"]);
}

#[test]
fn group_from_members_files_inline_and_default() {
    let mut p = shipped();
    assert_eq!(p.group_of("rita", "student"), "researcher");
    // Matched by sanitized name too, as DS01 does.
    p.add_members("faculty", vec!["h_baker".into()]);
    assert_eq!(p.group_of("h.baker@uni.example", "student"), "researcher", "first group in file order wins");
    assert_eq!(p.group_of("nobody", "x"), "student");
    p.file.default_group = None;
    assert_eq!(p.group_of("nobody", "fallback"), "fallback");
}

#[test]
fn defaults_then_group_then_override_with_origins() {
    let over = "rita:\n  memory: 100g\n  max_mig_instances: null\n";
    let mut p = Policy::parse(SHIPPED, Path::new("/p.yaml"), Some(over), Path::new("/o.yaml")).unwrap();
    p.add_members("researcher", vec!["rita".into()]);
    let mem = p.resolve("rita", "researcher", |l| &l.memory);
    assert_eq!(mem.value.value().map(|s| s.bytes), Some(100 << 30));
    assert_eq!(mem.origin, Origin::Override("rita".into()));
    let cpus = p.resolve("rita", "researcher", |l| &l.max_cpus);
    assert_eq!(cpus.value, Nullable::Value(48.0));
    assert_eq!(cpus.origin.to_string(), "group researcher");
    let pids = p.resolve("rita", "researcher", |l| &l.pids_limit);
    assert_eq!((pids.value, pids.origin), (Nullable::Value(4096), Origin::Defaults));
    let gpus = p.resolve("rita", "researcher", |l| &l.max_mig_instances);
    assert_eq!(gpus.value, Nullable::Unlimited);
    // Admin's nulls are unlimited, not inherited.
    let admin_gpus = p.resolve("datasciencelab", "admin", |l| &l.max_mig_per_container);
    assert_eq!(admin_gpus.value, Nullable::Unlimited);
    assert_eq!(p.resolve("x", "admin", |l| &l.gpu_hold_after_stop).value.value().map(|d| d.secs), Some(3600));
}

#[test]
fn aggregates_with_percentages_and_sizes() {
    let p = shipped();
    let (origin, a) = p.aggregate("anyone", "student").unwrap();
    assert_eq!(origin, Origin::Group("student".into()));
    assert_eq!(a.cpu_quota.value().map(|q| q.cpus()), Some(96.0));
    assert_eq!(a.memory_max.value().map(|s| s.bytes), Some(96 << 30));
    assert_eq!(a.tasks_max, Nullable::Value(12288));
    assert!(p.aggregate("datasciencelab", "admin").is_none(), "admins have no aggregate cap");
}

#[test]
fn inline_overrides_and_file_overrides_merge_per_user() {
    let text = format!("{SHIPPED}\nuser_overrides:\n  bob:\n    memory: 8g\n  carl:\n    memory: 9g\n");
    let p = Policy::parse(&text, Path::new("/p.yaml"), Some("carl:\n  max_cpus: 2\n"), Path::new("/o.yaml"))
        .unwrap();
    assert_eq!(p.resolve("bob", "student", |l| &l.memory).value.value().map(|s| s.bytes), Some(8 << 30));
    // The file replaces carl's whole inline entry, as DS01 does.
    assert_eq!(p.resolve("carl", "student", |l| &l.memory).origin, Origin::Defaults);
    assert_eq!(p.resolve("carl", "student", |l| &l.max_cpus).value, Nullable::Value(2.0));
    let users = p.known_users("student");
    assert!(users.contains(&("bob".to_string(), "student".to_string())));
}

#[test]
fn bad_values_name_file_line_and_key() {
    let bad = "defaults:\n  max_cpus: 4\n  memory: lots\n";
    let e =
        Policy::parse(bad, Path::new("/etc/ds01/resource-limits.yaml"), None, Path::new("/o")).unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("/etc/ds01/resource-limits.yaml") && m.contains("defaults.memory") && m.contains("line 3"),
        "{m}"
    );
    let e = Policy::parse("groups:\n  a-b:\n    max_cpus: x\n", Path::new("/p"), None, Path::new("/o"))
        .unwrap_err();
    assert!(e.to_string().contains("groups"), "{e}");
    let e = Policy::parse(
        "defaults: {}\n",
        Path::new("/p"),
        Some("bob: [1"),
        Path::new("/etc/ds01/user-overrides.yaml"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("user-overrides.yaml"), "{e}");
}

#[test]
fn unknown_keys_are_ignored() {
    let p = Policy::parse(
        "monitoring:\n  x: 1\ndefaults:\n  future_knob: 3\n",
        Path::new("/p"),
        None,
        Path::new("/o"),
    )
    .unwrap();
    assert_eq!(p.file.defaults, Limits::default());
}

#[test]
fn load_reads_members_and_overrides_beside_the_file() {
    let dir = std::env::temp_dir().join(format!("ds01-policy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("groups")).unwrap();
    std::fs::write(dir.join("resource-limits.yaml"), SHIPPED).unwrap();
    std::fs::write(dir.join("groups/faculty.members"), "prof # yes\n").unwrap();
    std::fs::write(dir.join("user-overrides.yaml"), "prof:\n  max_cpus: 1\n").unwrap();
    let p = Policy::load(&dir.join("resource-limits.yaml")).unwrap();
    assert_eq!(p.group_of("prof", "x"), "faculty");
    assert_eq!(p.resolve("prof", "faculty", |l| &l.max_cpus).value, Nullable::Value(1.0));
    let e = Policy::load(&dir.join("missing.yaml")).unwrap_err();
    assert!(e.to_string().contains("missing.yaml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cached_load_gives_the_same_policy_and_follows_edits() {
    let dir = std::env::temp_dir().join(format!("ds01-policy-cache-{}", std::process::id()));
    let cache = dir.join("cache"); // inside an existing folder, as the state directory is
    std::fs::create_dir_all(dir.join("groups")).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime-config");
    std::fs::write(dir.join("resource-limits.yaml"), SHIPPED).unwrap();
    std::fs::copy(shipped.join("user-overrides.yaml"), dir.join("user-overrides.yaml")).unwrap();
    let path = dir.join("resource-limits.yaml");
    let plain = format!("{:?}", Policy::load(&path).unwrap());
    let miss = format!("{:?}", Policy::load_cached(&path, &cache).unwrap());
    let copies = std::fs::read_dir(&cache).unwrap().count();
    assert!(copies >= 1, "a JSON copy was written");
    let hit = format!("{:?}", Policy::load_cached(&path, &cache).unwrap());
    assert_eq!(plain, miss);
    assert_eq!(plain, hit, "the JSON copy gives exactly the YAML's policy");
    // An edit is seen at once (the copy is named by the text's digest), the stale copy goes.
    std::fs::write(&path, SHIPPED.replace("max_cpus: 32", "max_cpus: 7")).unwrap();
    let p = Policy::load_cached(&path, &cache).unwrap();
    assert_eq!(p.resolve("x", "student", |l| &l.max_cpus).value, Nullable::Value(7.0));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), copies);
    // A broken file is the YAML's error, cache or not.
    std::fs::write(&path, "defaults:\n  max_cpus: lots\n").unwrap();
    let e = Policy::load_cached(&path, &cache).unwrap_err();
    assert!(e.to_string().contains("line 2") && e.to_string().contains("defaults.max_cpus"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ds01s_gpu_keys_and_their_older_names_resolve_as_ds01_reads_them() {
    let text = "defaults:\n  max_gpu_equivalents: 1.0\n  max_gpu_slots_per_container: 1\n\
                groups:\n  old:\n    max_mig_instances: 3\n    max_mig_per_container: 2\n  \
                both:\n    max_gpu_equivalents: 2.5\n    max_gpu_slots: 9\n    max_gpus_per_container: 4\n  \
                free:\n    max_gpu_equivalents: null\n    aggregate:\n      gpu_limit: 2.0\ngpu_allocation:\n";
    let p = Policy::parse(text, Path::new("/p"), None, Path::new("/o")).unwrap();
    let eq = |g: &str| p.resolve("u", g, |l| &l.max_gpu_equivalents).value.clone();
    let pc = |g: &str| p.resolve("u", g, |l| &l.max_gpu_slots_per_container).value.clone();
    assert_eq!(
        eq("old"),
        Nullable::Value(GpuEq(3.0)),
        "an older name in a group beats the default's new one"
    );
    assert_eq!(pc("old"), Nullable::Value(2));
    assert_eq!(eq("both"), Nullable::Value(GpuEq(2.5)), "the new name first within a layer");
    assert_eq!(pc("both"), Nullable::Value(4));
    assert_eq!(eq("free"), Nullable::Unlimited);
    assert_eq!(GpuEq(2.5).units(1), 2, "whole GPUs within 2.5 GPU-equivalents");
    assert_eq!(GpuEq(2.5).units(7), 17, "17 sevenths within 2.5 GPU-equivalents");
    assert_eq!(GpuEq(2.0).units(7), 14);
    let agg = p.aggregate("u", "free").unwrap().1.gpu_limit.value().copied();
    assert_eq!(agg, Some(GpuEq(2.0)));
}
