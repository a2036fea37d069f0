//! Reading the audit trail for `ds01ctl audit`: filters, the log and its rotated (and gzip)
//! siblings oldest first, streamed a line at a time with a cheap text pre-check before any JSON
//! parsing, a readable table, and `--follow` that survives logrotate.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::Event;
use crate::error::{Error, Result};
use crate::host::clock::{days_from_civil, rfc3339};

/// Filters of `ds01ctl audit`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Owner.
    pub user: Option<String>,
    /// Container id prefix or exact Docker name.
    pub container: Option<String>,
    /// Event name.
    pub event: Option<String>,
    /// Outcome.
    pub outcome: Option<String>,
    /// Not before.
    pub since: Option<SystemTime>,
    /// Not after.
    pub until: Option<SystemTime>,
}

/// Only what the filter looks at, borrowed from the line.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    time: &'a str,
    #[serde(borrow)]
    event: &'a str,
    #[serde(default, borrow)]
    container: Option<&'a str>,
    #[serde(default, borrow)]
    name: Option<&'a str>,
    #[serde(default, borrow)]
    owner: Option<&'a str>,
    #[serde(borrow)]
    outcome: &'a str,
}

impl Filter {
    /// Whether an event passes.
    pub fn matches(&self, e: &Event) -> bool {
        self.check(
            &e.time,
            &e.event,
            e.container.as_deref(),
            e.name.as_deref(),
            e.owner.as_deref(),
            &e.outcome,
        )
    }

    fn check(
        &self,
        time: &str,
        event: &str,
        container: Option<&str>,
        name: Option<&str>,
        owner: Option<&str>,
        outcome: &str,
    ) -> bool {
        if self.user.as_deref().is_some_and(|u| owner != Some(u)) {
            return false;
        }
        if self.event.as_deref().is_some_and(|e| e != event) {
            return false;
        }
        if self.outcome.as_deref().is_some_and(|o| o != outcome) {
            return false;
        }
        if let Some(c) = &self.container {
            let by_id = container.is_some_and(|id| id.starts_with(c.as_str()));
            if !by_id && name != Some(c.as_str()) {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Ok(t) = parse_rfc3339(time) else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }

    /// A cheap test on the raw line: false means the line cannot match.
    fn may_match(&self, line: &str) -> bool {
        self.user.as_deref().is_none_or(|u| line.contains(u))
            && self.event.as_deref().is_none_or(|e| line.contains(e))
            && self.outcome.as_deref().is_none_or(|o| line.contains(o))
            && self.container.as_deref().is_none_or(|c| line.contains(c))
    }
}

/// Parses RFC 3339 (`2026-11-22T13:00:00Z`, fractions and offsets allowed).
fn parse_rfc3339(s: &str) -> Result<SystemTime> {
    let bad = || {
        Error::failed(format!(
            "time {s:?} is not understood (e.g. 2h, 30m, 2026-11-22, 2026-11-22T13:00:00Z)"
        ))
    };
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (mut h, mut mi, mut sec, mut nanos, mut offset) = (0, 0, 0, 0u32, 0i64);
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 16 {
            return Err(bad());
        }
        h = num(11..13)?;
        mi = num(14..16)?;
        let mut rest = &s[16..];
        if let Some(r) = rest.strip_prefix(':') {
            sec = r.get(0..2).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            rest = &r[2..];
        }
        if let Some(r) = rest.strip_prefix('.') {
            let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
            let frac = format!("{digits:0<9}");
            nanos = frac[..9].parse().map_err(|_| bad())?;
            rest = &r[digits.len()..];
        }
        offset = match rest {
            "" | "Z" | "z" => 0,
            o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
                let sign = if o.starts_with('-') { -1 } else { 1 };
                let oh: i64 = o[1..3].parse().map_err(|_| bad())?;
                let om: i64 = o[4..6].parse().map_err(|_| bad())?;
                sign * (oh * 3600 + om * 60)
            }
            _ => return Err(bad()),
        };
    }
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    if secs < 0 {
        return Err(bad());
    }
    Ok(UNIX_EPOCH + Duration::new(secs as u64, nanos))
}

/// Parses `2h`, `30m`, `45s`, `3d`, `1w` (that long before `now`) or an absolute time
/// (`2026-11-22T13:00:00Z`, `2026-11-22 13:00`, `2026-11-22`, UTC when no offset).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime> {
    let t = s.trim();
    if let Some(unit) = t.chars().last().filter(|c| "smhdw".contains(*c)) {
        if let Ok(n) = t[..t.len() - 1].parse::<f64>() {
            let mult = match unit {
                's' => 1.0,
                'm' => 60.0,
                'h' => 3600.0,
                'd' => 86_400.0,
                _ => 604_800.0,
            };
            return now
                .checked_sub(Duration::from_secs_f64((n * mult).max(0.0)))
                .ok_or_else(|| Error::failed(format!("time {s:?} is too far back")));
        }
    }
    parse_rfc3339(t)
}

/// The log files to read, oldest first: rotated siblings (`<name>.1`, `<name>.2.gz`,
/// `<name>-20261121`, …) by modification time, then the log itself.
pub fn log_files(path: &Path) -> Result<Vec<PathBuf>> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Err(Error::failed(format!("{} is not a file path", path.display())));
    };
    let mut rotated: Vec<(SystemTime, i64, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = n.strip_prefix(&name) else { continue };
            if !(rest.starts_with('.') || rest.starts_with('-')) || rest.is_empty() {
                continue;
            }
            let number: i64 = rest[1..].trim_end_matches(".gz").parse().unwrap_or(0);
            let mtime = e.metadata().and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH);
            rotated.push((mtime, -number, e.path()));
        }
    }
    rotated.sort();
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, _, p)| p).collect();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    Ok(out)
}

