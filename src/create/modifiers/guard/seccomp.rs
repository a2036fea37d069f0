//! Judging a container's seccomp profile: it must be on, deny by default, and allow no
//! syscall (or argument condition) that neither an engine's default profile for the
//! container's capabilities nor a profile the admin listed allows. What runc applies is the
//! profile's bytes, carried unparsed through the pipeline; they are read here into a small
//! borrowed form, never into a JSON tree.

use std::borrow::Cow;

use serde::Deserialize;

use super::seccomp_reference::{BY_CAPABILITY, CONDITIONAL, PLAIN};

/// A seccomp profile as runc reads it, only the parts that decide what is allowed.
#[derive(Debug, Deserialize)]
pub struct Profile<'a> {
    /// What an unlisted syscall gets.
    #[serde(rename = "defaultAction", borrow)]
    pub default_action: Cow<'a, str>,
    /// The rules.
    #[serde(default, borrow)]
    pub syscalls: Option<Vec<Rule<'a>>>,
    /// Filter flags (`SECCOMP_FILTER_FLAG_SPEC_ALLOW` turns a CPU mitigation off).
    #[serde(default, borrow)]
    pub flags: Option<Vec<Cow<'a, str>>>,
}

/// One rule of a profile.
#[derive(Debug, Deserialize)]
pub struct Rule<'a> {
    /// Syscall names.
    #[serde(default, borrow)]
    pub names: Vec<Cow<'a, str>>,
    /// What they get.
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    /// Argument conditions (all must hold).
    #[serde(default)]
    pub args: Option<Vec<Arg>>,
}

/// One argument condition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Arg {
    /// Argument index.
    pub index: u32,
    /// Value compared.
    pub value: u64,
    /// Second value (masked compare).
    #[serde(rename = "valueTwo", default)]
    pub value_two: u64,
    /// Comparison.
    pub op: String,
}

/// Actions that let the syscall run (or leave it to someone else to decide).
fn permissive(action: &str) -> bool {
    matches!(action, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG" | "SCMP_ACT_TRACE" | "SCMP_ACT_NOTIFY")
}

/// Syscalls allowed beyond the engines' defaults: the admin's listed profiles.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// Allowed whatever the arguments.
    pub plain: Vec<String>,
    /// Allowed under these exact conditions.
    pub conditional: Vec<(String, Vec<Arg>)>,
}

impl Extra {
    /// Adds what profile `text` (OCI or Docker JSON) allows; the error names the cause.
    pub fn add(&mut self, text: &str) -> serde_json::Result<()> {
        let p: Profile = serde_json::from_str(text)?;
        for r in p.syscalls.iter().flatten().filter(|r| permissive(&r.action)) {
            for n in &r.names {
                match r.args.as_deref() {
                    None | Some([]) => self.plain.push(n.to_string()),
                    Some(a) => self.conditional.push((n.to_string(), sorted(a))),
                }
            }
        }
        Ok(())
    }
}

fn sorted(a: &[Arg]) -> Vec<Arg> {
    let mut v = a.to_vec();
    v.sort();
    v
}

/// Why a profile is weaker than the references, or `None` when it is not. `caps` are the
/// container's capabilities (their syscalls are in an engine's profile for such a container).
pub fn weaker(raw: &str, caps: &[String], extra: &Extra) -> Option<String> {
    let p: Profile = match serde_json::from_str(raw) {
        Ok(p) => p,
        Err(e) => return Some(format!("its profile cannot be read ({e})")),
    };
    if permissive(&p.default_action) {
        return Some(format!("its default action is {}", p.default_action));
    }
    if let Some(f) = p.flags.iter().flatten().find(|f| *f == "SECCOMP_FILTER_FLAG_SPEC_ALLOW") {
        return Some(format!("its flag {f} turns the speculative store bypass mitigation off"));
    }
    let by_cap = |n: &str| {
        BY_CAPABILITY.iter().any(|(cap, names)| caps.iter().any(|c| c == cap) && names.contains(&n))
    };
    for r in p.syscalls.iter().flatten().filter(|r| permissive(&r.action)) {
        let args = r.args.as_deref().filter(|a| !a.is_empty());
        for n in &r.names {
            let n: &str = n;
            if PLAIN.binary_search(&n).is_ok() || by_cap(n) || extra.plain.iter().any(|x| x == n) {
                continue;
            }
            let covered = args.is_some_and(|a| {
                let want = sorted(a);
                let builtin = CONDITIONAL.iter().filter(|(name, _)| *name == n).any(|(_, conds)| {
                    let mut c: Vec<Arg> = conds
                        .iter()
                        .map(|&(index, value, value_two, op)| Arg {
                            index,
                            value,
                            value_two,
                            op: op.to_owned(),
                        })
                        .collect();
                    c.sort();
                    c == want
                });
                builtin || extra.conditional.iter().any(|(name, c)| name == n && *c == want)
            });
            if !covered {
                let how = if args.is_some() { " (with these arguments)" } else { "" };
                return Some(format!("it allows {n}{how}, which the engines' default profiles do not"));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let text = match name {
            "docker" => {
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/docker-20.10-config.json"))
            }
            _ => include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/podman-4.3-config.json")),
        };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        v["linux"]["seccomp"].to_string()
    }

    #[test]
    fn the_engines_defaults_pass_and_the_reference_is_sorted() {
        assert!(PLAIN.windows(2).all(|w| w[0] < w[1]));
        for e in ["docker", "podman"] {
            assert_eq!(weaker(&fixture(e), &[], &Extra::default()), None, "{e}");
        }
    }

    #[test]
    fn weaker_profiles_are_named() {
        let allow_all = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
        assert!(weaker(allow_all, &[], &Extra::default())
            .unwrap()
            .contains("default action is SCMP_ACT_ALLOW"));
        let log = r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[]}"#;
        assert!(weaker(log, &[], &Extra::default()).is_some());
        let extra_call = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","kexec_load"],"action":"SCMP_ACT_ALLOW"}]}"#;
        let why = weaker(extra_call, &[], &Extra::default()).unwrap();
        assert!(why.contains("allows kexec_load"), "{why}");
        let personality = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#;
        assert!(weaker(personality, &[], &Extra::default()).unwrap().contains("with these arguments"));
        let same = r#"{"defaultAction":"SCMP_ACT_KILL","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"valueTwo":0,"op":"SCMP_CMP_EQ"}]}]}"#;
        assert_eq!(weaker(same, &[], &Extra::default()), None);
        let denied = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["kexec_load"],"action":"SCMP_ACT_ERRNO"}]}"#;
        assert_eq!(weaker(denied, &[], &Extra::default()), None, "a deny rule is never weaker");
        assert!(weaker("[1]", &[], &Extra::default()).unwrap().contains("cannot be read"));
        let spec_allow = r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#;
        assert!(weaker(spec_allow, &[], &Extra::default()).unwrap().contains("SPEC_ALLOW"));
    }

    #[test]
    fn capabilities_and_listed_profiles_extend_the_reference() {
        let ptrace =
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["kcmp"],"action":"SCMP_ACT_ALLOW"}]}"#;
        assert!(weaker(ptrace, &[], &Extra::default()).is_some());
        assert_eq!(weaker(ptrace, &["CAP_SYS_PTRACE".into()], &Extra::default()), None);
        let kexec = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["kexec_load"],"action":"SCMP_ACT_ALLOW"}]}"#;
        let mut extra = Extra::default();
        extra.add(kexec).unwrap();
        assert_eq!(weaker(kexec, &[], &extra), None);
    }
}
