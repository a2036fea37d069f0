//! Who owns a container: asks the configured sources in order, refuses when two of them name
//! different users, and places the owner in their group's slice.

use serde_json::Value;

use crate::error::{Refusal, Result};
use crate::naming::{self, Placement};
use crate::policy::settings::{IdentitySettings, KubernetesSettings, Source, Unattributed};
use crate::policy::Policy;
use crate::spec;

/// Annotation (and label) naming the owner.
pub const USER_KEY: &str = crate::spec::annotations::Key::User.as_str();
/// Older labels naming the owner, still honoured.
pub const LEGACY_USER_LABELS: &[&str] = &["DS01_USER", "aime.mlc.USER"];
/// Group used when the policy names no default group (DS01's own fallback).
pub const FALLBACK_GROUP: &str = "student";

/// What the engine knows about a container beyond config.json (Docker's metadata).
#[derive(Debug, Clone, Default)]
pub struct EngineMeta {
    /// Container name without the leading `/`.
    pub name: Option<String>,
    /// Container labels.
    pub labels: serde_json::Map<String, Value>,
    /// Image reference.
    pub image: Option<String>,
}

/// Everything identity resolution may look at.
pub struct Clues<'a> {
    /// The bundle's config.json.
    pub spec: &'a Value,
    /// Engine metadata, when the engine keeps it on disk.
    pub engine: Option<&'a EngineMeta>,
    /// The namespace map, for containers a Kubernetes CRI created.
    pub kubernetes: Option<&'a KubernetesSettings>,
    /// The pod, for a container a Kubernetes CRI created ([`crate::owner::engine::Engine::pod`]).
    pub pod: Option<&'a crate::owner::kubernetes::Pod>,
    /// A build container (Docker's classic builder): with no owner named, it goes to the
    /// build slice instead of being refused.
    pub build: bool,
    /// The owner the front door verified ([`crate::owner::verified`]), when it made the container.
    pub verified: Option<&'a str>,
}

impl Clues<'_> {
    /// The owner the namespace map gives a Kubernetes container.
    fn namespace_owner(&self) -> Option<&crate::policy::settings::NamespaceOwner> {
        self.kubernetes?.namespaces.get(&self.pod?.namespace)
    }
}

/// The resolved owner of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Login name, as named by the source (None when unattributed).
    pub user: Option<String>,
    /// Policy group (None when unattributed).
    pub group: Option<String>,
    /// The source that decided (None when unattributed).
    pub source: Option<Source>,
    /// Where the container goes.
    pub placement: Placement,
}

impl Owner {
    /// `(user, group)`, or `None` when unattributed: how the policy is asked about an owner.
    pub fn user_group(&self) -> Option<(&str, &str)> {
        Some((self.user.as_deref()?, self.group.as_deref()?))
    }

    /// The source's name for annotations and audit, `none` when unattributed.
    pub fn source_name(&self) -> &'static str {
        self.source.map(Source::as_str).unwrap_or("none")
    }
}

/// Finds the user name a single source claims, if any (for labels, the first key that names
/// one; [`claims`] gives every key).
pub fn claim(source: Source, clues: &Clues) -> Option<String> {
    claims(source, clues).into_iter().next().map(|(_, u)| u)
}

