//! `ds01ctl explain`: runs the create pipeline on a bundle without writing anything and shows
//! what the runtime would change, as a diff, with the reason for each change, or the refusal.

use std::fmt::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::create::{self, CreateInput};
use crate::error::{Error, Result};
use crate::gpu::alloc::{self, Pool, Who};
use crate::gpu::nvml::InProcess;
use crate::gpu::request::Request;
use crate::gpu::store::Store;
use crate::gpu::{inventory, Gpu};
use crate::owner::identity::USER_KEY;
use crate::policy::settings::Settings;
use crate::policy::Policy;

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
/// the spec's cgroupsPath).
pub fn explain(
    settings: &Settings,
    policy: &Policy,
    path: &Path,
    user: Option<&str>,
    id: Option<&str>,
) -> Result<String> {
    let file = if path.is_dir() { path.join("config.json") } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::failed(format!("cannot read {}: {e}", file.display())))?;
    let mut spec: Value = serde_json::from_str(&text)
        .map_err(|e| Error::failed(format!("malformed {}: {e}", file.display())))?;
    let guessed = guess_id(&spec);
    let id = id.or(guessed.as_deref()).unwrap_or("explain");
    if let Some(u) = user {
        crate::spec::object_mut(&mut spec, &["annotations"])?
            .insert(USER_KEY.into(), Value::String(u.into()));
    }
    let docker = crate::owner::docker::load(&settings.docker_root, id)?;
    let input = CreateInput {
        settings,
        policy,
        original: &spec,
        bundle_dir: file.parent().unwrap_or(Path::new(".")),
        container_id: id,
        systemd_cgroup: false,
        docker: docker.as_ref(),
    };
    let (req, source) = create::gpu_request(&spec, docker.as_ref(), settings)?;
    let inv: Vec<Gpu> = if req == Request::None {
        Vec::new()
    } else {
        inventory::load(&settings.gpu, &settings.state_dir, &InProcess)?
    };
    // GPUs are decided against a copy of the current state: nothing is written.
    let mut state = Store::new(&settings.state_dir).peek()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let pool = Pool { inv: &inv, exclusive: settings.gpu.exclusive };
    let mut allocate = |owner: &crate::owner::identity::Owner, r: &Request, q: &alloc::Quota| {
        let who = Who {
            container: id.into(),
            name: None,
            owner: owner.user.clone().unwrap_or_default(),
            group: owner.group.clone().unwrap_or_default(),
            pid: 0,
            runc_root: String::new(),
            docker: false,
        };
        alloc::decide(&mut state, pool, r, &who, q, now)
    };
    let mut out = String::new();
    let _ =
        writeln!(out, "explain {}{}", file.display(), user.map(|u| format!(" as {u}")).unwrap_or_default());
    match create::plan(&input, &[], &inv, &mut allocate) {
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
            if req != Request::None {
                let _ = writeln!(
                    out,
                    "GPUs asked for by {source}: {}",
                    if plan.gpus.is_empty() { "none".into() } else { plan.gpus.join(", ") }
                );
            }
            let _ = writeln!(out, "\nchanges and why:");
            for n in &plan.notes {
                let _ = writeln!(out, "  {:<28} {}", n.path, n.why);
            }
            let before = serde_json::to_string_pretty(&spec).unwrap_or_default() + "\n";
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
