//! The Docker socket front door: the caller's identity from the kernel, made the owner of what
//! the caller creates, and the only way a user reaches dockerd.
