//! ds01-runtime: an OCI runtime shim for shared GPU servers.
//!
//! The tree follows a call (docs/ARCHITECTURE.md draws it):
//! - [`shim`]: argv scan, pass-through exec, the update/exec gates, lifecycle follow-ups;
//! - [`create`]: the create pipeline in phases (gather → reserve → modify → commit) and its
//!   pure [`create::modifiers`];
//! - [`owner`]: the engine that made the container, its metadata, and whose it is;
//! - [`policy`]: DS01's resource-limits.yaml and the runtime's own settings;
//! - [`gpu`]: inventory, requests, allocation, the allocation store, CDI;
//! - [`audit`]: the event log and its queries;
//! - [`host`]: the machine's edges (cgroups, users, exec, clock, paths, files);
//! - [`ctl`]: the admin's commands;
//! - [`spec`], [`naming`], [`error`]: config.json helpers and the `ds01.*` keys, slice names,
//!   the error type.

pub mod argv;
pub mod audit;
pub mod create;
pub mod ctl;
pub mod door;
pub mod error;
pub mod gpu;
pub mod host;
pub mod naming;
pub mod owner;
pub mod policy;
pub mod shim;
pub mod spec;
