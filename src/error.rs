//! One error type for the whole tool, and the one list of exit codes.
//!
//! Every command returns `Result<()>`; every [`Error`] knows its [`Exit`], so
//! `main` maps an error to its exit status in one place. Refusals and failed
//! syncs are errors too ([`Error::Refused`], [`Error::SyncFailed`]): they
//! have been reported where they happened, and `main` prints nothing more.

use std::path::PathBuf;

/// syncgate's exit codes (sysexits where one fits). `--help`, syncgate(1)
/// and the README table are all made from, or checked against, this list.
///
/// One command exits otherwise: `status --check` is a monitoring plugin and
/// exits 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN
/// ([`crate::admin::status::Plugin`]), handled in [`crate::run()`] before any
/// of these codes applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "u8", try_from = "u8")]
#[repr(u8)]
pub enum Exit {
    /// The request succeeded. For sync: the run that covered it succeeded.
    Ok = 0,
    /// A sync ran and failed (rsync or the permission helper failed, it timed
    /// out or was stopped); or `check` found a problem.
    SyncFailed = 1,
    /// The sync succeeded and is published here, but fewer downstream
    /// mirrors got it than the mirror's `require` (with `cascade = "wait"`).
    Downstream = 2,
    /// Command line or SSH request not understood (EX_USAGE).
    Usage = 64,
    /// Internal error: state, lock or I/O trouble (EX_SOFTWARE).
    Internal = 70,
    /// Waited longer than `queue_timeout` for the mirror lock, or the queue
    /// was full (`max_waiting`) (EX_TEMPFAIL).
    QueueTimeout = 75,
    /// Not permitted for this SSH key (EX_NOPERM).
    NotPermitted = 77,
    /// Configuration error (EX_CONFIG).
    Config = 78,
    /// A request of a key with `runmirrors = true` did not succeed: 255 is
    /// the only status Debian's runmirrors notices (it is ssh's own).
    PushFailed = 255,
}

impl Exit {
    /// Every exit code, in ascending order.
    pub const ALL: [Exit; 9] = [
        Exit::Ok,
        Exit::SyncFailed,
        Exit::Downstream,
        Exit::Usage,
        Exit::Internal,
        Exit::QueueTimeout,
        Exit::NotPermitted,
        Exit::Config,
        Exit::PushFailed,
    ];

