//! The guard: refuses what would go around the rules. Privileged containers (they see every
//! device) and anything beyond an engine's defaults ([`privileges`]: capabilities, seccomp,
//! AppArmor/SELinux, host namespaces and devices, sysctls, system paths) unless the owner is a
//! trusted admin; bind mounts of the host's system folders, engine sockets, ds01-runtime's own
//! files, or anything outside the allowed roots (a user who can write the host's files can
//! rewrite the policy).

mod privileges;
pub mod seccomp;
mod seccomp_reference;

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::{Context, Note, SpecModifier};
use crate::error::{Refusal, Result, ADMIN_ONLY};
use crate::spec;

pub use privileges::{cap_name, DEFAULT_CAPS};

/// What the guard knows beyond the spec, gathered at the edge.
#[derive(Debug, Clone, Default)]
pub struct GuardInput {
    /// The engine says the container is privileged (Docker's hostconfig, Podman's annotation).
    pub privileged: bool,
    /// The owner is an admin named by a source trusted for admin rights.
    pub trusted_admin: bool,
    /// Roots a bind mount's source may be under (owner's home already expanded).
    pub allow: Vec<PathBuf>,
    /// Paths never mounted, with the reason shown.
    pub protected: Vec<(PathBuf, &'static str)>,
    /// The engine's own files for this container (resolv.conf, hosts, shm, volumes).
    pub engine_own: Vec<PathBuf>,
    /// The container's own folder below any root, `<driver>-containers/<id>/userdata`
    /// (Podman keeps it under both its graph root and its run root).
    pub own_userdata: Option<PathBuf>,
    /// Bind sources with symlinks resolved (source as written → real path).
    pub resolved: Vec<(String, PathBuf)>,
    /// Docker volumes that mount a host path, device or kernel file system
    /// (`volume-opt=o=bind,device=/`): source as written → what it mounts.
    pub host_volumes: Vec<(String, String)>,
    /// The parts of config.json carried unparsed (`opaque`): path and raw JSON, judged here.
    pub carried: Vec<(&'static [&'static str], String)>,
    /// The engine gives every container a seccomp profile unless told not to (Docker, Podman):
    /// none in the spec means it was switched off.
    pub engine_sets_seccomp: bool,
    /// Capabilities allowed beyond Docker's default set (`CAP_…`).
    pub cap_allow: Vec<String>,
    /// What the admin's listed seccomp profiles allow.
    pub seccomp_extra: seccomp::Extra,
    /// AppArmor profiles allowed, when the host has AppArmor (None: it has not).
    pub apparmor: Option<Vec<String>>,
    /// SELinux types allowed for a labelled container.
    pub selinux_types: Vec<String>,
    /// Namespace types whose path in the spec is the host's own namespace.
    pub host_namespaces: Vec<String>,
    /// Character devices allowed beyond the safe set: (major, minor; None for any).
    pub device_allow: Vec<(i64, Option<i64>)>,
}

/// Applies the guard.
pub struct Guard;

/// `a/./b/../c` → `a/c`, without touching the filesystem.
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

fn is_bind(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("bind")
        || m.get("options")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|x| matches!(x.as_str(), Some("bind" | "rbind"))))
}

