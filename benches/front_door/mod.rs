//! The front door's rows (issue 18): what `ds01-front-door` adds to the Docker API, paired
//! against the same dockerd without it, in one run, the arms alternating.
//!
//! - latency: the docker CLI as a real user (useradd) on the users' socket against the docker
//!   CLI as root on dockerd's own socket; and, without the CLI's own spread, a raw HTTP client
//!   ([`http`]) run as that user through the front door and as root directly;
//! - streams: 1 GiB through `docker logs` and `docker cp` both ways, by the CLI and by the raw
//!   client, as throughput;
//! - 200 docker CLIs at once (run, ps, logs -f, exec) with the front door's memory sampled.

pub mod http;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::front_door::{user, Door, User};
use crate::common::*;
use crate::{alternate, ms, paired, stats, Row, HEADER, TMPFS};
use http::Client;

/// The heading of this section of BENCHMARKS.md.
pub const HEADING: &str = "## Front door (issue 18)";

const IMAGE: &str = "ds01-busybox:test";

/// The targets.
const RUN_MS: f64 = 1.0;
const READ_MS: f64 = 0.3;
const STREAM_RATIO: f64 = 0.95;
const MEMORY_MIB: f64 = 30.0;

/// How many rounds and how big: the full run, or `--quick`'s smoke run.
struct Sizes {
    run: usize,
    cli: usize,
    http: usize,
    stream: usize,
    payload: u64,
    clients: usize,
}

/// Paired ratios `a[i] / b[i]`: their median with the sign test's 95% interval.
fn paired_ratio(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    r.sort_by(|x, y| x.total_cmp(y));
    let n = r.len();
    let k = ((n as f64 - 1.96 * (n as f64).sqrt()) / 2.0).floor().max(0.0) as usize;
    (r[n / 2], r[k.min(n - 1)], r[(n - 1 - k).min(n - 1)])
}

/// A CLI command, timed; it must succeed.
fn timed(mut cmd: Command, what: &str) -> (f64, Output) {
    cmd.stdin(Stdio::null());
    let t = Instant::now();
    let o = cmd.output().unwrap();
    let took = ms(t.elapsed());
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    (took, o)
}

/// A CLI command whose output is thrown away (a stream), timed; it must succeed.
fn timed_to_null(mut cmd: Command, what: &str) -> f64 {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let t = Instant::now();
    let o = cmd.output().unwrap();
    let took = ms(t.elapsed());
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    took
}

struct Bench<'a> {
    door: &'a Door,
    u: &'a User,
    root_home: PathBuf,
}

impl Bench<'_> {
    /// `program` as the user, on the users' socket (the front door).
    fn through(&self, program: &str) -> Command {
        self.door.command(self.u, program)
    }

    /// `program` as root on dockerd's own socket, set up as the user's is (a home of its own,
    /// DOCKER_HOST), so that the two CLIs differ only in uid and socket. Its uid and gid are set
    /// too, to root's own: with none set, std's Command starts a program by posix_spawn (vfork),
    /// with one by fork, setgroups, setgid, setuid and exec, and that alone cost 0.5–0.7 ms a
    /// docker CLI run here, which would be counted against the front door.
    fn direct(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(0)
            .gid(0)
            .current_dir(&self.root_home)
            .env("HOME", &self.root_home)
            .env("USER", "root")
            .env("DOCKER_HOST", format!("unix://{}", self.door.d.sock.display()))
            .env("DOCKER_BUILDKIT", "0");
        cmd
    }

    fn cli(&self, k: usize, args: &[&str]) -> Command {
        let mut cmd = if k == 0 { self.through("docker") } else { self.direct("docker") };
        cmd.args(args);
        cmd
    }

    /// The docker CLI as the user through the front door; it must succeed.
    fn user_docker(&self, args: &[&str]) -> Output {
        let o = self.door.docker(self.u, args);
        assert!(o.status.success(), "docker {args:?}: {}\n{}", stderr(&o), self.door.door_log());
        o
    }
}

/// One paired latency row, with its target.
struct Latency {
    row: Row,
    target: f64,
}

/// One paired throughput row: ms per transfer of `payload` bytes, through and direct.
struct Stream {
    what: String,
    through: Vec<f64>,
    direct: Vec<f64>,
    payload: u64,
}

impl Stream {
    fn mbs(&self, v: &[f64]) -> f64 {
        self.payload as f64 / 1e6 / (stats(v).median / 1000.0)
    }

