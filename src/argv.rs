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

/// runc's global flags that take a value (1.1 to main; `criu` until 1.3).
const GLOBAL_VALUE_FLAGS: &[&str] = &["root", "log", "log-format", "criu", "rootless", CONFIG_FLAG];

/// runc's bool global flags.
const GLOBAL_BOOL_FLAGS: &[&str] = &["debug", "systemd-cgroup", "help", "h", "version", "v"];

/// runc's subcommands (the same 17 in 1.1 to main) and urfave/cli's `help`/`h`.
const SUBCOMMANDS: &[&str] = &[
    "checkpoint",
    "create",
    "delete",
    "events",
    "exec",
    "kill",
    "list",
    "pause",
    "ps",
    "restore",
    "resume",
    "run",
    "spec",
    "start",
    "state",
    "update",
    "features",
    "help",
    "h",
];

/// Subcommands that make a container from a bundle: they get the create pipeline.
const CREATES: &[&str] = &["create", "run", "restore"];

/// Flags of the subcommands that create, with whether each takes a value (runc 1.1 to main).
const CREATE_FLAGS: &[(&str, bool)] = &[
    ("bundle", true),
    ("b", true),
    ("console-socket", true),
    ("pid-file", true),
    ("no-pivot", false),
    ("no-new-keyring", false),
    ("preserve-fds", true),
    ("pidfd-socket", true),
    ("detach", false),
    ("d", false),
    ("keep", false),
    ("no-subreaper", false),
    ("help", false),
    ("h", false),
];

/// Flags only `restore` has.
const RESTORE_FLAGS: &[(&str, bool)] = &[
    ("image-path", true),
    ("work-path", true),
    ("tcp-established", false),
    ("ext-unix-sk", false),
    ("shell-job", false),
    ("file-locks", false),
    ("manage-cgroups-mode", true),
    ("empty-ns", true),
    ("auto-dedup", false),
    ("lazy-pages", false),
    ("lsm-profile", true),
    ("lsm-mount-context", true),
];

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
    "cpu-burst",
    "cpu-idle",
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
    /// `--bundle`/`-b` of create, run and restore.
    pub bundle: Option<OsString>,
    /// The first positional argument after the subcommand (the container id).
    pub container_id: Option<OsString>,
    /// The subcommand's flags as given (name without dashes, value if it took one).
    pub flags: Vec<(OsString, Option<OsString>)>,
    /// Positional arguments after the container id (`exec`'s command, `kill`'s signal).
    pub rest: Vec<OsString>,
    /// Why the scan cannot tell for sure that this call creates no container: then the call
    /// must not reach runc unjudged.
    pub uncertain: Option<String>,
}

impl Invocation {
    /// The subcommand, as runc will see it.
    pub fn command<'a>(&self, args: &'a [OsString]) -> Option<&'a OsStr> {
        self.command_index.map(|i| args[i].as_os_str())
    }

    /// True for the subcommands that make a container from a bundle (`create`, `run`,
    /// `restore`): their config.json goes through the create pipeline.
    pub fn is_create(&self, args: &[OsString]) -> bool {
        self.command(args).is_some_and(|c| CREATES.iter().any(|k| c.as_bytes() == k.as_bytes()))
    }

    /// The value of subcommand flag `name` (any of its spellings), the last one given.
    pub fn flag(&self, names: &[&str]) -> Option<&OsStr> {
        self.flags
            .iter()
            .rev()
            .find(|(n, v)| v.is_some() && names.iter().any(|x| n.as_bytes() == x.as_bytes()))
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of a repeatable subcommand flag.
    pub fn flag_all<'a>(&'a self, names: &'a [&str]) -> impl Iterator<Item = &'a OsStr> + 'a {
        self.flags
            .iter()
            .filter(move |(n, _)| names.iter().any(|x| n.as_bytes() == x.as_bytes()))
            .filter_map(|(_, v)| v.as_deref())
    }

    /// True when bool flag `name` was given and not as `=false`.
    pub fn flag_set(&self, names: &[&str]) -> Option<bool> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| names.iter().any(|x| n.as_bytes() == x.as_bytes()))
            .map(|(_, v)| bool_value(v.as_deref().map(OsStr::as_bytes)))
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

