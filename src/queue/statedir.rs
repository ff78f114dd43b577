//! The state directory: where the per-mirror lock files
//! ([`crate::queue::lock`]) and state files live.
//!
//! When root creates a file here it hands it to the directory's owner, so
//! the login account and an admin running syncgate as root share one queue.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};

use nix::libc;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The largest state file syncgate reads: its [`HISTORY`] runs take well
/// under 1 MiB.
///
/// [`HISTORY`]: crate::queue::state::HISTORY
pub const STATE_MAX: u64 = 4 << 20;

/// What [`StateDir::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Missing,
    Bytes(Vec<u8>),
    /// Not a regular file of a sane size: why, for the warning.
    Unusable(String),
}

/// A file type, for humans.
fn kind(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

pub struct StateDir {
    path: PathBuf,
    uid: u32,
    gid: u32,
}

impl StateDir {
    /// Opens (and, if missing, creates with mode 0750) the state directory.
    pub fn open(path: &Path) -> Result<StateDir> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(path)
                    .context(|| format!("cannot create state_dir {}", path.display()))?;
            }
            Err(e) => return Err(Error::io(format!("state_dir {}", path.display()), e)),
            Ok(_) => {}
        }
        let md =
            std::fs::symlink_metadata(path).context(|| format!("state_dir {}", path.display()))?;
        if !md.file_type().is_dir() {
            return Err(Error::Internal(format!(
                "state_dir {} is not a directory (symlinks are refused)",
                path.display()
            )));
        }
        if md.mode() & 0o022 != 0 {
            return Err(Error::Internal(format!(
                "state_dir {} is writable by group or others (mode {:o}); fix: chmod 0750 {}",
                path.display(),
                md.mode() & 0o7777,
                path.display()
            )));
        }
        Ok(StateDir {
            path: path.to_path_buf(),
            uid: md.uid(),
            gid: md.gid(),
        })
    }

    pub fn lock_path(&self, mirror: &str) -> PathBuf {
        self.path.join(format!("{mirror}.lock"))
    }

    /// The file an SSH key's waiting requests hold a shared lock on, so
    /// the kernel's lock table counts them (`[key.NAME] max_waiting`). The
    /// leading `_` keeps it apart from every mirror's files (mirror names
    /// start with a letter or digit).
    pub fn key_lock_path(&self, key: &str) -> PathBuf {
        self.path.join(format!("_key.{key}.lock"))
    }

    /// A file of the state directory, by name.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn state_path(&self, mirror: &str) -> PathBuf {
        self.path.join(format!("{mirror}.state.json"))
    }

    /// The uid that owns the state directory (and so every file in it).
    pub(super) fn owner_uid(&self) -> u32 {
        self.uid
    }

    /// Gives a file we created to the state directory's owner when we run as root.
    pub(super) fn adopt(&self, file: &File, path: &Path) -> Result<()> {
        let md = file.metadata().context(|| path.display().to_string())?;
        if nix::unistd::geteuid().is_root()
            && (md.uid() != self.uid || md.gid() != self.gid)
            && md.uid() == 0
        {
            std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid))
                .context(|| format!("cannot chown {}", path.display()))?;
        }
        Ok(())
    }

    /// Reads a state file: a regular file of at most [`STATE_MAX`] bytes,
    /// opened without following a symlink and without blocking (a FIFO
    /// has no writer to wait for). Anything else is [`Read::Unusable`],
    /// never read.
    pub fn read(&self, path: &Path) -> Result<Read> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::Missing),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Ok(Read::Unusable("a symlink, which is not followed".into()))
            }
            // A socket cannot be opened.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                return Ok(Read::Unusable("not a regular file".into()))
            }
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        };
        let md = file
            .metadata()
            .context(|| format!("cannot read {}", path.display()))?;
        if !md.file_type().is_file() {
            return Ok(Read::Unusable(format!(
                "a {}, not a regular file",
                kind(&md)
            )));
        }
        if md.len() > STATE_MAX {
            return Ok(Read::Unusable(format!(
                "{} bytes, more than a state file may have ({} MiB)",
                md.len(),
                STATE_MAX >> 20
            )));
        }
        let mut bytes = Vec::with_capacity(md.len() as usize);
        file.take(STATE_MAX + 1)
            .read_to_end(&mut bytes)
            .context(|| format!("cannot read {}", path.display()))?;
        if bytes.len() as u64 > STATE_MAX {
            return Ok(Read::Unusable(format!(
                "more than a state file may have ({} MiB)",
                STATE_MAX >> 20
            )));
        }
        Ok(Read::Bytes(bytes))
    }

    /// Replaces `path` atomically: temporary file in the same directory,
    /// fsync, rename, fsync of the directory.
    pub fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut tmp = tempfile::Builder::new()
            .prefix(".state-")
            .tempfile_in(&self.path)
            .context(|| format!("cannot create a temporary file in {}", self.path.display()))?;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o640))
            .context(|| "cannot set mode of state file".into())?;
        tmp.write_all(bytes)
            .and_then(|_| tmp.as_file().sync_all())
            .context(|| format!("cannot write {}", path.display()))?;
        self.adopt(tmp.as_file(), tmp.path())?;
        tmp.persist(path)
            .map_err(|e| Error::io(format!("cannot replace {}", path.display()), e.error))?;
        if let Ok(dir) = File::open(&self.path) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Where the gate notes that a key has sent Debian's push words (`check`
/// reads it: such a key should say `runmirrors = true`).
pub fn push_marker(state_dir: &Path, key: &str) -> PathBuf {
    state_dir.join(format!("_key.{key}.pushed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unusable(r: Read) -> String {
        match r {
            Read::Unusable(why) => why,
            other => panic!("read as {other:?}"),
        }
    }

    #[test]
    fn only_a_regular_file_of_a_sane_size_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        let p = sd.state_path("m");
        assert_eq!(sd.read(&p).unwrap(), Read::Missing);
        std::fs::write(&p, b"{}").unwrap();
        assert_eq!(sd.read(&p).unwrap(), Read::Bytes(b"{}".to_vec()));

        std::fs::remove_file(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(unusable(sd.read(&p).unwrap()), "a FIFO, not a regular file");

        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        assert!(unusable(sd.read(&p).unwrap()).contains("symlink"));

        std::fs::remove_file(&p).unwrap();
        std::fs::create_dir(&p).unwrap();
        assert_eq!(
            unusable(sd.read(&p).unwrap()),
            "a directory, not a regular file"
        );

        std::fs::remove_dir(&p).unwrap();
        let f = File::create(&p).unwrap();
        f.set_len(STATE_MAX).unwrap();
        assert!(matches!(sd.read(&p).unwrap(), Read::Bytes(b) if b.len() as u64 == STATE_MAX));
        f.set_len(1 << 40).unwrap();
        assert!(unusable(sd.read(&p).unwrap()).contains("1099511627776 bytes, more than"));
    }
}
