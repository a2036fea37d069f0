//! Read-only, lenient scan of runc's command line.
//!
//! runc parses its argv with urfave/cli v1 on top of Go's `flag` package, so the scan follows
//! the same rules: a flag is `-name` or `--name`, with its value either after `=` or in the next
//! argument (bool flags take a value only after `=`); global flags end at the first argument that
//! is not a flag (the subcommand); subcommand flags may stand before or after the container id
//! (urfave/cli reorders them) until a bare `--`. Nothing here rejects anything: argv that runc
//! would refuse is handed to runc unchanged, so that runc's own errors stay runc's.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Our own global flag, carried in daemon.json `runtimeArgs`; removed before runc sees argv.
pub const CONFIG_FLAG: &str = "ds01-config";

/// runc's global flags that take a value (all others are bool).
const GLOBAL_VALUE_FLAGS: &[&str] = &["root", "log", "log-format", "criu", "rootless", CONFIG_FLAG];

/// Value-taking flags of `create` and `run` (runc 1.0 to 1.2).
const CREATE_VALUE_FLAGS: &[&str] =
    &["bundle", "b", "console-socket", "pid-file", "preserve-fds", "pidfd-socket"];

/// Value-taking flags of the other subcommands whose first positional argument we may read.
const OTHER_VALUE_FLAGS: &[&str] = &[
    "console-socket",
    "pid-file",
    "process",
    "p",
    "cwd",
    "env",
    "e",
    "user",
    "u",
    "additional-gids",
    "g",
    "process-label",
    "apparmor",
    "cap",
    "c",
    "preserve-fds",
    "cgroup",
    "format",
    "f",
    "interval",
    "image-path",
    "work-path",
    "parent-path",
    "page-server",
    "manage-cgroups-mode",
    "empty-ns",
    "status-fd",
    "lazy-pages",
    "bundle",
    "b",
    "pidfd-socket",
    "r",
    "resources",
    "blkio-weight",
    "cpu-period",
    "cpu-quota",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cpu-share",
    "cpuset-cpus",
    "cpuset-mems",
    "kernel-memory",
    "kernel-memory-tcp",
    "memory",
    "memory-reservation",
    "memory-swap",
    "pids-limit",
    "l3-cache-schema",
    "mem-bw-schema",
];

/// What the scan found. Indexes point into the argv it was given (without argv\[0\]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Index of the subcommand, if there is one.
    pub command_index: Option<usize>,
    /// `--root`: where runc keeps container state.
    pub root: Option<OsString>,
    /// `--log`: the file runc (and we) append errors to.
    pub log: Option<OsString>,
    /// `--log-format`: `text` (default) or `json`.
    pub log_format: Option<OsString>,
    /// `--systemd-cgroup`: cgroupsPath is in systemd's `slice:prefix:name` form.
    pub systemd_cgroup: bool,
    /// `--ds01-config`: our settings file, with the argv range it occupies.
    pub ds01_config: Option<(OsString, std::ops::Range<usize>)>,
    /// `--bundle`/`-b` of create and run.
    pub bundle: Option<OsString>,
    /// The first positional argument after the subcommand (the container id).
    pub container_id: Option<OsString>,
}

impl Invocation {
    /// The subcommand, as runc will see it.
    pub fn command<'a>(&self, args: &'a [OsString]) -> Option<&'a OsStr> {
        self.command_index.map(|i| args[i].as_os_str())
    }

    /// True for the subcommands whose config.json we patch.
    pub fn is_create(&self, args: &[OsString]) -> bool {
        matches!(self.command(args).map(OsStr::as_bytes), Some(b"create" | b"run"))
    }

    /// argv for runc: the original, less our own flag.
    pub fn runc_args<'a>(&self, args: &'a [OsString]) -> Vec<&'a OsStr> {
        let skip = self.ds01_config.as_ref().map(|(_, r)| r.clone());
        args.iter()
            .enumerate()
            .filter(|(i, _)| !skip.as_ref().is_some_and(|r| r.contains(i)))
            .map(|(_, a)| a.as_os_str())
            .collect()
    }
}

/// One parsed flag: its name and its value (inline after `=`, or not yet known).
struct Flag<'a> {
    name: &'a [u8],
    inline_value: Option<&'a [u8]>,
}

