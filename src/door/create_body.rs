//! The create request, rewritten for the caller: every claim of an owner in it (the owner
//! labels, the `ds01.user` annotation, a `<name>._.<user>` name, a cgroup parent) must name the
//! caller unless the caller is an admin, and the container gets the `ds01.user` label naming
//! its owner. Pure: bytes in, bytes or a refusal out. The document is edited as JSON with its
//! key order and number texts kept.

use serde_json::{Map, Value};

use crate::owner::identity::{LEGACY_USER_LABELS, USER_KEY};

/// Who is creating.
#[derive(Debug, Clone, Copy)]
pub struct Creator<'a> {
    /// Login name.
    pub login: &'a str,
    /// Numeric uid (a claim may name it).
    pub uid: u32,
    /// An admin may create for someone else.
    pub admin: bool,
}

/// The rewritten create.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    /// The body to send to dockerd.
    pub body: Vec<u8>,
    /// Whose container it is (the caller, or whom an admin named).
    pub owner: String,
}

/// Rewrites a create body; `name` is the `name` query parameter. The error is the one line the
/// caller sees.
pub fn rewrite(body: &[u8], name: Option<&str>, who: Creator) -> Result<Rewritten, String> {
    let mut doc: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| format!("ds01: the create request is not JSON: {e}"))?
    };
    let Some(obj) = doc.as_object_mut() else {
        return Err("ds01: the create request is not a JSON object".to_owned());
    };
    exact_names(obj, &["Labels", "HostConfig"])?;
    if let Some(h) = obj.get("HostConfig").and_then(Value::as_object) {
        exact_names(h, &["Annotations", "CgroupParent"])?;
    }
    let mut claims: Vec<(String, String)> = Vec::new();
    if let Some(labels) = obj.get("Labels").and_then(Value::as_object) {
        for key in std::iter::once(USER_KEY).chain(LEGACY_USER_LABELS.iter().copied()) {
            if let Some(v) = labels.get(key) {
                claims.push((format!("label {key}"), text(v)?));
            }
        }
    }
    let host = obj.get("HostConfig").and_then(Value::as_object);
    if let Some(v) =
        host.and_then(|h| h.get("Annotations")).and_then(Value::as_object).and_then(|a| a.get(USER_KEY))
    {
        claims.push((format!("annotation {USER_KEY}"), text(v)?));
    }
    if let Some((_, user)) = name.and_then(|n| n.rsplit_once("._.")) {
        claims.push(("name".to_owned(), user.to_owned()));
    }
    let parent = host.and_then(|h| h.get("CgroupParent")).map(text).transpose()?.unwrap_or_default();
    let claims: Vec<(String, String)> =
        claims.into_iter().map(|(k, v)| (k, v.trim().to_owned())).filter(|(_, v)| !v.is_empty()).collect();
    let is_caller = |u: &str| u == who.login || u == who.uid.to_string();
    let mut owner = who.login.to_owned();
    for (said_by, user) in &claims {
        if is_caller(user) {
            continue;
        }
        if !who.admin {
            let user = shown(user);
            return Err(format!("ds01: {} may not create a container for {user} ({said_by})", who.login));
        }
        owner = user.clone();
    }
    if !parent.is_empty() && !who.admin && !own_slice(&parent, who.login) {
        let (user, parent) = (slice_user(&parent).map(shown), shown(&parent));
        return Err(match user {
            Some(u) if u != who.login => {
                format!("ds01: {} may not create a container for {u} (cgroup parent {parent})", who.login)
            }
            _ => format!(
                "ds01: {} may not choose a cgroup parent ({parent}): a container goes to its owner's slice",
                who.login
            ),
        });
    }
    let labels = obj.entry("Labels").or_insert_with(|| Value::Object(Map::new()));
    if !labels.is_object() {
        *labels = Value::Object(Map::new());
    }
    if let Some(l) = labels.as_object_mut() {
        // Always the owner exactly (a claim ` alice ` passed, trimmed, as alice's own).
        l.insert(USER_KEY.to_owned(), Value::String(owner.clone()));
    }
    let body = serde_json::to_vec(&doc).map_err(|e| format!("ds01: the create request: {e}"))?;
    Ok(Rewritten { body, owner })
}

