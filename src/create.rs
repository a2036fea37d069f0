//! The create pipeline: load bundle, resolve owner, run the modifiers, write atomically; the
//! caller then execs the low-level runtime.

use std::ffi::OsStr;
use std::path::PathBuf;

use serde_json::Value;

use crate::argv::Invocation;
use crate::bundle::Bundle;
use crate::docker::{self, DockerMeta};
use crate::error::{Error, Result};
use crate::identity::{self, Clues, Owner};
use crate::modifiers::{self, Context, Note};
use crate::policy::Policy;
use crate::settings::Settings;
use crate::users;

/// The outcome of running the pipeline over a spec, before anything is written.
#[derive(Debug)]
pub struct Plan {
    /// The patched document.
    pub spec: Value,
    /// Whose container it is.
    pub owner: Owner,
    /// What changed and why.
    pub notes: Vec<Note>,
}

/// Runs identity resolution and every modifier over a copy of `original`; writes nothing.
pub fn plan(
    settings: &Settings,
    policy: &Policy,
    original: &Value,
    container_id: &str,
    systemd_cgroup: bool,
    docker: Option<&DockerMeta>,
) -> Result<Plan> {
    let clues = Clues { spec: original, engine: docker.map(|d| &d.engine) };
    let owner = identity::resolve(&settings.identity, policy, &clues, &users::to_login)?;
    let ctx = Context { container_id, owner: &owner, systemd_cgroup, scope_prefix: &settings.scope_prefix };
    let mut spec = original.clone();
    let notes = modifiers::apply_all(&modifiers::pipeline(), &mut spec, &ctx)?;
    Ok(Plan { spec, owner, notes })
}

/// The bundle directory of a create: `--bundle`, else the current directory.
pub fn bundle_dir(inv: &Invocation) -> PathBuf {
    inv.bundle.as_deref().filter(|b| !b.is_empty()).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."))
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

/// Everything `create` does before exec: returns the low-level runtime to exec.
pub fn prepare(inv: &Invocation, settings: &Settings) -> Result<PathBuf> {
    let runtime = crate::exec::resolve_runtime(
        OsStr::new(&settings.low_level_runtime),
        std::env::var_os("PATH").as_deref(),
    )?;
    let id = inv
        .container_id
        .as_deref()
        .and_then(OsStr::to_str)
        .ok_or_else(|| Error::failed("container id is not valid UTF-8"))?;
    let bundle = Bundle::load(&bundle_dir(inv))?;
    let policy = Policy::load(&settings.policy)?;
    let meta = docker::load(&settings.docker_root, id)?;
    let plan = plan(settings, &policy, &bundle.spec, id, inv.systemd_cgroup, meta.as_ref())?;
    if plan.spec != bundle.spec {
        bundle.write(&plan.spec)?;
    }
    // SAFETY-free in edition 2021; the process is single-threaded and execs next.
    std::env::set_var(DONE_ENV, id);
    Ok(runtime)
}
