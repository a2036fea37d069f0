//! Spec modifiers: each is one pure change to config.json (spec plus context in, spec out),
//! composed into the create pipeline in a fixed order.

mod cdi;
mod gpus;
mod guard;
mod labels;
mod limits;
mod slice;

pub use crate::policy::caps::{Cap, ContainerCaps};
pub use cdi::Cdi;
pub use gpus::{is_nvidia_hook, GpuGrant, Gpus, Granted};
pub use guard::{cap_name, seccomp, Guard, GuardInput, DEFAULT_CAPS};
pub use labels::Labels;
pub use limits::Limits;
pub use slice::SlicePlacement;

use serde_json::Value;

use crate::error::Result;
use crate::owner::engine::Engine;
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
    /// The engine that created the container (its name and image for the annotations, its pod).
    pub engine: &'a Engine,
    /// The settings file, when the shim was told it (flag or environment): recorded on the
    /// container for the calls that are not told (Podman's cleanup `delete`).
    pub settings_file: Option<&'a std::path::Path>,
    /// A build container (Docker's classic builder): its own slice, never GPUs.
    pub build: bool,
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

/// What a modifier test's [`Context`] borrows, with defaults: container `c`, owner `a` of group
/// `g` in the unattributed slice, cgroupfs, no GPUs, an empty guard input, no caps, runc.
#[cfg(test)]
pub(crate) struct TestParts {
    pub id: &'static str,
    pub owner: Owner,
    pub systemd_cgroup: bool,
    pub gpus: GpuGrant,
    pub guard: GuardInput,
    pub limits: ContainerCaps,
    pub engine: Engine,
    pub settings_file: Option<&'static std::path::Path>,
}

#[cfg(test)]
impl TestParts {
    pub fn new() -> TestParts {
        TestParts {
            id: "c",
            owner: Owner {
                user: Some("a".into()),
                group: Some("g".into()),
                source: None,
                placement: crate::naming::Placement::unattributed(),
            },
            systemd_cgroup: false,
            gpus: GpuGrant::default(),
            guard: GuardInput::default(),
            limits: ContainerCaps::default(),
            engine: Engine::Runc,
            settings_file: None,
        }
    }

    pub fn ctx(&self) -> Context<'_> {
        Context {
            container_id: self.id,
            owner: &self.owner,
            systemd_cgroup: self.systemd_cgroup,
            scope_prefix: "docker",
            gpus: &self.gpus,
            guard: &self.guard,
            limits: &self.limits,
            engine: &self.engine,
            settings_file: self.settings_file,
            build: false,
        }
    }
}

/// Runs `f` with the default test context holding `gpus`.
#[cfg(test)]
pub(crate) fn with_test_context<T>(gpus: &GpuGrant, f: impl FnOnce(&Context) -> T) -> T {
    let t = TestParts { gpus: gpus.clone(), ..TestParts::new() };
    f(&t.ctx())
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
