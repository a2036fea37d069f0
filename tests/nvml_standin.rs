//! `gpu::nvml::query` against a stand-in libnvidia-ml.so built from tests/nvml-standin/fake_nvml.c.
//!
//! The stand-in reads FAKE_NVML_* at nvmlInit; environment variables are process-wide, so every
//! case runs in order inside the one test of this binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require, which};

use ds01::gpu::nvml::query;
use ds01::gpu::Gpu;

/// Builds the stand-in with gcc into a fresh temporary directory.
fn build_standin() -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvml-standin/fake_nvml.c");
    let dir = std::env::temp_dir().join(format!("ds01-nvml-standin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let lib = dir.join("libnvidia-ml.so.1");
    let out = Command::new("gcc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run gcc: {e}"));
    assert!(
        out.status.success(),
        "gcc failed on {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

fn set_env(gpus: Option<&str>, mig: Option<&str>, fail_init: bool) {
    for (key, val) in
        [("FAKE_NVML_GPUS", gpus), ("FAKE_NVML_MIG", mig), ("FAKE_NVML_FAIL_INIT", fail_init.then_some("1"))]
    {
        match val {
            Some(v) => std::env::set_var(key, v),
            None => std::env::remove_var(key),
        }
    }
}

fn gpu_uuid(i: u32) -> String {
    format!("GPU-00000000-0000-0000-0000-{i:012x}")
}

#[test]
fn query_against_standin() {
    if !require(
        which("gcc").is_some(),
        "needs gcc to build the stand-in libnvidia-ml.so (apt-get install gcc)",
    ) {
        return;
    }
    let lib = build_standin();
    let run = || query(lib.as_os_str());

    // Defaults: 4 GPUs, no MIG.
    set_env(None, None, false);
    let gpus = run().expect("default query");
    assert_eq!(gpus.len(), 4);
    for (i, g) in (0u32..).zip(&gpus) {
        let want = Gpu {
            index: i,
            uuid: gpu_uuid(i),
            minor: i,
            name: "NVIDIA Stand-in A100".into(),
            memory_mib: 40960,
            mig_enabled: false,
            migs: vec![],
        };
        assert_eq!(g, &want);
        assert_eq!(g.uuid.len(), 4 + 36);
    }

    // GPU count from the environment.
    set_env(Some("8"), None, false);
    let gpus = run().expect("8-GPU query");
    assert_eq!(gpus.iter().map(|g| g.index).collect::<Vec<_>>(), (0..8).collect::<Vec<_>>());
    assert_eq!(gpus[7].uuid, gpu_uuid(7));

    // MIG on GPU 2 with 3 instances; the others stay whole.
    set_env(None, Some("2:3"), false);
    let gpus = run().expect("MIG query");
    assert_eq!(gpus.len(), 4);
    for g in &gpus {
        assert_eq!(g.mig_enabled, g.index == 2, "GPU {}", g.index);
        assert_eq!(g.migs.is_empty(), g.index != 2, "GPU {}", g.index);
    }
    let migs = &gpus[2].migs;
    assert_eq!(migs.iter().map(|m| m.gi).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(migs.iter().all(|m| m.ci == 0 && m.caps.is_empty() && m.uuid.starts_with("MIG-")));
    let mut uuids: Vec<_> = migs.iter().map(|m| m.uuid.as_str()).collect();
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), 3, "MIG UUIDs not distinct: {migs:?}");
    // Each instance's compute slices, read from its attributes (DS01's weight is this over 7).
    assert_eq!(migs.iter().map(|m| m.slices).collect::<Vec<_>>(), [Some(1), Some(2), Some(3)]);

    // Init failure names the library.
    set_env(None, None, true);
    let err = run().expect_err("init should fail").to_string();
    assert!(err.contains(&*lib.to_string_lossy()) && err.contains("initialize"), "{err}");
    assert!(!err.contains('\n'));

    // A missing library names its path.
    set_env(None, None, false);
    let missing = lib.with_file_name("no-such-libnvidia-ml.so.1");
    let err = query(missing.as_os_str()).expect_err("missing library").to_string();
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");

    let _ = std::fs::remove_dir_all(lib.parent().unwrap_or(&lib));
}
