//! The audit trail: one JSON line per lifecycle event, appended under a lock with a single
//! write (lines never interleave or tear), the file opened by path each time (so logrotate
//! works without copytruncate), and optionally the system journal.
//!
//! Each line carries DS01's own events.jsonl fields (`timestamp`, `event_type`, `user`,
//! `source`, `details`, `schema_version`), so existing DS01 tooling reads it, and this
//! runtime's flat fields (`time`, `event`, `container`, `owner`, …) for `ds01ctl audit`.

pub mod container_type;
pub mod gpu_events;
pub mod query;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::host::clock::iso8601_micros;

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
    /// `update` of a container's resources, allowed or refused, with the values.
    Update,
    /// `exec` of a process in a container, allowed or refused, with its command line.
    Exec,
    /// `restore` of a container from a checkpoint (the create pipeline), allowed or refused.
    Restore,
    /// A GPU request refused (beside the refused create's own line).
    GpuReject,
    /// A Docker API request the front door refused (the caller, the request, why).
    Request,
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
            Kind::Update => "update",
            Kind::Exec => "exec",
            Kind::Restore => "restore",
            Kind::GpuReject => "gpu_reject",
            Kind::Request => "request",
        }
    }

    /// DS01's dotted `event_type` for an event with `outcome`: DS01's own names where DS01 has
    /// the event (its monthly report counts `container.create` as created, so a refused or
    /// failed create is `container.create_failed`); `container.update`, `container.exec` and
    /// `container.restore` are this runtime's own.
    pub fn ds01_type(self, outcome: &str) -> &'static str {
        match self {
            Kind::Create if outcome == "allowed" => "container.create",
            Kind::Create => "container.create_failed",
            Kind::Start => "container.start",
            Kind::Kill => "container.stop",
            Kind::Delete => "container.remove",
            Kind::GpuAllocate => "gpu.allocated",
            Kind::GpuHold => "gpu.hold",
            Kind::GpuRelease => "gpu.released",
            Kind::Reclaim => "gpu.removed_stale",
            Kind::GpuReject => "gpu.rejected",
            Kind::Update => "container.update",
            Kind::Exec => "container.exec",
            Kind::Restore => "container.restore",
            Kind::Request => "docker.request_refused",
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
    /// DS01's container_type: `docker`, `compose`, `devcontainer`, `atomic`, or the
    /// `ds01.interface` label (creates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_type: Option<String>,
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
    /// The command line, for exec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The container's labels, on create.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub labels: Map<String, Value>,
    /// How long the create waited for the state lock, in ms (creates that took it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_ms: Option<f64>,
    /// pid of the runtime process that recorded it.
    pub pid: u32,
    /// The create was refused by the GPU decision: DS01's `gpu.rejected` is recorded too.
    #[serde(skip)]
    pub gpu_refused: bool,
}

impl Event {
    /// A new event of `kind` at `now`, outcome `outcome`.
    pub fn new(kind: Kind, now: SystemTime, outcome: &str) -> Event {
        Event {
            time: iso8601_micros(now),
            event: kind.as_str().into(),
            outcome: outcome.into(),
            pid: std::process::id(),
            ..Event::default()
        }
    }

    /// DS01's `gpu.rejected` line for a create the GPU decision refused, if this was one.
    pub fn gpu_rejection(&self) -> Option<Event> {
        self.gpu_refused.then(|| Event {
            event: Kind::GpuReject.as_str().into(),
            outcome: "refused".into(),
            labels: Map::new(),
            limits: Map::new(),
            ..self.clone()
        })
    }

    /// The JSON line: DS01's fields first, then ours.
    pub fn to_line(&self) -> String {
        let kind = KINDS.iter().find(|k| k.as_str() == self.event).copied().unwrap_or(Kind::Create);
        let line = Line {
            timestamp: &self.time,
            event_type: kind.ds01_type(&self.outcome),
            schema_version: SCHEMA_VERSION,
            user: self.owner.as_deref(),
            source: "ds01-runtime",
            details: Details {
                container: self.container.as_deref(),
                name: self.name.as_deref(),
                image: self.image.as_deref(),
                container_type: self.container_type.as_deref(),
                reason: self.reason.as_deref(),
                gpu: (!self.gpus.is_empty()).then(|| self.gpus.join(",")),
                outcome: &self.outcome,
            },
            event: self,
        };
        let mut out = serde_json::to_string(&line).unwrap_or_default();
        out.push('\n');
        out
    }
}

/// A line as written: DS01's fields, then the event's own, flat.
#[derive(Serialize)]
struct Line<'a> {
    timestamp: &'a str,
    event_type: &'a str,
    schema_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    source: &'a str,
    details: Details<'a>,
    #[serde(flatten)]
    event: &'a Event,
}

/// DS01's `details` object.
#[derive(Serialize)]
struct Details<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// GPU UUIDs, comma-separated, as DS01's `gpu`.
    #[serde(skip_serializing_if = "Option::is_none")]
    gpu: Option<String>,
    outcome: &'a str,
}

