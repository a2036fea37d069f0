//! Per-container caps from the policy: CPUs, memory, memory+swap, /dev/shm size, pids. A
//! container that asks for nothing gets the cap; one that asks for less keeps its own value;
//! one that asks for more is refused with the limit and where it comes from.

use serde_json::{json, Value};

use super::{Context, Note, SpecModifier};
use crate::error::{Error, Refusal, Result};
use crate::owner::engine::DOCKER_DEFAULT_SHM;
use crate::policy::caps::Cap;
use crate::policy::values::human;
use crate::spec;

/// CFS period used when the spec names none (runc's and Docker's default).
const DEFAULT_PERIOD: u64 = 100_000;
/// Applies [`ContainerCaps`].
pub struct Limits;

fn refuse(what: &'static str, asked: String, cap: String, origin: &str) -> Error {
    Refusal::OverCap { update: false, what, asked, cap, origin: origin.to_owned() }.into()
}

fn positive(v: Option<&Value>) -> Option<u64> {
    v.and_then(Value::as_i64).filter(|n| *n > 0).map(|n| n as u64)
}

impl SpecModifier for Limits {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn apply(&self, spec: &mut Value, ctx: &Context) -> Result<Vec<Note>> {
        if ctx.owner.placement.is_engine_cgroup() {
            // The kubelet's pod cgroup carries the pod's own requests and limits.
            return Ok(Vec::new());
        }
        let c = ctx.limits;
        let mut notes = Vec::new();
        let mut set = |spec: &mut Value, path: &[&str], key: &str, v: Value, why: String| -> Result<()> {
            spec::object_mut(spec, path)?.insert(key.to_owned(), v);
            notes.push(Note { path: format!("{}.{key}", path.join(".")), why });
            Ok(())
        };
        // Memory first: swap is bounded below by it.
        let mut memory = positive(spec::get(spec, &["linux", "resources", "memory", "limit"]));
        if let Some(cap) = &c.memory {
            match memory {
                Some(m) if m > cap.value => {
                    return Err(refuse("memory", human(m), human(cap.value), &cap.origin))
                }
                Some(_) => {}
                None => {
                    set(
                        spec,
                        &["linux", "resources", "memory"],
                        "limit",
                        json!(cap.value),
                        format!("memory cap {} ({})", human(cap.value), cap.origin),
                    )?;
                    memory = Some(cap.value);
                }
            }
        }
        if let Some(cap) = &c.swap {
            let floor = memory.unwrap_or(0).max(cap.value);
            match positive(spec::get(spec, &["linux", "resources", "memory", "swap"])) {
                Some(s) if s > cap.value && c.swap_explicit => {
                    return Err(refuse("memory+swap", human(s), human(cap.value), &cap.origin));
                }
                Some(s) if s > cap.value => {
                    set(
                        spec,
                        &["linux", "resources", "memory"],
                        "swap",
                        json!(floor),
                        format!("memory+swap lowered to {} ({})", human(floor), cap.origin),
                    )?;
                }
                Some(_) => {}
                None => {
                    set(
                        spec,
                        &["linux", "resources", "memory"],
                        "swap",
                        json!(floor),
                        format!("memory+swap cap {} ({})", human(floor), cap.origin),
                    )?;
                }
            }
        }
        if let Some(cap) = &c.cpus {
            let cpu = spec::get(spec, &["linux", "resources", "cpu"]);
            let period = positive(cpu.and_then(|c| c.get("period"))).unwrap_or(DEFAULT_PERIOD);
            match positive(cpu.and_then(|c| c.get("quota"))) {
                Some(q) if q as f64 / period as f64 > cap.value + 1e-9 => {
                    return Err(refuse(
                        "cpus",
                        format!("{}", q as f64 / period as f64),
                        format!("{}", cap.value),
                        &cap.origin,
                    ));
                }
                Some(_) => {}
                None => {
                    let quota = (cap.value * period as f64).round() as i64;
                    set(
                        spec,
                        &["linux", "resources", "cpu"],
                        "quota",
                        json!(quota),
                        format!("{} CPUs ({})", cap.value, cap.origin),
                    )?;
                    set(spec, &["linux", "resources", "cpu"], "period", json!(period), "CFS period".into())?;
                }
            }
        }
        if let Some(cap) = &c.pids {
            match spec::get(spec, &["linux", "resources", "pids", "limit"])
                .and_then(Value::as_i64)
                .filter(|n| *n > 0)
            {
                Some(p) if p > cap.value => {
                    return Err(refuse("pids", p.to_string(), cap.value.to_string(), &cap.origin))
                }
                Some(_) => {}
                None => set(
                    spec,
                    &["linux", "resources", "pids"],
                    "limit",
                    json!(cap.value),
                    format!("pids cap {} ({})", cap.value, cap.origin),
                )?,
            }
        }
        if let Some(cap) = &c.shm {
            if let Some(note) = shm(spec, cap, c.shm_is_engine_default)? {
                notes.push(note);
            }
        }
        Ok(notes)
    }
}

/// Bytes of a tmpfs `size=` option (`65536k`, `67108864`, `1g`).
fn size_option(opt: &str) -> Option<u64> {
    crate::policy::Size::parse(opt.strip_prefix("size=")?).map(|s| s.bytes)
}

