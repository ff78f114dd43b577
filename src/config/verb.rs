//! The SSH key verbs: the one list of what a key's `verbs` may name.

use std::fmt;
use std::str::FromStr;

/// What a key may ask for (`[key.NAME] verbs = [...]`).
///
/// The words are defined once, in [`Verb::as_str`]; parsing, serde and the
/// config's error message derive from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Verb {
    Sync,
    Status,
    Help,
}

impl Verb {
    /// Every verb, in documentation order.
    pub const ALL: [Verb; 3] = [Verb::Sync, Verb::Status, Verb::Help];

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Sync => "sync",
            Verb::Status => "status",
            Verb::Help => "help",
        }
    }

    /// The verb words, comma-separated: `sync, status, help`.
    pub fn known() -> String {
        Self::ALL.map(Verb::as_str).join(", ")
    }
}

/// Why a string is not a [`Verb`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown verb {0:?} (known: {known})", known = Verb::known())]
pub struct UnknownVerb(pub String);

impl FromStr for Verb {
    type Err = UnknownVerb;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVerb(s.to_owned()))
    }
}

impl TryFrom<String> for Verb {
    type Error = UnknownVerb;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