/// dockerd (Go's encoding/json) matches field names without regard to case, with Unicode's
/// folding (`ſ` is an `s`, the Kelvin sign a `k`), and merges two spellings of one map: a
/// field read here must be spelled exactly, once.
fn exact_names(obj: &Map<String, Value>, fields: &[&str]) -> Result<(), String> {
    let fold = |k: &str| k.to_lowercase().replace('\u{17f}', "s");
    for key in obj.keys() {
        if let Some(f) = fields.iter().find(|f| fold(key) == fold(f)) {
            if key != f {
                return Err(format!("ds01: the create request spells {f} as {key:?}"));
            }
        }
    }
    Ok(())
}

/// Text from a request (or from a container's labels and name) as a refusal shows it:
/// control characters escaped, so the refusal stays one line.
pub fn shown(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A claim's value: a string (or null, no claim).
fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        other => Err(format!("ds01: the create request: {other} is not a string")),
    }
}

/// `ds01-<group>-<user>.slice` names `user` as its last dash-separated part. DS01's slice names
/// are built from sanitized names, so this is the user only when it is the caller's own.
fn own_slice(parent: &str, login: &str) -> bool {
    let leaf = parent.trim_end_matches('/').rsplit('/').next().unwrap_or(parent);
    // A build's token names someone's record: never in a container's parent.
    !parent.contains(crate::owner::verified::BUILD_PARENT_PREFIX)
        && leaf.starts_with("ds01-")
        && leaf.ends_with(&format!("-{login}.slice"))
}

/// Whether `doc` has the field Go would read as `name` (any case): a refusal when it is spelled
/// otherwise than `name`.
pub fn field(doc: &Value, name: &str) -> Result<Option<String>, String> {
    let Some(obj) = doc.as_object() else { return Err("ds01: the request is not a JSON object".to_owned()) };
    exact_names(obj, &[name])?;
    Ok(obj.contains_key(name).then(|| name.to_owned()))
}

