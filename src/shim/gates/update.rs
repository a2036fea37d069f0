//! `runc update`: the resources it would set are held to the owner's per-container caps, the
//! same caps a create is held to. runc reads them from `-r FILE`, `-r -` (stdin: read here,
//! then handed to runc unchanged) or the flags (ignored when `-r` is given).

use std::ffi::OsStr;
use std::io::Read;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{recorded, Container};
use crate::argv::Invocation;
use crate::audit::Kind;
use crate::error::{Error, Refusal, Result, ADMIN_ONLY};
use crate::policy::caps::ContainerCaps;
use crate::policy::settings::Settings;
use crate::policy::values::human;
use crate::policy::{Policy, Size};

/// The resources of an update that the caps speak of (runtime-spec LinuxResources).
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Resources {
    /// Memory.
    #[serde(default)]
    pub memory: Option<Memory>,
    /// CPU.
    #[serde(default)]
    pub cpu: Option<Cpu>,
    /// Processes.
    #[serde(default)]
    pub pids: Option<Pids>,
    /// cgroup v2 files written as given.
    #[serde(default)]
    pub unified: Option<Map<String, Value>>,
}

/// Memory limits (bytes; -1 unlimited, 0 unchanged).
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Memory {
    /// Limit.
    pub limit: Option<i64>,
    /// Memory + swap.
    pub swap: Option<i64>,
}

/// CPU bandwidth.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Cpu {
    /// Quota in µs per period (-1 unlimited).
    pub quota: Option<i64>,
    /// Period in µs.
    pub period: Option<u64>,
}

/// Process limit.
#[derive(Debug, Default, Deserialize, PartialEq)]
pub struct Pids {
    /// Limit (-1 unlimited, 0 unchanged).
    pub limit: Option<i64>,
}

/// runc's memory flag value: `100g`, `512m`, bytes, or `-1`.
fn bytes(v: &OsStr, flag: &str) -> Result<i64> {
    let t = v.to_string_lossy();
    if t.trim() == "-1" {
        return Ok(-1);
    }
    Size::parse(&t)
        .map(|s| s.bytes as i64)
        .ok_or_else(|| Error::failed(format!("runc update --{flag} {t:?} is not a size")))
}

fn number<T: std::str::FromStr>(v: &OsStr, flag: &str) -> Result<T> {
    let t = v.to_string_lossy();
    t.trim().parse().map_err(|_| Error::failed(format!("runc update --{flag} {t:?} is not a number")))
}

/// The resources an update asks for, and the bytes to hand runc on stdin (when `-r -`).
pub fn requested(inv: &Invocation, stdin: &mut dyn Read) -> Result<(Resources, Option<Vec<u8>>)> {
    if let Some(src) = inv.flag(&["resources", "r"]) {
        let (text, piped) = if src == "-" {
            let mut buf = Vec::new();
            stdin
                .read_to_end(&mut buf)
                .map_err(|e| Error::failed(format!("runc update: cannot read stdin: {e}")))?;
            (buf.clone(), Some(buf))
        } else {
            let t = std::fs::read(src).map_err(|e| {
                Error::failed(format!(
                    "runc update: cannot read {}: {e}",
                    std::path::Path::new(src).display()
                ))
            })?;
            (t, None)
        };
        // runc decodes one JSON object and ignores what follows.
        let r = serde_json::Deserializer::from_slice(&text)
            .into_iter::<Resources>()
            .next()
            .unwrap_or_else(|| Ok(Resources::default()))
            .map_err(|e| Error::failed(format!("runc update: the resources cannot be read: {e}")))?;
        return Ok((r, piped));
    }
    let mut r = Resources::default();
    if let Some(v) = inv.flag(&["memory"]) {
        r.memory.get_or_insert_with(Memory::default).limit = Some(bytes(v, "memory")?);
    }
    if let Some(v) = inv.flag(&["memory-swap"]) {
        r.memory.get_or_insert_with(Memory::default).swap = Some(bytes(v, "memory-swap")?);
    }
    if let Some(v) = inv.flag(&["pids-limit"]) {
        r.pids = Some(Pids { limit: Some(number(v, "pids-limit")?) });
    }
    if let Some(v) = inv.flag(&["cpu-quota"]) {
        r.cpu.get_or_insert_with(Cpu::default).quota = Some(number(v, "cpu-quota")?);
    }
    if let Some(v) = inv.flag(&["cpu-period"]) {
        r.cpu.get_or_insert_with(Cpu::default).period = Some(number(v, "cpu-period")?);
    }
    Ok((r, None))
}

