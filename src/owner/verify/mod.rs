//! Verifying a new snapshot before it goes live: every checksum file in it
//! (names from `checksum_files`, in any directory) is parsed (`sums.rs`),
//! its names resolved inside its own directory (`plan.rs`), the files this
//! run brought hashed in parallel (`hash.rs`), and, when the mirror has
//! `verify_signature`, its OpenPGP signature checked (`signature.rs`).
//!
//! `verify = "changed"` (the default) hashes only the listed files that are
//! not hard links of the live snapshot's file at the same path (rsync
//! `--link-dest` links what did not change); a checksum file is checked
//! (its signature, too) when it changed itself or lists a changed file.
//! `"all"` checks everything, `"off"` nothing.
//!
//! Every problem is collected; the failure names the first
//! [`SHOWN_FAILURES`] and counts the rest.

mod hash;
mod plan;
mod signature;
mod sums;
mod walk;

#[cfg(test)]
mod sig_tests;
#[cfg(test)]
mod tests;

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use crate::config::{Publish, VerifyMode};

use plan::{Jobs, Place};
use signature::Verifier;
use walk::show;

/// The most failures a [`VerifyFailure`] spells out.
pub const SHOWN_FAILURES: usize = 5;

/// What a verification that passed did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Checksum files found in the snapshot.
    pub checksum_files: u64,
    /// Distinct files hashed.
    pub files_hashed: u64,
    pub bytes_hashed: u64,
    /// Signatures checked and found good.
    pub signatures: u64,
}

/// Why a snapshot must not go live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    pub message: String,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for VerifyFailure {}

/// Verifies the snapshot at `new`.
/// `new`: the root of the new snapshot (a private directory only the owner can write).
/// `live`: the root of the snapshot that is live now, if any (for VerifyMode::Changed).
pub fn verify_tree(
    new: &Path,
    live: Option<&Path>,
    p: &Publish,
) -> Result<VerifyReport, VerifyFailure> {
    if p.verify == VerifyMode::Off {
        return Ok(VerifyReport::default());
    }
    let fail = |message: String| VerifyFailure { message };
    let root = new
        .canonicalize()
        .map_err(|e| fail(format!("cannot resolve {}: {e}", show(new))))?;
    let verifier = match &p.signature {
        Some(spec) => Some(Verifier::new(spec).map_err(fail)?),
        None => None,
    };
    let found = walk::checksum_files(&root, &p.checksum_files).map_err(fail)?;
    let mut run = Run {
        root: &root,
        live: if p.verify == VerifyMode::Changed {
            live
        } else {
            None
        },
        verifier,
        jobs: Jobs::default(),
        failures: Failures::default(),
        report: VerifyReport {
            checksum_files: found.len() as u64,
            ..Default::default()
        },
    };
    for rel in &found {
        run.sums_file(rel);
    }
    let hashed = hash::run(run.jobs.into_vec());
    run.report.files_hashed = hashed.files;
    run.report.bytes_hashed = hashed.bytes;
    for f in hashed.failures {
        run.failures.push(f);
    }
    match run.failures.summary() {
        None => Ok(run.report),
        Some(message) => Err(fail(message)),
    }
}

/// A checksum file read: its entries, its metadata, and (clear-signed,
/// with a verifier) its signed text.
type Parsed = (
    sums::Sums,
    std::fs::Metadata,
    Option<tempfile::NamedTempFile>,
);

/// One verification under way.
struct Run<'a> {
    root: &'a Path,
    /// The snapshot to compare inodes with (`None`: check everything).
    live: Option<&'a Path>,
    verifier: Option<Verifier>,
    jobs: Jobs,
    failures: Failures,
    report: VerifyReport,
}

impl Run<'_> {
    /// Parses one checksum file, resolves its entries, checks its
    /// signature when it matters, and queues what must be hashed.
    fn sums_file(&mut self, rel: &Path) {
        let shown = show(rel);
        let path = self.root.join(rel);
        let (sums, md, text) = match self.parse(&path) {
            Ok(parsed) => parsed,
            Err(why) => return self.failures.push(format!("{shown}: {why}")),
        };
        let at = Place {
            root: self.root,
            sums: rel,
            live: self.live,
        };
        let mut targets = Vec::new();
        for e in &sums.entries {
            match plan::resolve(&at, e) {
                Ok(Some(t)) => targets.push(t),
                Ok(None) => {}
                Err(why) => self.failures.push(why),
            }
        }
        let checked = plan::changed(self.live, rel, &md) || !targets.is_empty();
        if let (true, Some(v)) = (checked, &self.verifier) {
            let clear = match (&sums.signature, &text) {
                (Some(sig), Some(t)) => Some((sig.as_slice(), t.path())),
                _ => None,
            };
            if let Err(why) = v.check(&path, clear) {
                // Hashes from a file nobody vouches for prove nothing.
                return self.failures.push(format!("{shown}: {why}"));
            }
            self.report.signatures += 1;
        }
        for t in targets {
            self.jobs.add(t);
        }
    }

    /// Opens and parses a checksum file; with a verifier, a clear-signed
    /// file's signed text is kept in a temp file.
    fn parse(&self, path: &Path) -> Result<Parsed, String> {
        let f = walk::open_nofollow(path).map_err(|e| format!("cannot open it: {e}"))?;
        let md = f.metadata().map_err(|e| format!("cannot stat it: {e}"))?;
        if !md.is_file() {
            return Err("it is no longer a regular file".to_string());
        }
        let mut text = match &self.verifier {
            Some(v) => Some(BufWriter::new(v.text_file()?)),
            None => None,
        };
        let sums = sums::parse(
            BufReader::with_capacity(64 * 1024, f),
            text.as_mut().map(|t| t as &mut dyn Write),
        )
        .map_err(|e| format!("not a valid checksum file: {e}"))?;
        let text = match text {
            Some(t) => Some(
                t.into_inner()
                    .map_err(|e| format!("cannot keep its signed text: {}", e.error()))?,
            ),
            None => None,
        };
        Ok((sums, md, text))
    }
}

/// The problems found: the first [`SHOWN_FAILURES`] spelled out, the rest
/// only counted (a hostile checksum file may list millions of names).
#[derive(Default)]
struct Failures {
    shown: Vec<String>,
    count: usize,
}

impl Failures {
    fn push(&mut self, f: String) {
        if self.shown.len() < SHOWN_FAILURES {
            self.shown.push(f);
        }
        self.count += 1;
    }

    /// The failure message, if there is anything wrong.
    fn summary(&self) -> Option<String> {
        match self.count {
            0 => None,
            1 => Some(self.shown.join("")),
            n => {
                let mut m = format!("{n} problems: {}", self.shown.join("; "));
                if n > self.shown.len() {
                    m.push_str(&format!("; and {} more", n - self.shown.len()));
                }
                Some(m)
            }
        }
    }
}
