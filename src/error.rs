//! One error type: a refusal (a rule said no, typed by [`Refusal`]) or a failure (something
//! broke), each shown as one line.

use std::fmt;

/// Whether the runtime said no on purpose or could not do its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The policy refused the container (recorded as outcome "refused").
    Refused,
    /// Bad input or a broken host (recorded as outcome "error").
    Failed,
}

/// How a refusal says what would allow it.
pub const ADMIN_ONLY: &str = "only admins named by a trusted identity source may";

/// Which rule of the policy refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Whose container it is: no owner, two owners, an unknown user, a name that cannot be a slice.
    Owner,
    /// What GPUs were asked for, and whether the owner may have them.
    Gpu,
    /// `max_containers_per_user`.
    Containers,
    /// A per-container cap (CPUs, memory, swap, /dev/shm, pids), at create or update.
    Limit,
    /// What a container may have beyond an engine's defaults (the guard).
    Privilege,
    /// What an exec'd process may have beyond its container.
    Exec,
    /// What a restore may bring.
    Restore,
    /// An argv the scan cannot read for sure.
    Argv,
}

/// A policy refusal: the rule and the values it judged. The one-line message is made from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Two owner sources name different users.
    OwnerConflict {
        /// The first source and the user it names.
        first: (String, String),
        /// The source that disagrees and its user.
        second: (String, String),
    },
    /// No source names an owner; `hint` says how to name one.
    NoOwner {
        /// What the user can do.
        hint: String,
    },
    /// An owner named by uid, or a name that cannot be made into a slice name.
    UnknownOwner {
        /// Why.
        why: String,
    },
    /// GPUs asked for by a container with no owner.
    GpusWithoutOwner {
        /// Who asked (`docker --gpus`, `annotation`, …).
        source: &'static str,
    },
    /// A GPU request that cannot be read.
    GpuRequest {
        /// The request as written.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// More GPU units in one container than the cap.
    GpusPerContainer {
        /// What was asked for, e.g. `2 GPUs requested`.
        asked: String,
        /// The cap.
        limit: u32,
        /// Where the cap comes from.
        origin: String,
    },
    /// More GPU-equivalents than the owner's quota.
    GpuQuota {
        /// What was asked for.
        asked: String,
        /// The quota, e.g. `1.5`.
        limit: String,
        /// Already held, e.g. `1`.
        holding: String,
        /// What holds them, e.g. ` (held by nb1)`.
        holders: String,
    },
    /// The GPUs asked for are not there to give (busy, held, absent, full GPUs not allowed).
    GpusUnavailable {
        /// Why, with the GPUs named.
        why: String,
    },
    /// The owner already runs `max_containers_per_user`.
    Containers {
        /// The owner.
        owner: String,
        /// How many run.
        running: usize,
        /// The cap.
        limit: u32,
        /// Where it comes from.
        origin: String,
        /// Their names.
        names: String,
    },
    /// A resource over its per-container cap; `update` says whether at update.
    OverCap {
        /// At `update` rather than create.
        update: bool,
        /// The resource, e.g. `memory`.
        what: &'static str,
        /// What was asked for.
        asked: String,
        /// The cap.
        cap: String,
        /// Where it comes from.
        origin: String,
    },
    /// An `update` the caps cannot judge.
    Update {
        /// What and why.
        why: String,
    },
    /// Something beyond an engine's defaults (capability, profile, namespace, device, mount).
    Privilege {
        /// What was asked for, e.g. `--cap-add SYS_ADMIN`.
        what: String,
        /// `what` names a kind of thing (`privileged containers`): "are refused".
        plural: bool,
        /// Why it is refused and what would allow it.
        why: String,
    },
    /// An exec'd process asking for more than its container has.
    Exec {
        /// What, e.g. `capability SYS_ADMIN`.
        what: String,
        /// Why.
        why: String,
    },
    /// A restore bringing its own image or labels.
    Restore {
        /// What, e.g. `--lsm-profile`.
        what: String,
        /// Why.
        why: String,
    },
    /// An argv the scan cannot read for sure.
    Argv {
        /// Why.
        why: String,
    },
}

