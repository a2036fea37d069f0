//! `ds01ctl install --front-door`: the systemd units that put `ds01-front-door` on the socket
//! users reach and move Docker's socket unit (`docker.socket`, handed to dockerd as
//! `-H fd://`) to a path only root may reach; refused, with the one thing to change, when
//! dockerd would still listen where users reach it.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::ctl::systemd_unit::{command_words, Unit, Word};
use crate::error::{Error, Result};
use crate::policy::settings::FrontDoorSettings;

/// The front door's socket unit.
pub const SOCKET_UNIT: &str = "ds01-front-door.socket";
/// The front door's service unit.
pub const SERVICE_UNIT: &str = "ds01-front-door.service";
/// The drop-in moving Docker's socket, relative to the unit directory.
pub const DROP_IN: &str = "docker.socket.d/ds01-front-door.conf";
/// The front door's binary, installed beside ds01-runtime.
pub const BINARY: &str = "ds01-front-door";

/// The commands that make systemd and Docker take the units up, in order.
pub const APPLY: &[&str] = &[
    "systemctl daemon-reload",
    "systemctl restart docker.socket docker.service",
    "systemctl enable --now ds01-front-door.socket",
];

/// The command that runs a new front door binary under units already in place.
pub const RESTART: &str = "systemctl restart ds01-front-door.service";

/// The commands that put Docker back on its own socket after uninstall, in order.
pub const UNAPPLY: &[&str] = &[
    "systemctl stop ds01-front-door.socket ds01-front-door.service",
    "systemctl daemon-reload",
    "systemctl restart docker.socket docker.service",
];

/// Where the units are read from and written to.
#[derive(Debug, Clone)]
pub struct UnitDirs {
    /// The admin's units, where the front door's go (/etc/systemd/system).
    pub admin: PathBuf,
    /// The packages' units (/lib/systemd/system).
    pub vendor: PathBuf,
}

/// What the front door is run with.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The `front_door:` section of the settings.
    pub settings: &'a FrontDoorSettings,
    /// The settings file the front door is to read.
    pub settings_file: &'a Path,
    /// The installed binary.
    pub binary: &'a Path,
    /// daemon.json as it will be.
    pub daemon: &'a Map<String, Value>,
    /// daemon.json's path, for messages.
    pub daemon_json: &'a Path,
}

/// The files to write (path, text), after checking that dockerd will listen only where root
/// reaches it; a refusal names what to change.
pub fn plan(dirs: &UnitDirs, i: &Inputs) -> Result<Vec<(PathBuf, String)>> {
    let s = i.settings;
    if s.listen == s.upstream {
        return Err(Error::failed(format!(
            "front_door.listen and front_door.upstream are both {}: dockerd needs a socket of its own",
            s.listen.display()
        )));
    }
    let drop_in_path = dirs.admin.join(DROP_IN);
    let drop_in = docker_socket_drop_in(&s.upstream)?;
    let files = vec![
        (drop_in_path.clone(), drop_in.clone()),
        (dirs.admin.join(SOCKET_UNIT), socket_unit(s)?),
        (dirs.admin.join(SERVICE_UNIT), service_unit(i.binary, i.settings_file)?),
    ];
    let search: [&Path; 2] = [&dirs.admin, &dirs.vendor];
    let shown = format!("{} or {}", dirs.admin.display(), dirs.vendor.display());
    let socket = Unit::load("docker.socket", &search)?.ok_or_else(|| {
        Error::failed(format!(
            "no docker.socket in {shown}: the front door needs Docker started by systemd with its socket unit (docker.io's docker.socket and docker.service)"
        ))
    })?;
    check_socket(&socket.with_drop_in(&drop_in_path, &drop_in), &drop_in_path, &s.upstream)?;
    let service = Unit::load("docker.service", &search)?.ok_or_else(|| {
        Error::failed(format!("no docker.service in {shown}: the front door needs Docker started by systemd"))
    })?;
    check_daemon_json(i.daemon, i.daemon_json)?;
    check_service(&service, i.daemon, &dirs.admin)?;
    Ok(files)
}

/// A path as a unit file may hold it: `%` doubled; whitespace, quotes, `\` and `$` refused.
fn unit_path(p: &Path) -> Result<String> {
    let s = p.to_str().filter(|s| {
        !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control() || "\"'\\$;".contains(c))
    });
    match s {
        Some(s) => Ok(s.replace('%', "%%")),
        None => Err(Error::failed(format!(
            "{} cannot go in a systemd unit as written (whitespace, quotes, \\, $ or ;): choose a path without them",
            p.display()
        ))),
    }
}

