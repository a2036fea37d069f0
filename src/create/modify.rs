//! Phase 3, modify: the pure modifiers over the gathered document, in place, with the grant of
//! the units the reservation decided.

use super::gather::Gathered;
use super::grant::grant;
use super::modifiers::{self, Context, Note};
use super::Call;
use crate::error::Result;
use crate::gpu::alloc::Unit;
use crate::policy::settings::Settings;

/// Runs the modifiers over `g.spec`; gives what changed and why.
pub fn modify(g: &mut Gathered, call: &Call, s: &Settings, units: &[Unit]) -> Result<Vec<Note>> {
    let gpus = grant(&g.gpu_host, &g.inventory, units, g.chained)?;
    let ctx = Context {
        container_id: &call.id,
        owner: &g.owner,
        systemd_cgroup: call.systemd_cgroup,
        scope_prefix: &g.scope_prefix,
        gpus: &gpus,
        guard: &g.guard,
        limits: &g.limits,
        engine: &g.engine,
        settings_file: s.named_file.as_deref(),
        build: g.build,
    };
    modifiers::apply_all(&modifiers::pipeline(), &mut g.spec, &ctx)
}
