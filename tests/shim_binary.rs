//! The shim binary as built for install (`common::shim`): statically linked against musl (no
//! dynamic loader and no glibc start-up on every container call), and carrying no code that
//! would load a shared object at run time (NVML, NSS modules), which a static program cannot do
//! safely.

mod common;

use common::*;

/// ELF64 little-endian program header types, per the System V ABI.
const PT_INTERP: u32 = 3;
const PT_DYNAMIC: u32 = 2;

/// (type, file offset, file size) of each program header.
fn program_headers(elf: &[u8]) -> Vec<(u32, usize, usize)> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELF64");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, size, count) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..count)
        .map(|i| {
            let o = phoff + i * size;
            (u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()), u64_at(o + 8), u64_at(o + 32))
        })
        .collect()
}

/// The DT_NEEDED entries' count: the shared libraries the binary asks for.
fn needed(elf: &[u8]) -> usize {
    const DT_NEEDED: u64 = 1;
    program_headers(elf)
        .into_iter()
        .filter(|(t, _, _)| *t == PT_DYNAMIC)
        .flat_map(|(_, off, len)| elf[off..off + len].chunks_exact(16))
        .map(|e| u64::from_le_bytes(e[..8].try_into().unwrap()))
        .take_while(|tag| *tag != 0)
        .filter(|tag| *tag == DT_NEEDED)
        .count()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// True when the musl target is there to build the shim with; otherwise fails in CI, or says
/// the test is skipped.
fn require_musl() -> bool {
    let triple = musl_triple();
    require(target_installed(&triple), &format!("needs the {triple} target (rustup target add {triple})"))
}

#[test]
fn the_shim_is_static_and_loads_nothing_at_run_time() {
    let bin = std::fs::read(shim()).unwrap();
    for word in [&b"nvmlInit"[..], b"getpwuid", b"getgrnam", b"libnss_files"] {
        assert!(!contains(&bin, word), "the shim carries {}", String::from_utf8_lossy(word));
    }
    // Without the musl target the tests run cargo's own glibc build, which is dynamic.
    if !require_musl() {
        return;
    }
    let types: Vec<u32> = program_headers(&bin).iter().map(|h| h.0).collect();
    assert!(!types.contains(&PT_INTERP), "the shim asks for a dynamic loader: {types:?}");
    // static-pie keeps a PT_DYNAMIC for its own relocations, but needs no library.
    assert_eq!(needed(&bin), 0, "the shim needs shared libraries");
}

#[test]
fn ds01ctl_stays_dynamic_for_nvml() {
    let bin = std::fs::read(ds01ctl()).unwrap();
    assert!(program_headers(&bin).iter().any(|h| h.0 == PT_INTERP), "ds01ctl must load libnvidia-ml");
    assert!(needed(&bin) > 0);
}

/// The shim is a musl binary: glibc's start-up, even statically linked, asks the CPU for its
/// cache sizes (CPUID, which traps to the hypervisor in a VM), 0.2 ms of every runtime call on
/// the benchmark machine (BENCHMARKS.md, "What each speed-up buys"). `common::shim` builds it with the ordinary `cargo build --target
/// <arch>-unknown-linux-musl` when that target is installed, which .ci/run does; elsewhere the
/// tests run the glibc shim, and say so.
#[test]
fn the_shim_is_built_against_musl() {
    let bin = std::fs::read(shim()).unwrap();
    if !require_musl() {
        return;
    }
    assert!(!contains(&bin, b"GLIBC_TUNABLES"), "the shim carries glibc's start-up");
}

/// The follow-up child of a lifecycle call (here `kill`) waits for runc at SCHED_IDLE, so it
/// never takes a CPU from the engine: set by the raw system call, since musl's
/// `sched_setscheduler` is a stub that always fails.
#[test]
fn the_followup_child_waits_at_idle_priority() {
    let tmp = TempDir::new("idle");
    let slow = tmp.path().join("slow-runc");
    std::fs::write(&slow, "#!/bin/sh\nexec sleep 2\n").unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let settings = tmp.path().join("runtime.yaml");
    std::fs::write(
        &settings,
        format!("low_level_runtime: {}\nstate_dir: state\naudit_log: log/events.jsonl\n", slow.display()),
    )
    .unwrap();
    let root = tmp.path().join("root");
    let mut call = std::process::Command::new(shim())
        .env("DS01_RUNTIME_CONFIG", &settings)
        .args(["--root", &root.to_string_lossy(), "kill", "idle-test", "KILL"])
        .spawn()
        .unwrap();
    let parent = call.id().to_string();
    // /proc/<pid>/stat: `pid (comm) state ppid …`; the fields after the command's closing
    // parenthesis start at field 3; field 4 is the parent, field 41 the scheduling policy.
    // The follow-up is the shim's child still named ds01-runtime.
    let stat = |pid: &str| -> Option<Vec<String>> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = s.rsplit_once(") ")?;
        head.ends_with("(ds01-runtime").then(|| rest.split_whitespace().map(str::to_owned).collect())
    };
    const SCHED_IDLE: &str = "5";
    let mut seen = None;
    let idle = wait_for(2, || {
        let found = std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let f = stat(&e.file_name().to_string_lossy())?;
            (f.get(1)? == &parent).then(|| f.get(38).cloned()).flatten()
        });
        seen = found.or(seen.take());
        (seen.as_deref() == Some(SCHED_IDLE)).then_some(())
    });
    let _ = call.wait();
    assert!(idle.is_some(), "the follow-up child's scheduling policy: {seen:?} (5 is SCHED_IDLE)");
}