/// The drop-in that moves docker.socket to `upstream`, root's only (dockerd keeps `-H fd://`).
pub fn docker_socket_drop_in(upstream: &Path) -> Result<String> {
    Ok(format!(
        "# Written by `ds01ctl install --front-door` (`ds01ctl uninstall` removes it): dockerd's own\n\
         # socket is root's only; users reach Docker through ds01-front-door.\n\
         [Socket]\n\
         ListenStream=\n\
         ListenStream={}\n\
         SocketMode=0600\n\
         SocketUser=root\n\
         SocketGroup=root\n",
        unit_path(upstream)?
    ))
}

/// The front door's socket unit: the socket users reach.
pub fn socket_unit(s: &FrontDoorSettings) -> Result<String> {
    let group = &s.listen_group;
    if group.is_empty() || group.chars().any(|c| c.is_whitespace() || c.is_control() || c == '%') {
        return Err(Error::failed(format!("front_door.listen_group {group:?} is not a group name")));
    }
    Ok(format!(
        "# Written by `ds01ctl install --front-door`; `ds01ctl uninstall` removes it.\n\
         [Unit]\n\
         Description=ds01 front door socket: the Docker socket users reach\n\
         \n\
         [Socket]\n\
         ListenStream={}\n\
         SocketMode=0660\n\
         SocketUser=root\n\
         SocketGroup={group}\n\
         Service={SERVICE_UNIT}\n\
         \n\
         [Install]\n\
         WantedBy=sockets.target\n",
        unit_path(&s.listen)?
    ))
}

/// The front door's service unit; `DS01_RUNTIME_CONFIG` only for settings not at the default path.
pub fn service_unit(binary: &Path, settings_file: &Path) -> Result<String> {
    let env = if settings_file == Path::new(crate::policy::settings::DEFAULT_PATH) {
        String::new()
    } else {
        format!("Environment={}={}\n", crate::policy::settings::ENV_VAR, unit_path(settings_file)?)
    };
    Ok(format!(
        "# Written by `ds01ctl install --front-door`; `ds01ctl uninstall` removes it.\n\
         [Unit]\n\
         Description=ds01 front door: each user's Docker calls, known by uid, forwarded to dockerd\n\
         After=docker.service\n\
         Requires={SOCKET_UNIT}\n\
         \n\
         [Service]\n\
         ExecStart={}\n\
         {env}\
         Restart=on-failure\n\
         LimitNOFILE=1048576\n",
        unit_path(binary)?
    ))
}

/// docker.socket with the drop-in in place must listen on `upstream` only, root's only: a
/// drop-in read after it could undo it.
fn check_socket(unit: &Unit, drop_in: &Path, upstream: &Path) -> Result<()> {
    let later = |key: &str, v: &crate::ctl::systemd_unit::Value| {
        Error::failed(format!(
            "{} sets {key}={} after {}: remove that line, so that dockerd's socket stays root's only",
            v.file.display(),
            v.text,
            drop_in.display()
        ))
    };
    let streams = unit.list("Socket", "ListenStream");
    if let Some(v) = streams.iter().find(|v| Path::new(&v.text) != upstream) {
        return Err(later("ListenStream", v));
    }
    for (key, want) in [("SocketMode", "0600"), ("SocketUser", "root"), ("SocketGroup", "root")] {
        if let Some(v) = unit.last("Socket", key).filter(|v| v.text != want) {
            return Err(later(key, &v));
        }
    }
    for key in ["ListenSequentialPacket", "ListenDatagram", "ListenFIFO"] {
        if let Some(v) = unit.list("Socket", key).first() {
            return Err(later(key, v));
        }
    }
    Ok(())
}

/// A host dockerd listens on that users could reach: a unix socket dockerd makes itself (for
/// its `group`, docker by default), or TCP without client certificates.
fn users_reach(host: &str, group: &str, tls_verify: bool) -> Option<String> {
    if let Some(path) = host.strip_prefix("unix://") {
        let path = if path.is_empty() { "/var/run/docker.sock" } else { path };
        return (group != "root" && group != "0")
            .then(|| format!("a socket dockerd makes at {path} for group {group}"));
    }
    if host.starts_with("fd://") || host.starts_with("npipe://") {
        return None;
    }
    (!tls_verify).then(|| "reachable by every local user without TLS client certificates".to_owned())
}

