//! Parsing of the client's requested command (`SSH_ORIGINAL_COMMAND`).
//!
//! syncgate is the forced command of every key it serves, so whatever the
//! client asked for arrives here as raw bytes. This module turns those bytes
//! into a [`Request`] or a [`Refusal`]; it performs no I/O and never runs
//! anything.
//!
//! # Check order
//!
//! The checks run in this order and the first one that fails decides the
//! refusal, so every input has exactly one, stable, reason:
//!
//! 1. **Unset** (`None`): interactive login. Refused as [`Refusal::NoCommand`];
//!    the caller prints help. There is never a shell.
//! 2. **Length**: more than [`MAX_COMMAND_LEN`] bytes is refused before any
//!    byte is looked at.
//! 3. **Bytes**, each over the whole input, in this order:
//!    control bytes (`0x00..=0x1f` and `0x7f`, so NUL, tab, newline, CR and
//!    ESC too), then `#`, then invalid UTF-8.
//!    Tab is *not* whitespace here: the only separator is the space.
//! 4. **Word splitting** with [`shell_words::split`], which only removes
//!    quotes; `;`, `|`, `$(...)`, globs and the like are not special and end
//!    up as literal text that the grammar below rejects. An unmatched quote is
//!    refused, and so is any backslash: escapes have no legitimate use here and
//!    refusing them means quotes are the only bytes that splitting removes.
//! 5. **Grammar**: the words must match one line of this table exactly
//!    (case-sensitive, no options besides `--json`, no extra words):
//!
//! ```text
//! help
//! sync                       Sync { target: Default }
//! sync NAME                  Sync { target: Named(NAME) }
//! status [NAME] [--json]     NAME and --json in either order, each at most once
//! sync:all                   Debian ftpsync/runmirrors push words; each is a
//! sync:archive:NAME          single word and is recorded in `push` so the
//! sync:stage1                audit log can show it. stage1/stage2 mean the
//! sync:stage2                key's default mirror.
//! ```
//!
//! `NAME` is a mirror name: `^[a-z0-9][a-z0-9._-]{0,63}$` without `..`
//! (see [`Name`], defined once in [`crate::config::MirrorName`]). It can
//! never start with `-` or contain `/`, so a name can neither inject an
//! option nor a path into anything that later uses it.
//! Zero words (empty or only spaces) is [`Refusal::Empty`].
//!
//! Valid commands are printable ASCII, but valid non-ASCII UTF-8 passes step 3
//! and is refused by the grammar (a look-alike verb is an unknown verb).
//!
//! Refusals never contain raw client bytes; anything quoted from the client
//! goes through [`escape_for_log`] first.

use std::fmt;
use std::net::IpAddr;

/// Longest accepted `SSH_ORIGINAL_COMMAND`, in bytes.
pub const MAX_COMMAND_LEN: usize = 256;

/// Exit status for "not understood" refusals (`EX_USAGE`).
pub const EXIT_USAGE: u8 = crate::error::Exit::Usage.code();
/// Exit status for "not permitted" refusals (`EX_NOPERM`).
pub const EXIT_NOPERM: u8 = crate::error::Exit::NotPermitted.code();

/// At most this many characters of a client word are quoted in a refusal.
const QUOTE_CAP: usize = 32;

/// A validated mirror name: the one grammar, defined in
/// [`crate::config::MirrorName`]. [`Name::new`] is the only constructor, so
/// holding a `Name` proves the string matched the grammar.
pub use crate::config::MirrorName as Name;

/// Which mirror(s) a `sync` is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// No name given: the key's only mirror (authorization decides).
    Default,
    /// `sync:all`: every mirror the key may sync.
    All,
    /// One named mirror.
    Named(Name),
}

/// The ftpsync push word a `sync` arrived as, kept for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// `sync:all`
    All,
    /// `sync:archive:NAME`
    Archive,
    /// `sync:stage1`
    Stage1,
    /// `sync:stage2`
    Stage2,
}

impl Push {
    /// The push word as the client sent it (without the archive name).
    pub fn as_str(self) -> &'static str {
        match self {
            Push::All => "sync:all",
            Push::Archive => "sync:archive",
            Push::Stage1 => "sync:stage1",
            Push::Stage2 => "sync:stage2",
        }
    }
}

/// A syntactically valid request. Whether this key may make it is decided by
/// [`crate::gate::policy::authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Help,
    Sync {
        target: Target,
        /// `Some` when the request came as an ftpsync push word.
        push: Option<Push>,
    },
    Status {
        mirror: Option<Name>,
        json: bool,
    },
}

impl Request {
    /// The mirror names this request carries (the only client bytes that
    /// can ever reach an argv, and only after matching the config).
    pub fn names(&self) -> Vec<&Name> {
        match self {
            Request::Sync {
                target: Target::Named(n),
                ..
            } => vec![n],
            Request::Status {
                mirror: Some(n), ..
            } => vec![n],
            _ => vec![],
        }
    }

