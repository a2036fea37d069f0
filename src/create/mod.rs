//! The create pipeline, in explicit phases over one document:
//!
//! 1. [`gather`]: everything from the host, before any lock (bundle, policy, engine, owner, GPU
//!    request, caps, guard input, inventory, device nodes, CDI);
//! 2. [`reserve`]: under the allocation lock, only when GPUs or a container cap are involved:
//!    reconcile, decide, reserve;
//! 3. [`modify`]: the pure [`modifiers`] over the document, in place;
//! 4. [`commit`]: audit, slice, bundle, or undo the reservation.
//!
//! The host is a trait ([`host::Host`]): [`prepare`] runs on the machine, [`plan`] runs the
//! same phases without committing (`ds01ctl explain` with a dry-run host, tests in memory).

pub mod bundle;
pub mod commit;
pub mod gather;
pub mod grant;
pub mod guard_input;
pub mod host;
pub mod modifiers;
pub mod modify;
pub mod opaque;
pub mod reserve;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

use crate::argv::Invocation;
use crate::audit::{Event, Kind as AuditKind};
use crate::error::{Error, Result};
use crate::gpu::nvml::Querier;
use crate::owner::identity::Owner;
use crate::policy::settings::Settings;
use host::Host;
use modifiers::Note;

/// The create call as runc's argv gives it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The container id.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// runc's state root (`--root`).
    pub runc_root: String,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// For a `restore`: what it brings.
    pub restore: Option<Restore>,
    /// This process: the reservation's holder until runc knows the container.
    pub pid: u32,
}

/// What a `restore` brings that a non-admin may not choose.
#[derive(Debug, Clone)]
pub struct Restore {
    /// `--lsm-profile` or `--lsm-mount-context`, when given.
    pub lsm_flag: Option<&'static str>,
    /// The CRIU image (`--image-path`, default `checkpoint`).
    pub image: PathBuf,
}

impl Call {
    /// Reads the call from the scan of runc's argv; `restore` for runc's `restore`.
    pub fn of(inv: &Invocation, restore: bool) -> Result<Call> {
        let id = inv
            .container_id
            .as_deref()
            .and_then(OsStr::to_str)
            .ok_or_else(|| Error::failed("container id is not valid UTF-8"))?;
        Ok(Call {
            id: id.to_owned(),
            bundle: bundle_dir(inv),
            runc_root: runc_root(inv),
            systemd_cgroup: inv.systemd_cgroup,
            restore: restore.then(|| Restore {
                lsm_flag: ["lsm-profile", "lsm-mount-context"].into_iter().find(|f| inv.flag(&[f]).is_some()),
                image: inv
                    .flag(&["image-path"])
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("checkpoint")),
            }),
            pid: std::process::id(),
        })
    }
}

/// Everything `create` does before exec: returns the low-level runtime to exec. `ev` is the
/// audit event, filled in as far as the create got (the caller records it on failure); `nvml`
/// is asked for the inventory when its cache is stale.
pub fn prepare(inv: &Invocation, settings: &Settings, ev: &mut Event, nvml: &dyn Querier) -> Result<PathBuf> {
    let call = Call::of(inv, ev.event == AuditKind::Restore.as_str())?;
    ev.container = Some(call.id.clone());
    let runtime = crate::host::exec::resolve_runtime(
        OsStr::new(&settings.low_level_runtime),
        std::env::var_os("PATH").as_deref(),
    )?;
    run(&host::System { nvml }, &call, settings, ev)?;
    // Edition 2021: set_var is safe; the process is single-threaded and execs next.
    std::env::set_var(DONE_ENV, &call.id);
    Ok(runtime)
}

/// The four phases of a create on `host`; any failure after the reservation puts it back.
pub fn run(host: &dyn Host, call: &Call, s: &Settings, ev: &mut Event) -> Result<()> {
    let mut g = gather::gather(host, call, s, ev)?;
    let r = reserve::reserve(host, &g, call, s, ev)?;
    let committed =
        modify::modify(&mut g, call, s, &r.units).and_then(|_| commit::commit(host, &g, call, s, ev, &r));
    if let Err(e) = committed {
        return Err(match reserve::undo(host, r, call, s) {
            Ok(()) => e,
            Err(u) => e.context(format_args!("and the GPU reservation could not be undone ({u})")),
        });
    }
    // The documents are not freed: the process execs runc next, and walking them to free every
    // node was a fifth of a create's instructions.
    std::mem::forget(g);
    Ok(())
}

/// What a create would do, without committing anything.
#[derive(Debug)]
pub struct Plan {
    /// The patched document, whole (the carried parts back in place).
    pub spec: Value,
    /// Whose container it is.
    pub owner: Owner,
    /// What changed and why.
    pub notes: Vec<Note>,
    /// UUIDs of the GPUs granted.
    pub gpus: Vec<String>,
    /// Who asked for GPUs (`none` when nobody).
    pub request_source: &'static str,
}

/// Runs phases 1 to 3 on `host` (a dry run or memory: the reservation is decided on its copy
/// of the state) and gives the result.
pub fn plan(host: &dyn Host, call: &Call, s: &Settings) -> Result<Plan> {
    let mut ev = Event::new(AuditKind::Create, SystemTime::now(), "allowed");
    let mut g = gather::gather(host, call, s, &mut ev)?;
    let r = reserve::reserve(host, &g, call, s, &mut ev)?;
    let notes = modify::modify(&mut g, call, s, &r.units)?;
    Ok(Plan {
        spec: g.bundle.whole(&g.spec)?,
        owner: g.owner,
        notes,
        gpus: r.units.iter().map(|u| u.uuid.clone()).collect(),
        request_source: g.request_source,
    })
}

/// The bundle directory of a create: `--bundle`, else the current directory.
pub fn bundle_dir(inv: &Invocation) -> PathBuf {
    inv.bundle.as_deref().filter(|b| !b.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
}

/// runc's state root for this call (`--root`, else runc's default).
pub fn runc_root(inv: &Invocation) -> String {
    inv.root.as_deref().map(|r| r.to_string_lossy().into_owned()).unwrap_or_else(|| "/run/runc".into())
}

/// Set in the low-level runtime's environment after a create was patched, so that a chained
/// runtime that calls `runc` (this shim, when interposed) passes the same create straight on.
pub const DONE_ENV: &str = "DS01_RUNTIME_DONE";

/// True when this create was already patched by an outer ds01-runtime in the chain.
pub fn already_done(inv: &Invocation) -> bool {
    match (std::env::var_os(DONE_ENV), inv.container_id.as_deref()) {
        (Some(done), Some(id)) => done == id,
        _ => false,
    }
}