fn refuse(what: &'static str, asked: &str, cap: &str, origin: &str) -> Error {
    Refusal::OverCap {
        update: true,
        what,
        asked: asked.to_owned(),
        cap: cap.to_owned(),
        origin: origin.to_owned(),
    }
    .into()
}

/// Holds `r` to `caps`; the refusal names the value, the cap and where it comes from.
pub fn judge(r: &Resources, caps: &ContainerCaps) -> Result<()> {
    if r.unified.as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(Refusal::Update {
            why: format!(
                "cgroup v2 unified settings are refused (they write cgroup files as given); {ADMIN_ONLY}"
            ),
        }
        .into());
    }
    let shown = |v: i64| if v < 0 { "unlimited".to_owned() } else { human(v as u64) };
    if let (Some(m), Some(cap)) = (r.memory.as_ref(), caps.memory.as_ref()) {
        if let Some(l) = m.limit.filter(|l| *l != 0 && (*l < 0 || *l as u64 > cap.value)) {
            return Err(refuse("memory", &shown(l), &human(cap.value), &cap.origin));
        }
    }
    if let (Some(m), Some(cap)) = (r.memory.as_ref(), caps.swap.as_ref()) {
        if let Some(s) = m.swap.filter(|s| *s != 0 && (*s < 0 || *s as u64 > cap.value)) {
            return Err(refuse("memory+swap", &shown(s), &human(cap.value), &cap.origin));
        }
    }
    if let (Some(p), Some(cap)) = (r.pids.as_ref(), caps.pids.as_ref()) {
        if let Some(l) = p.limit.filter(|l| *l != 0 && (*l < 0 || *l > cap.value)) {
            let asked = if l < 0 { "unlimited".to_owned() } else { l.to_string() };
            return Err(refuse("pids", &asked, &cap.value.to_string(), &cap.origin));
        }
    }
    if let (Some(c), Some(cap)) = (r.cpu.as_ref(), caps.cpus.as_ref()) {
        // runc keeps the old quota when only the period changes: a shorter period would then
        // give the same quota more CPUs.
        if c.quota.unwrap_or(0) == 0 && c.period.unwrap_or(0) != 0 {
            return Err(Refusal::Update {
                why: format!(
                    "a CPU period without a CPU quota is refused: it would change the CPUs the quota gives (cap {} per container, {})",
                    cap.value, cap.origin
                ),
            }
            .into());
        }
        if let Some(q) = c.quota.filter(|q| *q != 0) {
            let period = c.period.filter(|p| *p > 0).unwrap_or(100_000) as f64;
            if q < 0 || q as f64 / period > cap.value + 1e-9 {
                let asked = if q < 0 { "unlimited".to_owned() } else { format!("{}", q as f64 / period) };
                return Err(refuse("cpus", &asked, &cap.value.to_string(), &cap.origin));
            }
        }
    }
    Ok(())
}

/// The values an update asks for, for the audit line.
fn values(r: &Resources) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<i64>| {
        if let Some(v) = v {
            m.insert(k.into(), Value::from(v));
        }
    };
    put("memory", r.memory.as_ref().and_then(|x| x.limit));
    put("memory_swap", r.memory.as_ref().and_then(|x| x.swap));
    put("cpu_quota", r.cpu.as_ref().and_then(|x| x.quota));
    put("cpu_period", r.cpu.as_ref().and_then(|x| x.period.map(|p| p as i64)));
    put("pids", r.pids.as_ref().and_then(|x| x.limit));
    m
}

