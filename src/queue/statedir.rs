//! The state directory: where the per-mirror lock files
//! ([`crate::queue::lock`]) and state files live.
//!
//! When root creates a file here it hands it to the directory's owner, so
//! the login account and an admin running syncgate as root share one queue.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

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

    /// Reads a whole small file; Ok(None) if it does not exist.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
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
