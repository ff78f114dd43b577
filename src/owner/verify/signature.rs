//! Checking the OpenPGP signature of a checksum file with gpgv or sqv.
//!
//! The program and the keyring must be root-owned all the way up, like
//! every program the owner side runs ([`untrusted_path`]). Each run gets a
//! cleared environment, stdin from /dev/null and its output captured; gpgv
//! gets a fresh private home directory.
//!
//! A detached signature (`F.gpg`, `F.sig`, `F.asc`, `F.sign`) is checked
//! against F itself. A clear-signed F is checked as a detached signature
//! too: its signature block and the signed text the parser read (`sums.rs`)
//! go into private temp files, and the program checks that text. So what is
//! verified is exactly what is parsed, whatever the program would make of
//! the rest of the file, and sqv (which verifies only detached signatures)
//! handles clear-signed files the same way as gpgv.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::{NamedTempFile, TempDir};

use crate::config::{SignatureProgram, SignatureSpec};
use crate::owner::trust::untrusted_path;

use super::walk::show;

/// The names a detached signature of `F` may have, beside it: `F.EXT`.
pub const DETACHED: [&str; 4] = ["gpg", "sig", "asc", "sign"];
/// The longest reason quoted from the verifier, in characters.
const MAX_REASON: usize = 300;

/// A trusted verifier and its private scratch directory.
pub struct Verifier {
    program: SignatureProgram,
    keyring: PathBuf,
    dir: TempDir,
}

impl Verifier {
    /// Refuses a program or keyring someone other than root could replace.
    pub fn new(spec: &SignatureSpec) -> Result<Verifier, String> {
        let prog = spec.program.path();
        let name = spec.program.as_str();
        for (path, what) in [
            (prog, format!("the {name} program")),
            (spec.keyring.as_path(), "the keyring".to_string()),
        ] {
            if let Some((p, why)) = untrusted_path(path, &what) {
                return Err(format!(
                    "{} must be owned by root and not writable by group or others, and so must every directory above it ({why}); refusing to check signatures with it",
                    show(&p)
                ));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("syncgate-verify-")
            .tempdir()
            .map_err(|e| format!("cannot create a private temp directory: {e}"))?;
        std::fs::create_dir(dir.path().join("home"))
            .map_err(|e| format!("cannot create a private temp directory: {e}"))?;
        Ok(Verifier {
            program: spec.program,
            keyring: spec.keyring.clone(),
            dir,
        })
    }

    /// A private temp file for the signed text of a clear-signed file.
    pub fn text_file(&self) -> Result<NamedTempFile, String> {
        NamedTempFile::new_in(self.dir.path())
            .map_err(|e| format!("cannot create a temp file: {e}"))
    }

    /// Checks the checksum file `sums`: clear-signed (`clear`: its
    /// signature block and the file holding its signed text), or with a
    /// detached signature beside it. The error is the reason.
    pub fn check(&self, sums: &Path, clear: Option<(&[u8], &Path)>) -> Result<(), String> {
        if let Some((sig, text)) = clear {
            let mut f = self.text_file()?;
            f.write_all(sig)
                .and_then(|()| f.flush())
                .map_err(|e| format!("cannot write a temp file: {e}"))?;
            return self.run(f.path(), text);
        }
        let mut first_error = None;
        for ext in DETACHED {
            let mut name = sums.as_os_str().to_owned();
            name.push(format!(".{ext}"));
            let sig = PathBuf::from(name);
            match std::fs::symlink_metadata(&sig) {
                Ok(md) if md.is_file() => {}
                _ => continue,
            }
            match self.run(&sig, sums) {
                Ok(()) => return Ok(()),
                Err(why) => {
                    first_error.get_or_insert(why);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| {
            format!(
                "no signature: it is not clear-signed and has no {} beside it",
                DETACHED.map(|e| format!(".{e}")).join(", ")
            )
        }))
    }

    /// Runs the verifier on a detached signature and its data.
    fn run(&self, sig: &Path, data: &Path) -> Result<(), String> {
        let prog = self.program.path();
        let mut cmd = Command::new(prog);
        match self.program {
            SignatureProgram::Gpgv => {
                cmd.arg("--homedir")
                    .arg(self.dir.path().join("home"))
                    .arg("--keyring")
                    .arg(&self.keyring);
            }
            SignatureProgram::Sqv => {
                let mut k = OsString::from("--keyring=");
                k.push(&self.keyring);
                cmd.arg(k);
            }
        }
        cmd.arg("--")
            .arg(sig)
            .arg(data)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", prog.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let why = reason(&out.stderr)
            .or_else(|| reason(&out.stdout))
            .unwrap_or_else(|| format!("it exited with {}", out.status));
        Err(format!(
            "bad signature: {} says: {why}",
            self.program.as_str()
        ))
    }
}

/// The verifier's one-line reason: the last `Error:` line (sqv), else the
/// last `gpgv:` line that is not just a note (gpgv), else the last line.
fn reason(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let note = |l: &str| l.contains("Signature made") || l.contains("using ");
    let line = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Error:"))
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| l.starts_with("gpgv:") && !note(l))
        })
        .or(lines.last())?;
    let line: String = line
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    Some(line)
}
