//! `ds01ctl slices` for the systemd driver: the rendered units match the expected files,
//! `systemd-analyze verify` has nothing to say about them, and a second apply writes nothing.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

fn policy_dir(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("etc");
    fs::create_dir_all(p.join("groups")).unwrap();
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime-config/resource-limits.yaml"),
        p.join("resource-limits.yaml"),
    )
    .unwrap();
    fs::write(p.join("groups/student.members"), "alice\nh.baker@uni.example\n").unwrap();
    fs::write(p.join("groups/researcher.members"), "rita\n").unwrap();
    fs::write(p.join("groups/admin.members"), "datasciencelab\n").unwrap();
    fs::write(p.join("runtime.yaml"), "policy: resource-limits.yaml\n").unwrap();
    p.join("runtime.yaml")
}

fn files(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    for e in fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            out.extend(files(&e.path()).into_iter().map(|f| format!("{name}/{f}")));
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

#[test]
fn rendered_units_match_the_expected_files_and_verify_clean() {
    let tmp = TempDir::new("units");
    let cfg = policy_dir(tmp.path());
    let units = tmp.path().join("units");
    let o = Command::new(ds01ctl())
        .arg("--config")
        .arg(&cfg)
        .args(["slices", "--apply", "--dir"])
        .arg(&units)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/slices");
    assert_eq!(files(&units), files(&expected));
    for f in files(&expected) {
        assert_eq!(
            fs::read_to_string(units.join(&f)).unwrap(),
            fs::read_to_string(expected.join(&f)).unwrap(),
            "{f}"
        );
    }
    let again = Command::new(ds01ctl())
        .arg("--config")
        .arg(&cfg)
        .args(["slices", "--apply", "--dir"])
        .arg(&units)
        .output()
        .unwrap();
    assert!(stdout(&again).contains("units up to date"), "{}", stdout(&again));

    if !require(which("systemd-analyze").is_some(), "needs systemd-analyze (apt-get install systemd)") {
        return;
    }
    let verify = |unit: &str| {
        let o = Command::new("systemd-analyze")
            .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
            .args(["verify", "--man=no", unit])
            .output()
            .unwrap();
        stderr(&o)
    };
    for f in files(&units).iter().filter(|f| !f.contains('/')) {
        let warnings = verify(f);
        assert!(warnings.trim().is_empty(), "{f}: {warnings}");
    }
    // The verifier does speak up on a bad unit (so silence above means something).
    fs::write(units.join("ds01-student-alice.slice.d/20-bad.conf"), "[Slice]\nCPUQuota=banana\n").unwrap();
    assert!(verify("ds01-student-alice.slice").contains("Invalid CPU quota"));
}
