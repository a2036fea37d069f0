//! The shim: what runs for every call runc's caller makes. [`argv::scan`] reads the command
//! line; every subcommand but create/run/restore is exec'd to the low-level runtime at once
//! ([`passthrough`]), `update` and `exec` after their [`gates`], `start`/`kill`/`delete` with a
//! detached [`lifecycle`] follow-up; errors go out as runc's log lines ([`runtime_log`]).

pub mod alloc;
pub mod gates;
pub mod lifecycle;
pub mod passthrough;
pub mod runtime_log;
