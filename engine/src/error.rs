//! The engine's error type, classified so callers know whom to blame and
//! whether trying again can help.

/// Who is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration or the input is wrong; the user must change something.
    User,
    /// An external system (a broker, a database, the file system) failed.
    External,
    /// A bug or broken invariant in weir.
    Internal,
}

/// An error with its kind, whether a retry may succeed, and context.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// Who is at fault.
    pub kind: ErrorKind,
    /// Whether trying the same operation again may succeed.
    pub retryable: bool,
    /// What happened, lowercase, with context prefixed by `: `.
    pub message: String,
}

impl Error {
    /// A user error (bad configuration, bad input).
    pub fn user(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::User,
            retryable: false,
            message: message.into(),
        }
    }

    /// An external failure that a retry will not fix.
    pub fn external(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::External,
            retryable: false,
            message: message.into(),
        }
    }

    /// An external failure that may pass (timeout, connection refused).
    pub fn retryable(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::External,
            retryable: true,
            message: message.into(),
        }
    }

    /// A bug.
    pub fn internal(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Internal,
            retryable: false,
            message: message.into(),
        }
    }

    /// Prefixes the message with what was being done: `context: message`.
    pub fn context(mut self, context: impl std::fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let retryable = matches!(
            e.kind(),
            K::Interrupted
                | K::TimedOut
                | K::WouldBlock
                | K::ConnectionRefused
                | K::ConnectionReset
        );
        Error {
            kind: ErrorKind::External,
            retryable,
            message: e.to_string(),
        }
    }
}

/// Result with the engine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
