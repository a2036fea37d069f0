//! Shared helpers of the integration tests: prerequisites, temp dirs, busybox bundles, and
//! running the freshly built shim against real runc.
#![allow(dead_code)]

pub mod dockerd;
pub mod front_door;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// True in CI, where every prerequisite must be present.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The one way a test skips. Returns true when `ok`; otherwise the test cannot run on this
/// machine: in CI (which has every prerequisite, see .ci/run) that fails the test, elsewhere it
/// prints a `SKIPPED` line where the test runner shows it and returns false, and the caller
/// returns at once (`if !require(…) { return; }`).
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if in_ci() {
        panic!("CI is missing a prerequisite of this test: {what}");
    }
    skipped(what);
    false
}

/// `SKIPPED <binary>::<test>: <why> (runs in CI)` on the process's own stderr. libtest captures
/// only what the print macros write, so this line shows in `cargo test`'s output, while the
/// runner itself still counts the test as passed.
fn skipped(what: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    // libtest names each test's thread after the test.
    let test = thread.name().filter(|n| *n != "main").unwrap_or("<unnamed test>");
    let line = format!("SKIPPED {}::{test}: {what} (runs in CI)\n", env!("CARGO_CRATE_NAME"));
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Root, runc and busybox-static: what a real-runc test needs.
pub fn require_runc() -> bool {
    require(nix::unistd::geteuid().is_root(), "needs root")
        && require(which("runc").is_some(), "needs runc on PATH (apt-get install runc)")
        && require(Path::new("/bin/busybox").exists(), "needs /bin/busybox (apt-get install busybox-static)")
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// The shim as `ds01ctl install` installs it: the static musl binary, built by the ordinary
/// `cargo build --target <arch>-unknown-linux-musl --bin ds01-runtime` with this test run's
/// profile and target directory (once per test binary; a no-op when it is fresh), and staged
/// with `ds01ctl` and `ds01-front-door` beside it (where the shim finds its NVML helper, and
/// where `ds01ctl install --from` finds all three). Without the musl target installed: cargo's
/// own glibc build of this run, with a warning (`tests/shim_binary.rs` fails on that in CI);
/// the other two are beside it there too.
pub fn shim() -> PathBuf {
    static SHIM: OnceLock<PathBuf> = OnceLock::new();
    SHIM.get_or_init(|| {
        let musl = musl_triple();
        if !target_installed(&musl) {
            let glibc = PathBuf::from(env!("CARGO_BIN_EXE_ds01-runtime"));
            // Straight to stderr, past the test harness's capture: every run should say it.
            let _ = writeln!(
                std::io::stderr(),
                "warning: the {musl} target is not installed, so these tests run the glibc shim {} \
                 instead of the static musl one that is installed: rustup target add {musl}",
                glibc.display()
            );
            return glibc;
        }
        let built = cargo_build_shim(&musl, &[]).unwrap_or_else(|e| panic!("{e}"));
        stage_beside_ds01ctl(&built)
    })
    .clone()
}

/// The host's musl target, `<arch>-unknown-linux-musl`.
pub fn musl_triple() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// True when rustc has the standard library for `triple` (`rustup target add <triple>`).
pub fn target_installed(triple: &str) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc).args(["--print", "sysroot"]).output().is_ok_and(|o| {
        Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("lib/rustlib").join(triple).is_dir()
    })
}

/// This run's target directory and profile directory (`release`, `debug`), from where cargo
/// put ds01ctl: `<target>/<profile>`, or `<target>/<triple>/<profile>` under `--target`.
fn target_dir_and_profile() -> (PathBuf, String) {
    let ctl = ds01ctl();
    let dir = ctl.parent().unwrap();
    let profile = dir.file_name().unwrap().to_string_lossy().into_owned();
    let root = dir.ancestors().skip(1).find(|d| d.join("CACHEDIR.TAG").is_file()).or(dir.parent());
    (root.unwrap().to_path_buf(), profile)
}