impl SpecModifier for Guard {
    fn name(&self) -> &'static str {
        "guard"
    }

    fn apply(&self, spec: &mut Value, ctx: &Context) -> Result<Vec<Note>> {
        let g = ctx.guard;
        let rules = spec::get(spec, &["linux", "resources", "devices"]).and_then(Value::as_array);
        let allow_all = rules.is_some_and(|rs| {
            rs.iter().any(|r| {
                let allow = r.get("allow").and_then(Value::as_bool) == Some(true);
                let typ = r.get("type").and_then(Value::as_str).unwrap_or("a");
                let wildcard = r.get("major").is_none_or(|m| m.is_null() || m.as_i64() == Some(-1));
                let rw = r.get("access").and_then(Value::as_str).unwrap_or("rwm").contains(['r', 'w']);
                allow && wildcard && rw && (typ == "a" || typ == "c")
            })
        });
        if (g.privileged || allow_all) && !g.trusted_admin {
            let what =
                if g.privileged { "privileged containers" } else { "device rules that open every device" };
            return Err(Refusal::Privilege {
                what: what.to_owned(),
                plural: true,
                why:
                    "they reach every GPU and device on the host (only admins named by a trusted source may)"
                        .into(),
            }
            .into());
        }
        // Admins named by a trusted source keep everything, host mounts included.
        if g.trusted_admin {
            return Ok(Vec::new());
        }
        privileges::check(spec, g, ctx.gpus, ctx.engine.pod().is_some())?;
        let Some(mounts) = spec::get(spec, &["mounts"]).and_then(Value::as_array) else {
            return Ok(Vec::new());
        };
        for m in mounts.iter().filter(|m| is_bind(m)) {
            let Some(src) = m.get("source").and_then(Value::as_str) else { continue };
            // /proc/<pid>/root and /proc/<pid>/fd/* lead into other mount namespaces: what runc
            // would mount is not what any path resolved here names.
            if lexical(Path::new(src)).starts_with("/proc") {
                return Err(mount(src, "/proc leads into other processes' files".into()));
            }
            let real = g
                .resolved
                .iter()
                .find(|(s, _)| s == src)
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| lexical(Path::new(src)));
            let shown = if Path::new(src) == real {
                src.to_owned()
            } else {
                format!("{src} (-> {})", real.display())
            };
            if let Some((_, what)) = g.host_volumes.iter().find(|(s, _)| s == src) {
                return Err(Refusal::Privilege {
                    what: format!("a volume that mounts {what} (--mount volume-opt)"),
                    plural: false,
                    why: format!("it reaches the host's files; {ADMIN_ONLY}"),
                }
                .into());
            }
            let own_userdata =
                g.own_userdata.as_deref().is_some_and(|u| real.ancestors().any(|a| a.ends_with(u)));
            if own_userdata || g.engine_own.iter().any(|own| real.starts_with(own)) {
                continue;
            }
            if real == Path::new("/") {
                return Err(mount("/", "it exposes the whole host".into()));
            }
            if let Some((_, why)) =
                g.protected.iter().find(|(p, _)| real.starts_with(p) || p.starts_with(&real))
            {
                return Err(mount(&shown, why.to_string()));
            }
            if !g.allow.iter().any(|root| real.starts_with(root)) {
                let roots: Vec<String> = g.allow.iter().map(|r| r.display().to_string()).collect();
                let roots = if roots.is_empty() { "nothing".to_owned() } else { roots.join(", ") };
                return Err(mount(&shown, format!("only {roots} may be mounted")));
            }
        }
        Ok(Vec::new())
    }
}

