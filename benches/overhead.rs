//! The benchmark: what ds01-runtime costs over runc, measured side by side in one run with the
//! two arms alternating (ABBA) so that machine drift cancels. Run with
//! `cargo bench --bench overhead` (root; runc, busybox-static, docker.io). `-- --quick` for a
//! smoke run, `-- --write BENCHMARKS.md` to record the table with the machine it ran on.
//! `-- --only front-door` runs only the front door's rows (`front_door`), `-- --only runtime`
//! only the runtime's; with `--write`, the part not run is kept as the file has it.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "front_door/mod.rs"]
mod front_door;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dockerd::{Dockerd, Opts};
use common::*;

/// The heading of BENCHMARKS.md's hand-written part, which `--write` keeps.
const ANALYSIS: &str = "## Reading these numbers";

/// A tmpfs every Linux host has (this VM's /run is not one).
const TMPFS: &str = "/dev/shm";

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(v: &[f64]) -> Stats {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Stats { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
}

/// The median of the paired differences `a[i] - b[i]` with its distribution-free 95% confidence
/// interval (order statistics of the sign test): pairing cancels the drift both arms share.
fn paired(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let mut d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    d.sort_by(|x, y| x.total_cmp(y));
    let n = d.len();
    let k = ((n as f64 - 1.96 * (n as f64).sqrt()) / 2.0).floor().max(0.0) as usize;
    (d[n / 2], d[k.min(n - 1)], d[(n - 1 - k).min(n - 1)])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A row of the table: one arm against its baseline, in ms.
struct Row {
    what: String,
    arm: Vec<f64>,
    base: Vec<f64>,
}

impl Row {
    fn new(what: impl Into<String>, arm: &[f64], base: &[f64]) -> Row {
        Row { what: what.into(), arm: arm.to_vec(), base: base.to_vec() }
    }

    fn line(&self) -> String {
        let (s, r) = (stats(&self.arm), stats(&self.base));
        let (d, lo, hi) = paired(&self.arm, &self.base);
        format!(
            "| {} | {} | {:.3} ({:.3}–{:.3}) | {:.3} ({:.3}–{:.3}) | {:.3} | {:+.3} ({:+.3} to {:+.3}) |",
            self.what,
            self.arm.len(),
            s.median,
            s.min,
            s.max,
            r.median,
            r.min,
            r.max,
            s.median / r.median,
            d,
            lo,
            hi
        )
    }
}

const HEADER: &str = "| measurement | n | measured arm: median (min–max) ms | baseline arm: median (min–max) ms | ratio of medians | added ms: median of paired differences (95% CI) |\n|---|---|---|---|---|---|\n";

/// Runs each of `arms` arms `n` times through `run(arm)`, the order reversed each round
/// (A B C, C B A, …) so that drift cancels; returns each arm's timings in ms, round i of every
/// arm forming a pair.
fn alternate(n: usize, arms: usize, mut run: impl FnMut(usize) -> f64) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(n); arms];
    for i in 0..n {
        let order: Vec<usize> = if i % 2 == 0 { (0..arms).collect() } else { (0..arms).rev().collect() };
        for k in order {
            out[k].push(run(k));
        }
    }
    out
}