/// daemon.json's `hosts` must not name a socket users reach.
fn check_daemon_json(daemon: &Map<String, Value>, path: &Path) -> Result<()> {
    let group = daemon.get("group").and_then(Value::as_str).unwrap_or("docker");
    let tls = daemon.get("tlsverify").and_then(Value::as_bool).unwrap_or(false);
    let hosts = daemon.get("hosts").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for h in hosts.iter().filter_map(Value::as_str) {
        if let Some(why) = users_reach(h, group, tls) {
            return Err(Error::failed(format!(
                "{} \"hosts\" lists {h} ({why}): remove it from \"hosts\" (dockerd takes docker.socket's socket through -H fd://)",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The hosts given on dockerd's command line (`-H X`, `-HX`, `-H=X`, `--host X`, `--host=X`).
fn hosts(words: &[Word]) -> Vec<&Word> {
    let mut out = Vec::new();
    let mut it = words.iter().skip(1).peekable();
    while let Some(w) = it.next() {
        match w.text.as_str() {
            "-H" | "--host" => out.extend(it.next()),
            t if t.starts_with("--host=") || (t.starts_with("-H") && !t.starts_with("--")) => out.push(w),
            _ => {}
        }
    }
    out
}

/// The host a `hosts` word names.
fn host_value(w: &Word) -> &str {
    let t = w.text.as_str();
    t.strip_prefix("--host=").or_else(|| t.strip_prefix("-H=").or_else(|| t.strip_prefix("-H"))).unwrap_or(t)
}

/// docker.service must run dockerd on docker.socket's socket (`-H fd://`) and nothing users reach.
fn check_service(unit: &Unit, daemon: &Map<String, Value>, admin: &Path) -> Result<()> {
    let env = unit.environment()?;
    let lines = unit.list("Service", "ExecStart");
    let Some(first) = lines.first() else {
        return Err(Error::failed(format!(
            "{} has no ExecStart: cannot tell how dockerd listens",
            unit.sources.first().map(|s| s.path.display().to_string()).unwrap_or_default()
        )));
    };
    let fix = format!(
        "make it -H fd:// in a drop-in ({}/docker.service.d/, with ExecStart= then the new line), so that docker.socket hands dockerd its socket",
        admin.display()
    );
    let group = daemon.get("group").and_then(Value::as_str).unwrap_or("docker");
    let mut tls = daemon.get("tlsverify").and_then(Value::as_bool).unwrap_or(false);
    let mut fd = daemon
        .get("hosts")
        .and_then(Value::as_array)
        .is_some_and(|h| h.iter().filter_map(Value::as_str).any(|h| h.starts_with("fd://")));
    let commands: Vec<_> = lines.iter().map(|l| (l, command_words(&l.text, &env))).collect();
    tls |=
        commands.iter().flat_map(|(_, w)| w).any(|w| w.text == "--tlsverify" || w.text == "--tlsverify=true");
    for (line, words) in &commands {
        for w in hosts(words) {
            let host = host_value(w);
            let from = match &w.from {
                Some((var, file)) => format!(" (from ${var}, set in {})", file.display()),
                None => String::new(),
            };
            if host.starts_with("fd://") {
                fd = true;
            } else if let Some(why) = users_reach(host, group, tls) {
                return Err(Error::failed(format!(
                    "docker.service's ExecStart ({}) runs dockerd with -H {host}{from}, {why}: {fix}",
                    line.file.display()
                )));
            }
        }
    }
    if !fd {
        return Err(Error::failed(format!(
            "docker.service's ExecStart ({}) gives dockerd no -H fd://, so dockerd makes /var/run/docker.sock itself: {fix}",
            first.file.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKET: &str = "[Unit]\nDescription=Docker Socket for the API\n\n[Socket]\nListenStream=/run/docker.sock\nSocketMode=0660\nSocketUser=root\nSocketGroup=docker\n\n[Install]\nWantedBy=sockets.target\n";
    const SERVICE: &str = "[Service]\nType=notify\nEnvironmentFile=-/nonexistent/default/docker\nExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock $DOCKER_OPTS\n";

    struct Host {
        dir: PathBuf,
        dirs: UnitDirs,
        settings: FrontDoorSettings,
        daemon: Map<String, Value>,
    }

    impl Host {
        fn new(tag: &str) -> Host {
            let dir = std::env::temp_dir().join(format!("ds01-fd-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let dirs = UnitDirs { admin: dir.join("etc"), vendor: dir.join("lib") };
            std::fs::create_dir_all(&dirs.admin).unwrap();
            std::fs::create_dir_all(&dirs.vendor).unwrap();
            std::fs::write(dirs.vendor.join("docker.socket"), SOCKET).unwrap();
            std::fs::write(dirs.vendor.join("docker.service"), SERVICE).unwrap();
            Host { dir, dirs, settings: FrontDoorSettings::default(), daemon: Map::new() }
        }
        fn plan(&self) -> Result<Vec<(PathBuf, String)>> {
            plan(
                &self.dirs,
                &Inputs {
                    settings: &self.settings,
                    settings_file: Path::new("/etc/ds01/runtime.yaml"),
                    binary: Path::new("/usr/local/bin/ds01-front-door"),
                    daemon: &self.daemon,
                    daemon_json: Path::new("/etc/docker/daemon.json"),
                },
            )
        }
        fn refusal(&self) -> String {
            let e = self.plan().unwrap_err().to_string();
            assert_eq!(e.lines().count(), 1, "one line: {e}");
            e
        }
        fn drop_in(&self, unit: &str, name: &str, text: &str) {
            let d = self.dirs.admin.join(format!("{unit}.d"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), text).unwrap();
        }
    }

    impl Drop for Host {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn the_units_as_written() {
        let h = Host::new("units");
        let files = h.plan().unwrap();
        let names: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            names,
            [h.dirs.admin.join(DROP_IN), h.dirs.admin.join(SOCKET_UNIT), h.dirs.admin.join(SERVICE_UNIT)]
        );
        let body = |t: &str| t.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
        assert_eq!(
            body(&files[0].1),
            "[Socket]\nListenStream=\nListenStream=/run/ds01/dockerd.sock\nSocketMode=0600\nSocketUser=root\nSocketGroup=root"
        );
        assert_eq!(
            body(&files[1].1),
            "[Unit]\nDescription=ds01 front door socket: the Docker socket users reach\n\n[Socket]\n\
             ListenStream=/var/run/docker.sock\nSocketMode=0660\nSocketUser=root\nSocketGroup=docker\n\
             Service=ds01-front-door.service\n\n[Install]\nWantedBy=sockets.target"
        );
        assert_eq!(
            body(&files[2].1),
            "[Unit]\nDescription=ds01 front door: each user's Docker calls, known by uid, forwarded to dockerd\n\
             After=docker.service\nRequires=ds01-front-door.socket\n\n[Service]\n\
             ExecStart=/usr/local/bin/ds01-front-door\nRestart=on-failure\nLimitNOFILE=1048576"
        );
        let other =
            service_unit(Path::new("/opt/ds01/bin/ds01-front-door"), Path::new("/opt/ds01/etc/runtime.yaml"))
                .unwrap();
        assert!(other.contains("\nEnvironment=DS01_RUNTIME_CONFIG=/opt/ds01/etc/runtime.yaml\n"), "{other}");
        assert!(other.contains("\nExecStart=/opt/ds01/bin/ds01-front-door\n"), "{other}");
        let mut s = FrontDoorSettings { listen_group: "ds01 users".into(), ..FrontDoorSettings::default() };
        assert!(socket_unit(&s).unwrap_err().to_string().contains("is not a group name"));
        s.listen_group = "docker".into();
        s.listen = "/run/my sock".into();
        assert!(socket_unit(&s).unwrap_err().to_string().contains("cannot go in a systemd unit"));
        assert!(docker_socket_drop_in(Path::new("/run/50%")).unwrap().contains("ListenStream=/run/50%%\n"));
    }

    #[test]
    fn docker_listening_where_users_reach_is_refused() {
        // -H unix:// on the command line.
        let h = Host::new("unix");
        std::fs::write(
            h.dirs.admin.join("docker.service"),
            "[Service]\nExecStart=/usr/sbin/dockerd -H unix:///var/run/docker.sock\n",
        )
        .unwrap();
        let e = h.refusal();
        assert!(e.starts_with("docker.service's ExecStart ("), "{e}");
        assert!(e.contains("-H unix:///var/run/docker.sock, a socket dockerd makes at /var/run/docker.sock for group docker: make it -H fd://"), "{e}");

        // Through $DOCKER_OPTS from an environment file, in a drop-in that replaces ExecStart.
        let h = Host::new("opts");
        let env = h.dir.join("default-docker");
        std::fs::write(&env, "DOCKER_OPTS=\"--host=unix:///run/extra.sock\"\n").unwrap();
        h.drop_in(
            "docker.service",
            "opts.conf",
            &format!("[Service]\nEnvironmentFile={}\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// $DOCKER_OPTS\n", env.display()),
        );
        let e = h.refusal();
        assert!(
            e.contains(&format!("-H unix:///run/extra.sock (from $DOCKER_OPTS, set in {})", env.display())),
            "{e}"
        );
        assert!(e.contains("opts.conf)"), "names the drop-in with the ExecStart: {e}");

        // No -H at all: dockerd makes the default socket.
        let h = Host::new("none");
        h.drop_in("docker.service", "x.conf", "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd\n");
        assert!(h
            .refusal()
            .contains("gives dockerd no -H fd://, so dockerd makes /var/run/docker.sock itself"));

        // TCP without TLS; with --tlsverify it is no way in for local users.
        let h = Host::new("tcp");
        h.drop_in(
            "docker.service",
            "x.conf",
            "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// -H tcp://0.0.0.0:2375\n",
        );
        assert!(h.refusal().contains("-H tcp://0.0.0.0:2375, reachable by every local user"));
        h.drop_in(
            "docker.service",
            "x.conf",
            "[Service]\nExecStart=\nExecStart=/usr/sbin/dockerd -H fd:// --tlsverify -H tcp://0.0.0.0:2376\n",
        );
        assert!(h.plan().is_ok());
    }

    #[test]
    fn daemon_json_hosts_users_reach_are_refused() {
        let mut h = Host::new("hosts");
        h.daemon = serde_json::from_str(r#"{"hosts": ["fd://", "unix:///var/run/docker.sock"]}"#).unwrap();
        let e = h.refusal();
        assert_eq!(
            e,
            "/etc/docker/daemon.json \"hosts\" lists unix:///var/run/docker.sock (a socket dockerd makes at /var/run/docker.sock for group docker): remove it from \"hosts\" (dockerd takes docker.socket's socket through -H fd://)"
        );
        h.daemon =
            serde_json::from_str(r#"{"hosts": ["unix:///run/root-only.sock"], "group": "root"}"#).unwrap();
        assert!(h.plan().is_ok(), "a socket for group root is root's only");
        h.daemon = serde_json::from_str(r#"{"hosts": ["tcp://127.0.0.1:2375"]}"#).unwrap();
        assert!(h.refusal().contains("lists tcp://127.0.0.1:2375 (reachable by every local user"));
    }

    #[test]
    fn docker_socket_units_the_drop_in_cannot_decide_are_refused() {
        let h = Host::new("nosock");
        std::fs::remove_file(h.dirs.vendor.join("docker.socket")).unwrap();
        assert!(h.refusal().starts_with("no docker.socket in "));
        let h = Host::new("noservice");
        std::fs::remove_file(h.dirs.vendor.join("docker.service")).unwrap();
        assert!(h.refusal().starts_with("no docker.service in "));

        // A drop-in read after ours puts a socket back where users reach it.
        let h = Host::new("later");
        h.drop_in("docker.socket", "zz-admin.conf", "[Socket]\nListenStream=/var/run/docker.sock\n");
        let e = h.refusal();
        assert!(e.contains("zz-admin.conf sets ListenStream=/var/run/docker.sock after "), "{e}");
        h.drop_in("docker.socket", "zz-admin.conf", "[Socket]\nSocketGroup=docker\n");
        assert!(h.refusal().contains("sets SocketGroup=docker after"));
        // One read before ours is undone by ours.
        std::fs::remove_file(h.dirs.admin.join("docker.socket.d/zz-admin.conf")).unwrap();
        h.drop_in(
            "docker.socket",
            "10-admin.conf",
            "[Socket]\nListenStream=/var/run/docker.sock\nSocketMode=0666\n",
        );
        assert!(h.plan().is_ok());

        let mut h = Host::new("same");
        h.settings.upstream = h.settings.listen.clone();
        assert!(h.refusal().contains("dockerd needs a socket of its own"));
    }
}