/// A bind mount the guard refuses.
fn mount(shown: &str, why: String) -> crate::error::Error {
    Refusal::Privilege { what: format!("bind mount of {shown}"), plural: false, why }.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::modifiers::fixtures;

    use crate::create::modifiers::TestParts;
    use serde_json::json;

    fn input() -> GuardInput {
        GuardInput {
            engine_sets_seccomp: true,
            selinux_types: vec!["container_t".into()],
            allow: vec!["/home/alice".into(), "/data".into()],
            protected: vec![
                ("/etc".into(), "a system folder"),
                ("/var/lib/docker".into(), "the engine's data"),
                ("/run/docker.sock".into(), "an engine socket"),
            ],
            engine_own: vec![
                "/var/lib/docker/containers/ba78d9be3456711b8562d8ac4712aac05190757f63605f3adcdf7f6fd3d0b3ab"
                    .into(),
            ],
            ..GuardInput::default()
        }
    }

    fn check(spec: &mut Value, g: &GuardInput) -> Result<Vec<Note>> {
        let mut t = TestParts { guard: g.clone(), ..TestParts::new() };
        t.owner.user = Some("alice".into());
        Guard.apply(spec, &t.ctx())
    }

    fn with_bind(src: &str) -> Value {
        let mut s = fixtures::docker();
        s["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/x", "type": "bind", "source": src, "options": ["rbind"]}));
        s
    }

    #[test]
    fn docker_own_binds_and_allowed_roots_pass() {
        assert!(check(&mut fixtures::docker(), &input()).is_ok());
        assert!(check(&mut with_bind("/home/alice/project"), &input()).is_ok());
        assert!(check(&mut with_bind("/data/sets/imagenet"), &input()).is_ok());
    }

    #[test]
    fn host_paths_are_refused_with_the_reason() {
        for (src, want) in [
            ("/", "bind mount of / is refused"),
            ("/etc", "bind mount of /etc is refused: a system folder"),
            (
                "/home/alice/../../etc/shadow",
                "bind mount of /home/alice/../../etc/shadow (-> /etc/shadow) is refused: a system folder",
            ),
            ("/var/lib/docker/containers/other/hosts", "the engine's data"),
            ("/run/docker.sock", "an engine socket"),
            ("/home/bob", "bind mount of /home/bob is refused: only /home/alice, /data may be mounted"),
            ("/var", "the engine's data"),
            ("/proc/1/root/home/alice/x", "bind mount of /proc/1/root/home/alice/x is refused: /proc leads"),
            ("/home/alice/../../proc/self/root/etc", "/proc leads into other processes' files"),
        ] {
            let e = check(&mut with_bind(src), &input()).unwrap_err();
            assert!(e.to_string().contains(want), "{src}: {e}");
            assert_eq!(e.kind, crate::error::Kind::Refused);
        }
    }

    #[test]
    fn podmans_own_userdata_passes_under_any_run_root_and_no_other_containers() {
        const ID: &str = "841c42b07bba336cd3638bb6adead782a7ffbe986cd21ba10a6bfc55d6494881";
        let mut g = input();
        g.protected.push(("/run/containers".into(), "the engine's data"));
        g.protected.push(("/var/lib/containers".into(), "the engine's data"));
        g.own_userdata = Some(["overlay-containers", ID, "userdata"].iter().collect());
        assert!(check(&mut fixtures::podman(), &g).is_ok());
        let moved = fixtures::podman().to_string().replace("/run/containers/storage", "/srv/podman/run");
        let mut moved: Value = serde_json::from_str(&moved).unwrap();
        assert!(check(&mut moved, &g).is_ok(), "a run root of its own");
        let other = format!("/run/containers/storage/overlay-containers/{}/userdata/hosts", "f".repeat(64));
        let e = check(&mut with_bind(&other), &g).unwrap_err();
        assert!(e.to_string().contains("the engine's data"), "{e}");
        g.own_userdata = None;
        assert!(
            check(&mut fixtures::podman(), &g).is_err(),
            "without the layout, /run/containers is protected"
        );
    }

    /// A case: its name, the change to the Docker fixture, the start of the refusal.
    type Case = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

    /// The Docker fixture with one change, and the start of the refusal it must get.
    fn refusal_table() -> Vec<Case> {
        vec![
            ("cap-add SYS_ADMIN", Box::new(|s: &mut Value| {
                s["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"))
            }), "capability SYS_ADMIN (--cap-add) is refused"),
            ("ambient cap", Box::new(|s: &mut Value| {
                s["process"]["capabilities"]["ambient"] = json!(["CAP_NET_ADMIN"])
            }), "capability NET_ADMIN (--cap-add) is refused"),
            ("seccomp=unconfined", Box::new(|s: &mut Value| {
                s["linux"].as_object_mut().unwrap().remove("seccomp");
            }), "seccomp=unconfined (--security-opt) is refused"),
            ("allow-all profile", Box::new(|s: &mut Value| {
                s["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"})
            }), "this seccomp profile (--security-opt seccomp=…) is refused: its default action is SCMP_ACT_ALLOW"),
            ("pid host", Box::new(|s: &mut Value| {
                s["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "pid")
            }), "pid namespace of the host (--pid host) is refused"),
            ("ipc host", Box::new(|s: &mut Value| {
                s["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "ipc")
            }), "ipc namespace of the host (--ipc host) is refused"),
            ("uts host", Box::new(|s: &mut Value| {
                s["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "uts")
            }), "uts namespace of the host (--uts host) is refused"),
            ("block device", Box::new(|s: &mut Value| {
                s["linux"]["devices"] = json!([{"path": "/dev/xd", "type": "b", "major": 7, "minor": 0}])
            }), "block device /dev/xd (--device) is refused"),
            ("/dev/mem", Box::new(|s: &mut Value| {
                s["linux"]["devices"] = json!([{"path": "/dev/mem", "type": "c", "major": 1, "minor": 1}])
            }), "device /dev/mem (--device) is refused"),
            ("b *:* rwm", Box::new(|s: &mut Value| {
                s["linux"]["resources"]["devices"].as_array_mut().unwrap().push(json!({"allow": true, "type": "b", "access": "rwm"}))
            }), "device rule 'b *:* rwm' (--device-cgroup-rule) is refused"),
            ("c 195:* rw", Box::new(|s: &mut Value| {
                s["linux"]["resources"]["devices"].as_array_mut().unwrap().push(json!({"allow": true, "type": "c", "major": 195, "access": "rw"}))
            }), "device rule 'c 195:* rw' (--device-cgroup-rule) is refused"),
            ("host sysctl", Box::new(|s: &mut Value| {
                s["linux"]["sysctl"]["vm.overcommit_memory"] = json!("1")
            }), "sysctl vm.overcommit_memory (--sysctl) is refused"),
            ("systempaths", Box::new(|s: &mut Value| {
                s["linux"]["maskedPaths"] = json!([]);
            }), "systempaths=unconfined (--security-opt) is refused: /proc/acpi"),
            ("rw cgroup", Box::new(|s: &mut Value| {
                for m in s["mounts"].as_array_mut().unwrap() {
                    if m["type"] == "cgroup" { m["options"] = json!(["nosuid"]); }
                }
            }), "a writable cgroup mount at /sys/fs/cgroup is refused"),
            ("oom", Box::new(|s: &mut Value| { s["process"]["oomScoreAdj"] = json!(-900) }),
                "--oom-score-adj -900 is refused"),
            ("selinux spc_t", Box::new(|s: &mut Value| {
                s["process"]["selinuxLabel"] = json!("system_u:system_r:spc_t:s0")
            }), "SELinux type spc_t (--security-opt label=…) is refused"),
        ]
    }

    #[test]
    fn every_route_beyond_the_defaults_is_refused_in_one_line_and_allowed_to_a_trusted_admin() {
        for (name, change, want) in refusal_table() {
            let mut s = fixtures::docker();
            change(&mut s);
            let e = check(&mut s, &input()).expect_err(name);
            assert!(e.to_string().starts_with(want), "{name}: {e}");
            assert!(
                e.to_string().contains("only admins named by a trusted identity source may"),
                "{name}: {e}"
            );
            assert_eq!(e.kind, crate::error::Kind::Refused, "{name}");
            assert!(!e.to_string().contains('\n'), "{name}: one line");
            let admin = GuardInput { trusted_admin: true, ..input() };
            assert!(check(&mut s, &admin).is_ok(), "{name}: an admin keeps everything");
            let mut etc = with_bind("/etc");
            assert!(check(&mut etc, &admin).is_ok(), "an admin's host mounts too");
        }
    }

    #[test]
    fn the_engines_defaults_and_the_allowed_extras_pass() {
        assert!(check(&mut fixtures::docker(), &input()).is_ok());
        let mut podman = fixtures::podman();
        let g = GuardInput {
            own_userdata: Some(
                [
                    "overlay-containers",
                    "841c42b07bba336cd3638bb6adead782a7ffbe986cd21ba10a6bfc55d6494881",
                    "userdata",
                ]
                .iter()
                .collect(),
            ),
            ..input()
        };
        assert!(check(&mut podman, &g).is_ok(), "Podman's defaults");
        let runc_own = GuardInput { engine_sets_seccomp: false, ..input() };
        assert!(check(&mut fixtures::runc(), &runc_own).is_ok(), "runc's own spec has no profile");
        assert!(
            check(&mut fixtures::runc(), &input()).is_err(),
            "from Docker or Podman, none is switched off"
        );
        let mut s = fixtures::docker();
        s["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_SYS_PTRACE"));
        let g = GuardInput { cap_allow: vec!["CAP_SYS_PTRACE".into()], ..input() };
        assert!(check(&mut s, &g).is_ok(), "guard.cap_allow");
        let mut s = fixtures::docker();
        s["linux"]["devices"] = json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]);
        s["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"}));
        assert!(check(&mut s.clone(), &input()).is_err());
        let g = GuardInput { device_allow: vec![(10, Some(229))], ..input() };
        assert!(check(&mut s, &g).is_ok(), "guard.device_allow");
        let mut s = fixtures::docker();
        s["linux"]["sysctl"]["kernel.shmmax"] = json!("1");
        s["linux"]["sysctl"]["fs.mqueue.msg_max"] = json!("1");
        assert!(check(&mut s, &input()).is_ok(), "namespaced sysctls");
    }

    #[test]
    fn carried_parts_are_judged_from_their_bytes() {
        let mut s = fixtures::docker();
        s["process"]["capabilities"] = Value::Null;
        let g = GuardInput {
            carried: vec![(&["process", "capabilities"][..], r#"{"bounding":["CAP_SYS_ADMIN"]}"#.to_owned())],
            ..input()
        };
        let e = check(&mut s, &g).unwrap_err();
        assert!(e.to_string().contains("capability SYS_ADMIN"), "{e}");
        s["linux"]["seccomp"] = Value::Null;
        let g = GuardInput {
            carried: vec![(&["linux", "seccomp"][..], r#"{"defaultAction":"SCMP_ACT_LOG"}"#.to_owned())],
            ..input()
        };
        assert!(check(&mut s, &g).unwrap_err().to_string().contains("SCMP_ACT_LOG"));
    }

    #[test]
    fn apparmor_is_judged_only_where_the_host_has_it() {
        let mut s = fixtures::docker();
        s["process"]["apparmorProfile"] = json!("unconfined");
        assert!(check(&mut s.clone(), &input()).is_ok(), "no AppArmor on the host: nothing to switch off");
        let g = GuardInput {
            apparmor: Some(vec!["docker-default".into(), "containers-default-*".into()]),
            ..input()
        };
        assert!(check(&mut s.clone(), &g).unwrap_err().to_string().starts_with("apparmor=unconfined"));
        s["process"]["apparmorProfile"] = json!("my-own");
        assert!(check(&mut s.clone(), &g).unwrap_err().to_string().starts_with("AppArmor profile my-own"));
        s["process"]["apparmorProfile"] = json!("containers-default-0.50.1");
        assert!(check(&mut s, &g).is_ok());
    }

    #[test]
    fn privileged_and_allow_all_rules_need_a_trusted_admin() {
        let mut g = input();
        g.privileged = true;
        let e = check(&mut fixtures::docker(), &g).unwrap_err();
        assert!(e.to_string().starts_with("privileged containers are refused"), "{e}");
        g.trusted_admin = true;
        assert!(check(&mut fixtures::docker(), &g).is_ok());
        let mut s = fixtures::docker();
        s["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "access": "rwm"}));
        let e = check(&mut s, &input()).unwrap_err();
        assert!(e.to_string().contains("device rules that open every device"), "{e}");
        let mut s = fixtures::docker();
        s["linux"]["resources"]["devices"]
            .as_array_mut()
            .unwrap()
            .push(json!({"allow": true, "type": "c", "access": "m"}));
        assert!(check(&mut s, &input()).is_ok(), "mknod-only wildcard is harmless");
    }
}
