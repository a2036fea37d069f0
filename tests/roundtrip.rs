//! config.json fidelity: whatever no modifier touches comes out exactly as it went in (keys,
//! order, unknown and vendor fields, null vs absent, number spelling), over real engines' files.

use std::path::Path;

use ds01::create;
use ds01::create::host::Memory;
use ds01::policy::settings::{Settings, Unattributed};
use ds01::policy::Policy;
use serde_json::Value;

const FIXTURES: &[&str] = &[
    "docker-20.10-config.json",
    "podman-4.3-config.json",
    "runc-1.1-spec-config.json",
    "cri-containerd-config.json",
];

/// The id the engine gave the captured container (its own files are under that id).
fn container_id(name: &str) -> &'static str {
    match name {
        "docker-20.10-config.json" => "ba78d9be3456711b8562d8ac4712aac05190757f63605f3adcdf7f6fd3d0b3ab",
        "podman-4.3-config.json" => "841c42b07bba336cd3638bb6adead782a7ffbe986cd21ba10a6bfc55d6494881",
        _ => "cid",
    }
}

/// A create of the fixture `name` from a bundle that is nowhere on disk.
fn call(name: &str, systemd_cgroup: bool) -> create::Call {
    create::Call {
        id: container_id(name).into(),
        bundle: "/nonexistent".into(),
        runc_root: "/run/runc".into(),
        systemd_cgroup,
        restore: None,
        pid: 1,
    }
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Strips whitespace outside strings: an independent minifier to compare serde's output with.
/// The one normalization serde_json makes is an exponent's explicit `+` (`1e3` becomes `1e+3`,
/// the same number for every JSON reader); the minifier writes it the same way.
fn minify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut esc, mut expect_sign) = (false, false, false);
    for c in text.chars() {
        if in_str {
            out.push(c);
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if !c.is_whitespace() {
            out.push(c);
            if (c == 'e' || c == 'E') && out.len() >= 2 && out.as_bytes()[out.len() - 2].is_ascii_digit() {
                out.pop();
                out.push('e');
                expect_sign = true;
                continue;
            }
            if expect_sign && c.is_ascii_digit() {
                out.insert(out.len() - 1, '+');
            }
        }
        expect_sign = false;
    }
    out
}

/// A policy without per-container caps (the limits modifier, tested on its own, stays out),
/// and settings that place a container without an owner.
fn policy_and_settings() -> (Policy, Settings) {
    let policy =
        Policy::parse("default_group: student\n", Path::new("/p.yaml"), None, Path::new("/o.yaml")).unwrap();
    let mut settings = Settings::default();
    settings.identity.unattributed = Unattributed::Place;
    (policy, settings)
}

#[test]
fn unmodified_documents_serialize_byte_for_byte() {
    for name in FIXTURES {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), minify(&text), "{name}");
    }
}

#[test]
fn pipeline_changes_only_what_it_owns() {
    let (policy, settings) = policy_and_settings();
    for name in FIXTURES {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let original: Value = serde_json::from_str(&text).unwrap();
        for systemd in [false, true] {
            let host = Memory::new(text.as_bytes(), policy.clone());
            let plan = create::plan(&host, &call(name, systemd), &settings).unwrap();
            let mut out = plan.spec.clone();
            // Undo exactly the owned changes; the rest must be the original, byte for byte.
            let had_annotations = original.get("annotations").is_some();
            let ann = out["annotations"].as_object_mut().unwrap();
            for k in
                ["ds01.user", "ds01.group", "ds01.slice", "ds01.managed", "ds01.identity-source", "ds01.pod"]
            {
                match original.get("annotations").and_then(|a| a.get(k)) {
                    Some(v) => {
                        ann.insert(k.into(), v.clone());
                    }
                    None => {
                        ann.shift_remove(k);
                    }
                }
            }
            if !had_annotations {
                out.as_object_mut().unwrap().shift_remove("annotations");
            }
            match original["linux"].get("cgroupsPath") {
                Some(p) => out["linux"]["cgroupsPath"] = p.clone(),
                None => {
                    out["linux"].as_object_mut().unwrap().shift_remove("cgroupsPath");
                }
            }
            assert_eq!(serde_json::to_string(&out).unwrap(), minify(&text), "{name} systemd={systemd}");
            assert_ne!(plan.spec, original, "{name}: the pipeline must change something");
        }
    }
}

/// The create reads config.json with the parts no step reads carried as raw bytes: they come
/// back exactly as they were, and the pipeline's output is the same as over the whole document.
#[test]
fn carried_parts_come_back_as_they_were_and_change_nothing_else() {
    let (policy, settings) = policy_and_settings();
    let mut carried = 0;
    for name in FIXTURES {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let (value, parts) = ds01::create::opaque::parse(text.as_bytes()).unwrap();
        for (path, raw) in &parts {
            assert!(text.contains(raw.get()), "{name}: {path:?} is the input's own bytes");
        }
        carried += parts.len();
        let spliced = |v: &Value| {
            serde_json::to_string(&ds01::create::opaque::Spliced { value: v, parts: &parts }).unwrap()
        };
        assert_eq!(minify(&spliced(&value)), minify(&text), "{name}");
        let full: Value = serde_json::from_str(&text).unwrap();
        let carried_host = Memory::new(text.as_bytes(), policy.clone());
        let whole_host = Memory { carry: false, ..Memory::new(text.as_bytes(), policy.clone()) };
        let over_carried = create::plan(&carried_host, &call(name, false), &settings).unwrap();
        let over_full = create::plan(&whole_host, &call(name, false), &settings).unwrap();
        assert_eq!(full, serde_json::from_str::<Value>(&spliced(&value)).unwrap(), "{name}");
        assert_eq!(
            minify(&serde_json::to_string(&over_carried.spec).unwrap()),
            minify(&serde_json::to_string(&over_full.spec).unwrap()),
            "{name}"
        );
    }
    assert!(carried >= 4, "the fixtures carry Docker's and Podman's seccomp profiles and more");
}