/// Builds the anchors' wrappers: a static C program that only calls execv, and a `sh` script
/// that only does `exec "$@"`, each in front of `target`.
fn anchors(dir: &Path, target: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let src = dir.join("execv.c");
    fs::write(
        &src,
        format!(
            "#include <unistd.h>\nint main(int c, char **v) {{ v[0] = \"{0}\"; execv(\"{0}\", v); return 127; }}\n",
            target.display()
        ),
    )
    .unwrap();
    let bin = dir.join("execv-static");
    if quiet(Command::new("cc").args(["-O2", "-static", "-o"]).arg(&bin).arg(&src)) {
        out.push(("a static C program that only calls execv".to_owned(), bin));
    }
    let sh = dir.join("exec.sh");
    fs::write(&sh, format!("#!/bin/sh\nexec {} \"$@\"\n", target.display())).unwrap();
    fs::set_permissions(&sh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    out.push(("a `sh` script that only does `exec runc \"$@\"`".to_owned(), sh));
    out
}

struct Bench {
    tmp: TempDir,
    shim: PathBuf,
    settings: PathBuf,
    root: PathBuf,
    pristine: Vec<u8>,
    bundle: PathBuf,
}

impl Bench {
    fn new() -> Bench {
        // On tmpfs, as on a real host: containerd's bundles and /run/ds01-runtime are under /run.
        let tmp = TempDir::in_dir(Path::new(TMPFS), "ds01-bench");
        let dev = fake_dev(tmp.path(), 4);
        let settings = settings(tmp.path(), &static_gpus(&dev, 4));
        // The shipped DS01 policy, with a full GPU counting as one slot so a student may take one.
        let policy = include_str!("../runtime-config/resource-limits.yaml")
            .replace("mig_instances_per_gpu: 4", "mig_instances_per_gpu: 1");
        write_policy(tmp.path(), &policy);
        let bundle =
            busybox_bundle(&tmp.path().join("b"), "sleep 30", &[("ds01.user", "bench"), ("ds01.gpus", "1")]);
        let pristine = fs::read(bundle.join("config.json")).unwrap();
        let root = tmp.path().join("runc-root");
        Bench { shim: shim(), settings, root, pristine, bundle, tmp }
    }

    fn run(&self, bin: &Path, args: &[&str]) -> bool {
        quiet(
            Command::new(bin)
                .env("DS01_RUNTIME_CONFIG", &self.settings)
                .arg("--root")
                .arg(&self.root)
                .args(args),
        )
    }

    /// One create + delete, timed, from a fresh copy of the pristine config.json.
    fn create_delete(&self, bin: &Path, id: &str) -> f64 {
        self.create_delete_from(bin, id, &self.pristine)
    }

    /// One create + delete, timed, from a fresh copy of `config`.
    fn create_delete_from(&self, bin: &Path, id: &str, config: &[u8]) -> f64 {
        fs::write(self.bundle.join("config.json"), config).unwrap();
        let b = self.bundle.to_str().unwrap();
        let t = Instant::now();
        assert!(self.run(bin, &["create", "--bundle", b, id]), "create through {}", bin.display());
        assert!(self.run(bin, &["delete", "--force", id]));
        ms(t.elapsed())
    }
}

/// `docker run` flags that give plain runc what the shim gave the last container in `log`: its
/// owner's slice as the cgroup parent, and the memory, swap, CPU and pids limits.
fn same_placement(log: &str) -> Vec<String> {
    let ev = log
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"] == "create")
        .expect("the shim recorded a create");
    let (group, owner) = (ev["group"].as_str().unwrap_or(""), ev["owner"].as_str().unwrap_or(""));
    let parent = format!("/ds01.slice/ds01-{group}.slice/ds01-{group}-{owner}.slice");
    let lim = &ev["limits"];
    let mut out = vec!["--runtime".to_owned(), "runc".to_owned(), "--cgroup-parent".to_owned(), parent];
    for (flag, key) in [
        ("--memory", "memory"),
        ("--memory-swap", "memory_swap"),
        ("--cpu-quota", "cpu_quota"),
        ("--cpu-period", "cpu_period"),
        ("--pids-limit", "pids"),
    ] {
        if let Some(v) = lim[key].as_i64() {
            out.push(format!("{flag}={v}"));
        }
    }
    out
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let runc = Command::new("runc")
        .arg("--version")
        .output()
        .map(|o| stdout(&o).lines().next().unwrap_or("").to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}, {runc}", kernel.trim())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == front_door::http::FLAG) {
        // This binary as the front door rows' HTTP client (see front_door::http).
        front_door::http::main(&args[i + 1]);
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let write = args.iter().position(|a| a == "--write").and_then(|i| args.get(i + 1)).cloned();
    let only = args.iter().position(|a| a == "--only").map(|i| args.get(i + 1).cloned().unwrap_or_default());
    let (runtime, door) = match only.as_deref() {
        None => (true, true),
        Some("runtime") => (true, false),
        Some("front-door") => (false, true),
        Some(other) => panic!("--only {other:?}: runtime or front-door"),
    };
    if !require_runc() {
        return;
    }
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| stdout(&o).trim().to_owned())
        .unwrap_or_default();
    let head = runtime.then(|| runtime_rows(quick, &date));
    let door_section = if !door || !common::dockerd::require_docker() {
        None
    } else {
        match front_door::run(quick, &machine(), &date) {
            Ok(s) => Some(s),
            Err(why) => {
                println!("{why}");
                None
            }
        }
    };
    if let Some(s) = &door_section {
        println!("\n{s}");
    }
    if let Some(path) = write {
        let old = fs::read_to_string(&path).unwrap_or_default();
        fs::write(&path, splice(&old, head, door_section)).unwrap();
    }
}