/// Sizes a tmpfs /dev/shm: the cap when it names no size (or the engine's default), refused
/// above it. A /dev/shm bind-mounted from the engine keeps the engine's size.
fn shm(spec: &mut Value, cap: &Cap<u64>, engine_default: bool) -> Result<Option<Note>> {
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else { return Ok(None) };
    let Some(m) =
        mounts.iter_mut().find(|m| m.get("destination").and_then(Value::as_str) == Some("/dev/shm"))
    else {
        return Ok(None);
    };
    if m.get("type").and_then(Value::as_str) != Some("tmpfs") {
        return Ok(None);
    }
    let Some(opts) = m.get_mut("options").and_then(Value::as_array_mut) else { return Ok(None) };
    let pos = opts.iter().position(|o| o.as_str().is_some_and(|s| s.starts_with("size=")));
    let asked = pos.and_then(|i| opts[i].as_str().and_then(size_option));
    match asked {
        Some(a) if engine_default && a == DOCKER_DEFAULT_SHM => {}
        Some(a) if a > cap.value => return Err(refuse("shm size", human(a), human(cap.value), &cap.origin)),
        Some(_) => return Ok(None),
        None => {}
    }
    let opt = Value::String(format!("size={}", cap.value));
    match pos {
        Some(i) => opts[i] = opt,
        None => opts.push(opt),
    }
    Ok(Some(Note {
        path: "mounts[/dev/shm].options".into(),
        why: format!("/dev/shm size {} ({})", human(cap.value), cap.origin),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::modifiers::fixtures;
    use crate::create::modifiers::TestParts;
    use crate::naming::Placement;
    use crate::owner::identity::Owner;
    use crate::policy::caps::ContainerCaps;

    fn caps() -> ContainerCaps {
        let o = |s: &str| s.to_owned();
        ContainerCaps {
            cpus: Some(Cap { value: 32.0, origin: o("defaults") }),
            memory: Some(Cap { value: 32 << 30, origin: o("group student") }),
            swap: Some(Cap { value: 32 << 30, origin: o("group student") }),
            shm: Some(Cap { value: 16 << 30, origin: o("defaults") }),
            pids: Some(Cap { value: 4096, origin: o("defaults") }),
            shm_is_engine_default: true,
            swap_explicit: false,
        }
    }

    fn run(spec: &mut Value, c: &ContainerCaps) -> Result<Vec<Note>> {
        let owner = Owner { user: None, group: None, source: None, placement: Placement::unattributed() };
        let t = TestParts { owner, limits: c.clone(), ..TestParts::new() };
        Limits.apply(spec, &t.ctx())
    }

    #[test]
    fn smaller_requests_are_kept_and_missing_ones_capped() {
        // Docker's -m 256m --pids-limit 100: kept; swap 512m kept; CPUs and shm get the caps.
        let mut spec = fixtures::docker();
        run(&mut spec, &caps()).unwrap();
        let r = &spec["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], 268435456);
        assert_eq!(r["memory"]["swap"], 536870912);
        assert_eq!(r["pids"]["limit"], 100);
        assert_eq!(r["cpu"]["quota"], 3_200_000);
        assert_eq!(r["cpu"]["period"], 100_000);
        let shm = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/dev/shm").unwrap();
        assert!(shm["options"].as_array().unwrap().iter().any(|o| o == &format!("size={}", 16u64 << 30)));
        // runc spec: nothing asked, everything capped; its own shm size (64m) is kept.
        let mut spec = fixtures::runc();
        let mut c = caps();
        c.shm_is_engine_default = false;
        run(&mut spec, &c).unwrap();
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 32u64 << 30);
        assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 4096);
        let shm = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/dev/shm").unwrap();
        assert!(shm["options"].as_array().unwrap().iter().any(|o| o == "size=65536k"));
    }

    #[test]
    fn larger_requests_are_refused_naming_limit_and_origin() {
        let mut spec = fixtures::docker();
        spec["linux"]["resources"]["memory"]["limit"] = json!(100u64 << 30);
        let e = run(&mut spec, &caps()).unwrap_err();
        assert_eq!(e.to_string(), "memory 100g exceeds 32g per container, group student");
        let mut spec = fixtures::docker();
        spec["linux"]["resources"]["cpu"] = json!({"quota": 6_400_000, "period": 100_000});
        assert_eq!(
            run(&mut spec, &caps()).unwrap_err().to_string(),
            "cpus 64 exceeds 32 per container, defaults"
        );
        let mut spec = fixtures::docker();
        spec["linux"]["resources"]["pids"]["limit"] = json!(100_000);
        assert_eq!(
            run(&mut spec, &caps()).unwrap_err().to_string(),
            "pids 100000 exceeds 4096 per container, defaults"
        );
        let mut spec = fixtures::runc();
        let mut c = caps();
        c.shm = Some(Cap { value: 32 << 20, origin: "group student".into() });
        c.shm_is_engine_default = false;
        assert_eq!(
            run(&mut spec, &c).unwrap_err().to_string(),
            "shm size 64m exceeds 32m per container, group student"
        );
    }

    #[test]
    fn derived_swap_is_lowered_explicit_swap_refused() {
        let mut spec = fixtures::docker();
        spec["linux"]["resources"]["memory"] = json!({"limit": 20u64 << 30, "swap": 40u64 << 30});
        run(&mut spec, &caps()).unwrap();
        assert_eq!(spec["linux"]["resources"]["memory"]["swap"], 32u64 << 30);
        let mut spec = fixtures::docker();
        spec["linux"]["resources"]["memory"] = json!({"limit": 20u64 << 30, "swap": 40u64 << 30});
        let mut c = caps();
        c.swap_explicit = true;
        assert_eq!(
            run(&mut spec, &c).unwrap_err().to_string(),
            "memory+swap 40g exceeds 32g per container, group student"
        );
    }

    #[test]
    fn no_caps_no_change() {
        let mut spec = fixtures::docker();
        assert!(run(&mut spec, &ContainerCaps::default()).unwrap().is_empty());
        assert_eq!(spec, fixtures::docker());
    }
}
