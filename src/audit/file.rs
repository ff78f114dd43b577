//! The fallback audit file, `STATE_DIR/audit.log`: where lines go when the
//! syslog socket is gone or full.
//!
//! Append-only (`O_APPEND`, one `write` per line), never through a symlink
//! (`O_NOFOLLOW`), never blocking on a FIFO (`O_NONBLOCK`, then it must be
//! a regular file with one link). It belongs to the state directory's
//! owner (the login account), mode 0640: when root creates it (a local
//! `syncgate sync`), it hands it over, as the queue does with its files,
//! so the gate can append to it later. A file owned by anyone else is not
//! written to.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// The file's name inside `state_dir`.
pub const NAME: &str = "audit.log";

pub struct AuditFile {
    file: File,
}

impl AuditFile {
    /// Opens (creating it if missing) `dir/audit.log` for appending.
    pub fn open(dir: &Path) -> io::Result<AuditFile> {
        let d = std::fs::metadata(dir)?;
        let path = dir.join(NAME);
        let mut opts = OpenOptions::new();
        opts.append(true)
            .mode(0o640)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits());
        let (file, created) = match opts.clone().create_new(true).open(&path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => (opts.open(&path)?, false),
            Err(e) => return Err(e),
        };
        let md = file.metadata()?;
        if !md.file_type().is_file() || md.nlink() != 1 {
            return Err(unusable(&path, "is not a regular file with one link"));
        }
        if created {
            file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
            if nix::unistd::geteuid().is_root() && md.uid() != d.uid() {
                std::os::unix::fs::fchown(&file, Some(d.uid()), Some(d.gid()))?;
            }
        } else if md.uid() != d.uid() {
            return Err(unusable(
                &path,
                &format!(
                    "is owned by uid {}, not by the state directory's owner",
                    md.uid()
                ),
            ));
        }
        Ok(AuditFile { file })
    }

    /// Appends `TIMESTAMP LEVEL syncgate[PID]: MSG` as one line, in one
    /// write; LEVEL is syslog's name of the severity (`info`, `notice`,
    /// `warning`, `err`).
    pub fn append(&mut self, secs: u64, level: &str, msg: &str) -> io::Result<()> {
        let line = format!(
            "{} {level} syncgate[{}]: {msg}\n",
            crate::sys::timefmt::iso(secs),
            std::process::id()
        );
        self.file.write_all(line.as_bytes())
    }
}

/// The fallback file of a state directory.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(NAME)
}

fn unusable(path: &Path, why: &str) -> io::Error {
    io::Error::other(format!("{} {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn lines_are_appended_to_a_new_0640_file() {
        let d = dir();
        let mut f = AuditFile::open(d.path()).unwrap();
        f.append(1_795_255_100, "notice", "event=a").unwrap();
        let mut f = AuditFile::open(d.path()).unwrap();
        f.append(1_795_255_101, "err", "event=b x=\"y z\"").unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(path_in(d.path())).unwrap(),
            format!(
                "2026-11-21T09:58:20Z notice syncgate[{pid}]: event=a\n2026-11-21T09:58:21Z err syncgate[{pid}]: event=b x=\"y z\"\n"
            )
        );
        let md = std::fs::metadata(path_in(d.path())).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640);
    }

    #[test]
    fn a_symlink_a_fifo_a_directory_and_a_hard_link_are_refused() {
        let d = dir();
        let target = d.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, path_in(d.path())).unwrap();
        assert!(AuditFile::open(d.path()).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"");

        std::fs::remove_file(path_in(d.path())).unwrap();
        nix::unistd::mkfifo(
            &path_in(d.path()),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(AuditFile::open(d.path()).is_err());

        std::fs::remove_file(path_in(d.path())).unwrap();
        std::fs::create_dir(path_in(d.path())).unwrap();
        assert!(AuditFile::open(d.path()).is_err());

        std::fs::remove_dir(path_in(d.path())).unwrap();
        std::fs::hard_link(&target, path_in(d.path())).unwrap();
        assert!(AuditFile::open(d.path()).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }

    #[test]
    fn a_missing_state_dir_is_an_error() {
        let d = dir();
        assert!(AuditFile::open(&d.path().join("nope")).is_err());
    }
}
