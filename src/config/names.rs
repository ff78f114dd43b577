//! Names: the one mirror-name grammar ([`MirrorName`]), user and group
//! names, and their lookups.

use std::fmt;

/// syncgate's subcommand names (and clap's `help`). sudo compares a rule's
/// arguments as one space-joined string, so a mirror with one of these names
/// would let `--config "CONFIG transfer" NAME` run that subcommand as the
/// owner: `syncgate sudoers` and `check` refuse such a mirror. The clap
/// definition is the source; a test in `cli` keeps this list equal to it.
pub const SUBCOMMANDS: &[&str] = &[
    "sync",
    "status",
    "history",
    "ssh",
    "authorized-key",
    "sudoers",
    "check",
    "transfer",
    "prepare",
    "fix-perms",
    "rollback",
    "owner-rollback",
    "push",
    "generate",
    "help",
];

/// A host name for a trace file: letters, digits, `-` and `.`, at most 253
/// bytes, not starting with `-` or `.` (it names a file in dest).
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && !h.starts_with(['-', '.'])
        && !h.contains("..")
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A validated mirror name: `^[a-z0-9][a-z0-9._-]{0,63}$`, not containing `..`.
///
/// The one definition of the grammar: mirror and key names in the
/// configuration and mirror names in SSH requests all use it.
/// [`MirrorName::new`] is the only constructor, so holding a `MirrorName`
/// proves the string matched the grammar. It can never start with `-` or
/// contain `/`, so a name can neither inject an option nor a path into
/// anything that later uses it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MirrorName(String);

impl MirrorName {
    /// Longest valid name, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Returns the name if `s` matches the mirror-name grammar.
    pub fn new(s: &str) -> Option<MirrorName> {
        Self::is_valid(s).then(|| MirrorName(s.to_owned()))
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

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for MirrorName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for MirrorName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for MirrorName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MirrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name for a mirror or key: the [`MirrorName`] grammar.
pub fn valid_name(s: &str) -> bool {
    MirrorName::is_valid(s)
}

/// A login name: 1 to 32 of letters, digits, `.`, `_` and `-`, not
/// starting with `-`.
pub fn valid_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub fn lookup_uid(user: &str) -> Option<u32> {
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

pub fn lookup_gid(group: &str) -> Option<u32> {
    nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}
