//! What GPUs a container asks for, from (first found wins): the annotation or label
//! `ds01.gpus`, Docker's `--gpus` (DeviceRequests), `DS01_GPUS` in the env, and
//! `NVIDIA_VISIBLE_DEVICES` in the env when the settings make it a request.

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Refusal, Result};
use crate::spec;

/// Key of the annotation and label.
pub const GPUS_KEY: &str = crate::spec::annotations::Key::Gpus.as_str();

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// No GPU.
    None,
    /// This many GPUs or MIG instances, whichever the policy allows.
    Count(u32),
    /// Every GPU.
    All,
    /// These: indices, `GPU-…` or `MIG-…` UUIDs, or `<gpu>:<mig>` positions.
    Devices(Vec<String>),
}

impl Request {
    /// Parses `2`, `all`, `0,1`, `GPU-…`, `MIG-…`, `none`; `count_like` makes a list of indices
    /// 0..N-1 a count (how Docker spells `--gpus N`).
    pub fn parse(text: &str, count_like: bool) -> Result<Request> {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("void") {
            return Ok(Request::None);
        }
        if t.eq_ignore_ascii_case("all") {
            return Ok(Request::All);
        }
        // `device=1,3` (Docker's spelling) always names devices, never a count.
        if let Some(ids) = t.strip_prefix("device=").or_else(|| t.strip_prefix("devices=")) {
            return Request::devices(ids.trim_matches('"').split(','), text);
        }
        if let Ok(n) = t.parse::<u32>() {
            if n == 0 && !count_like {
                return Err(Refusal::GpuRequest {
                    text: text.to_owned(),
                    why: "is ambiguous: write \"none\" for no GPU, or \"device=0\" for GPU 0",
                }
                .into());
            }
            return Ok(if n == 0 { Request::None } else { Request::Count(n) });
        }
        let ids: Vec<String> = t.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        for id in &ids {
            let ok = id.bytes().all(|b| b.is_ascii_digit() || b == b':')
                || id.starts_with("GPU-")
                || id.starts_with("MIG-");
            if !ok {
                return Err(Refusal::GpuRequest {
                    text: text.to_owned(),
                    why: "is not understood (a count, \"all\", indices, GPU-/MIG- UUIDs)",
                }
                .into());
            }
        }
        if count_like && ids.iter().enumerate().all(|(i, id)| id.parse::<usize>().ok() == Some(i)) {
            return Ok(Request::Count(ids.len() as u32));
        }
        Ok(Request::Devices(ids))
    }

    /// Exactly these devices (indices, UUIDs, `<gpu>:<mig>`), never read as a count; `text` is
    /// the request as written, for the refusal.
    pub fn devices<'a>(ids: impl IntoIterator<Item = &'a str>, text: &str) -> Result<Request> {
        let ids: Vec<String> =
            ids.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
        let bad = |id: &String| {
            !(id.bytes().all(|b| b.is_ascii_digit() || b == b':')
                && !id.starts_with(':')
                && !id.ends_with(':')
                || id.starts_with("GPU-")
                || id.starts_with("MIG-"))
        };
        if ids.is_empty() || ids.iter().any(bad) {
            return Err(Refusal::GpuRequest {
                text: text.to_owned(),
                why: "is not understood (device ids are indices, GPU-/MIG- UUIDs or <gpu>:<mig>)",
            }
            .into());
        }
        Ok(Request::Devices(ids))
    }
}

/// One `--gpus` request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct DeviceRequest {
    /// Driver name ("" or "nvidia").
    pub driver: String,
    /// Count (-1 = all).
    pub count: i64,
    /// Explicit device ids (indices or UUIDs).
    #[serde(rename = "DeviceIDs")]
    pub device_ids: Option<Vec<String>>,
    /// Capabilities, e.g. [["gpu"]].
    pub capabilities: Option<Vec<Vec<String>>>,
}