impl Refusal {
    /// The rule that refused.
    pub fn rule(&self) -> Rule {
        match self {
            Refusal::OwnerConflict { .. } | Refusal::NoOwner { .. } | Refusal::UnknownOwner { .. } => {
                Rule::Owner
            }
            Refusal::GpusWithoutOwner { .. }
            | Refusal::GpuRequest { .. }
            | Refusal::GpusPerContainer { .. }
            | Refusal::GpuQuota { .. }
            | Refusal::GpusUnavailable { .. } => Rule::Gpu,
            Refusal::Containers { .. } => Rule::Containers,
            Refusal::OverCap { .. } | Refusal::Update { .. } => Rule::Limit,
            Refusal::Privilege { .. } => Rule::Privilege,
            Refusal::Exec { .. } => Rule::Exec,
            Refusal::Restore { .. } => Rule::Restore,
            Refusal::Argv { .. } => Rule::Argv,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::OwnerConflict { first: (s1, u1), second: (s2, u2) } => write!(
                f,
                "owner conflict: {s1} says {u1}, {s2} says {u2}; a container may not run on someone else's quota"
            ),
            Refusal::NoOwner { hint } => write!(f, "container has no owner: {hint}"),
            Refusal::UnknownOwner { why } => f.write_str(why),
            Refusal::GpusWithoutOwner { source } => {
                write!(f, "GPUs requested ({source}) by a container with no owner")
            }
            Refusal::GpuRequest { text, why } => write!(f, "GPU request {text:?} {why}"),
            Refusal::GpusPerContainer { asked, limit, origin } => {
                write!(f, "{asked}; {origin} allows {limit} per container")
            }
            Refusal::GpuQuota { asked, limit, holding, holders } => {
                write!(f, "{asked}; quota {limit} GPU-equivalents, already holding {holding}{holders}")
            }
            Refusal::GpusUnavailable { why } => f.write_str(why),
            Refusal::Containers { owner, running, limit, origin, names } => write!(
                f,
                "{owner} already runs {running} container{} (max_containers_per_user {limit}, {origin}): {names}",
                if *running == 1 { "" } else { "s" }
            ),
            Refusal::OverCap { update, what, asked, cap, origin } => write!(
                f,
                "{}{what} {asked} exceeds {cap} per container, {origin}",
                if *update { "update: " } else { "" }
            ),
            Refusal::Update { why } => write!(f, "update: {why}"),
            Refusal::Privilege { what, plural, why } => {
                write!(f, "{what} {} refused: {why}", if *plural { "are" } else { "is" })
            }
            Refusal::Exec { what, why } => write!(f, "exec: {what} is refused: {why}"),
            Refusal::Restore { what, why } => write!(f, "restore {what} is refused: {why}"),
            Refusal::Argv { why } => write!(f, "{why}; refused"),
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    Refused(Refusal),
    Failed(String),
}

/// A single readable line naming the cause, with the context it happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Refusal or failure.
    pub kind: Kind,
    cause: Box<Cause>,
    /// Where it happened, outermost first, each ending in `: `.
    context: String,
}

impl Error {
    /// A failure of input or host.
    pub fn failed(msg: impl Into<String>) -> Self {
        Error { kind: Kind::Failed, cause: Box::new(Cause::Failed(msg.into())), context: String::new() }
    }

    /// Prefixes the message with where it happened.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.context = format!("{ctx}: {}", self.context);
        self
    }

    /// The refusal, when a rule refused.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self.cause.as_ref() {
            Cause::Refused(r) => Some(r),
            Cause::Failed(_) => None,
        }
    }

    /// True when the rule `rule` refused.
    pub fn refused_by(&self, rule: Rule) -> bool {
        self.refusal().is_some_and(|r| r.rule() == rule)
    }

    /// The whole message, context included.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error { kind: Kind::Refused, cause: Box::new(Cause::Refused(r)), context: String::new() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always one line: engines show only the last line of the runtime's error.
        let msg = match self.cause.as_ref() {
            Cause::Refused(r) => r.to_string(),
            Cause::Failed(m) => m.clone(),
        };
        write!(f, "{}{}", self.context.replace('\n', " "), msg.replace('\n', " "))
    }
}

impl std::error::Error for Error {}

/// Adds context to any displayable error.
pub trait Context<T> {
    /// Turns the error into a failure prefixed with `ctx`; pass `format_args!`, which is only
    /// formatted when there is an error.
    fn context(self, ctx: impl fmt::Display) -> Result<T, Error>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, ctx: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| Error::failed(format!("{ctx}: {e}")))
    }
}

/// Result with our error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_rule_and_values_under_context() {
        let e = Error::from(Refusal::OverCap {
            update: true,
            what: "memory",
            asked: "100g".into(),
            cap: "32g".into(),
            origin: "group student".into(),
        })
        .context("ctr1");
        assert_eq!(e.to_string(), "ctr1: update: memory 100g exceeds 32g per container, group student");
        assert!(e.refused_by(Rule::Limit) && !e.refused_by(Rule::Gpu));
        assert_eq!(e.kind, Kind::Refused);
        let f = Error::failed("a\nb").context("x");
        assert_eq!((f.to_string(), f.kind, f.refusal()), ("x: a b".to_owned(), Kind::Failed, None));
    }
}