    /// Throughput ratio through/direct, per pair: time direct / time through.
    fn ratio(&self) -> (f64, f64, f64) {
        paired_ratio(&self.direct, &self.through)
    }

    fn line(&self) -> String {
        let (r, lo, hi) = self.ratio();
        let (t, d) = (stats(&self.through), stats(&self.direct));
        format!(
            "| {} | {} | {:.0} MB/s ({:.0}–{:.0}) | {:.0} MB/s ({:.0}–{:.0}) | {:.3} ({:.3} to {:.3}) |",
            self.what,
            self.through.len(),
            self.mbs(&self.through),
            self.payload as f64 / 1e3 / t.max,
            self.payload as f64 / 1e3 / t.min,
            self.mbs(&self.direct),
            self.payload as f64 / 1e3 / d.max,
            self.payload as f64 / 1e3 / d.min,
            r,
            lo,
            hi
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

fn dockerd_version(door: &Door) -> String {
    stdout(&door.root_docker(&["version", "--format", "{{.Server.Version}}"])).trim().to_owned()
}

/// This bench binary, copied where the test users may run it (the target directory may not be
/// theirs to read).
fn client_binary(dir: &Path) -> PathBuf {
    let to = dir.join("door-client");
    fs::copy(std::env::current_exe().unwrap(), &to).unwrap();
    fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// Runs the front door's rows; returns the section of BENCHMARKS.md (from [`HEADING`] on), or
/// why it could not run.
pub fn run(quick: bool, machine: &str, date: &str) -> Result<String, String> {
    if which("dockerd").is_none() || which("docker").is_none() || which("useradd").is_none() {
        return Err("the front door: skipped, needs dockerd, the docker CLI and useradd".into());
    }
    let sizes = if quick {
        Sizes { run: 3, cli: 5, http: 20, stream: 1, payload: 32 << 20, clients: 20 }
    } else {
        Sizes { run: 300, cli: 500, http: 1500, stream: 8, payload: 1 << 30, clients: 200 }
    };
    // The engine's directories on tmpfs, as /run is on a host, and so that the disk is not what
    // a 1 GiB stream measures.
    let door = Door::start_in("fdb", "", Some(Path::new(TMPFS)));
    let dir = door.d.tmp.path().to_path_buf();
    // Each user runs many containers at once below: no cap on their number.
    let pol = dir.join("policy/resource-limits.yaml");
    let text = fs::read_to_string(&pol).unwrap();
    assert!(text.contains("max_containers_per_user: 3"), "the shipped policy's defaults changed shape");
    fs::write(&pol, text.replace("max_containers_per_user: 3", "max_containers_per_user: null")).unwrap();
    let users: Vec<User> = (0..4).map(|i| user(&format!("fdbench{i}"), &dir)).collect();
    let root_home = dir.join("home-root");
    fs::create_dir_all(&root_home).unwrap();
    let b = Bench { door: &door, u: &users[0], root_home };
    let load_before = loadavg();
    let idle_rss = door.rss_kib();
    let version = dockerd_version(&door);
    eprintln!("front door: dockerd {version}, front door pid {}, {idle_rss} KiB resident", door.pid());

    // Containers for ps to list, inspect to read, exec to enter and cp to copy from.
    b.user_docker(&["run", "-d", "--name", "fdb-idle", IMAGE, "sleep", "1d"]);
    for (i, u) in users.iter().enumerate().skip(1) {
        let o = door.docker(u, &["run", "-d", "--name", &format!("fdb-idle{i}"), IMAGE, "sleep", "1d"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let listed = stdout(&b.user_docker(&["ps", "-aq"])).lines().count();

    let mut lat: Vec<Latency> = Vec::new();

    // 1. The docker CLI. Direct, root names the same owner by label, so that the runtime places
    // both arms' containers alike (the front door sets that label and writes the verified record).
    let label = format!("ds01.user={}", b.u.name);
    let run_args = |k: usize| -> Vec<&str> {
        if k == 0 {
            vec!["run", "--rm", IMAGE, "true"]
        } else {
            vec!["run", "--rm", "--label", &label, IMAGE, "true"]
        }
    };
    for k in 0..2 {
        timed(b.cli(k, &run_args(k)), "docker run");
    }
    let t = alternate(sizes.run, 2, |k| timed(b.cli(k, &run_args(k)), "docker run").0);
    lat.push(Latency {
        row: Row::new(
            format!("`docker run --rm {IMAGE} true`, the CLI as a user through the front door vs as root on dockerd's socket"),
            &t[0],
            &t[1],
        ),
        target: RUN_MS,
    });
    for (what, args) in
        [("`docker ps`", &["ps"][..]), ("`docker inspect fdb-idle`", &["inspect", "fdb-idle"][..])]
    {
        for k in 0..2 {
            timed(b.cli(k, args), what);
        }
        let t = alternate(sizes.cli, 2, |k| timed(b.cli(k, args), what).0);
        lat.push(Latency {
            row: Row::new(
                format!("{what}, the CLI as a user through the front door vs as root on dockerd's socket"),
                &t[0],
                &t[1],
            ),
            target: READ_MS,
        });
    }

    // 2. The same reads by a raw HTTP client, the user's through the front door, root's direct.
    let client = client_binary(&dir);
    let mut clients = [
        Client::spawn(b.through(client.to_str().unwrap()), &door.sock),
        Client::spawn(b.direct(client.to_str().unwrap()), &door.d.sock),
    ];
    let idle_id = stdout(&door.root_docker(&["inspect", "-f", "{{.Id}}", "fdb-idle"])).trim().to_owned();
    let reads = [
        ("GET /v1.41/containers/json".to_owned(), "`GET /containers/json` (ps)"),
        (format!("GET /v1.41/containers/{}/json", &idle_id[..12]), "`GET /containers/ID/json` (inspect)"),
    ];
    for (req, what) in &reads {
        for (mode, how) in [
            ("fresh", "a new connection each, as a CLI invocation makes"),
            ("keep", "on one kept-alive connection"),
        ] {
            let line = format!("{mode} {req}");
            for c in clients.iter_mut() {
                for _ in 0..10 {
                    c.ok(&line);
                }
            }
            let t = alternate(sizes.http, 2, |k| clients[k].ok(&line));
            lat.push(Latency {
                row: Row::new(
                    format!("HTTP {what}, {how}: as a user through the front door vs as root direct"),
                    &t[0],
                    &t[1],
                ),
                target: READ_MS,
            });
        }
    }

    // 3. Streams of `payload` bytes, the CLI and the raw client, each through and direct.
    let payload = sizes.payload;
    let mut streams: Vec<Stream> = Vec::new();
    let t = Instant::now();
    // 4095 bytes and a newline a line: json-file's overhead is small, and no line is split.
    let line = "a".repeat(4095);
    let script = format!("busybox yes \"$0\" | busybox head -c {payload}");
    b.user_docker(&["run", "-d", "--name", "fdb-logs", IMAGE, "sh", "-c", &script, &line]);
    b.user_docker(&["wait", "fdb-logs"]);
    let made_logs = t.elapsed();
    let logs_path =
        stdout(&door.root_docker(&["inspect", "-f", "{{.LogPath}}", "fdb-logs"])).trim().to_owned();
    let log_size = fs::metadata(&logs_path).map(|m| m.len()).unwrap_or(0);
    eprintln!("front door: {payload} bytes of logs written in {made_logs:?} ({log_size} bytes of json-file)");
    let logs_req = "fresh GET /v1.41/containers/fdb-logs/logs?stdout=1&stderr=1";
    let r = clients[1].call(logs_req);
    assert!(r.status == 200 && r.bytes >= payload, "logs: {} bytes ({})", r.bytes, r.error);
    let (n, cli_logs) = (sizes.stream, ["logs", "fdb-logs"]);
    let t = alternate(n, 2, |k| timed_to_null(b.cli(k, &cli_logs), "docker logs"));
    streams.push(Stream {
        what: format!("`docker logs` of {}, the CLI to /dev/null", size(payload)),
        through: t[0].clone(),
        direct: t[1].clone(),
        payload,
    });
    let t = alternate(n, 2, |k| clients[k].ok(logs_req));
    streams.push(Stream {
        what: format!("HTTP `GET /containers/ID/logs` of {}, the raw client", size(payload)),
        through: t[0].clone(),
        direct: t[1].clone(),
        payload,
    });

    b.user_docker(&["exec", "fdb-idle", "sh", "-c", &format!("head -c {payload} /dev/zero > /big")]);
    let cp_out = ["cp", "fdb-idle:/big", "-"];
    let t = alternate(n, 2, |k| timed_to_null(b.cli(k, &cp_out), "docker cp out"));
    streams.push(Stream {
        what: format!("`docker cp` of {} out of a container, the CLI's tar to /dev/null", size(payload)),
        through: t[0].clone(),
        direct: t[1].clone(),
        payload,
    });
    let archive = "fresh GET /v1.41/containers/fdb-idle/archive?path=/big";
    let t = alternate(n, 2, |k| clients[k].ok(archive));
    streams.push(Stream {
        what: format!("HTTP `GET /containers/ID/archive` of {}, the raw client", size(payload)),
        through: t[0].clone(),
        direct: t[1].clone(),
        payload,
    });

    // Into the container: a file in the user's home, and the same as a tar for the raw client.
    let up = b.u.home.join("up");
    {
        let f = fs::File::create(&up).unwrap();
        f.set_len(payload).unwrap();
    }
    std::os::unix::fs::chown(&up, Some(b.u.uid), None).unwrap();
    let tar = b.u.home.join("up.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&b.u.home)
        .arg("-cf")
        .arg(&tar)
        .arg("up")
        .status()
        .unwrap()
        .success());
    fs::set_permissions(&tar, fs::Permissions::from_mode(0o644)).unwrap();
    let dest = "fdb-idle:/up";
    let cp_in = ["cp", up.to_str().unwrap(), dest];
    let t = alternate(n, 2, |k| timed_to_null(b.cli(k, &cp_in), "docker cp in"));
    streams.push(Stream {
        what: format!("`docker cp` of {} into a container, the CLI from a file", size(payload)),
        through: t[0].clone(),
        direct: t[1].clone(),
        payload,
    });
    let put = format!("put /v1.41/containers/fdb-idle/archive?path=/ {}", tar.display());
    let t = alternate(n, 2, |k| clients[k].ok(&put));
    streams.push(Stream {
        what: format!("HTTP `PUT /containers/ID/archive` of {}, the raw client", size(payload)),
        through: t[0].clone(),
        direct: t[1].clone(),
        payload,
    });
    drop(clients);
    let _ = fs::remove_file(&up);
    let _ = fs::remove_file(&tar);
    b.user_docker(&["rm", "-f", "fdb-logs"]);
    b.user_docker(&["exec", "fdb-idle", "busybox", "rm", "-f", "/big", "/up"]);
    let after_streams = (door.rss_kib(), door.status_kib("VmHWM"));

    // 4. Many clients at once.
    let burst = burst(&door, &users, sizes.clients);
    let refused = door.door_log().lines().filter(|l| l.contains("refused")).count();
    let load_after = loadavg();

    // The section.
    let mut s = format!("{HEADING}\n\n");
    s += &format!(
        "Measured by `cargo bench --bench overhead -- --only front-door --write BENCHMARKS.md` on {date} (a full run measures and writes it too).\n\n"
    );
    let mem = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = mem
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    s += &format!(
        "Machine: {machine}, {:.0} GiB memory, dockerd {version}; the engine's folders on tmpfs ({TMPFS}). \
         The front door is cargo's release build of `ds01-front-door` ({}), with the settings it ships with (`open_reads: true`). \
         The machine was shared with other work: load average {load_before} before the run, {load_after} after.\n\n",
        total as f64 / 1048576.0,
        tree()
    );
    s += "Both arms use the same dockerd in the same run, alternating, the order reversed each round (A B, B A, …). \
          Through the front door: the docker CLI (or the raw client) runs as a real non-root user (`useradd`, the `docker` group) on the users' socket. \
          Direct: the same program as root on dockerd's own socket, with a home and DOCKER_HOST set up alike, and started the same way (fork, set uid and gid, exec). \
          The raw client is this bench binary as a small HTTP/1.1 client (`benches/front_door/http.rs`), one process an arm, each timing its own requests: \
          it shows the front door's own cost without the CLI's start-up and spread. ";
    s += &format!("`docker ps` lists {listed} containers. Latencies are wall clock per command or request; the added time is the median of the paired differences with its 95% interval (sign test).\n\n");

    s += "| target | measured | status |\n|---|---|---|\n";
    let pick = |i: usize| {
        let (d, lo, hi) = paired(&lat[i].row.arm, &lat[i].row.base);
        (d, lo, hi, lat[i].row.arm.len())
    };
    let (d, lo, hi, n) = pick(0);
    s += &format!(
        "| `docker run --rm IMAGE true` ≤ +{RUN_MS} ms | {d:+.2} ms ({lo:+.2} to {hi:+.2}), n={n} | {} |\n",
        met(d <= lat[0].target)
    );
    for (i, what, http) in [(1, "`docker ps`", 3), (2, "`docker inspect`", 5)] {
        let (d, lo, hi, n) = pick(i);
        let (hf, hflo, hfhi, hn) = pick(http);
        let (hk, hklo, hkhi, _) = pick(http + 1);
        s += &format!(
            "| {what} ≤ +{READ_MS} ms | CLI {d:+.3} ms ({lo:+.3} to {hi:+.3}), n={n}; raw HTTP, new connection {hf:+.3} ms ({hflo:+.3} to {hfhi:+.3}), kept-alive {hk:+.3} ms ({hklo:+.3} to {hkhi:+.3}), n={hn} | {} |\n",
            met(d <= lat[i].target)
        );
    }
    for pair in streams.chunks(2) {
        let (cli, raw) = (&pair[0], &pair[1]);
        let (r, lo, hi) = cli.ratio();
        let (hr, hlo, hhi) = raw.ratio();
        s += &format!(
            "| {} ≥ {:.0}% of direct | CLI {:.0} MB/s through, {:.0} MB/s direct: {:.1}% ({:.1} to {:.1}); raw HTTP {:.0} against {:.0} MB/s: {:.1}% ({:.1} to {:.1}); n={} | {} |\n",
            cli.what.split(',').next().unwrap(),
            STREAM_RATIO * 100.0,
            cli.mbs(&cli.through),
            cli.mbs(&cli.direct),
            r * 100.0,
            lo * 100.0,
            hi * 100.0,
            raw.mbs(&raw.through),
            raw.mbs(&raw.direct),
            hr * 100.0,
            hlo * 100.0,
            hhi * 100.0,
            cli.through.len(),
            met(r >= STREAM_RATIO)
        );
    }
    s += &format!(
        "| {} clients at once (run, ps, logs -f, exec), no error | {} errors; {} of {} done in {:.1} s; {refused} refusals in the front door's log | {} |\n",
        burst.clients,
        burst.errors.len(),
        burst.clients - burst.errors.len(),
        burst.clients,
        burst.secs,
        met(burst.errors.is_empty() && refused == 0)
    );
    let peak = mib(burst.peak_rss.max(burst.hwm));
    s += &format!(
        "| front door memory < {MEMORY_MIB:.0} MiB (VmRSS, VmHWM) | during the {} clients: peak VmRSS {:.1} MiB (sampled every 10 ms), VmHWM {:.1} MiB; over the whole run, streams included: VmHWM {:.1} MiB; idle at start {:.1} MiB | {} |\n\n",
        burst.clients,
        mib(burst.peak_rss),
        mib(burst.hwm),
        mib(after_streams.1.max(burst.hwm_total)),
        mib(idle_rss),
        met(peak < MEMORY_MIB && mib(after_streams.1.max(burst.hwm_total)) < MEMORY_MIB)
    );

    s += "Latency, paired:\n\n";
    s += HEADER.replace("measured arm", "through the front door").replace("baseline arm", "direct").as_str();
    for l in &lat {
        s += &l.row.line();
        s.push('\n');
    }
    s += "\nThroughput, paired (MB = 10^6 bytes of the container's data a second; ranges are the slowest and fastest transfer):\n\n";
    s += "| stream | n | through the front door: median (range) | direct: median (range) | through ÷ direct: median of paired ratios (95% CI) |\n|---|---|---|---|---|\n";
    for st in &streams {
        s += &st.line();
        s.push('\n');
    }
    s += &format!(
        "\n- The {} of logs: a container writing 4,096-byte lines (`busybox yes`), {:.1} s to write, {:.2} GiB of json-file log. `docker cp` out: a file of zeros in the container; in: a sparse file in the user's home on tmpfs (the raw client sends the same as a tar).\n",
        size(payload),
        made_logs.as_secs_f64(),
        log_size as f64 / (1u64 << 30) as f64
    );
    s += &format!(
        "- The clients at once: {} users, each client one of: `docker run --rm IMAGE sh -c 'echo ok'`, `docker ps -a`, `docker logs -f` of a container printing {} lines over about 10 s (every line must arrive, in order), `docker exec CONTAINER echo ok`; all started together. Front door memory after the streams: VmRSS {:.1} MiB, VmHWM {:.1} MiB.{}\n",
        users.len(),
        FOLLOW_LINES,
        mib(after_streams.0),
        mib(after_streams.1),
        if burst.errors.is_empty() {
            String::new()
        } else {
            format!(" Errors: {}", burst.errors.iter().take(5).cloned().collect::<Vec<_>>().join("; "))
        }
    );
    s += "- Why a row misses its target, measured apart, and what would lower it: \"Front door (issue 18): where the time goes\" under Reading these numbers.\n";
    s += "- To reproduce (root; docker.io, runc, busybox-static, useradd): `cargo bench --bench overhead -- --only front-door` (add `--write BENCHMARKS.md` to replace this section, `--quick` for a smoke run with 32 MiB streams). It creates the users fdbench0 to fdbench3 when missing.\n";
    Ok(s)
}

/// The 1-minute load average.
fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?").to_owned()
}

/// The source measured: its commit, and whether src/ differs from it.
fn tree() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| stdout(&o).trim().to_owned())
    };
    match git(&["log", "-1", "--format=%h"]) {
        Some(h) if git(&["status", "--porcelain", "--", "src"]).is_some_and(|s| s.is_empty()) => {
            format!("src/ as of commit {h}")
        }
        Some(h) => format!("commit {h} with uncommitted changes to src/"),
        None => "not a git checkout".to_owned(),
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

const FOLLOW_LINES: usize = 200;

struct Burst {
    clients: usize,
    errors: Vec<String>,
    secs: f64,
    /// The highest VmRSS sampled, KiB.
    peak_rss: u64,
    /// VmHWM at the end, reset before the burst, KiB.
    hwm: u64,
    /// VmHWM before the reset, KiB.
    hwm_total: u64,
}

/// `clients` docker CLIs at once, spread over `users`: a quarter each `run`, `ps`, `logs -f`
/// and `exec`. Each must succeed with the output it should have.
fn burst(door: &Door, users: &[User], clients: usize) -> Burst {
    // For each user, a container to exec into and one whose logs are followed.
    let follow =
        format!("i=0; while [ $i -lt {FOLLOW_LINES} ]; do echo line $i; i=$((i+1)); sleep 0.05; done");
    for (i, u) in users.iter().enumerate() {
        let o = door.docker(u, &["run", "-d", "--name", &format!("fdb-x{i}"), IMAGE, "sleep", "1d"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let hwm_total = door.status_kib("VmHWM");
    // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
    let _ = fs::write(format!("/proc/{}/clear_refs", door.pid()), "5");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = door.pid();
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kib) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                {
                    peak = peak.max(kib);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    for (i, u) in users.iter().enumerate() {
        let o = door.docker(u, &["run", "-d", "--name", &format!("fdb-f{i}"), IMAGE, "sh", "-c", &follow]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let t = Instant::now();
    let mut kids = Vec::new();
    for i in 0..clients {
        let ui = i % users.len();
        let kind = (i / users.len()) % 4;
        let args: Vec<String> = match kind {
            0 => vec!["run".into(), "--rm".into(), IMAGE.into(), "sh".into(), "-c".into(), "echo ok".into()],
            1 => vec!["ps".into(), "-a".into()],
            2 => vec!["logs".into(), "-f".into(), format!("fdb-f{ui}")],
            _ => vec!["exec".into(), format!("fdb-x{ui}"), "echo".into(), "ok".into()],
        };
        let mut cmd = door.command(&users[ui], "docker");
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        kids.push((kind, args.join(" "), cmd.spawn().unwrap()));
    }
    let mut errors = Vec::new();
    for (kind, what, kid) in kids {
        let o = kid.wait_with_output().unwrap();
        let out = stdout(&o);
        let right = match kind {
            0 | 3 => out.trim() == "ok",
            1 => out.lines().count() > 1,
            _ => {
                let lines: Vec<&str> = out.lines().collect();
                lines.len() == FOLLOW_LINES
                    && lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}"))
            }
        };
        if !o.status.success() || !right {
            errors.push(format!(
                "`docker {what}`: {} {}",
                o.status,
                stderr(&o).lines().next().unwrap_or("").trim()
            ));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_rss = sampler.join().unwrap();
    let hwm = door.status_kib("VmHWM");
    Burst { clients, errors, secs, peak_rss, hwm, hwm_total }
}