/// Runs `cargo build --target <triple> --bin ds01-runtime` (the ordinary build, nothing of its
/// own) with this run's profile and target directory, `envs` added to cargo's environment;
/// returns the binary it built.
pub fn cargo_build_shim(triple: &str, envs: &[(&str, &str)]) -> Result<PathBuf, String> {
    let (target, dir) = target_dir_and_profile();
    let profile = if dir == "debug" { "dev" } else { &dir };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--locked", "--profile", profile, "--target", triple])
        .args(["--bin", "ds01-runtime", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .envs(envs.iter().copied())
        .stdin(Stdio::null());
    let o = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{cmd:?} failed:\n{}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(target.join(triple).join(dir).join("ds01-runtime"))
}

/// `shim` hard-linked (else copied) into `<target>/tmp/ds01-<profile>/`, with symlinks to
/// cargo's `ds01ctl` and `ds01-front-door` beside it, as `ds01ctl install` puts them side by
/// side. Each is put in place by a rename, so that test binaries running at once never see half
/// of one.
fn stage_beside_ds01ctl(shim: &Path) -> PathBuf {
    let (_, profile) = target_dir_and_profile();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ds01-{profile}"));
    std::fs::create_dir_all(&dir).unwrap();
    let place = |name: &str, make: &dyn Fn(&Path) -> std::io::Result<()>| {
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        make(&tmp).unwrap_or_else(|e| panic!("cannot stage {}: {e}", tmp.display()));
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    };
    place("ds01-runtime", &|tmp| {
        std::fs::hard_link(shim, tmp).or_else(|_| std::fs::copy(shim, tmp).map(drop))
    });
    place("ds01ctl", &|tmp| std::os::unix::fs::symlink(ds01ctl(), tmp));
    place("ds01-front-door", &|tmp| std::os::unix::fs::symlink(front_door_bin(), tmp));
    dir.join("ds01-runtime")
}

/// The admin tool built by cargo for this test run.
pub fn ds01ctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ds01ctl"))
}

/// The front door built by cargo for this test run (the ordinary build of its bin).
pub fn front_door_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ds01-front-door"))
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let base = std::env::var_os("DS01_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        TempDir::in_dir(&base, &format!("ds01-{tag}"))
    }

    /// A short-named temp dir under `base` (socket paths must stay under 108 bytes).
    pub fn in_dir(base: &Path, tag: &str) -> TempDir {
        let p = base.join(format!("{tag}-{}", nanos() % 100_000_000));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// A unique short name for users and containers of one test.
pub fn unique(tag: &str) -> String {
    format!("{tag}{}", nanos() % 1_000_000_000)
}

/// A runc bundle at `dir` with a busybox rootfs, running `sh -c script`, annotated with `annotations`.
pub fn busybox_bundle(dir: &Path, script: &str, annotations: &[(&str, &str)]) -> PathBuf {
    let bin = dir.join("rootfs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for tool in ["sh", "cat", "sleep", "ls", "head", "grep", "echo", "true"] {
        let _ = std::os::unix::fs::symlink("busybox", bin.join(tool));
    }
    let mut spec: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/runc-1.1-spec-config.json")).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    if !annotations.is_empty() {
        let ann: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
            .collect();
        spec["annotations"] = serde_json::Value::Object(ann);
    }
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    dir.to_path_buf()
}

/// A settings file in `dir` using the shipped policy, with `extra` YAML appended.
pub fn settings(dir: &Path, extra: &str) -> PathBuf {
    let policy_dir = dir.join("policy");
    std::fs::create_dir_all(policy_dir.join("groups")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime-config");
    std::fs::copy(root.join("resource-limits.yaml"), policy_dir.join("resource-limits.yaml")).unwrap();
    let path = dir.join("runtime.yaml");
    // Never the machine's own /var/lib/ds01: the front door's records stay in the test's folder.
    let door = if extra.contains("front_door:") { "" } else { "front_door:\n  verified_dir: verified\n" };
    // Before the extra lines: tests append to the last section of `extra` (`  cdi_dirs: …`).
    let text = format!(
        "low_level_runtime: runc\npolicy: policy/resource-limits.yaml\nstate_dir: state\naudit_log: log/events.jsonl\n{door}{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A real-runc sandbox: its own --root and --log, and containers force-deleted on drop.
pub struct Runc {
    pub tmp: TempDir,
    pub root: PathBuf,
    pub log: PathBuf,
    pub settings: PathBuf,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Runc {
    pub fn new(tag: &str, extra_settings: &str) -> Runc {
        let tmp = TempDir::new(tag);
        let root = tmp.path().join("runc-root");
        let log = tmp.path().join("log.json");
        let settings = settings(tmp.path(), extra_settings);
        Runc { tmp, root, log, settings, ids: Default::default() }
    }

    /// Runs the shim with runc's global flags (as containerd's shim passes them) and `args`.
    pub fn shim(&self, args: &[&str]) -> Output {
        self.shim_with(args, |_| {})
    }

    /// Like `shim`, after `tweak` adjusts the command. A `create` hands its stdio to the
    /// container, so its output goes through files (a pipe would stay open while it lives).
    pub fn shim_with(&self, args: &[&str], tweak: impl FnOnce(&mut Command)) -> Output {
        let creates = args.contains(&"create");
        if let Some(i) = args.iter().position(|a| *a == "create" || *a == "run") {
            if let Some(id) = args.last() {
                if i < args.len() - 1 {
                    self.ids.borrow_mut().push(id.to_string());
                }
            }
        }
        let mut cmd = Command::new(shim());
        cmd.env("DS01_RUNTIME_CONFIG", &self.settings)
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        if !creates {
            tweak(&mut cmd);
            return cmd.output().unwrap();
        }
        let n = unique("io");
        let (out, err) = (self.tmp.path().join(format!("{n}.out")), self.tmp.path().join(format!("{n}.err")));
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        tweak(&mut cmd);
        let status = cmd.status().unwrap();
        Output {
            status,
            stdout: std::fs::read(&out).unwrap_or_default(),
            stderr: std::fs::read(&err).unwrap_or_default(),
        }
    }

    /// Runs plain runc with the same --root.
    pub fn runc(&self, args: &[&str]) -> Output {
        Command::new("runc").arg("--root").arg(&self.root).args(args).output().unwrap()
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            let _ = self.runc(&["delete", "--force", id]);
        }
    }
}

/// stdout of a command, lossily.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of a command, lossily.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits up to `secs` for `f` to return Some.
pub fn wait_for<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > end {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Removes a test user's empty slice directories from every cgroup hierarchy (best effort).
pub fn remove_slices(group: &str, user: &str) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    let mut roots: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for r in roots {
        let _ =
            std::fs::remove_dir(r.join(format!("ds01.slice/ds01-{group}.slice/ds01-{group}-{user}.slice")));
    }
}

/// True when the shim writes cgroup v2 here: /sys/fs/cgroup is a cgroup2 mount (unified), the
/// test cgroups-rs makes. Otherwise v1, legacy or hybrid (DS01's machines).
pub fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The aggregate limits on a user's slice, read back from this host's cgroup files (v1 or v2)
/// as the kernel shows them.
#[derive(Debug)]
pub struct SliceFiles {
    /// Hard memory limit in bytes: v1 memory.limit_in_bytes, v2 memory.max.
    pub memory_max: String,
    /// Soft memory limit in bytes: v1 memory.soft_limit_in_bytes, v2 memory.high.
    pub memory_high: String,
    /// CFS quota in µs: v1 cpu.cfs_quota_us, v2 the first field of cpu.max.
    pub cpu_quota: String,
    /// CFS period in µs: v1 cpu.cfs_period_us, v2 the second field of cpu.max.
    pub cpu_period: String,
    /// pids.max.
    pub tasks_max: String,
    /// The memory controller's counters, with an `oom_kill N` line: v1 memory.oom_control, v2
    /// memory.events.
    pub oom: String,
}

/// The aggregate limits on `ds01-<group>-<user>.slice`; every file must be there.
pub fn slice_files(group: &str, user: &str) -> SliceFiles {
    let slice = format!("ds01.slice/ds01-{group}.slice/ds01-{group}-{user}.slice");
    let read = |controller: &str, file: &str| {
        let p = Path::new("/sys/fs/cgroup").join(controller).join(&slice).join(file);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        text.trim().to_owned()
    };
    if cgroup_v2() {
        let cpu = read("", "cpu.max");
        let (quota, period) = cpu.split_once(' ').unwrap_or_else(|| panic!("cpu.max: {cpu}"));
        SliceFiles {
            memory_max: read("", "memory.max"),
            memory_high: read("", "memory.high"),
            cpu_quota: quota.to_owned(),
            cpu_period: period.to_owned(),
            tasks_max: read("", "pids.max"),
            oom: read("", "memory.events"),
        }
    } else {
        SliceFiles {
            memory_max: read("memory", "memory.limit_in_bytes"),
            memory_high: read("memory", "memory.soft_limit_in_bytes"),
            cpu_quota: read("cpu", "cpu.cfs_quota_us"),
            cpu_period: read("cpu", "cpu.cfs_period_us"),
            tasks_max: read("pids", "pids.max"),
            oom: read("memory", "memory.oom_control"),
        }
    }
}

/// A /dev-like tree with `n` fake NVIDIA GPUs made by mknod: nvidia<i> (195:i), nvidiactl
/// (195:255), nvidia-uvm (235:0), nvidia-uvm-tools (235:1), and MIG cap nodes nvidia-caps/
/// nvidia-cap1..16 (236:i). Returns its path.
pub fn fake_dev(dir: &Path, n: u32) -> PathBuf {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let dev = dir.join("dev");
    std::fs::create_dir_all(dev.join("nvidia-caps")).unwrap();
    let mk = |rel: &str, major: u64, minor: u64| {
        mknod(&dev.join(rel), SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(major, minor))
            .unwrap();
    };
    for i in 0..n {
        mk(&format!("nvidia{i}"), 195, i as u64);
    }
    mk("nvidiactl", 195, 255);
    mk("nvidia-uvm", 235, 0);
    mk("nvidia-uvm-tools", 235, 1);
    for c in 1..=16 {
        mk(&format!("nvidia-caps/nvidia-cap{c}"), 236, c);
    }
    dev
}

/// Settings YAML for a static inventory of `n` GPUs over the fake tree at `dev`.
pub fn static_gpus(dev: &Path, n: u32) -> String {
    let mut s = format!("gpu:\n  inventory: static\n  dev_root: {}\n  static:\n", dev.display());
    for i in 0..n {
        s.push_str(&format!("    - {{index: {i}, uuid: GPU-fake-{i}, minor: {i}, name: Stand-in}}\n"));
    }
    s
}

/// Replaces the test policy with `yaml` (beside the settings of a `Runc` or `Dockerd`).
pub fn write_policy(dir: &Path, yaml: &str) {
    std::fs::write(dir.join("policy/resource-limits.yaml"), yaml).unwrap();
}

/// A policy where every GPU counts as one slot, students may take one per container and hold
/// `hold` after a stop, and `admin` is an admin.
pub fn gpu_policy(hold: &str) -> String {
    format!(
        "defaults:\n  max_mig_instances: 2\n  max_mig_per_container: 1\n  allow_full_gpu: true\n  gpu_hold_after_stop: {hold}\n\
         default_group: student\ngroups:\n  student:\n    aggregate:\n      gpu_limit: 2\n  admin:\n    max_mig_instances: null\n    max_mig_per_container: null\n\
         gpu_allocation:\n  mig_instances_per_gpu: 1\naccess_control:\n  admin_users: [admin]\n"
    )
}

/// Builds the stand-in libnvidia-ml.so.1 from tests/nvml-standin/fake_nvml.c into `dir`.
pub fn build_nvml_standin(dir: &Path) -> Option<PathBuf> {
    if !require(which("gcc").is_some(), "needs gcc to build the stand-in libnvidia-ml.so") {
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nvml-standin/fake_nvml.c");
    let lib = dir.join("libnvidia-ml.so.1");
    let out = Command::new("gcc")
        .args(["-std=c99", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "gcc: {}", String::from_utf8_lossy(&out.stderr));
    Some(lib)
}

/// A fake driver proc tree giving MIG instance (gi, ci=0) of GPU `minor` the cap nodes
/// nvidia-cap<2*gi+1> (gi access) and nvidia-cap<2*gi+2> (ci access).
pub fn fake_mig_proc(dir: &Path, minor: u32, gis: &[u32]) -> PathBuf {
    let proc_root = dir.join("proc-nvidia");
    for gi in gis {
        let base = proc_root.join(format!("capabilities/gpu{minor}/mig/gi{gi}"));
        std::fs::create_dir_all(base.join("ci0")).unwrap();
        std::fs::write(
            base.join("access"),
            format!("DeviceFileMinor: {}\nDeviceFileMode: 292\n", 2 * gi + 1),
        )
        .unwrap();
        std::fs::write(base.join("ci0/access"), format!("DeviceFileMinor: {}\n", 2 * gi + 2)).unwrap();
    }
    proc_root
}

/// A CDI spec shaped like nvidia-ctk's, in `dir`/cdi and named in `settings` (whose last
/// section must be `gpu:`): a driver library to mount, a hook that saves the container state in
/// `dir`/hook-state, env, the control nodes, and per-GPU nodes (plus `all`, never to be used).
pub fn write_cdi(dir: &Path, settings: &Path, n: u32) -> PathBuf {
    let (cdi, driver) = (dir.join("cdi"), dir.join("driver"));
    std::fs::create_dir_all(&cdi).unwrap();
    std::fs::create_dir_all(&driver).unwrap();
    std::fs::write(driver.join("libcuda.so.535.104.05"), "fake libcuda 535\n").unwrap();
    let mut y = String::from("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n");
    for i in 0..n {
        y += &format!("- name: \"{i}\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia{i}\n");
    }
    y += "- name: all\n  containerEdits:\n    deviceNodes:\n";
    for i in 0..n {
        y += &format!("    - path: /dev/nvidia{i}\n");
    }
    y += &format!(
        "containerEdits:\n  env: [NVIDIA_VISIBLE_DEVICES=void, 'NVIDIA_DRIVER_CAPABILITIES=compute,utility']\n\
         \x20 deviceNodes: [{{path: /dev/nvidiactl}}, {{path: /dev/nvidia-uvm}}, {{path: /dev/nvidia-uvm-tools}}]\n\
         \x20 hooks:\n  - {{hookName: createRuntime, path: /bin/sh, args: [sh, -c, 'cat > {hook}']}}\n\
         \x20 mounts:\n  - {{hostPath: {lib}, containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.1, options: [ro, nosuid, nodev, bind]}}\n",
        hook = dir.join("hook-state").display(),
        lib = driver.join("libcuda.so.535.104.05").display(),
    );
    std::fs::write(cdi.join("nvidia.yaml"), y).unwrap();
    let text = std::fs::read_to_string(settings).unwrap() + &format!("  cdi_dirs: [{}]\n", cdi.display());
    std::fs::write(settings, text).unwrap();
    cdi
}

/// The audit events in `<dir>/log/events.jsonl`, the log [`settings`] names; every line must be
/// whole JSON.
pub fn audit_events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("log/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every audit line is whole JSON"))
        .collect()
}

/// True when Python 3.8's `datetime.fromisoformat` (DS01's readers) accepts `s`:
/// `YYYY-MM-DDTHH:MM:SS`, then `.fff` or `.ffffff`, then `±HH:MM` (no `Z`, no nanoseconds).
pub fn python38_isoformat(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() < 19 || !digits(0..4) || b[4] != b'-' || !digits(5..7) || b[7] != b'-' || !digits(8..10) {
        return false;
    }
    if b[10] != b'T'
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n != 3 && n != 6 {
            return false;
        }
        rest = &r[n..];
    }
    let o = rest.as_bytes();
    rest.is_empty()
        || (o.len() == 6
            && matches!(o[0], b'+' | b'-')
            && o[1..3].iter().all(u8::is_ascii_digit)
            && o[3] == b':'
            && o[4..6].iter().all(u8::is_ascii_digit))
}

/// The `event` events of `container` among `events`.
pub fn events_of<'a>(
    events: &'a [serde_json::Value],
    container: &str,
    event: &str,
) -> Vec<&'a serde_json::Value> {
    events.iter().filter(|e| e["container"] == container && e["event"] == event).collect()
}

/// The allocations in `<dir>/state/gpus.json` (none when there is no file yet).
pub fn gpu_allocations(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("state/gpus.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["allocations"].as_array().cloned().unwrap_or_default()
}

/// Stops an engine: SIGTERM, up to `secs` seconds to exit, then SIGKILL.
pub fn stop_child(child: &mut std::process::Child, secs: u64) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if wait_for(secs, || child.try_wait().ok().flatten()).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// SIGKILLs every process whose command line names `dir` (an engine's containerd, shim or
/// conmon that outlived it).
pub fn kill_naming(dir: &Path) {
    let me = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(&me) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}
