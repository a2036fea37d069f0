//! Spec modifiers: each is one pure change to config.json (spec plus context in, spec out),
//! composed into the create pipeline in a fixed order.

mod cdi;
mod gpus;
mod guard;
mod labels;
mod limits;
mod slice;

pub use cdi::Cdi;
pub use gpus::{is_nvidia_hook, GpuGrant, Gpus, Granted};
pub use guard::{cap_name, seccomp, Guard, GuardInput, DEFAULT_CAPS};
pub use labels::Labels;
pub use limits::{Cap, ContainerCaps, Limits, DOCKER_DEFAULT_SHM};
pub use slice::SlicePlacement;

use serde_json::Value;

use crate::error::Result;
use crate::owner::identity::Owner;

/// What a modifier may know about the container being created.
pub struct Context<'a> {
    /// The container id from runc's argv.
    pub container_id: &'a str,
    /// The resolved owner and placement.
    pub owner: &'a Owner,
    /// runc was called with `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `docker` in `docker-<id>.scope`.
    pub scope_prefix: &'a str,
    /// GPUs allocated to this container, and the host's NVIDIA device majors.
    pub gpus: &'a GpuGrant,
    /// What the guard checks against.
    pub guard: &'a GuardInput,
    /// Per-container caps from the policy.
    pub limits: &'a ContainerCaps,
    /// The engine's name for the container and its image, when the engine says.
    pub engine: Engine<'a>,
    /// The settings file, when the shim was told it (flag or environment): recorded on the
    /// container for the calls that are not told (Podman's cleanup `delete`).
    pub settings_file: Option<&'a std::path::Path>,
    /// A build container (Docker's classic builder): its own slice, never GPUs.
    pub build: bool,
}

/// What the engine calls the container (Docker's name and image), for the annotations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Engine<'a> {
    /// Container name, without Docker's leading `/`.
    pub name: Option<&'a str>,
    /// Image reference.
    pub image: Option<&'a str>,
}

/// One change a modifier made, and why: shown by `ds01ctl explain` and kept in the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The JSON path changed, e.g. `linux.cgroupsPath`.
    pub path: String,
    /// Why.
    pub why: String,
}

/// A single change to the spec.
pub trait SpecModifier {
    /// Short name, for messages.
    fn name(&self) -> &'static str;
    /// Applies the change to `spec`, or refuses the container.
    fn apply(&self, spec: &mut Value, ctx: &Context) -> Result<Vec<Note>>;
}

/// The create pipeline's modifiers, in order.
pub fn pipeline() -> Vec<Box<dyn SpecModifier>> {
    vec![
        Box::new(SlicePlacement),
        Box::new(Limits),
        Box::new(Gpus),
        Box::new(Guard),
        Box::new(Cdi),
        Box::new(Labels),
    ]
}

/// Runs every modifier over `spec`; stops at the first refusal or failure.
pub fn apply_all(mods: &[Box<dyn SpecModifier>], spec: &mut Value, ctx: &Context) -> Result<Vec<Note>> {
    let mut notes = Vec::new();
    for m in mods {
        notes.extend(m.apply(spec, ctx)?);
    }
    Ok(notes)
}

/// Runs `f` with a context for an unattributed container `c` holding `gpus`, for modifier tests.
#[cfg(test)]
pub(crate) fn with_test_context<T>(gpus: &GpuGrant, f: impl FnOnce(&Context) -> T) -> T {
    let owner = Owner {
        user: Some("a".into()),
        group: Some("g".into()),
        source: None,
        placement: crate::naming::Placement::unattributed(),
    };
    let guard = GuardInput::default();
    let limits = ContainerCaps::default();
    f(&Context {
        container_id: "c",
        owner: &owner,
        systemd_cgroup: false,
        scope_prefix: "docker",
        gpus,
        guard: &guard,
        limits: &limits,
        engine: Engine::default(),
        settings_file: None,
        build: false,
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    use serde_json::Value;

    /// The reference config.json files captured from real engines.
    pub fn docker() -> Value {
        serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/docker-20.10-config.json"
        )))
        .unwrap()
    }

    pub fn runc() -> Value {
        serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/runc-1.1-spec-config.json"
        )))
        .unwrap()
    }

    pub fn podman() -> Value {
        serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/podman-4.3-config.json"
        )))
        .unwrap()
    }
}
