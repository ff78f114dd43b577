//! The configuration as written in the file: serde structs straight from
//! TOML (unknown keys and wrong types are refused here), and [`Source`],
//! which turns a span into a `FILE:LINE: key: message` error.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::duration::RawDuration;
use super::hub::{RawDownstream, RawHub};
use super::Privilege;
use crate::error::{Error, Result};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub state_dir: Spanned<String>,
    pub privilege: Option<Spanned<Privilege>>,
    pub login_user: Option<Spanned<String>>,
    pub rsync: Option<Spanned<String>>,
    pub binary: Option<Spanned<String>>,
    pub heartbeat: Option<Spanned<u64>>,
    pub audit_required: Option<bool>,
    pub status_page: Option<Spanned<String>>,
    pub syslog: Option<RawSyslog>,
    pub history_size: Option<Spanned<i64>>,
    pub metrics_file: Option<Spanned<String>>,
    pub hub: Option<RawHub>,
    #[serde(default)]
    pub mirror: BTreeMap<Spanned<String>, RawMirror>,
    #[serde(default)]
    pub key: BTreeMap<Spanned<String>, RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSyslog {
    pub facility: Option<Spanned<String>>,
    pub socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirror {
    pub upstream: Spanned<String>,
    pub dest: Spanned<String>,
    pub owner: Spanned<String>,
    pub reader_group: Spanned<String>,
    pub file_mode: Option<Spanned<String>>,
    pub dir_mode: Option<Spanned<String>>,
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    pub last: Option<Vec<Spanned<String>>>,
    pub bwlimit: Option<u64>,
    pub io_timeout: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub max_delete: Option<u64>,
    pub queue_timeout: Option<Spanned<RawDuration>>,
    pub max_waiting: Option<Spanned<u64>>,
    pub profile: Option<Spanned<String>>,
    pub trace: Option<bool>,
    pub trace_host: Option<Spanned<String>>,
    pub busy_marker: Option<Vec<Spanned<String>>>,
    pub busy_wait: Option<Spanned<RawDuration>>,
    pub publish: Option<Spanned<String>>,
    pub keep: Option<Spanned<u64>>,
    pub verify: Option<Spanned<String>>,
    pub checksum_files: Option<Vec<Spanned<String>>>,
    pub verify_signature: Option<RawSignature>,
    pub change_marker: Option<Spanned<String>>,
    pub full_every: Option<Spanned<RawDuration>>,
    pub max_age: Option<Spanned<RawDuration>>,
    pub cascade: Option<Spanned<String>>,
    pub require: Option<Spanned<u64>>,
    pub push_delay: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub downstream: BTreeMap<Spanned<String>, RawDownstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSignature {
    pub keyring: Spanned<String>,
    pub program: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKey {
    pub verbs: Vec<Spanned<String>>,
    #[serde(default)]
    pub mirrors: Vec<Spanned<String>>,
    #[serde(default)]
    pub from: Vec<Spanned<String>>,
    pub max_waiting: Option<Spanned<u64>>,
    pub runmirrors: Option<bool>,
}

/// Builds errors that point at a place in the file.
pub(super) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    pub fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    pub fn err<T>(&self, span: Range<usize>, key: &str, msg: impl std::fmt::Display) -> Result<T> {
        Err(Error::Config(format!(
            "{}:{}: {}: {}",
            self.path.display(),
            self.line(span),
            key,
            msg
        )))
    }

    /// Parses the text into the raw structs; a TOML error (syntax, unknown
    /// key, wrong type) becomes `FILE:LINE: message`.
    pub fn raw(&self) -> Result<RawConfig> {
        toml::from_str(self.text).map_err(|e| {
            let line = e.span().map(|s| self.line(s)).unwrap_or(1);
            Error::Config(format!(
                "{}:{}: {}",
                self.path.display(),
                line,
                e.message().trim()
            ))
        })
    }
}
