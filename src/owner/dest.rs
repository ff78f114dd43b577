//! dest, the mirror directory the owner side writes: its lock, its mtime,
//! and the directories syncgate and rsync keep inside it.
//!
//! Every owner-side command holds an exclusive lock on dest itself
//! ([`DestLock`]). `transfer` passes that lock on to rsync, so it stays held
//! until the last rsync process is gone: a new transfer never overlaps a
//! dying one.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;

use crate::config::Mirror;
use crate::error::{Error, IoContext, Result};

/// rsync's temporary directory inside dest (same filesystem, so renames are
/// atomic). Emptied at the start of every transfer, except for a first
/// sync's staging copy that a later first sync resumes. fix-perms, the plan
/// and publishing skip it at the top level of dest.
pub const TEMP_DIR: &str = ".syncgate-tmp";

/// A first sync's staging copy, below [`TEMP_DIR`].
pub const FRESH_DIR: &str = "fresh";

/// Where a first sync holds the last files while the rest is published,
/// below [`TEMP_DIR`].
pub const HOLD_DIR: &str = "last";

/// Name of rsync's `--delay-updates` partial directory (rsync's name, not
/// ours); removed anywhere below dest.
pub const RSYNC_PARTIAL_DIR: &str = ".~tmp~";

/// How long an owner-side command waits for a previous one to let go of dest.
const DEST_LOCK_WAIT: Duration = Duration::from_secs(60);

/// dest, open and exclusively locked; unlocked when dropped (or when the
/// last rsync that inherited it exits).
pub struct DestLock {
    dir: File,
}

impl DestLock {
    /// Opens dest (creating it if missing) without following a symlink, and
    /// locks it exclusively, waiting up to a minute for an earlier holder.
    pub fn acquire(mirror: &Mirror) -> Result<DestLock> {
        let dest = &mirror.dest;
        if std::fs::symlink_metadata(dest).is_err() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mirror.dir_mode & 0o777)
                .create(dest)
                .context(|| format!("cannot create dest {}", dest.display()))?;
        }
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(dest)
            .context(|| {
                format!(
                    "cannot open dest {} (it must be a directory, not a symlink)",
                    dest.display()
                )
            })?;
        let until = Instant::now() + DEST_LOCK_WAIT;
        loop {
            match dir.try_lock() {
                Ok(()) => return Ok(DestLock { dir }),
                Err(std::fs::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Internal(format!(
                        "dest {} is still locked by an earlier transfer after {}s",
                        dest.display(),
                        DEST_LOCK_WAIT.as_secs()
                    )))
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(Error::io(format!("cannot lock dest {}", dest.display()), e))
                }
            }
        }
    }

    /// Whether the processes this one starts from now on inherit the lock
    /// (rsync and every process it forks), or not.
    pub fn pass_on(&self, inherit: bool) -> Result<()> {
        let flags = if inherit {
            nix::fcntl::FdFlag::empty()
        } else {
            nix::fcntl::FdFlag::FD_CLOEXEC
        };
        nix::fcntl::fcntl(&self.dir, nix::fcntl::FcntlArg::F_SETFD(flags))
            .map_err(|e| Error::Internal(format!("fcntl: {e}")))?;
        Ok(())
    }

    /// dest's mtime.
    pub fn mtime(&self) -> Option<TimeSpec> {
        mtime_of(&self.dir)
    }

    /// Sets dest's mtime (its atime is left alone). rsync compares
    /// directory mtimes too: dest's own must stay what rsync set
    /// (upstream's), or the next plan itemizes "./" and a no-change sync
    /// takes the two-stage path.
    pub fn set_mtime(&self, mtime: Option<TimeSpec>) {
        if let Some(t) = mtime {
            let _ = nix::sys::stat::futimens(&self.dir, &TimeSpec::UTIME_OMIT, &t);
        }
    }
}

/// The mtime of the open directory `dir`.
pub fn mtime_of(dir: &File) -> Option<TimeSpec> {
    nix::sys::stat::fstat(dir)
        .ok()
        .map(|st| TimeSpec::new(st.st_mtime, st.st_mtime_nsec))
}

/// Empties (or creates) rsync's temporary directory: leftovers of an
/// aborted run go away here, except `keep` (a first sync's staging copy,
/// which the next first sync resumes).
pub fn prepare_temp_dir(dest: &Path, keep: Option<&str>) -> Result<()> {
    let tmp = dest.join(TEMP_DIR);
    match std::fs::symlink_metadata(&tmp) {
        Ok(md) if md.file_type().is_dir() => {
            for entry in
                std::fs::read_dir(&tmp).context(|| format!("cannot read {}", tmp.display()))?
            {
                let entry = entry.context(|| format!("cannot read {}", tmp.display()))?;
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir && keep.is_some_and(|k| entry.file_name() == k) {
                    continue;
                }
                let p = entry.path();
                let r = if is_dir {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.context(|| format!("cannot remove leftover {}", p.display()))?;
            }
        }
        Ok(_) => {
            std::fs::remove_file(&tmp).context(|| format!("cannot remove {}", tmp.display()))?;
            create_private(&tmp)?;
        }
        Err(_) => create_private(&tmp)?,
    }
    Ok(())
}

/// Creates the directory `p` with mode 0700.
fn create_private(p: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .context(|| format!("cannot create {}", p.display()))
}

/// Removes rsync's `--delay-updates` holding directories (`.~tmp~`) below
/// dest, without following symlinks. After a stage 2 that did not finish
/// they hold checksum files and markers that were never published, some
/// of them partial (rsync keeps an interrupted file there), under published
/// directories. Returns how many were removed; what cannot be removed is
/// left to fix-perms after the next successful run.
pub fn remove_delayed_updates(dest: &Path) -> u64 {
    let mut removed = 0;
    let mut dirs = vec![(dest.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() || (depth == 0 && e.file_name() == TEMP_DIR) {
                continue;
            }
            if e.file_name() == RSYNC_PARTIAL_DIR {
                if std::fs::remove_dir_all(e.path()).is_ok() {
                    removed += 1;
                }
            } else if depth < 256 {
                dirs.push((e.path(), depth + 1));
            }
        }
    }
    removed
}
