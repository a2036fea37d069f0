//! The benchmark: what ds01-runtime costs over runc, measured side by side in one run with the
//! two arms alternating (ABBA) so that machine drift cancels. Run with
//! `cargo bench --bench overhead` (root; runc, busybox-static, docker.io). `-- --quick` for a
//! smoke run, `-- --write BENCHMARKS.md` to record the table with the machine it ran on.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::dockerd::{Dockerd, Opts};
use common::*;

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

fn stats(v: &mut [f64]) -> Stats {
    v.sort_by(|a, b| a.total_cmp(b));
    Stats { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// A row of the table: shim vs runc, in ms.
struct Row {
    what: String,
    shim: Stats,
    runc: Stats,
    n: usize,
}

impl Row {
    fn line(&self) -> String {
        format!(
            "| {} | {} | {:.3} ({:.3}–{:.3}) | {:.3} ({:.3}–{:.3}) | {:.3} | {:+.3} |",
            self.what,
            self.n,
            self.shim.median,
            self.shim.min,
            self.shim.max,
            self.runc.median,
            self.runc.min,
            self.runc.max,
            self.shim.median / self.runc.median,
            self.shim.median - self.runc.median
        )
    }
}

/// Alternates the two arms (A B B A …) `n` times each; returns the timings in ms.
fn alternate(n: usize, mut shim: impl FnMut() -> f64, mut runc: impl FnMut() -> f64) -> (Vec<f64>, Vec<f64>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..n {
        if i % 2 == 0 {
            a.push(shim());
            b.push(runc());
        } else {
            b.push(runc());
            a.push(shim());
        }
    }
    (a, b)
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
        let tmp = TempDir::new("bench");
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
        fs::write(self.bundle.join("config.json"), &self.pristine).unwrap();
        let b = self.bundle.to_str().unwrap();
        let t = Instant::now();
        assert!(self.run(bin, &["create", "--bundle", b, id]), "create through {}", bin.display());
        assert!(self.run(bin, &["delete", "--force", id]));
        ms(t.elapsed())
    }
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
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let write = args.iter().position(|a| a == "--write").and_then(|i| args.get(i + 1)).cloned();
    if !require_runc() {
        return;
    }
    let n = if quick { 4 } else { 40 };
    let b = Bench::new();
    let runc = which("runc").unwrap();
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    // 1. create + delete, full pipeline: owner, slice, 4 fake GPUs with one allocated, audit.
    b.create_delete(&b.shim, "warm-shim");
    b.create_delete(&runc, "warm-runc");
    let (mut s, mut r) =
        alternate(n, || b.create_delete(&b.shim, "bench-shim"), || b.create_delete(&runc, "bench-runc"));
    rows.push(Row {
        what: "create + delete (owner, slice, 1 of 4 GPUs, audit)".into(),
        shim: stats(&mut s),
        runc: stats(&mut r),
        n,
    });

    // 2. pass-through `state` of an existing container, per call.
    fs::write(b.bundle.join("config.json"), &b.pristine).unwrap();
    assert!(b.run(&runc, &["create", "--bundle", b.bundle.to_str().unwrap(), "bench-state"]));
    let calls = if quick { 20 } else { 400 };
    let state = |bin: &Path| {
        let t = Instant::now();
        assert!(b.run(bin, &["state", "bench-state"]));
        ms(t.elapsed())
    };
    let (mut s, mut r) = alternate(calls, || state(&b.shim), || state(&runc));
    rows.push(Row {
        what: "pass-through `state`, per call".into(),
        shim: stats(&mut s),
        runc: stats(&mut r),
        n: calls,
    });
    let del = |bin: &Path| {
        let t = Instant::now();
        b.run(bin, &["kill", "bench-state", "KILL"]);
        ms(t.elapsed())
    };
    let (mut s, mut r) = alternate(calls / 4, || del(&b.shim), || del(&runc));
    rows.push(Row {
        what: "pass-through `kill` (recorded in the audit), per call".into(),
        shim: stats(&mut s),
        runc: stats(&mut r),
        n: calls / 4,
    });
    b.run(&runc, &["delete", "--force", "bench-state"]);

    // 3. docker run --rm through a private engine.
    if which("dockerd").is_some() {
        let d = Dockerd::start("bench", Opts::default());
        let run = |runtime: &str| {
            let t = Instant::now();
            let o = d.docker(&[
                "run",
                "--rm",
                "--runtime",
                runtime,
                "--label",
                "ds01.user=bench",
                "ds01-busybox:test",
                "true",
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
            ms(t.elapsed())
        };
        run("ds01");
        run("runc");
        let dn = if quick { 3 } else { 20 };
        let (mut s, mut r) = alternate(dn, || run("ds01"), || run("runc"));
        rows.push(Row {
            what: "`docker run --rm` (ds01 vs runc)".into(),
            shim: stats(&mut s),
            runc: stats(&mut r),
            n: dn,
        });
    } else {
        notes.push("docker run: skipped, no dockerd".to_owned());
    }

    // 4. 50 creates at once against 4 GPUs.
    let log = b.tmp.path().join("log/events.jsonl");
    let _ = fs::remove_file(&log);
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
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        kids.push(child);
    }
    let winners = kids.into_iter().filter_map(|mut k| k.wait().ok()).filter(|s| s.success()).count();
    let decided = ms(t.elapsed());
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
        "50 creates at once against 4 GPUs: all decided in {decided:.1} ms; {winners} winners; {} GPUs held by {} allocations (double allocations: {}); worst lock wait {worst:.2} ms over {} lock holders",
        devs.len(),
        total,
        total - devs.len(),
        waits.len()
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
    let q = stats(&mut q);
    let audit_line = format!("`ds01ctl audit --user user17` over 1,000,000 events: median {:.0} ms (min {:.0}, max {:.0}), {matched} matched", q.median, q.min, q.max);

    // 6. peak memory of the shim during create (it execs a no-op instead of runc, so the peak is its own).
    let mem_settings = b.tmp.path().join("mem.yaml");
    let text = fs::read_to_string(&b.settings)
        .unwrap()
        .replace("low_level_runtime: runc", "low_level_runtime: /bin/true");
    fs::write(&mem_settings, text).unwrap();
    fs::write(b.bundle.join("config.json"), &b.pristine).unwrap();
    #[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
    let child = Command::new(&b.shim)
        .env("DS01_RUNTIME_CONFIG", &mem_settings)
        .args([
            "--root",
            b.root.to_str().unwrap(),
            "create",
            "--bundle",
            b.bundle.to_str().unwrap(),
            "mem-probe",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: plain wait4 on our own child, with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let peak_kib = usage.ru_maxrss;
    let peak = format!("shim peak memory during create (full pipeline, then exec of /bin/true): {:.1} MiB (ru_maxrss {peak_kib} KiB)", peak_kib as f64 / 1024.0);

    let mut table = String::from("| measurement | n | ds01-runtime median (min–max) ms | runc median (min–max) ms | ratio | added ms |\n|---|---|---|---|---|---|\n");
    for r in &rows {
        table.push_str(&r.line());
        table.push('\n');
    }
    let report = format!(
        "{table}\n- {parallel}\n- {audit_line}\n- {peak}\n{}",
        notes.iter().map(|n| format!("- {n}\n")).collect::<String>()
    );
    println!("machine: {}\n\n{report}", machine());
    if let Some(path) = write {
        let date = Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| stdout(&o).trim().to_owned())
            .unwrap_or_default();
        let doc = format!(
            "# Benchmarks\n\nMeasured by `cargo bench --bench overhead -- --write BENCHMARKS.md` on {date}.\n\nMachine: {}\n\nEach row alternates the two arms (ABBA) in one run; times are wall clock per operation.\n\n{report}",
            machine()
        );
        fs::write(path, doc).unwrap();
    }
}