/// The user a `ds01-<group>-<user>.slice` parent names.
fn slice_user(parent: &str) -> Option<&str> {
    let leaf = parent.trim_end_matches('/').rsplit('/').next()?;
    let inner = leaf.strip_prefix("ds01-")?.strip_suffix(".slice")?;
    inner.split_once('-').map(|(_, u)| u).filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: Creator = Creator { login: "alice", uid: 1001, admin: false };

    fn labels(out: &Rewritten) -> Value {
        let v: Value = serde_json::from_slice(&out.body).unwrap();
        v["Labels"].clone()
    }

    #[test]
    fn the_caller_becomes_the_owner_and_the_rest_is_kept() {
        let body = br#"{"Image":"busybox","Labels":{"x":"1"},"HostConfig":{"Memory":1073741824.0}}"#;
        let out = rewrite(body, None, ALICE).unwrap();
        assert_eq!(out.owner, "alice");
        assert_eq!(
            String::from_utf8(out.body).unwrap(),
            r#"{"Image":"busybox","Labels":{"x":"1","ds01.user":"alice"},"HostConfig":{"Memory":1073741824.0}}"#
        );
        let out = rewrite(br#"{"Image":"b","Labels":null}"#, None, ALICE).unwrap();
        assert_eq!(labels(&out)["ds01.user"], "alice");
        assert_eq!(rewrite(b"", None, ALICE).unwrap().owner, "alice");
    }

    #[test]
    fn claims_for_someone_else_are_refused_in_one_line() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (br#"{"Labels":{"ds01.user":"bob"}}"#, None, "label ds01.user"),
            (br#"{"Labels":{"DS01_USER":"bob"}}"#, None, "label DS01_USER"),
            (br#"{"Labels":{"aime.mlc.USER":" bob "}}"#, None, "label aime.mlc.USER"),
            (br#"{"HostConfig":{"Annotations":{"ds01.user":"bob"}}}"#, None, "annotation ds01.user"),
            (br#"{}"#, Some("web._.bob"), "name"),
            (br#"{"HostConfig":{"CgroupParent":"ds01-faculty-bob.slice"}}"#, None, "cgroup parent"),
        ];
        for (body, name, said) in cases {
            let e = rewrite(body, *name, ALICE).unwrap_err();
            assert!(e.starts_with("ds01: alice may not create a container for bob ("), "{e}");
            assert!(e.contains(said), "{e}");
            assert!(!e.contains('\n'));
        }
        for body in [
            &br#"{"labels":{"ds01.user":"bob"}}"#[..],
            "{\"Label\u{17f}\":{\"ds01.user\":\"bob\"}}".as_bytes(),
            br#"{"HostConfig":{"cgroupParent":"x"}}"#,
            br#"{"HOSTCONFIG":{}}"#,
        ] {
            let e = rewrite(body, None, ALICE).unwrap_err();
            assert!(e.starts_with("ds01: the create request spells"), "{e}");
        }
        let token = "0123456789abcdef0123456789abcdef";
        let body = format!(
            r#"{{"HostConfig":{{"CgroupParent":"ds01-door-{token}.slice/ds01-student-alice.slice"}}}}"#
        );
        assert!(rewrite(body.as_bytes(), None, ALICE).is_err(), "a build's token in a container's parent");
        let e = rewrite(br#"{"HostConfig":{"CgroupParent":"/mine"}}"#, None, ALICE).unwrap_err();
        assert!(e.contains("may not choose a cgroup parent (/mine)"), "{e}");
    }

    #[test]
    fn claims_for_the_caller_pass_and_admins_may_name_anyone() {
        for body in [
            &br#"{"Labels":{"ds01.user":"alice"}}"#[..],
            br#"{"Labels":{"DS01_USER":"1001"}}"#,
            br#"{"HostConfig":{"CgroupParent":"ds01-student-alice.slice"}}"#,
        ] {
            assert_eq!(rewrite(body, Some("web._.alice"), ALICE).unwrap().owner, "alice");
        }
        let admin = Creator { login: "ada", uid: 1005, admin: true };
        let out = rewrite(br#"{"Labels":{"ds01.user":"bob"}}"#, None, admin).unwrap();
        assert_eq!(out.owner, "bob");
        assert_eq!(labels(&out)["ds01.user"], "bob");
    }

    #[test]
    fn the_owner_label_is_the_owner_exactly() {
        // Found by the `create_body` fuzz target: a caller's own claim with spaces around it
        // was kept as it was, so the label did not name the owner the front door recorded.
        for body in [&br#"{"Labels":{"ds01.user":" alice "}}"#[..], br#"{"Labels":{"ds01.user":"alice\t"}}"#]
        {
            let out = rewrite(body, None, ALICE).unwrap();
            assert_eq!(out.owner, "alice");
            assert_eq!(labels(&out)["ds01.user"], "alice");
        }
    }

    #[test]
    fn claims_with_control_characters_are_refused_in_one_line() {
        // Found by the `create_body` fuzz target: a name (or label, or cgroup parent) with a
        // newline or a carriage return in it broke the refusal over lines.
        let e = rewrite(b"", Some("web._.a\r\r\u{2}x"), ALICE).unwrap_err();
        assert_eq!(e, "ds01: alice may not create a container for a\\r\\r\\u{2}x (name)");
        for body in [
            &br#"{"Labels":{"ds01.user":"bo\nb"}}"#[..],
            br#"{"HostConfig":{"CgroupParent":"ds01-a-b\nc.slice"}}"#,
            br#"{"HostConfig":{"CgroupParent":"/x\r\n"}}"#,
        ] {
            let e = rewrite(body, Some("x._.\n"), ALICE).unwrap_err();
            assert!(e.starts_with("ds01: alice may not ") && !e.contains(['\n', '\r']), "{e:?}");
        }
    }

    #[test]
    fn bad_bodies_are_one_line() {
        for body in [&b"{"[..], b"[]", b"\"x\"", br#"{"Labels":{"ds01.user":5}}"#, b"\xff"] {
            let e = rewrite(body, None, ALICE).unwrap_err();
            assert!(e.starts_with("ds01: the create request"), "{e}");
            assert!(!e.contains('\n'));
        }
    }
}
