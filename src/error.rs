//! One error type: a refusal (policy said no) or a failure (something broke), each one line.

use std::fmt;

/// Whether the runtime said no on purpose or could not do its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The policy refused the container (recorded as outcome "refused").
    Refused,
    /// Bad input or a broken host (recorded as outcome "error").
    Failed,
}

/// A single readable line naming the cause, with the context it happened in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Refusal or failure.
    pub kind: Kind,
    msg: String,
}

impl Error {
    /// A policy refusal.
    pub fn refused(msg: impl Into<String>) -> Self {
        Error { kind: Kind::Refused, msg: msg.into() }
    }

    /// A failure of input or host.
    pub fn failed(msg: impl Into<String>) -> Self {
        Error { kind: Kind::Failed, msg: msg.into() }
    }

    /// Prefixes the message with where it happened.
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Error { kind: self.kind, msg: format!("{ctx}: {}", self.msg) }
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Always one line: engines show only the last line of the runtime's error.
        let one_line = self.msg.replace('\n', " ");
        f.write_str(&one_line)
    }
}

impl std::error::Error for Error {}

/// Adds context to any displayable error.
pub trait Context<T> {
    /// Turns the error into a failure prefixed with `ctx`; pass `format_args!`, which is only
    /// formatted when there is an error.
    fn context(self, ctx: impl fmt::Display) -> Result<T, Error>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, ctx: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| Error::failed(format!("{ctx}: {e}")))
    }
}

/// Result with our error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
