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

/// A tmpfs every Linux host has (this VM's /run is not one).
const TMPFS: &str = "/dev/shm";

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
    b.create_delete(&b.shim, "bench-shim");
    b.create_delete(&runc, "warm-runc");
    let (mut s, mut r) =
        alternate(n, || b.create_delete(&b.shim, "bench-shim"), || b.create_delete(&runc, "bench-runc"));
    rows.push(Row {
        what: "create + delete (owner, slice, 1 of 4 GPUs, audit)".into(),
        shim: stats(&mut s),
        runc: stats(&mut r),
        n,
    });

    // 1b. The same, with runc given the spec the shim writes (its slice, limits and GPU nodes):
    // what the shim itself costs, apart from what the policy asks runc to do.
    fs::write(b.bundle.join("config.json"), &b.pristine).unwrap();
    assert!(b.run(&b.shim, &["create", "--bundle", b.bundle.to_str().unwrap(), "bench-shim"]));
    let patched = fs::read(b.bundle.join("config.json")).unwrap();
    assert!(b.run(&b.shim, &["delete", "--force", "bench-shim"]));
    let (mut s, mut r) = alternate(
        n,
        || b.create_delete(&b.shim, "bench-shim"),
        || b.create_delete_from(&runc, "bench-runc", &patched),
    );
    rows.push(Row {
        what: "create + delete, runc given the spec the shim writes (the shim's own cost)".into(),
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
        let d = Dockerd::start("bench", Opts { base: Some(Path::new(TMPFS)), ..Opts::default() });
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
    let q = stats(&mut q);
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
            let k = stats(&mut kib);
            let t = stderr(&base).trim().parse::<f64>().unwrap_or(0.0);
            format!("shim peak memory during create (full pipeline, then exec of /bin/true), GNU time's maximum RSS over 5 runs: {:.1} MiB median (max {:.1} MiB; /bin/true alone: {:.1} MiB)", k.median / 1024.0, k.max / 1024.0, t / 1024.0)
        }
        _ => "shim peak memory: skipped, needs GNU time (apt-get install time)".to_owned(),
    };

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
