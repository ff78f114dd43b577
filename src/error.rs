//! One error type for the whole tool. Every variant knows its exit code, so
//! `main` only prints one line and exits.

use std::path::PathBuf;

/// Exit codes, documented in README.md and syncgate(1).
pub mod exit {
    /// The request succeeded.
    pub const OK: u8 = 0;
    /// A sync ran and failed (rsync or the permission helper failed, or it timed out).
    pub const SYNC_FAILED: u8 = 1;
    /// Command line or SSH request not understood (sysexits EX_USAGE).
    pub const USAGE: u8 = 64;
    /// Internal error: state, lock or I/O trouble (EX_SOFTWARE).
    pub const INTERNAL: u8 = 70;
    /// Waited longer than `queue_timeout` for the mirror lock (EX_TEMPFAIL).
    pub const QUEUE_TIMEOUT: u8 = 75;
    /// Not permitted for this SSH key (EX_NOPERM).
    pub const NOT_PERMITTED: u8 = 77;
    /// Configuration error (EX_CONFIG).
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration problem; the message names the file, line and key.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Usage(String),
    #[error(
        "mirror {mirror}: waited {waited}s in the queue (queue_timeout = {limit}s); giving up"
    )]
    QueueTimeout {
        mirror: String,
        waited: u64,
        limit: u64,
    },
    /// One or more syncs failed; their messages were already printed.
    #[error("{0}")]
    SyncFailed(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
    /// The request left the queue before it was served.
    #[error("{0}")]
    Abandoned(String),
    #[error("lock file {path}: {why}")]
    UnsafeLock { path: PathBuf, why: String },
    /// Already reported to the user; exit with this code and print nothing.
    #[error("")]
    Silent(u8),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::Usage(_) => exit::USAGE,
            Error::QueueTimeout { .. } => exit::QUEUE_TIMEOUT,
            Error::SyncFailed(_) | Error::Abandoned(_) => exit::SYNC_FAILED,
            Error::Io { .. } | Error::Internal(_) | Error::UnsafeLock { .. } => exit::INTERNAL,
            Error::Silent(code) => *code,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to `std::io::Result`s.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
