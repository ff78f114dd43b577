//! How a mirror's changes go live: `publish`, `keep`, `verify`,
//! `checksum_files` and `verify_signature` of a `[mirror.NAME]` table.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::paths::{is_clean_absolute, no_control};
use super::raw::{RawMirror, RawSignature, Source};
use crate::error::Result;

/// `publish`: how a changed tree goes live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PublishMode {
    /// A new tree beside the live one (unchanged files hard-linked),
    /// verified, then made live by one `rename(2)` of the `dest` symlink.
    #[default]
    Snapshot,
    /// In place: everything but the last files, then the last files and
    /// the deletions (rsync `--delay-updates`).
    TwoStage,
}

impl PublishMode {
    pub const ALL: [PublishMode; 2] = [PublishMode::Snapshot, PublishMode::TwoStage];

    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Snapshot => "snapshot",
            PublishMode::TwoStage => "two-stage",
        }
    }
}

/// `verify`: which files listed in a checksum file are hashed before a
/// snapshot goes live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VerifyMode {
    /// Those this run brought (not hard links of the live snapshot's files).
    #[default]
    Changed,
    /// Every listed file.
    All,
    /// None.
    Off,
}

impl VerifyMode {
    pub const ALL: [VerifyMode; 3] = [VerifyMode::Changed, VerifyMode::All, VerifyMode::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Changed => "changed",
            VerifyMode::All => "all",
            VerifyMode::Off => "off",
        }
    }
}

/// The OpenPGP verifier `verify_signature.program` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SignatureProgram {
    #[default]
    Gpgv,
    Sqv,
}

impl SignatureProgram {
    pub const ALL: [SignatureProgram; 2] = [SignatureProgram::Gpgv, SignatureProgram::Sqv];

    pub fn as_str(self) -> &'static str {
        match self {
            SignatureProgram::Gpgv => "gpgv",
            SignatureProgram::Sqv => "sqv",
        }
    }

    /// Where the program is; it must be root-owned all the way up.
    pub fn path(self) -> &'static Path {
        Path::new(match self {
            SignatureProgram::Gpgv => "/usr/bin/gpgv",
            SignatureProgram::Sqv => "/usr/bin/sqv",
        })
    }
}

/// `verify_signature = { keyring = "PATH", program = "gpgv" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSpec {
    /// Root-owned, like the config.
    pub keyring: PathBuf,
    pub program: SignatureProgram,
}

/// The checksum files looked for in every directory of a new snapshot.
pub const DEFAULT_CHECKSUM_FILES: &[&str] = &["SHA256SUMS", "SHA512SUMS", "*.sha256", "*.sha512"];

/// How many snapshots are kept (the live one included) unless `keep` says.
pub const DEFAULT_KEEP: u64 = 2;

/// A mirror's publishing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// See [`Publish::explicit`].
    pub mode: PublishMode,
    /// Whether the config sets `publish`. When it does not, a mirror whose
    /// dest's parent the owner cannot write (where no snapshot can be made
    /// live) is published in place, with a warning (src/owner/snapshot).
    pub explicit: bool,
    /// Snapshots kept, the live one included (at least 1; 2 allows a rollback).
    pub keep: u64,
    pub verify: VerifyMode,
    /// Names (with `*` and `?`) of checksum files.
    pub checksum_files: Vec<String>,
    pub signature: Option<SignatureSpec>,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            mode: PublishMode::default(),
            explicit: false,
            keep: DEFAULT_KEEP,
            verify: VerifyMode::default(),
            checksum_files: DEFAULT_CHECKSUM_FILES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            signature: None,
        }
    }
}

fn one_of<T: Copy>(
    src: &Source,
    v: &Spanned<String>,
    key: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T> {
    match all.iter().find(|&&t| name(t) == v.get_ref()) {
        Some(&t) => Ok(t),
        None => src.err(
            v.span(),
            key,
            format!(
                "{:?} is not one of {}",
                v.get_ref(),
                all.iter()
                    .map(|&t| format!("{:?}", name(t)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    }
}

/// Validates the publishing keys of one mirror table.
pub(super) fn publish(
    src: &Source,
    m: &RawMirror,
    key: &dyn Fn(&str) -> String,
) -> Result<Publish> {
    let mut p = Publish::default();
    if let Some(v) = &m.publish {
        p.mode = one_of(
            src,
            v,
            &key("publish"),
            &PublishMode::ALL,
            PublishMode::as_str,
        )?;
        p.explicit = true;
    }
    if let Some(v) = &m.keep {
        if *v.get_ref() == 0 || *v.get_ref() > 100 {
            return src.err(
                v.span(),
                &key("keep"),
                "must be between 1 and 100 (the live snapshot included; 2 allows a rollback)",
            );
        }
        p.keep = *v.get_ref();
    }
    if let Some(v) = &m.verify {
        p.verify = one_of(src, v, &key("verify"), &VerifyMode::ALL, VerifyMode::as_str)?;
    }
    if let Some(list) = &m.checksum_files {
        p.checksum_files = Vec::new();
        for v in list {
            let s = v.get_ref();
            if s.is_empty() || s.contains('/') || !no_control(s) || s.starts_with('.') {
                return src.err(
                    v.span(),
                    &key("checksum_files"),
                    format!("{s:?} is not a file name pattern (no '/', not hidden)"),
                );
            }
            p.checksum_files.push(s.clone());
        }
    }
    if let Some(sig) = &m.verify_signature {
        p.signature = Some(signature(src, sig, &key("verify_signature"))?);
    }
    if p.mode == PublishMode::TwoStage {
        for (set, k) in [
            (m.keep.is_some(), "keep"),
            (m.verify.is_some(), "verify"),
            (m.checksum_files.is_some(), "checksum_files"),
            (m.verify_signature.is_some(), "verify_signature"),
        ] {
            if set {
                let span = m.publish.as_ref().map(|v| v.span()).unwrap_or(0..0);
                return src.err(
                    span,
                    &key(k),
                    "applies only to publish = \"snapshot\" (two-stage publishing keeps no snapshots and verifies nothing)",
                );
            }
        }
    }
    Ok(p)
}

fn signature(src: &Source, raw: &RawSignature, key: &str) -> Result<SignatureSpec> {
    let keyring = PathBuf::from(raw.keyring.get_ref());
    if !is_clean_absolute(&keyring) || !no_control(raw.keyring.get_ref()) {
        return src.err(
            raw.keyring.span(),
            &format!("{key}.keyring"),
            "must be an absolute path without '..'",
        );
    }
    let program = match &raw.program {
        Some(v) => one_of(
            src,
            v,
            &format!("{key}.program"),
            &SignatureProgram::ALL,
            SignatureProgram::as_str,
        )?,
        None => SignatureProgram::default(),
    };
    Ok(SignatureSpec { keyring, program })
}
