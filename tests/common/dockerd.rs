//! A private Docker engine for tests: its own data root, exec root, socket, pidfile and
//! daemon.json registering the freshly built shim; never the machine's own daemon or
//! /etc/docker. Stopped and cleaned on drop, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use super::*;

/// How to start the engine.
#[derive(Default)]
pub struct Opts<'a> {
    /// Make ds01 the default runtime.
    pub default_runtime: bool,
    /// Put the shim on dockerd's PATH as `runc`, ahead of the real one.
    pub interpose: bool,
    /// Extra YAML for the runtime's settings.
    pub settings_extra: &'a str,
    /// Extra daemon.json keys.
    pub daemon_extra: Option<serde_json::Value>,
    /// Fake GPUs (mknod nodes, static inventory), and a stub nvidia-container-runtime-hook on
    /// dockerd's PATH so that it accepts `--gpus`.
    pub gpus: u32,
    /// Where the engine's directories go (default /tmp); the benchmark uses tmpfs, like /run.
    pub base: Option<&'a Path>,
}

/// A running private dockerd.
pub struct Dockerd {
    pub tmp: TempDir,
    pub sock: PathBuf,
    pub settings: PathBuf,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    path: String,
    child: Option<Child>,
}

fn spawn_dockerd(dir: &Path, path: &str, settings: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("dockerd.log")).unwrap();
    let sock = dir.join("docker.sock");
    Command::new("dockerd")
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .arg("--pidfile")
        .arg(dir.join("docker.pid"))
        .arg("--config-file")
        .arg(dir.join("daemon.json"))
        .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
        .env("PATH", path)
        .env("DS01_RUNTIME_CONFIG", settings)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start dockerd")
}

/// Root, docker.io, runc and busybox-static.
pub fn require_docker() -> bool {
    require_runc()
        && require(which("dockerd").is_some(), "needs dockerd (apt-get install docker.io)")
        && require(which("docker").is_some(), "needs the docker CLI (apt-get install docker.io)")
        && require(which("containerd").is_some(), "needs containerd (apt-get install containerd)")
}

impl Dockerd {
    /// Starts dockerd and imports the busybox image `ds01-busybox:test`.
    pub fn start(tag: &str, opts: Opts) -> Dockerd {
        let tmp = TempDir::in_dir(opts.base.unwrap_or(Path::new("/tmp")), &format!("d01{tag}"));
        let dir = tmp.path().to_path_buf();
        let gpu_settings =
            if opts.gpus > 0 { static_gpus(&fake_dev(&dir, opts.gpus), opts.gpus) } else { String::new() };
        let settings = settings(
            &dir,
            &format!("docker_root: {}/data\n{}{gpu_settings}", dir.display(), opts.settings_extra),
        );
        std::fs::write(dir.join("policy/groups/researcher.members"), "rita\n").unwrap();
        let mut daemon = serde_json::json!({
            // The settings come from DS01_RUNTIME_CONFIG in dockerd's environment (containerd and
            // its shims pass it on): with runtimeArgs, Docker 20.10 would put a /bin/sh wrapper
            // in front of every call.
            "runtimes": {"ds01": {"path": shim()}}
        });
        if opts.default_runtime {
            daemon["default-runtime"] = "ds01".into();
        }
        if let Some(serde_json::Value::Object(extra)) = opts.daemon_extra {
            for (k, v) in extra {
                daemon[k] = v;
            }
        }
        std::fs::write(dir.join("daemon.json"), serde_json::to_vec_pretty(&daemon).unwrap()).unwrap();
        let mut path = std::env::var("PATH").unwrap_or_default();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        path = format!("{}:{path}", bin.display());
        if opts.interpose {
            std::os::unix::fs::symlink(shim(), bin.join("runc")).unwrap();
        }
        if opts.gpus > 0 {
            let hook = bin.join("nvidia-container-runtime-hook");
            std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
            std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let sock = dir.join("docker.sock");
        let child = spawn_dockerd(&dir, &path, &settings);
        let d = Dockerd {
            data_root: dir.join("data"),
            exec_root: dir.join("exec"),
            tmp,
            sock,
            settings,
            path,
            child: Some(child),
        };
        let up = wait_for(60, || {
            d.docker(&["info", "--format", "{{.ServerVersion}}"]).status.success().then_some(())
        });
        if up.is_none() {
            panic!(
                "private dockerd did not come up: {}",
                std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
            );
        }
        d.import_busybox();
        d
    }

    /// `docker run --rm --runtime ds01 ARGS…` against this engine.
    pub fn run_ds01(&self, args: &[&str]) -> Output {
        let mut all = vec!["run", "--rm", "--runtime", "ds01"];
        all.extend_from_slice(args);
        self.docker(&all)
    }

    /// Runs the docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn import_busybox(&self) {
        let rootfs = self.tmp.path().join("img");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        for tool in ["sh", "cat", "sleep", "ls", "head", "grep", "echo", "true", "wc", "id"] {
            std::os::unix::fs::symlink("busybox", bin.join(tool)).unwrap();
        }
        let tar = self.tmp.path().join("img.tar");
        let ok = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap();
        assert!(ok.success());
        let o = self.docker(&["import", tar.to_str().unwrap(), "ds01-busybox:test"]);
        assert!(o.status.success(), "docker import: {}", stderr(&o));
    }

    /// Stops dockerd (as a crash or an upgrade would), then starts it again and waits for it.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, 20);
        }
        self.child = Some(spawn_dockerd(self.tmp.path(), &self.path, &self.settings));
        let up = wait_for(60, || {
            self.docker(&["info", "--format", "{{.ServerVersion}}"]).status.success().then_some(())
        });
        assert!(up.is_some(), "dockerd did not come back: {}", self.log());
    }

    /// Stops dockerd without starting it again.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, 20);
        }
    }

    /// The log of the engine, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("dockerd.log")).unwrap_or_default()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in stdout(&ids).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, 20);
        }
        // Anything left that still names our directory (a containerd or shim of a killed engine).
        kill_naming(self.tmp.path());
        unmount_below(self.tmp.path());
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for m in points {
        let _ = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH);
    }
}
