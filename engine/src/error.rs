//! The engine's error type, classified so callers know whom to blame and
//! whether trying again can help.

use std::sync::Arc;

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
///
/// `Display` and `Error` are written out rather than derived with
/// thiserror: its `#[source]` on an `Arc<dyn Error>` field hands out the
/// `Arc` itself, so a caller could not downcast the cause to its type.
#[derive(Debug, Clone)]
pub struct Error {
    /// Who is at fault.
    pub kind: ErrorKind,
    /// Whether trying the same operation again may succeed.
    pub retryable: bool,
    /// What happened, lowercase, with context prefixed by `: `.
    pub message: String,
    /// The lower-level error this one was made from (an I/O error, a
    /// broker's or a runtime's), kept for `Error::source` chains; its text
    /// is already in `message`.
    pub cause: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A user error (bad configuration, bad input).
    pub fn user(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::User,
            retryable: false,
            message: message.into(),
            cause: None,
        }
    }

    /// An external failure that a retry will not fix.
    pub fn external(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::External,
            retryable: false,
            message: message.into(),
            cause: None,
        }
    }

    /// An external failure that may pass (timeout, connection refused).
    pub fn retryable(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::External,
            retryable: true,
            message: message.into(),
            cause: None,
        }
    }

    /// A bug.
    pub fn internal(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Internal,
            retryable: false,
            message: message.into(),
            cause: None,
        }
    }

    /// Keeps `cause` as the error this one came from (`Error::source`).
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(Arc::new(cause));
        self
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
            cause: Some(Arc::new(e)),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Result with the engine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_io_error_is_kept_as_the_source_with_kind_and_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::from(io).context("connecting to the broker");
        assert_eq!(e.kind, ErrorKind::External);
        assert!(e.retryable);
        assert_eq!(e.to_string(), "connecting to the broker: refused");
        let source = e.source().expect("the cause is kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the cause is the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        let wrapped = Error::user("bad value").with_cause(std::fmt::Error);
        assert!(wrapped.source().unwrap().is::<std::fmt::Error>());
        assert!(Error::internal("bug").source().is_none());
    }
}
