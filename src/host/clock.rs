//! The clock edge and RFC 3339 formatting (UTC), without a date crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where "now" comes from; tests use a fixed one.
pub trait Clock {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's real-time clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock stopped at one instant.
pub struct FixedClock(pub SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// Days since 1970-01-01 to (year, month, day); Howard Hinnant's civil_from_days.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01; Howard Hinnant's days_from_civil.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3339 in UTC with nanoseconds, e.g. `2026-11-22T13:00:00.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let (date, d) = date_time(t);
    format!("{date}.{:09}Z", d.subsec_nanos())
}

/// ISO 8601 with microseconds and an explicit offset, `2026-11-22T13:00:00.123456+00:00`: what
/// Python 3.8's `datetime.fromisoformat` (DS01's readers) accepts, unlike nanoseconds or `Z`.
pub fn iso8601_micros(t: SystemTime) -> String {
    let (date, d) = date_time(t);
    format!("{date}.{:06}+00:00", d.subsec_micros())
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC, and the time since the epoch for the fraction.
fn date_time(t: SystemTime) -> (String, Duration) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = d.as_secs() as i64;
    let (y, mo, da) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    (format!("{y:04}-{mo:02}-{da:02}T{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_352_400, 123_456_789);
        assert_eq!(rfc3339(t), "2026-11-22T13:00:00.123456789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // leap day
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_352_400, 123_456_789);
        assert_eq!(iso8601_micros(t), "2026-11-22T13:00:00.123456+00:00");
    }

    #[test]
    fn days_round_trip() {
        for z in [-1000i64, 0, 11_016, 20_000, 20_779] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