/// Every user name a source claims, with where it says so (`label DS01_USER`): Docker labels
/// have three keys that name an owner, and each is a claim of its own.
pub fn claims(source: Source, clues: &Clues) -> Vec<(String, String)> {
    let nonempty = |s: &str| {
        let t = s.trim();
        (!t.is_empty()).then(|| t.to_owned())
    };
    let one = |u: Option<String>| u.map(|u| (source.as_str().to_owned(), u)).into_iter().collect();
    match source {
        Source::Annotation => one(spec::annotation(clues.spec, USER_KEY).and_then(nonempty)),
        Source::Label => {
            let Some(engine) = clues.engine else { return Vec::new() };
            std::iter::once(USER_KEY)
                .chain(LEGACY_USER_LABELS.iter().copied())
                .filter_map(|k| {
                    let u = engine.labels.get(k).and_then(Value::as_str).and_then(nonempty)?;
                    Some((format!("label {k}"), u))
                })
                .collect()
        }
        Source::Name => one(clues.engine.and_then(|e| e.name.as_deref()).and_then(|name| {
            let (_, user) = name.rsplit_once("._.")?;
            nonempty(user)
        })),
        Source::HomeMount => one(home_mount_user(clues.spec)),
        Source::Kubernetes => one(clues.namespace_owner().and_then(|o| nonempty(&o.user))),
        Source::Verified => one(clues.verified.and_then(nonempty)),
    }
}

/// The user of the first bind mount whose source is `/home/<user>` or below it.
fn home_mount_user(spec: &Value) -> Option<String> {
    spec::get(spec, &["mounts"])?.as_array()?.iter().find_map(|m| {
        let src = m.get("source")?.as_str()?;
        let is_bind = m.get("type").and_then(Value::as_str) == Some("bind")
            || m.get("options")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|x| matches!(x.as_str(), Some("bind" | "rbind"))));
        let rest = src.strip_prefix("/home/")?;
        let user = rest.split('/').next()?;
        (is_bind && !user.is_empty()).then(|| user.to_owned())
    })
}

/// How the user could name an owner, from the configured sources this engine can carry:
/// labels and names exist only where the engine keeps metadata (Docker); Podman and ctr carry
/// annotations only.
fn owner_hint(settings: &IdentitySettings, clues: &Clues) -> String {
    let docker = clues.engine.is_some();
    let ways: Vec<String> = settings
        .order
        .iter()
        .filter_map(|s| match s {
            Source::Label if docker => Some(format!("the {USER_KEY} label (--label {USER_KEY}=<user>)")),
            Source::Name if docker => Some("a name <name>._.<user>".to_owned()),
            Source::Annotation if !docker => {
                Some(format!("the {USER_KEY} annotation (--annotation {USER_KEY}=<user>)"))
            }
            Source::Annotation => Some(format!("the {USER_KEY} annotation (Docker 24+)")),
            Source::HomeMount => Some("a bind mount of /home/<user>".to_owned()),
            _ => None,
        })
        .collect();
    match ways.split_last() {
        None => "none of the identity sources in the runtime's settings applies to this engine".to_owned(),
        Some((last, [])) => format!("give it {last}"),
        Some((last, rest)) => format!("give it {} or {last}", rest.join(", ")),
    }
}

