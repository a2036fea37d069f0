//! Whose container it is: the engine that created it and what its metadata says, the owner
//! sources in the settings' order, and the names that follow from the owner.

pub mod docker;
pub mod engine;
pub mod identity;
pub mod kubernetes;
pub mod verified;
