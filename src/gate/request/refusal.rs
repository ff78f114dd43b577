//! Why a command was refused: [`Refusal`], its exit status and its one-line
//! message.

use std::fmt;
use std::net::IpAddr;

use super::{EXIT_NOPERM, EXIT_USAGE, MAX_COMMAND_LEN};

/// Why a command was refused. Parse-stage variants mean "not understood"
/// (exit 64); authorization variants mean "not permitted" (exit 77).
///
/// Every `String` field is already safe to print: client text has gone
/// through [`escape_for_log`], policy text is escaped the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `SSH_ORIGINAL_COMMAND` unset: an interactive login was requested.
    NoCommand,
    /// More than [`MAX_COMMAND_LEN`] bytes.
    TooLong { len: usize },
    /// A control byte (`0x00..=0x1f`, `0x7f`).
    ControlByte { byte: u8, offset: usize },
    /// A `#` anywhere (a shell would start a comment).
    Comment { offset: usize },
    /// The bytes are not UTF-8; `offset` is where decoding failed.
    NotUtf8 { offset: usize },
    /// Word splitting failed (unmatched quote) or a backslash was used.
    ShellSyntax { problem: &'static str },
    /// No words at all.
    Empty,
    /// The first word is not a known verb (escaped, truncated).
    UnknownVerb { verb: String },
    /// The verb is known but an argument is wrong (escaped, truncated).
    BadArgument {
        verb: &'static str,
        problem: &'static str,
        arg: String,
    },
    /// This key may not use the verb. `may` describes what it may do.
    VerbNotAllowed { verb: &'static str, may: String },
    /// The mirror is not one of the key's (unknown and forbidden mirrors are
    /// indistinguishable), or the key has no mirror at all (`mirror: None`).
    MirrorNotAllowed {
        verb: &'static str,
        mirror: Option<String>,
        may: String,
    },
    /// The client address is missing or outside the key's `from` list.
    NetworkNotAllowed { key: String, client: Option<IpAddr> },
    /// `sync` without a name for a key with several mirrors.
    AmbiguousMirror { key: String, mirrors: Vec<String> },
}

impl Refusal {
    /// 64 (`EX_USAGE`) for "not understood", 77 (`EX_NOPERM`) for "not permitted".
    pub fn exit_code(&self) -> u8 {
        match self {
            Refusal::VerbNotAllowed { .. }
            | Refusal::MirrorNotAllowed { .. }
            | Refusal::NetworkNotAllowed { .. }
            | Refusal::AmbiguousMirror { .. } => EXIT_NOPERM,
            _ => EXIT_USAGE,
        }
    }

    /// Short, stable, machine-readable reason for logs and tests.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCommand => "no-command",
            Refusal::TooLong { .. } => "too-long",
            Refusal::ControlByte { .. } => "control-byte",
            Refusal::Comment { .. } => "comment",
            Refusal::NotUtf8 { .. } => "not-utf8",
            Refusal::ShellSyntax { .. } => "shell-syntax",
            Refusal::Empty => "empty",
            Refusal::UnknownVerb { .. } => "unknown-verb",
            Refusal::BadArgument { .. } => "bad-argument",
            Refusal::VerbNotAllowed { .. } => "verb-not-allowed",
            Refusal::MirrorNotAllowed { .. } => "mirror-not-allowed",
            Refusal::NetworkNotAllowed { .. } => "network-not-allowed",
            Refusal::AmbiguousMirror { .. } => "ambiguous-mirror",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const TRY_HELP: &str = "run 'help' to list commands";
        match self {
            Refusal::NoCommand => write!(f, "no command given (no shell here); {TRY_HELP}"),
            Refusal::TooLong { len } => {
                write!(
                    f,
                    "command is {len} bytes long, the limit is {MAX_COMMAND_LEN}"
                )
            }
            Refusal::ControlByte { byte, offset } => {
                write!(
                    f,
                    "control character \\x{byte:02x} at byte {offset} is not allowed"
                )
            }
            Refusal::Comment { offset } => write!(f, "'#' at byte {offset} is not allowed"),
            Refusal::NotUtf8 { offset } => {
                write!(f, "command is not valid UTF-8 (at byte {offset})")
            }
            Refusal::ShellSyntax { problem } => write!(f, "cannot split command: {problem}"),
            Refusal::Empty => write!(f, "empty command; {TRY_HELP}"),
            Refusal::UnknownVerb { verb } => write!(f, "unknown command '{verb}'; {TRY_HELP}"),
            Refusal::BadArgument { verb, problem, arg } => {
                write!(f, "{verb}: {problem}: '{arg}'; {TRY_HELP}")
            }
            Refusal::VerbNotAllowed { verb, may } => write!(f, "'{verb}' is not permitted; {may}"),
            Refusal::MirrorNotAllowed { verb, mirror, may } => match mirror {
                Some(m) => write!(f, "{verb} of mirror '{m}' is not permitted; {may}"),
                None => write!(f, "{verb}: this key has no mirror; {may}"),
            },
            Refusal::NetworkNotAllowed { key, client } => {
                write!(f, "key '{key}' may not be used from ")?;
                match client {
                    Some(ip) => write!(f, "{ip}")?,
                    None => f.write_str("an unknown address")?,
                }
                f.write_str("; only 'help' is available there")
            }
            Refusal::AmbiguousMirror { key, mirrors } => write!(
                f,
                "sync needs a mirror name: key '{key}' may sync {}; use 'sync MIRROR'",
                mirrors.join(", ")
            ),
        }
    }
}

impl std::error::Error for Refusal {}