const KINDS: [Kind; 13] = [
    Kind::Create,
    Kind::Start,
    Kind::Kill,
    Kind::Delete,
    Kind::GpuAllocate,
    Kind::GpuHold,
    Kind::GpuRelease,
    Kind::Reclaim,
    Kind::Update,
    Kind::Exec,
    Kind::Restore,
    Kind::GpuReject,
    Kind::Request,
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
    // flock(LOCK_EX), released when `f` closes.
    if let Err(e) = f.lock() {
        return Err(Error::failed(format!("cannot lock audit log {}: {e}", path.display())));
    }
    f.write_all(lines.as_bytes())
        .map_err(|e| Error::failed(format!("cannot write audit log {}: {e}", path.display())))
}

/// Appends a create's lines as the settings say: on failure, `audit_failure: refuse` refuses
/// the container; `allow` lets it run and says so on stderr and in the journal.
pub fn record(settings: &crate::policy::settings::Settings, lines: &str) -> Result<()> {
    let res = append(&settings.audit_log, lines);
    if settings.journal {
        for l in lines.lines() {
            journal(l, 6, &[]);
        }
    }
    match res {
        Ok(()) => Ok(()),
        Err(e) if settings.audit_failure == crate::policy::settings::AuditFailure::Refuse => {
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
pub fn record_quietly(settings: &crate::policy::settings::Settings, lines: &str) {
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

    #[test]
    fn ds01s_names_and_a_timestamp_python_38_reads() {
        let mut e = Event::new(
            Kind::Create,
            std::time::UNIX_EPOCH + std::time::Duration::new(1_795_352_400, 123_456_789),
            "refused",
        );
        e.container = Some("c1".into());
        e.gpu_refused = true;
        let line: Value = serde_json::from_str(&e.to_line()).unwrap();
        assert_eq!(line["timestamp"], "2026-11-22T13:00:00.123456+00:00");
        assert_eq!(
            line["event_type"], "container.create_failed",
            "a refused create is not counted as created"
        );
        let rejected: Value = serde_json::from_str(&e.gpu_rejection().unwrap().to_line()).unwrap();
        assert_eq!(rejected["event_type"], "gpu.rejected");
        assert_eq!(rejected["details"]["container"], "c1");
        e.outcome = "allowed".into();
        e.gpus = vec!["GPU-1".into(), "GPU-2".into()];
        let line: Value = serde_json::from_str(&e.to_line()).unwrap();
        assert_eq!(
            (line["event_type"].as_str(), line["details"]["gpu"].as_str()),
            (Some("container.create"), Some("GPU-1,GPU-2"))
        );
        for (k, want) in [
            (Kind::Kill, "container.stop"),
            (Kind::Delete, "container.remove"),
            (Kind::GpuHold, "gpu.hold"),
            (Kind::Reclaim, "gpu.removed_stale"),
        ] {
            assert_eq!(k.ds01_type("ok"), want);
        }
    }
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
        assert_eq!(v["timestamp"], "2026-11-22T13:00:00.000000+00:00");
        assert_eq!(v["event_type"], "container.create_failed");
        assert_eq!(v["schema_version"], "1");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["source"], "ds01-runtime");
        assert_eq!(v["details"]["container"], "abc");
        assert_eq!(v["event"], "create");
        assert_eq!(v["outcome"], "refused");
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn line_is_written_field_for_field_in_order() {
        let mut e = Event::new(Kind::GpuAllocate, UNIX_EPOCH + Duration::from_secs(1_795_352_400), "ok");
        e.pid = 7;
        e.container = Some("c1".into());
        e.name = Some("n".into());
        e.image = Some("img:1".into());
        e.container_type = Some("compose".into());
        e.owner = Some("bo".into());
        e.group = Some("student".into());
        e.identity_source = Some("label".into());
        e.slice = Some("ds01-student-bo.slice".into());
        e.gpus = vec!["GPU-1".into()];
        e.limits.insert("memory".into(), Value::from(34359738368u64));
        e.reason = Some("r".into());
        e.signal = Some("KILL".into());
        e.labels.insert("ds01.user".into(), Value::from("bo"));
        e.lock_wait_ms = Some(0.25);
        let want = concat!(
            r#"{"timestamp":"2026-11-22T13:00:00.000000+00:00","event_type":"gpu.allocated","schema_version":"1","#,
            r#""user":"bo","source":"ds01-runtime","details":{"container":"c1","name":"n","image":"img:1","#,
            r#""container_type":"compose","reason":"r","gpu":"GPU-1","outcome":"ok"},"time":"2026-11-22T13:00:00.000000+00:00","event":"gpu_allocate","#,
            r#""container":"c1","name":"n","image":"img:1","container_type":"compose","owner":"bo","group":"student","identity_source":"label","#,
            r#""slice":"ds01-student-bo.slice","gpus":["GPU-1"],"limits":{"memory":34359738368},"outcome":"ok","#,
            r#""reason":"r","signal":"KILL","labels":{"ds01.user":"bo"},"lock_wait_ms":0.25,"pid":7}"#,
            "\n"
        );
        assert_eq!(e.to_line(), want);
    }
}