fn open(path: &Path) -> Result<Box<dyn BufRead>> {
    let f = File::open(path).map_err(|e| Error::failed(format!("cannot open {}: {e}", path.display())))?;
    let r: Box<dyn Read> = if path.extension().is_some_and(|x| x == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, r)))
}

/// Streams the matching events of `files` in order to `sink`; returns (matched, skipped lines).
pub fn scan(
    files: &[PathBuf],
    filter: &Filter,
    sink: &mut dyn FnMut(&Event, &str) -> Result<()>,
) -> Result<(u64, u64)> {
    let (mut matched, mut skipped) = (0, 0);
    let mut line = String::new();
    for f in files {
        let mut r = open(f)?;
        loop {
            line.clear();
            let n = r
                .read_line(&mut line)
                .map_err(|e| Error::failed(format!("cannot read {}: {e}", f.display())))?;
            if n == 0 {
                break;
            }
            match one(&line, filter) {
                Some(Some(e)) => {
                    matched += 1;
                    sink(&e, &line)?;
                }
                Some(None) => {}
                None => skipped += 1,
            }
        }
    }
    Ok((matched, skipped))
}

/// None: not an event; Some(None): an event that does not match; Some(Some(e)): a match.
fn one(line: &str, filter: &Filter) -> Option<Option<Event>> {
    if line.trim().is_empty() {
        return Some(None);
    }
    if !filter.may_match(line) {
        return Some(None);
    }
    let p: Peek = serde_json::from_str(line).ok()?;
    if !filter.check(p.time, p.event, p.container, p.name, p.owner, p.outcome) {
        return Some(None);
    }
    serde_json::from_str::<Event>(line).ok().map(Some)
}

/// The table's header line.
pub fn table_header() -> String {
    format!(
        "{:<20} {:<13} {:<9} {:<14} {:<24} {:<16} REASON",
        "TIME (UTC)", "EVENT", "OUTCOME", "OWNER", "CONTAINER", "GPUS"
    )
}

/// One event as a table row.
pub fn table_row(e: &Event) -> String {
    let time: String = e.time.chars().take(19).collect::<String>().replace('T', " ");
    let container = e
        .name
        .clone()
        .or_else(|| e.container.as_ref().map(|c| c.chars().take(12).collect()))
        .unwrap_or_else(|| "-".into());
    let gpus = if e.gpus.is_empty() { "-".to_owned() } else { e.gpus.join(",") };
    let mut reason =
        e.reason.clone().or_else(|| e.signal.as_ref().map(|s| format!("signal {s}"))).unwrap_or_default();
    if reason.chars().count() > 60 {
        reason = reason.chars().take(57).collect::<String>() + "...";
    }
    format!(
        "{time:<20} {:<13} {:<9} {:<14} {container:<24} {gpus:<16} {reason}",
        e.event,
        e.outcome,
        e.owner.as_deref().unwrap_or("-")
    )
}

/// Follows `path` like `tail -F`: prints what is appended, reopens when logrotate replaced the
/// file; stops when `stop()` says so (checked every 200 ms).
pub fn follow(
    path: &Path,
    filter: &Filter,
    sink: &mut dyn FnMut(&Event, &str) -> Result<()>,
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    let mut current: Option<(BufReader<File>, u64)> = None;
    let mut line = String::new();
    loop {
        if current.is_none() {
            if let Ok(f) = File::open(path) {
                let ino = f.metadata().map(|m| m.ino()).unwrap_or(0);
                current = Some((BufReader::new(f), ino));
            }
        }
        let mut progressed = false;
        if let Some((r, ino)) = current.as_mut() {
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if !line.ends_with('\n') => {
                        // A line still being written: read it again whole next time.
                        let back = line.len() as i64;
                        let _ = r.seek(SeekFrom::Current(-back));
                        break;
                    }
                    Ok(_) => {
                        progressed = true;
                        if let Some(Some(e)) = one(&line, filter) {
                            sink(&e, &line)?;
                        }
                    }
                }
            }
            let replaced = std::fs::metadata(path).map(|m| m.ino() != *ino).unwrap_or(true);
            let pos = r.stream_position().unwrap_or(0);
            let shrank = std::fs::metadata(path).is_ok_and(|m| m.len() < pos);
            if (replaced || shrank) && !progressed {
                current = None;
                continue;
            }
        }
        if stop() {
            return Ok(());
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `t` as shown in messages.
pub fn shown(t: SystemTime) -> String {
    rfc3339(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_forms() {
        let now = UNIX_EPOCH + Duration::from_secs(1_795_352_400);
        assert_eq!(parse_time("2h", now).unwrap(), now - Duration::from_secs(7200));
        assert_eq!(parse_time("30m", now).unwrap(), now - Duration::from_secs(1800));
        assert_eq!(parse_time("2026-11-22T13:00:00Z", now).unwrap(), now);
        assert_eq!(parse_time("2026-11-22T14:00:00+01:00", now).unwrap(), now);
        assert_eq!(parse_time("2026-11-22 13:00", now).unwrap(), now);
        assert_eq!(parse_time("2026-11-22", now).unwrap(), now - Duration::from_secs(13 * 3600));
        assert_eq!(parse_time("2026-11-22T13:00:00.5Z", now).unwrap(), now + Duration::from_millis(500));
        assert!(parse_time("yesterday", now).unwrap_err().to_string().contains("not understood"));
    }
}
