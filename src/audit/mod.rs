//! The audit trail: one JSON line per lifecycle event, appended under a lock with a single
//! write (lines never interleave or tear), the file opened by path each time (so logrotate
//! works without copytruncate), and optionally the system journal.
//!
//! Each line carries DS01's own events.jsonl fields (`timestamp`, `event_type`, `user`,
//! `source`, `details`, `schema_version`), so existing DS01 tooling reads it, and this
//! runtime's flat fields (`time`, `event`, `container`, `owner`, …) for `ds01ctl audit`.

pub mod query;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// Version of this line format.
pub const SCHEMA_VERSION: &str = "1";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `create`/`run`, allowed or refused.
    Create,
    /// `start`.
    Start,
    /// `kill`, with the signal.
    Kill,
    /// `delete`.
    Delete,
    /// GPUs allocated to a container.
    GpuAllocate,
    /// GPUs held for the owner after a stop.
    GpuHold,
    /// GPUs released.
    GpuRelease,
    /// Stale state reclaimed (a container the engine lost).
    Reclaim,
}

impl Kind {
    /// The short name (`event`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Start => "start",
            Kind::Kill => "kill",
            Kind::Delete => "delete",
            Kind::GpuAllocate => "gpu_allocate",
            Kind::GpuHold => "gpu_hold",
            Kind::GpuRelease => "gpu_release",
            Kind::Reclaim => "reclaim",
        }
    }

    /// DS01's dotted `event_type`.
    pub fn ds01_type(self) -> &'static str {
        match self {
            Kind::Create => "container.create",
            Kind::Start => "container.start",
            Kind::Kill => "container.kill",
            Kind::Delete => "container.delete",
            Kind::GpuAllocate => "gpu.allocated",
            Kind::GpuHold => "gpu.held",
            Kind::GpuRelease => "gpu.released",
            Kind::Reclaim => "gpu.reclaimed",
        }
    }
}

/// One event, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC.
    pub time: String,
    /// `create`, `start`, `kill`, `delete`, `gpu_allocate`, `gpu_hold`, `gpu_release`, `reclaim`.
    pub event: String,
    /// Container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Docker name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Owner's group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Which identity source named the owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_source: Option<String>,
    /// The owner's slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<String>,
    /// GPU / MIG UUIDs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// Limits applied (name → value).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub limits: Map<String, Value>,
    /// `allowed`, `refused`, `error`, `ok`.
    pub outcome: String,
    /// Why (refusals, errors, notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Signal, for kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// The container's labels, on create.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub labels: Map<String, Value>,
    /// How long the create waited for the state lock, in ms (creates that took it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_ms: Option<f64>,
    /// pid of the runtime process that recorded it.
    pub pid: u32,
}

impl Event {
    /// A new event of `kind` at `now`, outcome `outcome`.
    pub fn new(kind: Kind, now: SystemTime, outcome: &str) -> Event {
        Event {
            time: rfc3339(now),
            event: kind.as_str().into(),
            outcome: outcome.into(),
            pid: std::process::id(),
            ..Event::default()
        }
    }

    /// The JSON line: DS01's fields first, then ours.
    pub fn to_line(&self) -> String {
        let kind = KINDS.iter().find(|k| k.as_str() == self.event).copied().unwrap_or(Kind::Create);
        let mut obj = Map::new();
        obj.insert("timestamp".into(), Value::String(self.time.clone()));
        obj.insert("event_type".into(), Value::String(kind.ds01_type().into()));
        obj.insert("schema_version".into(), Value::String(SCHEMA_VERSION.into()));
        if let Some(u) = &self.owner {
            obj.insert("user".into(), Value::String(u.clone()));
        }
        obj.insert("source".into(), Value::String("ds01-runtime".into()));
        let mut details = Map::new();
        for (k, v) in [
            ("container", &self.container),
            ("name", &self.name),
            ("image", &self.image),
            ("reason", &self.reason),
        ] {
            if let Some(v) = v {
                details.insert(k.into(), Value::String(v.clone()));
            }
        }
        details.insert("outcome".into(), Value::String(self.outcome.clone()));
        obj.insert("details".into(), Value::Object(details));
        if let Ok(Value::Object(flat)) = serde_json::to_value(self) {
            obj.extend(flat);
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        line
    }
}

const KINDS: [Kind; 8] = [
    Kind::Create,
    Kind::Start,
    Kind::Kill,
    Kind::Delete,
    Kind::GpuAllocate,
    Kind::GpuHold,
    Kind::GpuRelease,
    Kind::Reclaim,
];

/// Appends lines to the audit log: one `write` under an exclusive flock, the file opened by
/// path each time (logrotate without copytruncate), parent directory created when missing.
pub fn append(path: &Path, lines: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::failed(format!("cannot create {}: {e}", dir.display())))?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| Error::failed(format!("cannot open audit log {}: {e}", path.display())))?;
    // SAFETY: flock on an fd we own; released when `f` closes.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::failed(format!(
            "cannot lock audit log {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    f.write_all(lines.as_bytes())
        .map_err(|e| Error::failed(format!("cannot write audit log {}: {e}", path.display())))
}

/// Appends a create's lines as the settings say: on failure, `audit_failure: refuse` refuses
/// the container; `allow` lets it run and says so on stderr and in the journal.
pub fn record(settings: &crate::settings::Settings, lines: &str) -> Result<()> {
    let res = append(&settings.audit_log, lines);
    if settings.journal {
        for l in lines.lines() {
            journal(l, 6, &[]);
        }
    }
    match res {
        Ok(()) => Ok(()),
        Err(e) if settings.audit_failure == crate::settings::AuditFailure::Refuse => {
            Err(Error::failed(format!("{e}; refusing the container (audit_failure: refuse)")))
        }
        Err(e) => {
            let msg = format!("ds01-runtime: warning: {e}; container allowed without an audit record (audit_failure: allow)");
            let _ = writeln!(std::io::stderr(), "{msg}");
            journal(&msg, 4, &[]);
            Ok(())
        }
    }
}

/// Records an event that must never affect a container (refusals, start, kill, delete).
pub fn record_quietly(settings: &crate::settings::Settings, lines: &str) {
    if settings.journal {
        for l in lines.lines() {
            journal(l, 6, &[]);
        }
    }
    let _ = append(&settings.audit_log, lines);
}

/// Sends a message to the system journal when one is running (native protocol, one datagram).
pub fn journal(message: &str, priority: u8, fields: &[(&str, &str)]) {
    let sock = Path::new("/run/systemd/journal/socket");
    if !sock.exists() {
        return;
    }
    let mut payload = format!(
        "MESSAGE={}\nPRIORITY={priority}\nSYSLOG_IDENTIFIER=ds01-runtime\n",
        message.replace('\n', " ")
    );
    for (k, v) in fields {
        payload.push_str(&format!("{k}={}\n", v.replace('\n', " ")));
    }
    if let Ok(s) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = s.send_to(payload.as_bytes(), sock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn line_has_ds01_fields_and_ours() {
        let mut e = Event::new(Kind::Create, UNIX_EPOCH + Duration::from_secs(1_795_352_400), "refused");
        e.container = Some("abc".into());
        e.owner = Some("alice".into());
        e.reason = Some("no \"owner\"".into());
        let line = e.to_line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2026-11-22T13:00:00.000000000Z");
        assert_eq!(v["event_type"], "container.create");
        assert_eq!(v["schema_version"], "1");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["source"], "ds01-runtime");
        assert_eq!(v["details"]["container"], "abc");
        assert_eq!(v["event"], "create");
        assert_eq!(v["outcome"], "refused");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }
}
