//! Value types of the DS01 policy: a nullable setting, sizes (`32g`), percentages (`9600%`) and
//! durations (`0.25h`).

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A policy setting: absent (inherit), `null` (unlimited) or a value.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Nullable<T> {
    /// Not written in this layer.
    #[default]
    Unset,
    /// Written as `null`: no limit.
    Unlimited,
    /// A limit.
    Value(T),
}

impl<T> Nullable<T> {
    /// True when the layer does not set it.
    pub fn is_unset(&self) -> bool {
        matches!(self, Nullable::Unset)
    }

    /// The limit, if there is one.
    pub fn value(&self) -> Option<&T> {
        match self {
            Nullable::Value(v) => Some(v),
            _ => None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nullable<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Nullable::Unlimited,
            Some(v) => Nullable::Value(v),
        })
    }
}

/// A size in bytes, kept with the text it was written as (`32g`, `96G`, `512m`, `1073741824`).
/// Suffixes k, m, g, t (either case, optional `b`/`ib`) are powers of 1024, as Docker reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Size {
    /// Bytes.
    pub bytes: u64,
    /// As written.
    pub text: String,
}

impl Size {
    /// Parses `32g`, `96G`, `0.5g`, `1024`.
    pub fn parse(s: &str) -> Option<Size> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let num_end = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
        let (num, unit) = lower.split_at(num_end);
        let n: f64 = num.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return None,
        };
        let bytes = n * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return None;
        }
        Some(Size { bytes: bytes as u64, text: t.to_owned() })
    }

    /// From a byte count (as a container's own request is expressed).
    pub fn from_bytes(bytes: u64) -> Size {
        Size { bytes, text: human(bytes) }
    }
}

/// Bytes as the shortest exact k/m/g/t form, e.g. 34359738368 → `32g`.
pub fn human(bytes: u64) -> String {
    for (shift, suffix) in [(40, "t"), (30, "g"), (20, "m"), (10, "k")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = NumOrStr::text(d)?;
        Size::parse(&s)
            .ok_or_else(|| de::Error::custom(format!("invalid size {s:?} (expected e.g. 32g, 512m, 96G)")))
    }
}

/// systemd's CPU percentage, `9600%` = 96 CPUs.
#[derive(Debug, Clone, PartialEq)]
pub struct Percent {
    /// Percent of one CPU.
    pub percent: f64,
    /// As written.
    pub text: String,
}

impl Percent {
    /// CPUs this quota allows.
    pub fn cpus(&self) -> f64 {
        self.percent / 100.0
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = NumOrStr::text(d)?;
        let t = s.trim();
        let n: Option<f64> = t.strip_suffix('%').unwrap_or(t).trim().parse().ok();
        match n {
            Some(p) if p > 0.0 && p.is_finite() => {
                Ok(Percent { percent: p, text: format!("{}%", t.trim_end_matches('%')) })
            }
            _ => Err(de::Error::custom(format!("invalid CPU quota {s:?} (expected e.g. \"9600%\")"))),
        }
    }
}

/// A count of GPU-equivalents (DS01's `gpueq`): a full GPU is 1.0, written as an integer or
/// a float (`2`, `2.0`, `0.5`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct GpuEq(pub f64);

impl From<u32> for GpuEq {
    fn from(n: u32) -> Self {
        GpuEq(f64::from(n))
    }
}

impl GpuEq {
    /// The whole units (GPUs, or MIG-equivalent slots at `per_gpu` to a GPU) it allows.
    pub fn units(self, per_gpu: u32) -> u32 {
        (self.0 * f64::from(per_gpu.max(1)) + 1e-9).floor().clamp(0.0, f64::from(u32::MAX)) as u32
    }
}

impl fmt::Display for GpuEq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for GpuEq {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = NumOrStr::text(d)?;
        match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(GpuEq(v)),
            _ => Err(de::Error::custom(format!("invalid GPU count {s:?} (expected e.g. 2 or 1.5)"))),
        }
    }
}

/// A duration: `0.25h`, `15m`, `30s`, `2d`, `1w`; a bare number means hours (as DS01's
/// allocator reads `gpu_hold_after_stop`).
#[derive(Debug, Clone, PartialEq)]
pub struct Duration {
    /// Seconds.
    pub secs: u64,
    /// As written.
    pub text: String,
}

impl Duration {
    /// Parses a DS01 duration.
    pub fn parse(s: &str) -> Option<Duration> {
        let t = s.trim().to_ascii_lowercase();
        let num_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(num_end);
        let n: f64 = num.parse().ok()?;
        let mult = match unit.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "" | "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            _ => return None,
        };
        let secs = n * mult;
        (secs.is_finite() && secs >= 0.0).then(|| Duration { secs: secs as u64, text: s.trim().to_owned() })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = NumOrStr::text(d)?;
        Duration::parse(&s)
            .ok_or_else(|| de::Error::custom(format!("invalid duration {s:?} (expected e.g. 0.25h, 15m)")))
    }
}

/// A YAML scalar written either as a number or a string, as text. A visitor, not an untagged
/// enum: that one buffers the value and builds an error message for every variant it tries.
struct NumOrStr;

impl NumOrStr {
    fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(NumOrStr)
    }
}

impl de::Visitor<'_> for NumOrStr {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<String, E> {
        Ok(n.to_string())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<String, E> {
        Ok(n.to_string())
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<String, E> {
        Ok(n.to_string())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<String, E> {
        Ok(s.to_owned())
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<String, E> {
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(Size::parse("32g").unwrap().bytes, 32 << 30);
        assert_eq!(Size::parse("96G").unwrap().bytes, 96 << 30);
        assert_eq!(Size::parse("0.5g").unwrap().bytes, 512 << 20);
        assert_eq!(Size::parse("256m").unwrap().bytes, 256 << 20);
        assert_eq!(Size::parse("1024").unwrap().bytes, 1024);
        assert_eq!(Size::parse("2GiB").unwrap().bytes, 2 << 30);
        assert!(Size::parse("lots").is_none());
        assert!(Size::parse("5x").is_none());
        assert_eq!(human(32 << 30), "32g");
        assert_eq!(human(1536 << 20), "1536m");
        assert_eq!(human(1000), "1000");
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("0.25h").unwrap().secs, 900);
        assert_eq!(Duration::parse("15m").unwrap().secs, 900);
        assert_eq!(Duration::parse("2").unwrap().secs, 7200);
        assert_eq!(Duration::parse("1d").unwrap().secs, 86_400);
        assert!(Duration::parse("soon").is_none());
    }

    #[test]
    fn nullable_distinguishes_null_from_absent() {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct T {
            a: Nullable<u32>,
            b: Nullable<u32>,
            c: Nullable<u32>,
        }
        let t: T = serde_yaml_ng::from_str("a: null\nb: 3\n").unwrap();
        assert_eq!(t.a, Nullable::Unlimited);
        assert_eq!(t.b, Nullable::Value(3));
        assert_eq!(t.c, Nullable::Unset);
    }
}
