//! ds01-runtime: an OCI runtime shim for shared GPU servers.
//!
//! The shape of a call: [`argv::scan`] reads runc's command line; every subcommand but
//! `create`/`run` is exec'd to the low-level runtime at once ([`passthrough`]); `create` runs
//! the pipeline in [`create`]: load the bundle ([`bundle`]), resolve the owner ([`identity`]),
//! apply the [`modifiers`] (slice, labels), write config.json atomically, then exec runc.

pub mod annotations;
pub mod argv;
pub mod audit;
pub mod bundle;
pub mod cgroups;
pub mod clock;
pub mod create;
pub mod docker;
pub mod doctor;
pub mod error;
pub mod exec;
pub mod explain;
pub mod gates;
pub mod gpu;
pub mod gpus_report;
pub mod identity;
pub mod install;
pub mod kubernetes;
pub mod lifecycle;
pub mod limits_report;
pub mod modifiers;
pub mod naming;
pub mod opaque;
pub mod passthrough;
pub mod policy;
pub mod realpath;
pub mod runtime_log;
pub mod settings;
pub mod shim_alloc;
pub mod slices;
pub mod spec;
pub mod users;
pub mod yaml;
