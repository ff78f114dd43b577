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
//! (see [`Name`]). It can never start with `-` or contain `/`, so a name can
//! neither inject an option nor a path into anything that later uses it.
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

/// A validated mirror name: `^[a-z0-9][a-z0-9._-]{0,63}$`, not containing `..`.
///
/// [`Name::new`] is the only constructor, so holding a `Name` proves the
/// string matched the grammar.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Longest valid name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Returns the name if `s` matches the mirror-name grammar.
    pub fn new(s: &str) -> Option<Name> {
        Self::is_valid(s).then(|| Name(s.to_owned()))
    }

    /// Whether `s` matches the mirror-name grammar.
    pub fn is_valid(s: &str) -> bool {
        let b = s.as_bytes();
        let first_ok = matches!(b.first(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit());
        first_ok
            && b.len() <= Self::MAX_LEN
            && b.iter().all(|&c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
            })
            && !s.contains("..")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

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
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_str(s: &str) -> Result<Request, Refusal> {
        parse(Some(s.as_bytes()))
    }

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid test name")
    }

    fn sync(target: Target, push: Option<Push>) -> Request {
        Request::Sync { target, push }
    }

    fn sync_named(s: &str) -> Request {
        sync(Target::Named(name(s)), None)
    }

    fn status(mirror: Option<&str>, json: bool) -> Request {
        let mirror = mirror.map(name);
        Request::Status { mirror, json }
    }

    /// Asserts that `input` is refused with `reason`, and that the message is
    /// one printable-ASCII line.
    #[track_caller]
    fn assert_refused(input: &[u8], reason: &str) {
        match parse(Some(input)) {
            Ok(req) => panic!("{:?} was accepted as {req:?}", escape_for_log(input, 80)),
            Err(r) => {
                assert_eq!(
                    r.reason(),
                    reason,
                    "input {:?}: {r}",
                    escape_for_log(input, 80)
                );
                assert_eq!(r.exit_code(), EXIT_USAGE);
                let msg = r.to_string();
                assert!(
                    msg.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                    "message not printable: {msg:?}"
                );
            }
        }
    }

    // ---- accepted commands ----

    #[test]
    fn every_line_of_the_verb_table_is_accepted() {
        let debian_cd = || Target::Named(name("debian-cd"));
        let table: &[(&str, Request)] = &[
            ("help", Request::Help),
            ("sync", sync(Target::Default, None)),
            ("sync debian", sync_named("debian")),
            ("status", status(None, false)),
            ("status debian", status(Some("debian"), false)),
            ("status --json", status(None, true)),
            ("status debian --json", status(Some("debian"), true)),
            ("status --json debian", status(Some("debian"), true)),
            ("sync:all", sync(Target::All, Some(Push::All))),
            (
                "sync:archive:debian-cd",
                sync(debian_cd(), Some(Push::Archive)),
            ),
            ("sync:stage1", sync(Target::Default, Some(Push::Stage1))),
            ("sync:stage2", sync(Target::Default, Some(Push::Stage2))),
        ];
        for (input, expected) in table {
            assert_eq!(parse_str(input).as_ref(), Ok(expected), "{input}");
            assert_eq!(
                &expected.canonical(),
                input.replace("--json debian", "debian --json").as_str()
            );
        }
    }

    #[test]
    fn spaces_and_quotes_around_words_are_ignored() {
        for input in [
            "  sync   debian  ",
            "'sync' 'debian'",
            "\"sync\" \"debian\"",
            "sync de'bi'an",
            "sync 'debian'",
        ] {
            assert_eq!(parse_str(input), Ok(sync_named("debian")), "{input}");
        }
    }

    #[test]
    fn mirror_names_follow_the_grammar() {
        for ok in [
            "a",
            "0",
            "debian-cd",
            "ubuntu_ports",
            "a.b",
            "9.x-y_z",
            &"a".repeat(64),
        ] {
            assert!(Name::is_valid(ok), "{ok}");
            assert_eq!(parse_str(&format!("sync {ok}")), Ok(sync_named(ok)));
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "debiaN",
            "a/b",
            "a..b",
            "..",
            ".",
            "a b",
            "a:b",
            "a+b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!Name::is_valid(bad), "{bad}");
            assert!(Name::new(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn exactly_max_len_bytes_is_still_examined() {
        let input = format!("status{}--json", " ".repeat(MAX_COMMAND_LEN - 12));
        assert_eq!(input.len(), MAX_COMMAND_LEN);
        assert_eq!(parse_str(&input), Ok(status(None, true)));
    }

    // ---- refusals ----

    #[test]
    fn unset_command_is_no_command_and_never_a_shell() {
        let r = parse(None).unwrap_err();
        assert_eq!(r, Refusal::NoCommand);
        assert_eq!(r.reason(), "no-command");
        assert_eq!(r.exit_code(), 64);
    }

    #[test]
    fn empty_and_blank_commands_are_refused() {
        assert_refused(b"", "empty");
        assert_refused(b" ", "empty");
        assert_refused(b"      ", "empty");
    }

    #[test]
    fn shell_metacharacters_are_never_interpreted() {
        let cases: &[(&str, &str)] = &[
            ("sync; id", "unknown-verb"),
            ("sync;id", "unknown-verb"),
            ("sync && id", "bad-argument"),
            ("sync || id", "bad-argument"),
            ("sync | sh", "bad-argument"),
            ("sync $(id)", "bad-argument"),
            ("$(id)", "unknown-verb"),
            ("sync `id`", "bad-argument"),
            ("`id`", "unknown-verb"),
            ("sync > /tmp/x", "bad-argument"),
            ("sync < /etc/passwd", "bad-argument"),
            ("sync >x", "bad-argument"),
            ("sync *", "bad-argument"),
            ("sync deb*", "bad-argument"),
            ("sync ${HOME}", "bad-argument"),
            ("sync &", "bad-argument"),
            ("FOO=1 sync", "unknown-verb"),
            ("exec sync", "unknown-verb"),
            ("sh -c sync", "unknown-verb"),
            ("/usr/bin/syncgate sync", "unknown-verb"),
            ("sync ~root", "bad-argument"),
            ("sync 'a b'", "bad-argument"),
            ("sync \"$(id)\"", "bad-argument"),
        ];
        for (input, reason) in cases {
            assert_refused(input.as_bytes(), reason);
        }
    }

    #[test]
    fn control_bytes_are_refused_including_tab_and_line_breaks() {
        let cases: &[&[u8]] = &[
            b"sync\0",
            b"sync\0debian",
            b"sync\ndebian",
            b"sync\nid",
            b"sync\r",
            b"sync\tdebian",
            b"\tsync",
            b"sync \x1b[2J",
            b"sync\x7f",
            b"sync\x08\x08\x08\x08help",
        ];
        for input in cases {
            assert_refused(input, "control-byte");
        }
        assert_eq!(
            parse(Some(b"sync\tdebian")),
            Err(Refusal::ControlByte {
                byte: b'\t',
                offset: 4
            })
        );
    }

    #[test]
    fn control_bytes_win_over_comments_and_bad_utf8() {
        assert_refused(b"#\xff\n", "control-byte");
        assert_refused(b"\xff #", "comment");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let cases: &[&[u8]] = &[
            b"\xff",
            b"sync \xff",
            b"sync \xc0\xaf",         // overlong '/'
            b"sync \xe0\x80\xaf",     // overlong '/', 3 bytes
            b"sync \xf0\x80\x80\xaf", // overlong '/', 4 bytes
            b"sync \xc0\x80",         // overlong NUL
            b"sync \xed\xa0\x80",     // UTF-16 surrogate
            b"sync \xe2\x80",         // truncated sequence
            b"\x80sync",              // lone continuation byte
        ];
        for input in cases {
            assert_refused(input, "not-utf8");
        }
        assert_eq!(
            parse(Some(b"sync \xc0\xaf")),
            Err(Refusal::NotUtf8 { offset: 5 })
        );
    }

    #[test]
    fn hash_is_refused_anywhere() {
        for input in [
            "#",
            "# sync",
            "sync #",
            "sync debian#x",
            "sync '#'",
            "help#",
        ] {
            assert_refused(input.as_bytes(), "comment");
        }
    }

    #[test]
    fn overlong_commands_are_refused_before_anything_else() {
        assert_refused(format!("sync {}", "a".repeat(252)).as_bytes(), "too-long");
        assert_refused(&vec![b'a'; 1 << 20], "too-long");
        // Even bytes that would fail later checks are not examined.
        let mut nasty = vec![0u8; MAX_COMMAND_LEN + 1];
        nasty[0] = 0xff;
        assert_eq!(
            parse(Some(&nasty)),
            Err(Refusal::TooLong {
                len: MAX_COMMAND_LEN + 1
            })
        );
    }

    #[test]
    fn option_injection_is_refused() {
        let cases: &[(&str, &str)] = &[
            ("sync --all", "bad-argument"),
            ("sync -e sh", "bad-argument"),
            ("sync --config=/tmp/x", "bad-argument"),
            ("sync -- x", "bad-argument"),
            ("sync --", "bad-argument"),
            ("sync -", "bad-argument"),
            ("sync --json", "bad-argument"),
            ("status --json=1", "bad-argument"),
            ("status -j", "bad-argument"),
            ("status --JSON", "bad-argument"),
            ("status ---json", "bad-argument"),
            ("help --help", "bad-argument"),
            ("--help", "unknown-verb"),
            ("-e sync", "unknown-verb"),
            (
                "rsync --server --sender -vlogDtpre.iLsfxC . /srv",
                "unknown-verb",
            ),
            ("scp -t /tmp", "unknown-verb"),
            ("git-upload-pack 'x'", "unknown-verb"),
            ("internal-sftp", "unknown-verb"),
        ];
        for (input, reason) in cases {
            assert_refused(input.as_bytes(), reason);
        }
        let msg = parse_str("sync --all").unwrap_err().to_string();
        assert!(msg.contains("unknown option"), "{msg}");
    }

    #[test]
    fn path_traversal_is_refused() {
        for input in [
            "sync ../etc",
            "sync a/b",
            "sync ..",
            "sync .",
            "sync /etc",
            "sync debian/",
            "sync a..b",
            "status ../x",
            "sync:archive:../x",
            "sync:archive:a/b",
        ] {
            assert_refused(input.as_bytes(), "bad-argument");
        }
    }

    #[test]
    fn verbs_and_names_are_case_sensitive() {
        assert_refused(b"SYNC", "unknown-verb");
        assert_refused(b"Sync", "unknown-verb");
        assert_refused(b"HELP", "unknown-verb");
        assert_refused(b"sync:ALL", "unknown-verb");
        assert_refused(b"sync Debian", "bad-argument");
        assert_refused(b"status DEBIAN", "bad-argument");
    }

    #[test]
    fn names_longer_than_64_bytes_are_refused() {
        assert_refused(
            format!("sync {}", "a".repeat(65)).as_bytes(),
            "bad-argument",
        );
        assert_refused(
            format!("sync:archive:{}", "a".repeat(65)).as_bytes(),
            "bad-argument",
        );
    }

    #[test]
    fn unbalanced_quotes_and_backslashes_are_shell_syntax_errors() {
        for input in ["sync 'debian", "sync \"debian", "'", "\"", "sync deb'ian"] {
            assert_refused(input.as_bytes(), "shell-syntax");
        }
        for input in ["sync deb\\ian", "s\\ync", "sync \\", "\\", "sync 'a\\b'"] {
            assert_refused(input.as_bytes(), "shell-syntax");
        }
    }

    #[test]
    fn extra_and_repeated_arguments_are_refused() {
        for input in [
            "sync debian extra",
            "sync a b c",
            "help me",
            "status a b",
            "status --json --json",
            "status x --json --json",
            "status --json x --json",
            "status --json x y",
            "sync:all extra",
            "sync:all debian",
            "sync:stage1 x",
            "sync:stage2 --json",
            "sync:archive:debian extra",
            "sync ''",
            "status ''",
        ] {
            assert_refused(input.as_bytes(), "bad-argument");
        }
    }

    #[test]
    fn push_words_must_be_exact() {
        for input in [
            "sync:stage3",
            "sync:stage",
            "sync:",
            "sync:archive",
            "sync:all:",
            "sync:alls",
            "sync: all",
            "''",
            "\"\"",
        ] {
            assert_refused(input.as_bytes(), "unknown-verb");
        }
        for input in [
            "sync:archive:",
            "sync:archive:-x",
            "sync:archive:Debian",
            "sync:archive:a:b",
        ] {
            assert_refused(input.as_bytes(), "bad-argument");
        }
    }

    #[test]
    fn unicode_look_alikes_and_invisible_characters_are_refused() {
        let cases: &[(&str, &str)] = &[
            ("\u{0455}ync", "unknown-verb"),                      // Cyrillic dze
            ("\u{0455}ync debian", "unknown-verb"),               // Cyrillic dze
            ("sync\u{200b}", "unknown-verb"),                     // zero-width space
            ("\u{feff}sync", "unknown-verb"),                     // BOM
            ("sync\u{00a0}debian", "unknown-verb"),               // no-break space
            ("\u{ff53}\u{ff59}\u{ff4e}\u{ff43}", "unknown-verb"), // fullwidth
            ("sync deb\u{200b}ian", "bad-argument"),
            ("sync d\u{0435}bian", "bad-argument"), // Cyrillic ie
            ("sync \u{202e}naibed", "bad-argument"), // right-to-left override
            ("status debian \u{2014}json", "bad-argument"), // em dash
            ("sync \u{0085}", "bad-argument"),      // C1 control NEL
        ];
        for (input, reason) in cases {
            assert_refused(input.as_bytes(), reason);
        }
    }

    #[test]
    fn refusals_never_echo_raw_client_bytes() {
        let r = parse(Some("sync\u{200b}".as_bytes())).unwrap_err();
        assert_eq!(
            r.to_string(),
            "unknown command 'sync\\xe2\\x80\\x8b'; run 'help' to list commands"
        );
        let r = parse_str(&format!("x{}", "y".repeat(200))).unwrap_err();
        assert!(r.to_string().len() < 100, "{r}");
        assert!(r.to_string().contains("..."), "{r}");
    }

    #[test]
    fn every_refusal_reason_is_distinct_and_parse_refusals_exit_64() {
        let all = [
            Refusal::NoCommand,
            Refusal::TooLong { len: 0 },
            Refusal::ControlByte { byte: 0, offset: 0 },
            Refusal::Comment { offset: 0 },
            Refusal::NotUtf8 { offset: 0 },
            Refusal::ShellSyntax { problem: "" },
            Refusal::Empty,
            Refusal::UnknownVerb {
                verb: String::new(),
            },
            Refusal::BadArgument {
                verb: "",
                problem: "",
                arg: String::new(),
            },
        ];
        let reasons: std::collections::BTreeSet<_> = all.iter().map(Refusal::reason).collect();
        assert_eq!(reasons.len(), all.len());
        assert!(all.iter().all(|r| r.exit_code() == 64));
    }

    // ---- escape_for_log ----

    #[test]
    fn escape_for_log_keeps_printable_ascii_and_escapes_the_rest() {
        assert_eq!(escape_for_log(b"sync debian", 80), "sync debian");
        assert_eq!(
            escape_for_log(b"a\0b\n\x1b\x7f\xff", 80),
            "a\\x00b\\x0a\\x1b\\x7f\\xff"
        );
        assert_eq!(escape_for_log(b"a\\x41", 80), "a\\x5cx41");
        assert_eq!(escape_for_log(b"", 80), "");
    }

    #[test]
    fn escape_for_log_truncates_without_splitting_escapes() {
        assert_eq!(escape_for_log(b"abcdef", 6), "abcdef");
        assert_eq!(escape_for_log(b"abcdefg", 6), "abcdef...");
        assert_eq!(escape_for_log(b"abcd\xff", 6), "abcd...");
        assert_eq!(escape_for_log(b"x", 0), "...");
    }

    // ---- property tests ----
    //
    // The case count comes from `ProptestConfig::default()`: 256 unless the
    // PROPTEST_CASES environment variable says otherwise.

    /// A valid mirror name.
    pub(crate) fn name_strategy() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,63}".prop_filter("no '..'", |s| !s.contains(".."))
    }

    /// The words of a valid command and the request they mean.
    pub(crate) fn valid_words() -> impl Strategy<Value = (Vec<String>, Request)> {
        let n = name_strategy;
        let w = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let stage = prop_oneof![Just(Push::Stage1), Just(Push::Stage2)];
        prop_oneof![
            Just((w(&["help"]), Request::Help)),
            Just((w(&["sync"]), sync(Target::Default, None))),
            n().prop_map(move |s| (w(&["sync", &s]), sync_named(&s))),
            Just((w(&["sync:all"]), sync(Target::All, Some(Push::All)))),
            n().prop_map(move |s| {
                let target = Target::Named(name(&s));
                (
                    w(&[&format!("sync:archive:{s}")]),
                    sync(target, Some(Push::Archive)),
                )
            }),
            stage.prop_map(move |p| (w(&[p.as_str()]), sync(Target::Default, Some(p)))),
            (proptest::option::of(n()), any::<bool>(), any::<bool>()).prop_map(
                move |(mirror, json, json_first)| {
                    let mut words = w(&["status"]);
                    if let Some(m) = &mirror {
                        words.push(m.clone());
                    }
                    if json {
                        words.insert(if json_first { 1 } else { words.len() }, "--json".into());
                    }
                    (words, status(mirror.as_deref(), json))
                }
            ),
        ]
    }

    /// A valid command spelled with random spacing and quoting, and the
    /// request it means.
    pub(crate) fn valid_command() -> impl Strategy<Value = (String, Request)> {
        (
            valid_words(),
            proptest::collection::vec((1usize..=3, 0u8..3), 4),
            0usize..=2,
            0usize..=2,
        )
            .prop_map(|((words, req), style, lead, trail)| {
                let mut s = " ".repeat(lead);
                for (i, (word, (spaces, q))) in words.iter().zip(style).enumerate() {
                    if i > 0 {
                        s.push_str(&" ".repeat(spaces));
                    }
                    match q {
                        0 => s.push_str(word),
                        1 => s.push_str(&format!("'{word}'")),
                        _ => s.push_str(&format!("\"{word}\"")),
                    }
                }
                s.push_str(&" ".repeat(trail));
                (s, req)
            })
    }

    /// A valid command with one byte inserted somewhere.
    fn mutated_command() -> impl Strategy<Value = Vec<u8>> {
        (valid_command(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|((s, _), at, b)| {
            let mut v = s.into_bytes();
            v.insert(at.index(v.len() + 1), b);
            v
        })
    }

    /// The properties every accepted input must have: (b) canonical
    /// round-trip, (c) only grammar bytes and only valid names.
    fn check_accepted(raw: &[u8], req: &Request) -> Result<(), TestCaseError> {
        let canon = req.canonical();
        prop_assert_eq!(parse(Some(canon.as_bytes())), Ok(req.clone()));
        prop_assert!(
            raw.iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:- '\"".contains(&b)),
            "accepted {:?}",
            escape_for_log(raw, 400)
        );
        for n in req.names() {
            prop_assert!(Name::is_valid(n.as_str()));
        }
        Ok(())
    }

    proptest! {
        /// (a) parse never panics, whatever the bytes.
        #[test]
        fn parse_never_panics(raw in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..400))) {
            let _ = parse(raw.as_deref());
        }

        /// (b), (c) for arbitrary bytes: anything accepted round-trips and is
        /// made only of grammar bytes; (d) non-printable bytes are refused.
        #[test]
        fn arbitrary_bytes_accepted_only_if_well_formed(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            match parse(Some(&raw)) {
                Ok(req) => check_accepted(&raw, &req)?,
                Err(r) => prop_assert!(r.exit_code() == 64),
            }
        }

        /// (b), (c), (d) on inputs one byte away from a valid command, which
        /// are accepted far more often than random bytes.
        #[test]
        fn near_valid_inputs_accepted_only_if_well_formed(raw in mutated_command()) {
            let printable = raw.iter().all(|&b| (0x20..=0x7e).contains(&b));
            match parse(Some(&raw)) {
                Ok(req) => {
                    prop_assert!(printable);
                    check_accepted(&raw, &req)?;
                }
                Err(r) => prop_assert!(r.exit_code() == 64),
            }
        }

        /// (d) a single byte outside printable ASCII anywhere is refused.
        #[test]
        fn non_printable_ascii_is_always_refused(
            (cmd, _) in valid_command(),
            at in any::<prop::sample::Index>(),
            bad in prop_oneof![
                (0u8..0x20).prop_map(|b| vec![b]),
                (0x7fu8..=0xff).prop_map(|b| vec![b]),
                any::<char>().prop_filter("non-ASCII", |c| !c.is_ascii())
                    .prop_map(|c| c.to_string().into_bytes()),
            ],
        ) {
            let mut raw = cmd.into_bytes();
            let at = at.index(raw.len() + 1);
            raw.splice(at..at, bad);
            prop_assert!(parse(Some(&raw)).is_err(), "accepted {:?}", escape_for_log(&raw, 400));
        }

        /// (e) generated valid commands are accepted as the request they mean,
        /// and (b) their canonical form parses to the same request.
        #[test]
        fn valid_commands_are_accepted((cmd, expected) in valid_command()) {
            prop_assert_eq!(parse(Some(cmd.as_bytes())), Ok(expected.clone()));
            check_accepted(cmd.as_bytes(), &expected)?;
            prop_assert_eq!(parse(Some(expected.canonical().as_bytes())), Ok(expected));
        }

        /// Escaped output is printable ASCII and respects the cap.
        #[test]
        fn escape_for_log_is_printable_and_bounded(raw in proptest::collection::vec(any::<u8>(), 0..100), cap in 0usize..50) {
            let s = escape_for_log(&raw, cap);
            prop_assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            prop_assert!(s.len() <= cap + 3);
        }
    }
}
