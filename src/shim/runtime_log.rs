//! Reporting an error the way runc does: one line on stderr, one line appended to `--log`.
//!
//! containerd shows the last `"level":"error"` line of the `--log` file to the user as
//! "OCI runtime create failed: <msg>"; its `time` must be RFC 3339 or the user sees a parse
//! failure instead of the message.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::SystemTime;

use crate::host::clock::rfc3339;

/// The `--log` line for an error, in runc's `json` or `text` (logrus) format.
pub fn format_line(msg: &str, json: bool, time: SystemTime) -> String {
    let time = rfc3339(time);
    if json {
        let obj = serde_json::json!({"level": "error", "msg": msg, "time": time});
        format!("{obj}\n")
    } else {
        let quoted = serde_json::Value::String(msg.to_owned()).to_string();
        format!("time=\"{time}\" level=error msg={quoted}\n")
    }
}

/// Writes `ds01-runtime: <msg>` to stderr and appends the error line to the log file, if any.
pub fn report(msg: &str, log: Option<&OsStr>, log_format: Option<&OsStr>, time: SystemTime) {
    let msg = format!("ds01-runtime: {msg}");
    let _ = writeln!(std::io::stderr(), "{msg}");
    let Some(log) = log else { return };
    let json = log_format.is_some_and(|f| f == "json");
    let line = format_line(&msg, json, time);
    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).mode(0o644).open(log) {
        let _ = f.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn json_line_is_what_containerd_parses() {
        let t = UNIX_EPOCH + Duration::new(1_795_352_400, 5);
        let line = format_line("no \"owner\"\n", true, t);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "no \"owner\"\n");
        assert_eq!(v["time"], "2026-11-22T13:00:00.000000005Z");
    }

    #[test]
    fn text_line_is_logrus_like() {
        let line = format_line("bad thing", false, UNIX_EPOCH);
        assert_eq!(line, "time=\"1970-01-01T00:00:00.000000000Z\" level=error msg=\"bad thing\"\n");
    }
}