    /// The process exit status.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// A few words for `--help`.
    pub fn summary(self) -> &'static str {
        match self {
            Exit::Ok => "success",
            Exit::SyncFailed => "sync failed",
            Exit::Downstream => "published, but too few downstream pushes succeeded",
            Exit::Usage => "usage or request not understood",
            Exit::Internal => "internal error",
            Exit::QueueTimeout => "queue timeout",
            Exit::NotPermitted => "not permitted",
            Exit::Config => "configuration error",
            Exit::PushFailed => "a runmirrors key's request did not succeed",
        }
    }

    /// The sentence syncgate(1) gives it (EXIT STATUS).
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "Success. For sync: the run that covered the request succeeded.",
            Exit::SyncFailed => {
                "The sync failed (rsync's own exit code is in the message), timed out or was \
                 stopped; or check found a problem."
            }
            Exit::Downstream => {
                "The sync succeeded and is published on this host, but fewer downstream mirrors \
                 got it than the mirror's require (cascade = \"wait\"); status shows which."
            }
            Exit::Usage => "Usage error, or an SSH request that is not understood.",
            Exit::Internal => "Internal error: state directory, lock file or I/O trouble; or an SSH sync that could be audited nowhere (audit_required).",
            Exit::QueueTimeout => {
                "Waited longer than the mirror's queue_timeout for its lock, or found its queue \
                 full (max_waiting) and was answered at once."
            }
            Exit::NotPermitted => "SSH request not permitted for this key.",
            Exit::Config => {
                "Configuration error; the message names the file, the line and the key."
            }
            Exit::PushFailed => {
                "A request of a key with runmirrors = true was refused or did not succeed; \
                 Debian's runmirrors notices no other status (it takes it for ssh's own)."
            }
        }
    }

    /// The `after_help` of `syncgate --help`: every code with its summary.
    pub fn help_text() -> String {
        let list: Vec<String> = Exit::ALL
            .iter()
            .map(|e| format!("{} {}", e.code(), e.summary()))
            .collect();
        format!("Exit codes: {}.", list.join(", "))
    }

    /// The worse of two exit codes: the higher number, except that a
    /// local sync that failed (1) is worse than downstreams that missed a
    /// release published here (2).
    pub fn worst(self, other: Exit) -> Exit {
        fn rank(e: Exit) -> u8 {
            match e {
                Exit::Downstream => 1,
                Exit::SyncFailed => 2,
                e => e.code(),
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for u8 {
    fn from(e: Exit) -> u8 {
        e.code()
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> std::process::ExitCode {
        std::process::ExitCode::from(e.code())
    }
}

impl TryFrom<u8> for Exit {
    type Error = String;
    fn try_from(code: u8) -> std::result::Result<Exit, String> {
        Exit::ALL
            .into_iter()
            .find(|e| e.code() == code)
            .ok_or_else(|| format!("{code} is not a syncgate exit code"))
    }
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
    /// An SSH request found its queue full (`max_waiting`) and was
    /// answered at once.
    #[error("mirror {mirror}: the queue is full: {detail}; try again later")]
    QueueFull { mirror: String, detail: String },
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
    /// The gate refused the request (64 not understood, 77 not permitted);
    /// it has already said why on stderr and in the audit log.
    #[error("refused")]
    Refused(Exit),
    /// A run or a request did not succeed; each mirror's line (or the
    /// owner side's report) already said why. Carries the worst exit code.
    #[error("sync failed")]
    SyncFailed(Exit),
    /// Already reported to the user (e.g. `check`'s findings, or the gate's
    /// broken config, logged to syslog); exit with this code, print nothing.
    #[error("already reported")]
    Reported(Exit),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_) => Exit::Config,
            Error::Usage(_) => Exit::Usage,
            Error::QueueTimeout { .. } | Error::QueueFull { .. } => Exit::QueueTimeout,
            Error::Abandoned(_) => Exit::SyncFailed,
            Error::Io { .. } | Error::Internal(_) | Error::UnsafeLock { .. } => Exit::Internal,
            Error::Refused(e) | Error::SyncFailed(e) | Error::Reported(e) => *e,
        }
    }

    /// Whether the user has already been told; `main` then prints nothing.
    pub fn is_reported(&self) -> bool {
        matches!(
            self,
            Error::Refused(_) | Error::SyncFailed(_) | Error::Reported(_)
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_codes_are_the_documented_ones_in_ascending_order() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 64, 70, 75, 77, 78, 255]);
        for c in 0..=u8::MAX {
            assert_eq!(Exit::try_from(c).is_ok(), codes.contains(&c), "{c}");
        }
    }

    #[test]
    fn the_help_text_lists_every_code() {
        assert_eq!(
            Exit::help_text(),
            "Exit codes: 0 success, 1 sync failed, 2 published, but too few downstream pushes succeeded, 64 usage or request not understood, \
             70 internal error, 75 queue timeout, 77 not permitted, 78 configuration error, 255 a runmirrors key's request did not succeed."
        );
    }

    /// README.md's "Exit codes" table has one row per code, in this order.
    #[test]
    fn the_readme_table_lists_every_code() {
        let readme = include_str!("../README.md");
        let table = readme
            .split("## Exit codes\n")
            .nth(1)
            .expect("README has an Exit codes section");
        let rows: Vec<(u8, &str)> = table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let mut cells = l.trim_matches('|').split('|').map(str::trim);
                let code = cells.next()?.parse().ok()?;
                Some((code, cells.next()?))
            })
            .collect();
        let codes: Vec<u8> = rows.iter().map(|(c, _)| *c).collect();
        let want: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, want, "README.md's exit code table");
        assert!(rows.iter().all(|(_, m)| !m.is_empty()));
    }

    #[test]
    fn worst_is_the_higher_code() {
        assert_eq!(Exit::Ok.worst(Exit::SyncFailed), Exit::SyncFailed);
        assert_eq!(Exit::Downstream.worst(Exit::SyncFailed), Exit::SyncFailed);
        assert_eq!(Exit::SyncFailed.worst(Exit::Downstream), Exit::SyncFailed);
        assert_eq!(Exit::Ok.worst(Exit::Downstream), Exit::Downstream);
        assert_eq!(
            Exit::QueueTimeout.worst(Exit::SyncFailed),
            Exit::QueueTimeout
        );
    }
}