/// BENCHMARKS.md with the parts this run made put in place of the old ones: the runtime's
/// table at the top (`head`), the front door's section (`door`, from its heading to the next
/// `## ` heading), then the hand-written part from [`ANALYSIS`] on, which is always kept. A
/// part this run did not make stays as it was.
fn splice(old: &str, head: Option<String>, door: Option<String>) -> String {
    let analysis = old.find(&format!("\n{ANALYSIS}")).map(|i| i + 1).unwrap_or(old.len());
    let door_at = old.find(&format!("\n{}\n", front_door::HEADING)).map(|i| i + 1).filter(|i| *i < analysis);
    let door_end = door_at
        .map(|at| old[at + 1..analysis].find("\n## ").map(|j| at + 1 + j + 1).unwrap_or(analysis))
        .unwrap_or(analysis);
    let old_head = &old[..door_at.unwrap_or(analysis)];
    let old_door = door_at.map(|at| &old[at..door_end]).unwrap_or("");
    // Anything between the front door's section and the analysis (another generated part).
    let between = &old[door_end..analysis];
    let parts =
        [head.as_deref().unwrap_or(old_head), door.as_deref().unwrap_or(old_door), between, &old[analysis..]];
    let mut out = String::new();
    for p in parts.iter().map(|p| p.trim_end()).filter(|p| !p.is_empty()) {
        out.push_str(p);
        out.push_str("\n\n");
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

/// The runtime's rows (issues 7 to 17): the top of BENCHMARKS.md, printed as it is measured.
fn runtime_rows(quick: bool, date: &str) -> String {
    let n = if quick { 4 } else { 150 };
    let b = Bench::new();
    let runc = which("runc").unwrap();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // 1. create + delete, full pipeline: owner, slice, 4 fake GPUs with one allocated, audit.
    b.create_delete(&b.shim, "bench-shim");
    b.create_delete(&runc, "warm-runc");
    let t = alternate(n, 2, |k| {
        if k == 0 {
            b.create_delete(&b.shim, "bench-shim")
        } else {
            b.create_delete(&runc, "bench-runc")
        }
    });
    rows.push(Row::new("create + delete (owner, slice, 1 of 4 GPUs, audit) vs runc", &t[0], &t[1]));

    // 1b. The same, with runc given the spec the shim writes (its slice, limits and GPU nodes):
    // what the shim itself costs, apart from what the policy asks runc to do.
    fs::write(b.bundle.join("config.json"), &b.pristine).unwrap();
    assert!(b.run(&b.shim, &["create", "--bundle", b.bundle.to_str().unwrap(), "bench-shim"]));
    let patched = fs::read(b.bundle.join("config.json")).unwrap();
    assert!(b.run(&b.shim, &["delete", "--force", "bench-shim"]));
    let t = alternate(n, 2, |k| {
        if k == 0 {
            b.create_delete(&b.shim, "bench-shim")
        } else {
            b.create_delete_from(&runc, "bench-runc", &patched)
        }
    });
    rows.push(Row::new(
        "create + delete vs runc given the spec the shim writes (the shim's own cost)",
        &t[0],
        &t[1],
    ));

    // 2. pass-through `state` of an existing container, per call, with the anchors beside it.
    fs::write(b.bundle.join("config.json"), &b.pristine).unwrap();
    assert!(b.run(&runc, &["create", "--bundle", b.bundle.to_str().unwrap(), "bench-state"]));
    let calls = if quick { 20 } else { 400 };
    let timed = |bin: &Path, settings: &Path, args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.env("DS01_RUNTIME_CONFIG", settings).arg("--root").arg(&b.root).args(args);
        let t = Instant::now();
        assert!(quiet(&mut cmd), "{} {args:?}", bin.display());
        ms(t.elapsed())
    };
    let mut arms: Vec<(String, PathBuf)> = vec![("ds01-runtime".into(), b.shim.clone())];
    arms.extend(anchors(b.tmp.path(), &runc));
    arms.push(("runc".into(), runc.clone()));
    let t = alternate(calls, arms.len(), |k| timed(&arms[k].1, &b.settings, &["state", "bench-state"]));
    let last = t.len() - 1;
    for (k, (name, _)) in arms.iter().enumerate().take(last) {
        let what = if k == 0 {
            "pass-through `state`, per call, vs runc".to_owned()
        } else {
            format!("anchor: {name}, `state`, vs runc")
        };
        rows.push(Row::new(what, &t[k], &t[last]));
    }

    // 2b. The added cost alone: the low-level runtime is /bin/true, so runc's own 4–10 ms
    // spread is out of the measurement.
    let true_settings = b.tmp.path().join("true.yaml");
    let text = fs::read_to_string(&b.settings).unwrap();
    fs::write(&true_settings, text.replace("low_level_runtime: runc", "low_level_runtime: /bin/true"))
        .unwrap();
    let tru = PathBuf::from("/bin/true");
    let mut arms: Vec<(String, PathBuf)> = vec![("ds01-runtime".into(), b.shim.clone())];
    // The same shim linked statically against glibc, by the ordinary cargo build for the host's
    // gnu target with +crt-static: what building it for musl buys.
    let gnu = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    match cargo_build_shim(&gnu, &[("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")]) {
        Ok(glibc) => arms.push(("the same shim linked statically against glibc".into(), glibc)),
        Err(e) => notes.push(format!("the shim linked statically against glibc: skipped, {e}")),
    }
    let glibc_arm = arms.len() == 2;
    arms.extend(anchors(b.tmp.path(), &tru));
    arms.push(("/bin/true".into(), tru.clone()));
    let t = alternate(calls * 2, arms.len(), |k| timed(&arms[k].1, &true_settings, &["state", "x"]));
    let last = t.len() - 1;
    for (k, (name, _)) in arms.iter().enumerate().take(last) {
        let what = if k == 0 {
            "pass-through alone: the shim in front of /bin/true vs /bin/true".to_owned()
        } else if k == 1 && glibc_arm {
            format!("{name}, in front of /bin/true, vs /bin/true")
        } else {
            format!("anchor: {name}, in front of /bin/true, vs /bin/true")
        };
        rows.push(Row::new(what, &t[k], &t[last]));
    }
    if glibc_arm {
        rows.push(Row::new(
            "pass-through alone: the shim (static musl) vs the same shim linked statically against glibc",
            &t[0],
            &t[1],
        ));
    }

    let kill = |bin: &Path| {
        let t = Instant::now();
        b.run(bin, &["kill", "bench-state", "KILL"]);
        ms(t.elapsed())
    };
    let t = alternate(calls, 2, |k| kill(if k == 0 { &b.shim } else { &runc }));
    rows.push(Row::new("pass-through `kill` (recorded in the audit), per call, vs runc", &t[0], &t[1]));
    b.run(&runc, &["delete", "--force", "bench-state"]);

    // 3. docker run --rm through a private engine, and plain runc given the same slice and
    // limits by docker's own flags: the part of the difference that is runc doing what the
    // policy asks (a deeper cgroup, limits), not the shim.
    if which("dockerd").is_some() {
        let d = Dockerd::start("bench", Opts { base: Some(Path::new(TMPFS)), ..Opts::default() });
        let log = d.tmp.path().join("log/events.jsonl");
        let run = |extra: &[String]| {
            let mut args: Vec<&str> = vec!["run", "--rm", "--label", "ds01.user=bench"];
            args.extend(extra.iter().map(String::as_str));
            args.extend(["ds01-busybox:test", "true"]);
            let t = Instant::now();
            let o = d.docker(&args);
            assert!(o.status.success(), "{}", stderr(&o));
            ms(t.elapsed())
        };
        let ds01 = ["--runtime".to_owned(), "ds01".to_owned()];
        let plain = ["--runtime".to_owned(), "runc".to_owned()];
        run(&ds01);
        let same = same_placement(&fs::read_to_string(&log).unwrap_or_default());
        run(&plain);
        run(&same);
        let dn = if quick { 3 } else { 300 };
        let t = alternate(dn, 3, |k| run([&ds01[..], &plain[..], &same[..]][k]));
        rows.push(Row::new("`docker run --rm`, `--runtime ds01` vs `--runtime runc`", &t[0], &t[1]));
        rows.push(Row::new(
            "`docker run --rm`, `--runtime ds01` vs runc given the same slice and limits by docker flags",
            &t[0],
            &t[2],
        ));
        rows.push(Row::new(
            "`docker run --rm`, runc with that slice and those limits vs runc without (the policy's own cost in runc)",
            &t[2],
            &t[1],
        ));
    } else {
        notes.push("docker run: skipped, no dockerd".to_owned());
    }

    // 4. 50 creates at once against 4 GPUs, from a clean state (the rows above leave bench-shim's
    // GPU held for its owner, as the shipped policy says).
    let log = b.tmp.path().join("log/events.jsonl");
    let _ = fs::remove_file(&log);
    let _ = fs::remove_file(b.tmp.path().join("state/gpus.json"));
    let shared = b.tmp.path().join("shared");
    fs::create_dir_all(&shared).unwrap();
    let t = Instant::now();
    let mut kids = Vec::new();
    for i in 0..50 {
        let dir = b.tmp.path().join(format!("p{i}"));
        fs::create_dir_all(&dir).unwrap();
        let mut cfg: serde_json::Value = serde_json::from_slice(&b.pristine).unwrap();
        cfg["root"] = serde_json::json!({"path": b.bundle.join("rootfs"), "readonly": true});
        cfg["annotations"] = serde_json::json!({"ds01.user": format!("u{i}"), "ds01.gpus": "1"});
        fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
        let child = Command::new(&b.shim)
            .env("DS01_RUNTIME_CONFIG", &b.settings)
            .args([
                "--root",
                b.root.to_str().unwrap(),
                "create",
                "--bundle",
                dir.to_str().unwrap(),
                &format!("par{i}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        kids.push(child);
    }
    let statuses: Vec<bool> = kids.into_iter().map(|mut k| k.wait().is_ok_and(|s| s.success())).collect();
    let decided = ms(t.elapsed());
    let winners = statuses.iter().filter(|ok| **ok).count();
    let mut reasons: Vec<String> = (0..50)
        .filter(|i| !statuses[*i])
        .map(|i| {
            let e = fs::read_to_string(b.tmp.path().join(format!("p{i}/stderr"))).unwrap_or_default();
            // "… 0 of 4 GPUs free" and the like: the cause, without the per-container part.
            e.lines().next().unwrap_or("").split("; ").last().unwrap_or("").to_owned()
        })
        .collect();
    reasons.sort();
    reasons.dedup();
    let text = fs::read_to_string(&log).unwrap_or_default();
    let waits: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["lock_wait_ms"].as_f64())
        .collect();
    let worst = waits.iter().cloned().fold(0.0, f64::max);
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(b.tmp.path().join("state/gpus.json")).unwrap_or_default())
            .unwrap_or_default();
    let mut devs: Vec<String> = st["allocations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["devices"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    let total = devs.len();
    devs.sort();
    devs.dedup();
    for i in 0..50 {
        b.run(&runc, &["delete", "--force", &format!("par{i}")]);
    }
    let parallel = format!(
        "50 creates at once against 4 GPUs: all decided in {decided:.1} ms; {winners} winners; {} GPUs held by {} allocations (double allocations: {}); worst lock wait {worst:.2} ms over {} lock holders; losers were told: {}",
        devs.len(),
        total,
        total - devs.len(),
        waits.len(),
        reasons.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ")
    );

    // 5. ds01ctl audit with a filter over 1,000,000 events.
    let big = b.tmp.path().join("million.jsonl");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(fs::File::create(&big).unwrap());
        let kinds = [
            ds01::audit::Kind::Create,
            ds01::audit::Kind::Start,
            ds01::audit::Kind::Kill,
            ds01::audit::Kind::Delete,
        ];
        let base = std::time::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for i in 0..1_000_000u64 {
            let mut e =
                ds01::audit::Event::new(kinds[(i % 4) as usize], base + Duration::from_millis(i * 10), "ok");
            e.container = Some(format!("{:064x}", i / 4));
            e.owner = Some(format!("user{}", i % 97));
            e.group = Some("student".into());
            e.slice = Some(format!("ds01-student-user{}.slice", i % 97));
            f.write_all(e.to_line().as_bytes()).unwrap();
        }
    }
    let mut q = Vec::new();
    let mut matched = 0;
    for _ in 0..if quick { 1 } else { 5 } {
        let t = Instant::now();
        let o = Command::new(ds01ctl())
            .args([
                "--config",
                b.settings.to_str().unwrap(),
                "audit",
                "--log",
                big.to_str().unwrap(),
                "--user",
                "user17",
                "--json",
            ])
            .output()
            .unwrap();
        q.push(ms(t.elapsed()));
        matched = stdout(&o).lines().count();
    }
    let q = stats(&q);
    let audit_line = format!("`ds01ctl audit --user user17` over 1,000,000 events: median {:.0} ms (min {:.0}, max {:.0}), {matched} matched", q.median, q.min, q.max);

    // 6. peak memory of the shim during create. It execs a no-op instead of runc, so the peak is
    // its own. Measured by GNU time, a small parent: a child spawned by this (large) process
    // would inherit this process's peak in ru_maxrss at exec.
    let mem_settings = b.tmp.path().join("mem.yaml");
    let text = fs::read_to_string(&b.settings)
        .unwrap()
        .replace("low_level_runtime: runc", "low_level_runtime: /bin/true");
    fs::write(&mem_settings, text).unwrap();
    let baseline = Command::new("/usr/bin/time").args(["-f", "%M", "/bin/true"]).output();
    let peak = match baseline {
        Ok(base) if base.status.success() => {
            let mut kib = Vec::new();
            for _ in 0..5 {
                fs::write(b.bundle.join("config.json"), &b.pristine).unwrap();
                let o = Command::new("/usr/bin/time")
                    .args(["-f", "%M"])
                    .arg(&b.shim)
                    .env("DS01_RUNTIME_CONFIG", &mem_settings)
                    .args(["--root", b.root.to_str().unwrap(), "create", "--bundle"])
                    .arg(&b.bundle)
                    .arg("bench-shim")
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", stderr(&o));
                kib.push(stderr(&o).trim().lines().last().unwrap_or("0").parse::<f64>().unwrap_or(0.0));
            }
            let k = stats(&kib);
            let t = stderr(&base).trim().parse::<f64>().unwrap_or(0.0);
            format!("shim peak memory during create (full pipeline, then exec of /bin/true), GNU time's maximum RSS over 5 runs: {:.1} MiB median (max {:.1} MiB; /bin/true alone: {:.1} MiB)", k.median / 1024.0, k.max / 1024.0, t / 1024.0)
        }
        _ => "shim peak memory: skipped, needs GNU time (apt-get install time)".to_owned(),
    };

    let mut table = String::from(HEADER);
    for r in &rows {
        table.push_str(&r.line());
        table.push('\n');
    }
    let report = format!(
        "{table}\n- {parallel}\n- {audit_line}\n- {peak}\n{}",
        notes.iter().map(|n| format!("- {n}\n")).collect::<String>()
    );
    println!("machine: {}\n\n{report}", machine());
    format!(
        "# Benchmarks\n\nMeasured by `cargo bench --bench overhead -- --write BENCHMARKS.md` on {date}.\n\nMachine: {}\n\nEach row alternates its arms in one run, the order reversed each round (A B, B A, …); times are wall clock per operation.\n\n{report}",
        machine()
    )
}