/// Finds the container's request and where it came from.
///
/// The sources, first that speaks wins: the `ds01.gpus` annotation, the engine's `ds01.gpus`
/// label (`labels`), the engine's device requests (Docker's `--gpus`), `DS01_GPUS` in the
/// env, and `NVIDIA_VISIBLE_DEVICES` when `env_is_request`. A new source is one more step here.
pub fn find(
    spec: &Value,
    labels: Option<&serde_json::Map<String, Value>>,
    device_requests: &[DeviceRequest],
    env_is_request: bool,
) -> Result<(Request, &'static str)> {
    if let Some(v) = spec::annotation(spec, GPUS_KEY) {
        return Ok((Request::parse(v, false)?, "annotation"));
    }
    if let Some(v) = labels.and_then(|l| l.get(GPUS_KEY)).and_then(Value::as_str) {
        return Ok((Request::parse(v, false)?, "label"));
    }
    {
        for r in device_requests {
            let gpu = r.driver == "nvidia"
                || r.capabilities.iter().flatten().any(|caps| caps.iter().any(|c| c == "gpu"));
            if !gpu {
                continue;
            }
            let ids = r.device_ids.clone().unwrap_or_default();
            let req = if !ids.is_empty() {
                // --gpus '"device=1"': exactly GPU 1, never a count of one.
                Request::devices(ids.iter().map(String::as_str), &format!("device={}", ids.join(",")))?
            } else if r.count < 0 {
                Request::All
            } else if r.count == 0 {
                Request::None
            } else {
                Request::Count(r.count as u32)
            };
            return Ok((req, "docker --gpus"));
        }
    }
    if let Some(v) = spec::env_var(spec, "DS01_GPUS") {
        return Ok((Request::parse(v, false)?, "env DS01_GPUS"));
    }
    if env_is_request {
        if let Some(v) = spec::env_var(spec, "NVIDIA_VISIBLE_DEVICES") {
            return Ok((Request::parse(v, true)?, "env NVIDIA_VISIBLE_DEVICES"));
        }
    }
    Ok((Request::None, "none"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_form() {
        assert_eq!(Request::parse("2", false).unwrap(), Request::Count(2));
        assert_eq!(Request::parse("all", false).unwrap(), Request::All);
        assert!(
            Request::parse("0", false).unwrap_err().to_string().contains("ambiguous"),
            "never silently none"
        );
        assert_eq!(Request::parse("device=0", false).unwrap(), Request::Devices(vec!["0".into()]));
        assert_eq!(Request::parse("device=1", false).unwrap(), Request::Devices(vec!["1".into()]));
        assert_eq!(Request::parse("0", true).unwrap(), Request::None);
        assert!(Request::parse("device=", false).is_err());
        assert_eq!(Request::parse("void", false).unwrap(), Request::None);
        assert_eq!(Request::parse("1,3", false).unwrap(), Request::Devices(vec!["1".into(), "3".into()]));
        assert_eq!(Request::parse("0,1", true).unwrap(), Request::Count(2));
        assert_eq!(Request::parse("1,3", true).unwrap(), Request::Devices(vec!["1".into(), "3".into()]));
        assert_eq!(
            Request::parse("GPU-abc, MIG-def", false).unwrap(),
            Request::Devices(vec!["GPU-abc".into(), "MIG-def".into()])
        );
        assert!(Request::parse("lots", false).unwrap_err().to_string().contains("not understood"));
    }

    #[test]
    fn sources_in_order_and_image_env_is_not_a_request() {
        let spec = json!({"process": {"env": ["NVIDIA_VISIBLE_DEVICES=all"]}});
        assert_eq!(find(&spec, None, &[], false).unwrap(), (Request::None, "none"));
        assert_eq!(find(&spec, None, &[], true).unwrap(), (Request::All, "env NVIDIA_VISIBLE_DEVICES"));
        let spec = json!({"process": {"env": ["NVIDIA_VISIBLE_DEVICES=0,1", "DS01_GPUS=1"]}});
        assert_eq!(find(&spec, None, &[], true).unwrap(), (Request::Count(1), "env DS01_GPUS"));
        let mut reqs = vec![DeviceRequest {
            count: 2,
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }];
        let mut labels = serde_json::Map::new();
        assert_eq!(find(&spec, Some(&labels), &reqs, false).unwrap(), (Request::Count(2), "docker --gpus"));
        reqs[0].count = -1;
        assert_eq!(find(&spec, Some(&labels), &reqs, false).unwrap().0, Request::All);
        reqs[0].device_ids = Some(vec!["1".into()]);
        assert_eq!(
            find(&spec, Some(&labels), &reqs, false).unwrap().0,
            Request::Devices(vec!["1".into()]),
            "not a count"
        );
        reqs[0].device_ids = Some(vec!["0".into()]);
        assert_eq!(
            find(&spec, Some(&labels), &reqs, false).unwrap().0,
            Request::Devices(vec!["0".into()]),
            "not none"
        );
        reqs[0].device_ids = Some(vec!["GPU-x".into()]);
        assert_eq!(
            find(&spec, Some(&labels), &reqs, false).unwrap().0,
            Request::Devices(vec!["GPU-x".into()])
        );
        labels.insert(GPUS_KEY.into(), json!("3"));
        assert_eq!(find(&spec, Some(&labels), &reqs, false).unwrap(), (Request::Count(3), "label"));
        let spec = json!({"annotations": {"ds01.gpus": "all"}});
        assert_eq!(find(&spec, Some(&labels), &reqs, false).unwrap(), (Request::All, "annotation"));
    }
}
