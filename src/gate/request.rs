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
//!    Leading, trailing and repeated spaces separate nothing (runmirrors sends
//!    a leading space).
//! 5. **Grammar**: the words must match one line of this table exactly
//!    (case-sensitive, no options besides `--json`, no extra words):
//!
//! ```text
//! help
//! sync                       Sync { target: Default, stage: All, push: None }
//! sync NAME                  Sync { target: Named(NAME), stage: All, push: None }
//! status [NAME] [--json]     NAME and --json in either order, each at most once
//! PUSH-WORD...               Debian's push (runmirrors), see below
//! ```
//!
//! A command whose first word starts with `sync:` is an ftpsync push: one
//! or more of these words, **in any order, each at most once**, and
//! nothing else:
//!
//! ```text
//! sync:archive:NAME   the mirror NAME                        target: Named(NAME)
//! sync:archive:       (empty NAME) the key's default mirror  target: Default
//! sync:all            both stages (the default)              stage: All
//! sync:stage1         stage 1 only                           stage: Stage1
//! sync:stage2         stage 2 only                           stage: Stage2
//! sync:mhop           multi-hop push; recorded, changes nothing here
//! sync:callback       recorded only: syncgate never calls the pusher back
//! ```
//!
//! * At most one of `sync:all`, `sync:stage1`, `sync:stage2`; none means
//!   `stage: All`. Two of them (or one twice) are refused.
//! * Without a `sync:archive:` word the target is the key's default mirror,
//!   except that `sync:all` without an archive word keeps its old meaning:
//!   every mirror of the key (`target: All`). So `sync:stage1` alone is
//!   stage 1 of the key's only mirror, as before.
//! * `sync:archive:NAME` and `sync:archive:NAME sync:all` are the same
//!   request (its canonical form is the former).
//! * A later word that is not one of these is refused as a bad argument,
//!   where Debian's ftpsync only logs a warning; a first word that is not
//!   one of these is an unknown verb.
//! * ftpsync's receiver answers `sync:callback` by ssh-ing back to the
//!   pusher when it is done. syncgate never opens a connection anywhere:
//!   the word is accepted so runmirrors' pushes work, recorded in
//!   [`PushWords::callback`] and the audit line, and otherwise ignored.
//!   The pusher learns the result from the exit status and stderr of its
//!   own ssh (runmirrors ignores both, except ssh's 255).
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

mod push;
mod refusal;

pub use crate::run::Stage;
pub use push::PushWords;
pub use refusal::Refusal;

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
    /// No name given (`sync`, `sync:archive:`, `sync:stage1`): the key's
    /// only mirror (authorization decides).
    Default,
    /// `sync:all` without an archive word: every mirror the key may sync.
    All,
    /// One named mirror.
    Named(Name),
}

/// A syntactically valid request. Whether this key may make it is decided by
/// [`crate::gate::policy::authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Help,
    Sync {
        target: Target,
        /// How much of the sync is asked for: `All` unless a
        /// `sync:stage1`/`sync:stage2` push word said otherwise.
        stage: Stage,
        /// `Some` when the request came as ftpsync push words.
        push: Option<PushWords>,
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
    /// `--json` last, push words in the order archive, `sync:mhop`, stage,
    /// `sync:callback`. For every request returned by [`parse`],
    /// `parse(Some(r.canonical().as_bytes())) == Ok(r)`.
    ///
    /// A hand-built `Sync` that no command parses to (e.g. `Target::All`
    /// with `Stage::Stage1`, or a stage without `push`) is rendered as the
    /// nearest push words; `Target::All` wins over the stage.
    pub fn canonical(&self) -> String {
        match self {
            Request::Help => "help".to_owned(),
            Request::Sync {
                target,
                stage,
                push,
            } => match (target, stage, push) {
                (Target::Default, Stage::All, None) => "sync".to_owned(),
                (Target::Named(n), Stage::All, None) => format!("sync {n}"),
                (_, _, push) => push::canonical(target, *stage, push.unwrap_or_default()),
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
    let sync = |target| Request::Sync {
        target,
        stage: Stage::All,
        push: None,
    };
    let request = match verb.as_str() {
        "help" => {
            no_more("help", args)?;
            Request::Help
        }
        "sync" => match args {
            [] => sync(Target::Default),
            [name] => sync(Target::Named(name_arg("sync", name)?)),
            [_, extra, ..] => return Err(extra_argument("sync", extra)),
        },
        "status" => parse_status(args)?,
        word if push::is_push_word(word) => push::parse(words)?,
        word => return Err(Refusal::UnknownVerb { verb: quote(word) }),
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
