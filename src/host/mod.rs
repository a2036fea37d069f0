//! The host's edges: everything the runtime reads from or does to the machine outside the
//! container's spec, each behind a small interface so the pipeline above them stays pure.

pub mod cgroups;
pub mod clock;
pub mod exec;
pub mod fs;
pub mod realpath;
pub mod users;
