//! The guard: refuses what would go around the rules. Privileged containers (they see every
//! device) unless the owner is a trusted admin; device cgroup rules that open every device; bind
//! mounts of the host's system folders, engine sockets, ds01-runtime's own files, or anything
//! outside the allowed roots (a user who can write the host's files can rewrite the policy).

use std::path::{Component, Path, PathBuf};

use serde_json::Value;

use super::{Context, Note, SpecModifier};
use crate::error::{Error, Result};
use crate::spec;

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
            return Err(Error::refused(format!(
                "{what} are refused: they reach every GPU and device on the host (only admins named by a trusted source may)"
            )));
        }
        let Some(mounts) = spec::get(spec, &["mounts"]).and_then(Value::as_array) else {
            return Ok(Vec::new());
        };
        for m in mounts.iter().filter(|m| is_bind(m)) {
            let Some(src) = m.get("source").and_then(Value::as_str) else { continue };
            // /proc/<pid>/root and /proc/<pid>/fd/* lead into other mount namespaces: what runc
            // would mount is not what any path resolved here names.
            if lexical(Path::new(src)).starts_with("/proc") {
                return Err(Error::refused(format!(
                    "bind mount of {src} is refused: /proc leads into other processes' files"
                )));
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
            let own_userdata =
                g.own_userdata.as_deref().is_some_and(|u| real.ancestors().any(|a| a.ends_with(u)));
            if own_userdata || g.engine_own.iter().any(|own| real.starts_with(own)) {
                continue;
            }
            if real == Path::new("/") {
                return Err(Error::refused("bind mount of / is refused: it exposes the whole host"));
            }
            if let Some((_, why)) =
                g.protected.iter().find(|(p, _)| real.starts_with(p) || p.starts_with(&real))
            {
                return Err(Error::refused(format!("bind mount of {shown} is refused: {why}")));
            }
            if !g.allow.iter().any(|root| real.starts_with(root)) {
                let roots: Vec<String> = g.allow.iter().map(|r| r.display().to_string()).collect();
                return Err(Error::refused(format!(
                    "bind mount of {shown} is refused: only {} may be mounted",
                    if roots.is_empty() { "nothing".to_owned() } else { roots.join(", ") }
                )));
            }
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Owner;
    use crate::modifiers::{fixtures, ContainerCaps, GpuGrant};
    use crate::naming::Placement;
    use serde_json::json;

    fn input() -> GuardInput {
        GuardInput {
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
        let owner = Owner {
            user: Some("alice".into()),
            group: Some("g".into()),
            source: None,
            placement: Placement::unattributed(),
        };
        let grant = GpuGrant::default();
        let ctx = Context {
            container_id: "c",
            owner: &owner,
            systemd_cgroup: false,
            scope_prefix: "docker",
            gpus: &grant,
            guard: g,
            limits: &ContainerCaps::default(),
            engine: Default::default(),
            settings_file: None,
        };
        Guard.apply(spec, &ctx)
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