/// Resolves the owner. `to_login` maps what a source named (a login name or a numeric uid)
/// to a login name.
pub fn resolve(
    settings: &IdentitySettings,
    policy: &Policy,
    clues: &Clues,
    to_login: &dyn Fn(&str) -> Result<String>,
) -> Result<Owner> {
    let mut found: Option<(Source, String, String)> = None;
    if let Some(user) = clues.verified {
        // The caller the kernel named: what the creator claimed is not asked.
        found = Some((Source::Verified, "verified".to_owned(), to_login(user)?));
    }
    let asked: &[Source] = if found.is_some() { &[] } else { &settings.order };
    for &source in asked {
        for (said_by, raw) in claims(source, clues) {
            let user = to_login(&raw).map_err(|e| e.context(format_args!("owner from {said_by}")))?;
            match &found {
                None => found = Some((source, said_by, user)),
                Some((_, first, u)) if *u != user => {
                    return Err(Refusal::OwnerConflict {
                        first: (first.to_string(), u.clone()),
                        second: (said_by.to_string(), user),
                    }
                    .into());
                }
                Some(_) => {}
            }
        }
    }
    let Some((source, _, user)) = found else {
        if clues.build {
            return Ok(Owner { user: None, group: None, source: None, placement: Placement::build() });
        }
        return match settings.unattributed {
            Unattributed::Place => {
                Ok(Owner { user: None, group: None, source: None, placement: Placement::unattributed() })
            }
            Unattributed::Refuse => Err(Refusal::NoOwner {
                hint: match clues.pod {
                    Some(pod) => format!(
                        "namespace {} is not in kubernetes.namespaces of the runtime's settings",
                        pod.namespace
                    ),
                    None => owner_hint(settings, clues),
                },
            }
            .into()),
        };
    };
    let mapped = (source == Source::Kubernetes)
        .then(|| clues.namespace_owner())
        .flatten()
        .and_then(|o| o.group.clone());
    let group = mapped.unwrap_or_else(|| policy.group_of(&user, FALLBACK_GROUP));
    let placement = Placement::for_owner(&naming::sanitize(&group)?, &naming::sanitize(&user)?);
    Ok(Owner { user: Some(user), group: Some(group), source: Some(source), placement })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What a container with `spec` and Docker's metadata `engine` gives, nothing else.
    fn clues<'a>(spec: &'a Value, engine: Option<&'a EngineMeta>) -> Clues<'a> {
        Clues { spec, engine, kubernetes: None, pod: None, build: false, verified: None }
    }

    fn same(s: &str) -> Result<String> {
        Ok(s.to_owned())
    }

    fn policy() -> Policy {
        let mut p = Policy::parse(
            "default_group: student\ngroups:\n  student: {}\n  researcher: {}\n",
            std::path::Path::new("/p"),
            None,
            std::path::Path::new("/o"),
        )
        .unwrap();
        p.members.insert("researcher".into(), vec!["rita".into()]);
        p
    }

    #[test]
    fn annotation_decides_and_group_comes_from_members() {
        let spec = json!({"annotations": {"ds01.user": "rita"}});
        let o = resolve(&IdentitySettings::default(), &policy(), &clues(&spec, None), &same).unwrap();
        assert_eq!(o.user.as_deref(), Some("rita"));
        assert_eq!(o.group.as_deref(), Some("researcher"));
        assert_eq!(o.placement.leaf(), "ds01-researcher-rita.slice");
        assert_eq!(o.source_name(), "annotation");
    }

    #[test]
    fn a_verified_owner_wins_over_every_claim() {
        let spec = json!({"annotations": {"ds01.user": "prof"}});
        let meta = EngineMeta { name: Some("x._.prof".into()), ..Default::default() };
        let clues = Clues {
            spec: &spec,
            engine: Some(&meta),
            kubernetes: None,
            pod: None,
            build: true,
            verified: Some("rita"),
        };
        let o = resolve(&IdentitySettings::default(), &policy(), &clues, &same).unwrap();
        assert_eq!(o.user.as_deref(), Some("rita"));
        assert_eq!(o.source_name(), "verified");
        assert_eq!(o.placement.leaf(), "ds01-researcher-rita.slice");
    }

    #[test]
    fn unattributed_refuses_or_places() {
        let spec = json!({});
        let mut s = IdentitySettings::default();
        let e = resolve(&s, &policy(), &clues(&spec, None), &same).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::Refused);
        assert!(e.to_string().contains("no owner"));
        s.unattributed = Unattributed::Place;
        let o = resolve(&s, &policy(), &clues(&spec, None), &same).unwrap();
        assert_eq!(o.placement.leaf(), "ds01-unattributed.slice");
        assert_eq!(o.source_name(), "none");
    }

    #[test]
    fn refusal_names_only_what_the_engine_can_carry() {
        let spec = json!({});
        let s = IdentitySettings::default();
        let podman = resolve(&s, &policy(), &clues(&spec, None), &same).unwrap_err().to_string();
        assert!(podman.contains("the ds01.user annotation (--annotation ds01.user=<user>)"), "{podman}");
        assert!(!podman.contains("label") && !podman.contains("._."), "{podman}");
        let meta = EngineMeta::default();
        let docker = resolve(&s, &policy(), &clues(&spec, Some(&meta)), &same).unwrap_err().to_string();
        assert!(docker.contains("the ds01.user label (--label ds01.user=<user>)"), "{docker}");
        assert!(docker.contains("a name <name>._.<user>"), "{docker}");
    }

    #[test]
    fn conflicting_sources_refuse() {
        let spec = json!({"annotations": {"ds01.user": "alice"}});
        let meta = EngineMeta { name: Some("proj._.bob".into()), ..Default::default() };
        let e =
            resolve(&IdentitySettings::default(), &policy(), &clues(&spec, Some(&meta)), &same).unwrap_err();
        assert!(e.to_string().contains("annotation says alice, name says bob"), "{e}");
    }

    #[test]
    fn two_owner_labels_naming_different_users_refuse() {
        let spec = json!({});
        for (k1, k2) in
            [("DS01_USER", "ds01.user"), ("ds01.user", "aime.mlc.USER"), ("DS01_USER", "aime.mlc.USER")]
        {
            let mut labels = serde_json::Map::new();
            labels.insert(k1.into(), json!("alice"));
            labels.insert(k2.into(), json!("bob"));
            let meta = EngineMeta { labels, ..Default::default() };
            let clues = clues(&spec, Some(&meta));
            let e = resolve(&IdentitySettings::default(), &policy(), &clues, &same).unwrap_err();
            assert!(e.to_string().starts_with("owner conflict: label "), "{e}");
            assert!(e.to_string().contains("says alice") && e.to_string().contains("says bob"), "{e}");
        }
        let mut labels = serde_json::Map::new();
        labels.insert("DS01_USER".into(), json!("alice"));
        labels.insert("ds01.user".into(), json!("alice"));
        let meta = EngineMeta { labels, ..Default::default() };
        let clues = clues(&spec, Some(&meta));
        assert!(resolve(&IdentitySettings::default(), &policy(), &clues, &same).is_ok(), "same user twice");
    }

    #[test]
    fn a_build_container_without_an_owner_goes_to_the_build_slice() {
        let spec = json!({});
        let build = Clues { build: true, ..clues(&spec, None) };
        let o = resolve(&IdentitySettings::default(), &policy(), &build, &same).unwrap();
        assert_eq!((o.user, o.placement.leaf()), (None, "ds01-build.slice"));
        let spec = json!({"annotations": {"ds01.user": "rita"}});
        let build = Clues { build: true, ..clues(&spec, None) };
        let o = resolve(&IdentitySettings::default(), &policy(), &build, &same).unwrap();
        assert_eq!(o.placement.leaf(), "ds01-researcher-rita.slice", "an owner known: the owner's slice");
    }

    #[test]
    fn sources_in_order() {
        let mut labels = serde_json::Map::new();
        labels.insert("aime.mlc.USER".into(), json!("carol"));
        let meta = EngineMeta { name: Some("x._.carol".into()), labels, image: None };
        let spec = json!({"mounts": [{"destination": "/w", "type": "bind", "source": "/home/carol/proj"}]});
        let o = resolve(&IdentitySettings::default(), &policy(), &clues(&spec, Some(&meta)), &same).unwrap();
        assert_eq!((o.user.as_deref(), o.source_name()), (Some("carol"), "label"));
        let spec = json!({"mounts": [{"destination": "/w", "source": "/home/dave", "options": ["rbind"]}]});
        assert_eq!(
            claim(
                Source::HomeMount,
                &Clues {
                    spec: &spec,
                    engine: None,
                    kubernetes: None,
                    pod: None,
                    build: false,
                    verified: None
                }
            )
            .as_deref(),
            Some("dave")
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        let spec = json!({"annotations": {"ds01.user": "@@@"}});
        let e = resolve(&IdentitySettings::default(), &policy(), &clues(&spec, None), &same).unwrap_err();
        assert!(e.to_string().contains("empty once made safe"), "{e}");
    }
}