/// Splits `-name`, `--name`, `-name=v`, `--name=v`; `None` for non-flags, `-` and `--`.
fn parse_flag(arg: &OsStr) -> Option<Flag<'_>> {
    let b = arg.as_bytes();
    let body = b.strip_prefix(b"--").or_else(|| b.strip_prefix(b"-"))?;
    if body.is_empty() || body[0] == b'-' || body[0] == b'=' {
        return None;
    }
    match body.iter().position(|&c| c == b'=') {
        Some(eq) => Some(Flag { name: &body[..eq], inline_value: Some(&body[eq + 1..]) }),
        None => Some(Flag { name: body, inline_value: None }),
    }
}

fn takes_value(name: &[u8], table: &[&str]) -> bool {
    table.iter().any(|f| f.as_bytes() == name)
}

fn bool_value(v: Option<&[u8]>) -> bool {
    match v {
        None => true,
        Some(v) => matches!(v, b"1" | b"t" | b"T" | b"true" | b"TRUE" | b"True"),
    }
}

/// Scans argv (without argv\[0\]); never fails.
pub fn scan(args: &[OsString]) -> Invocation {
    let mut inv = Invocation::default();
    let mut i = 0;
    // Global flags, up to the first non-flag (Go's flag package stops there).
    while i < args.len() {
        let arg = args[i].as_os_str();
        if arg.as_bytes() == b"--" {
            i += 1;
            break;
        }
        let Some(flag) = parse_flag(arg) else { break };
        let start = i;
        let value: Option<OsString> = if let Some(v) = flag.inline_value {
            Some(OsStr::from_bytes(v).to_owned())
        } else if takes_value(flag.name, GLOBAL_VALUE_FLAGS) {
            i += 1;
            args.get(i).cloned()
        } else {
            None
        };
        match flag.name {
            b"root" => inv.root = value,
            b"log" => inv.log = value,
            b"log-format" => inv.log_format = value,
            b"systemd-cgroup" => inv.systemd_cgroup = bool_value(flag.inline_value),
            n if n == CONFIG_FLAG.as_bytes() => {
                if let Some(v) = value {
                    inv.ds01_config = Some((v, start..i + 1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    if i >= args.len() {
        return inv;
    }
    inv.command_index = Some(i);
    let is_create = matches!(args[i].as_bytes(), b"create" | b"run");
    let table = if is_create { CREATE_VALUE_FLAGS } else { OTHER_VALUE_FLAGS };
    i += 1;
    // Subcommand flags may come before or after the id (urfave/cli v1 reorders them).
    while i < args.len() {
        let arg = args[i].as_os_str();
        if arg.as_bytes() == b"--" {
            if inv.container_id.is_none() {
                inv.container_id = args.get(i + 1).cloned();
            }
            break;
        }
        match parse_flag(arg) {
            Some(flag) => {
                let value = if let Some(v) = flag.inline_value {
                    Some(OsStr::from_bytes(v).to_owned())
                } else if takes_value(flag.name, table) {
                    i += 1;
                    args.get(i).cloned()
                } else {
                    None
                };
                if is_create && matches!(flag.name, b"bundle" | b"b") {
                    inv.bundle = value;
                }
            }
            None => {
                if inv.container_id.is_none() {
                    inv.container_id = Some(arg.to_owned());
                }
            }
        }
        i += 1;
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    fn cmd(inv: &Invocation, a: &[OsString]) -> Option<String> {
        inv.command(a).map(|c| c.to_string_lossy().into_owned())
    }

    #[test]
    fn reference_captures_scan_as_expected() {
        let text = include_str!("../tests/fixtures/runtime-argv-docker-podman.txt");
        let mut creates = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let a = argv(line);
            let inv = scan(&a);
            let c = cmd(&inv, &a).expect("every captured line has a subcommand");
            assert!(["create", "start", "delete"].contains(&c.as_str()), "{line}");
            let id = inv.container_id.clone().expect("id");
            assert_eq!(id.len(), 64, "{line}");
            if c == "create" {
                creates += 1;
                let b = inv.bundle.clone().expect("bundle");
                assert!(b.to_string_lossy().starts_with('/'));
            }
            if line.starts_with("--root") {
                assert_eq!(inv.log_format.as_deref(), Some(OsStr::new("json")));
                assert!(inv.log.is_some());
                assert_eq!(inv.root.as_deref(), Some(OsStr::new("/var/run/docker/runtime-runc/moby")));
            }
        }
        assert_eq!(creates, 6);
    }

    #[test]
    fn flag_forms() {
        for line in [
            "--root /r --log /l --log-format=json --systemd-cgroup create --bundle /b id1",
            "-root /r -log=/l -log-format json -systemd-cgroup create -b /b id1",
            "--root=/r --log /l --log-format json --systemd-cgroup=true create id1 --bundle=/b",
            "--debug --root /r --log /l --log-format=json --systemd-cgroup create --no-pivot -bundle /b --pid-file /p id1",
            "--root /r --log /l --log-format json --criu /c --rootless false --systemd-cgroup run -d --bundle /b id1",
        ] {
            let a = argv(line);
            let inv = scan(&a);
            assert!(inv.is_create(&a), "{line}");
            assert_eq!(inv.root.as_deref(), Some(OsStr::new("/r")), "{line}");
            assert_eq!(inv.log.as_deref(), Some(OsStr::new("/l")), "{line}");
            assert_eq!(inv.log_format.as_deref(), Some(OsStr::new("json")), "{line}");
            assert!(inv.systemd_cgroup, "{line}");
            assert_eq!(inv.bundle.as_deref(), Some(OsStr::new("/b")), "{line}");
            assert_eq!(inv.container_id.as_deref(), Some(OsStr::new("id1")), "{line}");
        }
    }

    #[test]
    fn systemd_cgroup_false_and_absent() {
        let a = argv("--systemd-cgroup=false create x");
        assert!(!scan(&a).systemd_cgroup);
        let a = argv("create x");
        assert!(!scan(&a).systemd_cgroup);
    }

    #[test]
    fn every_runc_subcommand_is_found() {
        for c in [
            "start",
            "state",
            "kill",
            "delete",
            "exec",
            "features",
            "ps",
            "events",
            "update",
            "pause",
            "resume",
            "checkpoint",
            "restore",
            "list",
            "spec",
            "frobnicate",
        ] {
            let a = argv(&format!("--root /r --log /l --log-format json {c} --format json id9"));
            let inv = scan(&a);
            assert_eq!(cmd(&inv, &a).as_deref(), Some(c));
            assert!(!inv.is_create(&a));
        }
        let a = argv("kill id9 KILL");
        assert_eq!(scan(&a).container_id.as_deref(), Some(OsStr::new("id9")));
        let a = argv("exec --process /p.json --detach --pid-file /x id9");
        assert_eq!(scan(&a).container_id.as_deref(), Some(OsStr::new("id9")));
    }

    #[test]
    fn ctr_and_containerd_forms() {
        // containerd's runc shim with systemd cgroups, and ctr's default (no global flags).
        let a = argv("--root /run/containerd/runc/k8s.io --log /run/x/log.json --log-format json --systemd-cgroup create --bundle /run/x --pid-file /run/x/init.pid --console-socket /tmp/s.sock abc");
        let inv = scan(&a);
        assert!(inv.systemd_cgroup && inv.is_create(&a));
        assert_eq!(inv.container_id.as_deref(), Some(OsStr::new("abc")));
        let a = argv("create --bundle /run/x --pid-file /run/x/init.pid abc");
        assert_eq!(scan(&a).bundle.as_deref(), Some(OsStr::new("/run/x")));
    }

    #[test]
    fn no_bundle_means_cwd_and_empty_argv_is_fine() {
        let a = argv("create id");
        let inv = scan(&a);
        assert!(inv.bundle.is_none());
        assert!(scan(&[]).command_index.is_none());
        let a = argv("--version");
        assert!(scan(&a).command_index.is_none());
        let a = argv("--root");
        assert!(scan(&a).command_index.is_none());
        let a = argv("create --bundle");
        assert!(scan(&a).bundle.is_none());
    }

    #[test]
    fn own_flag_is_found_and_removed() {
        for line in [
            "--ds01-config=/etc/x.yaml --root /r create --bundle /b id",
            "--ds01-config /etc/x.yaml --root /r create --bundle /b id",
            "--root /r -ds01-config /etc/x.yaml create --bundle /b id",
        ] {
            let a = argv(line);
            let inv = scan(&a);
            assert_eq!(inv.ds01_config.as_ref().map(|(p, _)| p.as_os_str()), Some(OsStr::new("/etc/x.yaml")));
            let out: Vec<String> =
                inv.runc_args(&a).iter().map(|s| s.to_string_lossy().into_owned()).collect();
            assert_eq!(out.join(" "), "--root /r create --bundle /b id", "{line}");
        }
    }

    #[test]
    fn double_dash_ends_flags() {
        let a = argv("create --bundle /b -- -weird-id");
        let inv = scan(&a);
        assert_eq!(inv.container_id.as_deref(), Some(OsStr::new("-weird-id")));
        let a = argv("-- create x");
        assert_eq!(cmd(&scan(&a), &a).as_deref(), Some("create"));
    }
}