/// Judges and records an update; on success gives the bytes runc must read on stdin (when the
/// resources came from there).
pub fn gate(inv: &Invocation, settings: &Settings) -> Result<Option<Vec<u8>>> {
    let c = Container::load(inv)?;
    let policy = Policy::load_cached(&settings.policy, &settings.state_dir.join("cache"))?;
    let (r, piped) = requested(inv, &mut std::io::stdin())?;
    let mut ev = c.event(Kind::Update, "allowed");
    ev.limits = values(&r);
    let verdict = if c.trusted_admin(settings, &policy) {
        Ok(())
    } else {
        judge(&r, &owner_caps(&c, settings, &policy))
    };
    recorded(settings, ev, verdict)?;
    Ok(piped)
}

/// The caps the container's owner is held to (a build container's without an owner: the build
/// settings'; no owner recorded: the policy's defaults).
fn owner_caps(c: &Container, settings: &Settings, policy: &Policy) -> ContainerCaps {
    if c.record.build && c.record.user.is_none() {
        return crate::policy::caps::build_caps(&settings.build);
    }
    let owner = c.record.user.as_deref().zip(c.record.group.as_deref());
    crate::policy::caps::caps(policy, owner, false, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::caps::Cap;
    use std::ffi::OsString;

    fn caps() -> ContainerCaps {
        let c = |v| Some(Cap { value: v, origin: "group student".into() });
        ContainerCaps {
            cpus: Some(Cap { value: 4.0, origin: "group student".into() }),
            memory: c(32 << 30),
            swap: c(32 << 30),
            pids: Some(Cap { value: 4096, origin: "group student".into() }),
            ..ContainerCaps::default()
        }
    }

    fn scan(line: &str) -> Invocation {
        let a: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        crate::argv::scan(&a)
    }

    #[test]
    fn stdin_and_flags_are_read_as_runc_reads_them_and_held_to_the_caps() {
        let body = br#"{"memory":{"limit":107374182400,"swap":107374182400},"pids":{"limit":-1}} trailing"#;
        let (r, piped) = requested(&scan("update --resources=- id"), &mut &body[..]).unwrap();
        assert_eq!(piped.as_deref(), Some(&body[..]), "runc gets the same bytes");
        let e = judge(&r, &caps()).unwrap_err();
        assert_eq!(e.to_string(), "update: memory 100g exceeds 32g per container, group student");
        let (r, _) = requested(&scan("update --memory 100g --pids-limit -1 id"), &mut &b""[..]).unwrap();
        assert!(judge(&r, &caps()).unwrap_err().to_string().contains("memory 100g exceeds 32g"));
        let (r, _) = requested(&scan("update --pids-limit -1 id"), &mut &b""[..]).unwrap();
        assert_eq!(
            judge(&r, &caps()).unwrap_err().to_string(),
            "update: pids unlimited exceeds 4096 per container, group student"
        );
        let (r, _) =
            requested(&scan("update --cpu-quota 800000 --cpu-period 100000 id"), &mut &b""[..]).unwrap();
        assert!(judge(&r, &caps()).unwrap_err().to_string().contains("cpus 8 exceeds 4"));
        let (r, _) =
            requested(&scan("update --memory 16g --pids-limit 100 --cpu-quota 200000 id"), &mut &b""[..])
                .unwrap();
        assert!(judge(&r, &caps()).is_ok(), "within the caps");
        let within = br#"{"memory":{"limit":0},"pids":{"limit":0},"cpu":{"shares":512}}"#;
        let (r, _) = requested(&scan("update -r - id"), &mut &within[..]).unwrap();
        assert!(judge(&r, &caps()).is_ok(), "0 leaves a value unchanged");
        let unified = br#"{"unified":{"memory.max":"max"}}"#;
        let (r, _) = requested(&scan("update -r - id"), &mut &unified[..]).unwrap();
        assert!(judge(&r, &caps()).unwrap_err().to_string().contains("unified"));
        assert!(requested(&scan("update -r - id"), &mut &b"{nope"[..]).is_err());
        let (r, _) = requested(&scan("update --cpu-period 1000 id"), &mut &b""[..]).unwrap();
        assert!(judge(&r, &caps()).unwrap_err().to_string().contains("a CPU period without a CPU quota"));
    }
}
