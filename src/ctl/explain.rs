//! `ds01ctl explain`: runs the create pipeline on a bundle without writing anything and shows
//! what the runtime would change, as a diff, with the reason for each change, or the refusal.

use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

use crate::create::host::{DryRun, System};
use crate::create::{self, Call};
use crate::error::{Error, Result};
use crate::gpu::nvml::InProcess;
use crate::policy::settings::Settings;

/// The container id an engine put in the spec's cgroupsPath (`/docker/<id>`,
/// `/libpod_parent/libpod-<id>`, `slice:prefix:<id>`).
pub fn guess_id(spec: &Value) -> Option<String> {
    let p = crate::spec::get_str(spec, &["linux", "cgroupsPath"])?;
    let last = p.rsplit(['/', ':']).next()?;
    let id = last.trim_end_matches(".scope").trim_start_matches("libpod-").trim_start_matches("docker-");
    (!id.is_empty()).then(|| id.to_owned())
}

/// Explains what a create of `path` (a bundle directory or a config.json) would do; `user`
/// plays the owner (as a `ds01.user` annotation), `id` the container id (default: the one in
/// the spec's cgroupsPath). It is the create pipeline on a dry-run host: the host is read,
/// GPUs are decided on a copy of the allocation state, nothing is written.
pub fn explain(settings: &Settings, path: &Path, user: Option<&str>, id: Option<&str>) -> Result<String> {
    let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", file.display())))?;
    let spec: Value = serde_json::from_str(&text)
        .map_err(|e| Error::failed(format!("malformed {}: {e}", file.display())))?;
    let guessed = guess_id(&spec);
    let id = id.or(guessed.as_deref()).unwrap_or("explain");
    let host =
        DryRun { system: System { nvml: &InProcess }, config: file.clone(), user: user.map(str::to_owned) };
    let call = Call {
        id: id.to_owned(),
        bundle: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        runc_root: String::new(),
        systemd_cgroup: false,
        restore: None,
        pid: 0,
    };
    let mut out = String::new();
    let _ =
        writeln!(out, "explain {}{}", file.display(), user.map(|u| format!(" as {u}")).unwrap_or_default());
    match create::plan(&host, &call, settings) {
        Err(e) => {
            let verb = if e.kind == crate::error::Kind::Refused { "refuse" } else { "fail" };
            let _ = writeln!(out, "the runtime would {verb} this container:\n  {e}");
        }
        Ok(plan) => {
            let o = &plan.owner;
            let _ = writeln!(
                out,
                "owner {} (group {}, from {}), slice {}",
                o.user.as_deref().unwrap_or("none"),
                o.group.as_deref().unwrap_or("none"),
                o.source_name(),
                o.placement.leaf()
            );
            if !plan.request_source.starts_with("none") {
                let _ = writeln!(
                    out,
                    "GPUs asked for by {}: {}",
                    plan.request_source,
                    if plan.gpus.is_empty() { "none".into() } else { plan.gpus.join(", ") }
                );
            }
            let _ = writeln!(out, "\nchanges and why:");
            for n in &plan.notes {
                let _ = writeln!(out, "  {:<28} {}", n.path, n.why);
            }
            let mut before = spec.clone();
            if let Some(u) = user {
                crate::spec::object_mut(&mut before, &["annotations"])?
                    .insert(crate::owner::identity::USER_KEY.into(), Value::String(u.into()));
            }
            let before = serde_json::to_string_pretty(&before).unwrap_or_default() + "\n";
            let after = serde_json::to_string_pretty(&plan.spec).unwrap_or_default() + "\n";
            let _ = writeln!(out, "\ndiff:");
            out.push_str(
                &similar::TextDiff::from_lines(&before, &after)
                    .unified_diff()
                    .context_radius(2)
                    .header("config.json", "config.json (as runc would get it)")
                    .to_string(),
            );
        }
    }
    Ok(out)
}
