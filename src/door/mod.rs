//! The Docker socket front door: listens where users reach Docker, takes each caller's uid
//! from the kernel, makes the caller the owner of what they create, keeps users out of each
//! other's containers, and passes everything else to dockerd's root-only socket unchanged.
//!
//! - [`route`]: what a request is (pure);
//! - [`create_body`]: a create rewritten for its caller (pure);
//! - [`filters`]: a list or prune narrowed to the caller's containers (pure);
//! - [`caller`]: who is calling (the user database, the policy's admins);
//! - [`listener`]: the socket, from systemd or bound here;
//! - [`server`]: connections, judging, forwarding and splicing.

pub mod caller;
pub mod create_body;
pub mod filters;
pub mod listener;
pub mod route;
pub mod server;