    /// The canonical spelling of this request: single spaces, no quotes,
    /// `--json` last. For every request returned by [`parse`],
    /// `parse(Some(r.canonical().as_bytes())) == Ok(r)`.
    ///
    /// A hand-built `Sync` whose `push` does not fit its `target` (e.g.
    /// `Archive` with `Target::All`) is rendered from `target` alone.
    pub fn canonical(&self) -> String {
        match self {
            Request::Help => "help".to_owned(),
            Request::Sync { target, push } => match (target, push) {
                (Target::Default, Some(Push::Stage1)) => "sync:stage1".to_owned(),
                (Target::Default, Some(Push::Stage2)) => "sync:stage2".to_owned(),
                (Target::Default, _) => "sync".to_owned(),
                (Target::All, _) => "sync:all".to_owned(),
                (Target::Named(n), Some(Push::Archive)) => format!("sync:archive:{n}"),
                (Target::Named(n), _) => format!("sync {n}"),
            },
            Request::Status { mirror, json } => {
                let mut s = "status".to_owned();
                if let Some(n) = mirror {
                    s.push(' ');
                    s.push_str(n.as_str());
                }
                if *json {
                    s.push_str(" --json");
                }
                s
            }
        }
    }
}

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

/// Renders bytes as printable ASCII for logs and messages.
///
/// Bytes `0x21..=0x7e` and space are kept, except `\` which becomes `\x5c`
/// so the output is unambiguous; every other byte becomes `\xNN`. If the
/// rendering is longer than `cap` characters it is cut (never inside an
/// escape) to at most `cap` characters and `...` is appended.
pub fn escape_for_log(raw: &[u8], cap: usize) -> String {
    let mut out = String::new();
    for &b in raw {
        let plain = b == b' ' || ((0x21..=0x7e).contains(&b) && b != b'\\');
        if out.len() + if plain { 1 } else { 4 } > cap {
            out.push_str("...");
            break;
        }
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn quote(s: &str) -> String {
    escape_for_log(s.as_bytes(), QUOTE_CAP)
}

/// Parses the bytes of `SSH_ORIGINAL_COMMAND` (`None` when it is unset).
/// See the module documentation for the grammar and the check order.
pub fn parse(raw: Option<&[u8]>) -> Result<Request, Refusal> {
    let raw = raw.ok_or(Refusal::NoCommand)?;
    if raw.len() > MAX_COMMAND_LEN {
        return Err(Refusal::TooLong { len: raw.len() });
    }
    let text = check_bytes(raw)?;
    if text.contains('\\') {
        return Err(Refusal::ShellSyntax {
            problem: "backslash escapes are not supported",
        });
    }
    let words = shell_words::split(text).map_err(|_| Refusal::ShellSyntax {
        problem: "missing closing quote",
    })?;
    parse_words(&words)
}

/// Step 3: control bytes, then `#`, then UTF-8.
fn check_bytes(raw: &[u8]) -> Result<&str, Refusal> {
    if let Some(offset) = raw.iter().position(|&b| b < 0x20 || b == 0x7f) {
        let byte = raw[offset];
        return Err(Refusal::ControlByte { byte, offset });
    }
    if let Some(offset) = raw.iter().position(|&b| b == b'#') {
        return Err(Refusal::Comment { offset });
    }
    std::str::from_utf8(raw).map_err(|e| Refusal::NotUtf8 {
        offset: e.valid_up_to(),
    })
}

/// Step 5: the verb table.
fn parse_words(words: &[String]) -> Result<Request, Refusal> {
    let Some((verb, args)) = words.split_first() else {
        return Err(Refusal::Empty);
    };
    let sync = |target, push| Request::Sync { target, push };
    let request = match verb.as_str() {
        "help" => {
            no_more("help", args)?;
            Request::Help
        }
        "sync" => match args {
            [] => sync(Target::Default, None),
            [name] => sync(Target::Named(name_arg("sync", name)?), None),
            [_, extra, ..] => return Err(extra_argument("sync", extra)),
        },
        "status" => parse_status(args)?,
        "sync:all" => {
            no_more("sync:all", args)?;
            sync(Target::All, Some(Push::All))
        }
        "sync:stage1" => {
            no_more("sync:stage1", args)?;
            sync(Target::Default, Some(Push::Stage1))
        }
        "sync:stage2" => {
            no_more("sync:stage2", args)?;
            sync(Target::Default, Some(Push::Stage2))
        }
        word => match word.strip_prefix("sync:archive:") {
            Some(name) => {
                let name = name_arg("sync:archive", name)?;
                no_more("sync:archive", args)?;
                sync(Target::Named(name), Some(Push::Archive))
            }
            None => return Err(Refusal::UnknownVerb { verb: quote(word) }),
        },
    };
    Ok(request)
}

fn parse_status(args: &[String]) -> Result<Request, Refusal> {
    let mut mirror = None;
    let mut json = false;
    for arg in args {
        if arg == "--json" {
            if json {
                return Err(Refusal::BadArgument {
                    verb: "status",
                    problem: "--json given twice",
                    arg: quote(arg),
                });
            }
            json = true;
        } else if mirror.is_none() {
            mirror = Some(name_arg("status", arg)?);
        } else {
            return Err(extra_argument("status", arg));
        }
    }
    Ok(Request::Status { mirror, json })
}

fn name_arg(verb: &'static str, arg: &str) -> Result<Name, Refusal> {
    Name::new(arg).ok_or_else(|| Refusal::BadArgument {
        verb,
        problem: if arg.starts_with('-') {
            "unknown option"
        } else {
            "invalid mirror name"
        },
        arg: quote(arg),
    })
}

fn no_more(verb: &'static str, args: &[String]) -> Result<(), Refusal> {
    match args.first() {
        None => Ok(()),
        Some(extra) => Err(extra_argument(verb, extra)),
    }
}

fn extra_argument(verb: &'static str, arg: &str) -> Refusal {
    Refusal::BadArgument {
        verb,
        problem: "unexpected argument",
        arg: quote(arg),
    }
}

#[cfg(test)]
pub(crate) mod tests;