/// Scans argv (without argv\[0\]); never fails. What it cannot be sure of is said in
/// [`Invocation::uncertain`].
pub fn scan(args: &[OsString]) -> Invocation {
    let mut inv = Invocation::default();
    let mut i = 0;
    let mut unknown_global: Option<String> = None;
    // Global flags, up to the first non-flag (Go's flag package stops there).
    while i < args.len() {
        let arg = args[i].as_os_str();
        if arg.as_bytes() == b"--" {
            i += 1;
            break;
        }
        let Some(flag) = parse_flag(arg) else { break };
        let start = i;
        let known_value = takes_value(flag.name, GLOBAL_VALUE_FLAGS);
        if flag.inline_value.is_none() && !known_value && !takes_value(flag.name, GLOBAL_BOOL_FLAGS) {
            unknown_global.get_or_insert_with(|| String::from_utf8_lossy(arg.as_bytes()).into_owned());
        }
        let value: Option<OsString> = if let Some(v) = flag.inline_value {
            Some(OsStr::from_bytes(v).to_owned())
        } else if known_value {
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
    // A flag runc knows and we do not might take the next argument as its value, so the
    // subcommand could be any later word: if any of them creates, we cannot tell.
    if let Some(f) = &unknown_global {
        if args[i.min(args.len())..].iter().any(|a| CREATES.iter().any(|c| a.as_bytes() == c.as_bytes())) {
            inv.uncertain = Some(format!(
                "runc global flag {f} is unknown to ds01-runtime, so it cannot tell which subcommand this is"
            ));
        }
    }
    if i >= args.len() {
        return inv;
    }
    inv.command_index = Some(i);
    let cmd = args[i].as_bytes();
    if !SUBCOMMANDS.iter().any(|c| c.as_bytes() == cmd) {
        inv.uncertain.get_or_insert_with(|| {
            format!(
                "runc subcommand {:?} is unknown to ds01-runtime, which passes only those it can judge",
                String::from_utf8_lossy(cmd)
            )
        });
    }
    let creates = CREATES.iter().any(|c| c.as_bytes() == cmd);
    let restore = cmd == b"restore";
    // exec and ps stop at the container id: what follows is the command.
    let stops_at_id = matches!(cmd, b"exec" | b"ps");
    let create_flag = |name: &[u8]| {
        CREATE_FLAGS
            .iter()
            .chain(if restore { RESTORE_FLAGS } else { &[] })
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, v)| *v)
    };
    i += 1;
    // Subcommand flags may come before or after the id (urfave/cli v1 reorders them).
    while i < args.len() {
        let arg = args[i].as_os_str();
        if arg.as_bytes() == b"--" {
            let mut after = args[i + 1..].iter().cloned();
            if inv.container_id.is_none() {
                inv.container_id = after.next();
            }
            inv.rest.extend(after);
            break;
        }
        let flag = if stops_at_id && inv.container_id.is_some() { None } else { parse_flag(arg) };
        match flag {
            Some(flag) => {
                let takes = if creates {
                    match create_flag(flag.name) {
                        Some(t) => t,
                        None => {
                            if flag.inline_value.is_none() {
                                inv.uncertain.get_or_insert_with(|| {
                                    format!(
                                        "runc {} flag {} is unknown to ds01-runtime, so it cannot tell the bundle and container id",
                                        String::from_utf8_lossy(cmd),
                                        String::from_utf8_lossy(arg.as_bytes())
                                    )
                                });
                            }
                            false
                        }
                    }
                } else {
                    takes_value(flag.name, OTHER_VALUE_FLAGS)
                };
                let value = if let Some(v) = flag.inline_value {
                    Some(OsStr::from_bytes(v).to_owned())
                } else if takes {
                    i += 1;
                    args.get(i).cloned()
                } else {
                    None
                };
                if creates && matches!(flag.name, b"bundle" | b"b") {
                    inv.bundle = value.clone();
                }
                inv.flags.push((OsStr::from_bytes(flag.name).to_owned(), value));
            }
            None => {
                if inv.container_id.is_none() {
                    inv.container_id = Some(arg.to_owned());
                } else {
                    inv.rest.push(arg.to_owned());
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
        let text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/runtime-argv-docker-podman.txt"
        ));
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
            "features",
        ] {
            let a = argv(&format!("--root /r --log /l --log-format json {c} --format json id9"));
            let inv = scan(&a);
            assert_eq!(cmd(&inv, &a).as_deref(), Some(c));
            assert_eq!(inv.is_create(&a), c == "restore", "{c}");
            assert_eq!(inv.uncertain.is_some(), c == "restore", "{c}: restore has no --format");
        }
        let a = argv("--root /r frobnicate --bundle /b id9");
        let why = scan(&a).uncertain.expect("an unknown subcommand is not passed unjudged");
        assert!(why.contains("\"frobnicate\" is unknown"), "{why}");
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

    /// runc's global flags (1.1.12 to main, `criu` until 1.3) in every form, before a create:
    /// each is read as runc reads it, and the subcommand, bundle and id are found.
    #[test]
    fn every_runc_global_flag_in_every_form() {
        let value_flags = [
            ("root", "/r"),
            ("log", "/l"),
            ("log-format", "json"),
            ("criu", "/usr/sbin/criu"),
            ("rootless", "false"),
        ];
        let bool_flags = ["debug", "systemd-cgroup"];
        for (f, v) in value_flags {
            for form in [format!("--{f} {v}"), format!("-{f} {v}"), format!("--{f}={v}"), format!("-{f}={v}")]
            {
                let line = format!("{form} create --bundle /b id1");
                let a = argv(&line);
                let inv = scan(&a);
                assert!(inv.is_create(&a), "{line}");
                assert_eq!(inv.uncertain, None, "{line}");
                assert_eq!(inv.bundle.as_deref(), Some(OsStr::new("/b")), "{line}");
                assert_eq!(inv.container_id.as_deref(), Some(OsStr::new("id1")), "{line}");
            }
        }
        for f in bool_flags {
            for form in [format!("--{f}"), format!("-{f}"), format!("--{f}=true"), format!("-{f}=false")] {
                let line = format!("{form} --root /r create --bundle /b id1");
                let a = argv(&line);
                let inv = scan(&a);
                assert!(inv.is_create(&a) && inv.uncertain.is_none(), "{line}");
                assert_eq!(inv.root.as_deref(), Some(OsStr::new("/r")), "{line}");
            }
        }
        for f in ["--help", "-h", "--version", "-v"] {
            let a = argv(f);
            let inv = scan(&a);
            assert!(inv.command_index.is_none() && inv.uncertain.is_none(), "{f}");
        }
    }

    /// A flag runc may know and we do not: whether it takes the next word decides the
    /// subcommand, so a call with any word that creates is uncertain; one without is not.
    #[test]
    fn unknown_flags_fail_closed_when_a_create_could_hide_behind_them() {
        for line in [
            "--future create run --bundle /b id1",
            "--future /x create --bundle /b id1",
            "--future create --bundle /b id1",
            "--root /r --future restore --bundle /b id1",
            "create --future-flag /b id1",
            "run --bundle /b --future /x id1",
            "restore --future x id1",
        ] {
            let a = argv(line);
            assert!(scan(&a).uncertain.is_some(), "{line}");
        }
        for line in [
            "--future=1 create --bundle /b id1",
            "--future state id1",
            "--future kill id1 KILL",
            "create --future=x --bundle /b id1",
            "restore --image-path /i --tcp-established --bundle /b id1",
            "run -d --keep --no-subreaper --bundle /b id1",
        ] {
            let a = argv(line);
            assert_eq!(scan(&a).uncertain, None, "{line}");
        }
    }

    #[test]
    fn exec_stops_at_the_id_and_update_reads_its_flags() {
        let a = argv("exec --cap CAP_SYS_ADMIN -c CAP_NET_ADMIN --no-new-privs=false id9 sh -c --cap x");
        let inv = scan(&a);
        assert_eq!(inv.container_id.as_deref(), Some(OsStr::new("id9")));
        let caps: Vec<&OsStr> = inv.flag_all(&["cap", "c"]).collect();
        assert_eq!(caps, [OsStr::new("CAP_SYS_ADMIN"), OsStr::new("CAP_NET_ADMIN")]);
        assert_eq!(inv.flag_set(&["no-new-privs"]), Some(false));
        let rest: Vec<&str> = inv.rest.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(rest, ["sh", "-c", "--cap", "x"]);
        for line in
            ["update --resources=- id9", "update -r - id9", "update id9 -r=-", "update --resources - id9"]
        {
            let a = argv(line);
            let inv = scan(&a);
            assert_eq!(inv.flag(&["resources", "r"]), Some(OsStr::new("-")), "{line}");
            assert_eq!(inv.container_id.as_deref(), Some(OsStr::new("id9")), "{line}");
        }
        let a = argv("update --memory 100g --pids-limit=-1 id9");
        let inv = scan(&a);
        assert_eq!(inv.flag(&["memory"]), Some(OsStr::new("100g")));
        assert_eq!(inv.flag(&["pids-limit"]), Some(OsStr::new("-1")));
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
