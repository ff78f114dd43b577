//! dest, the mirror directory the owner side writes: its lock, its mtime,
//! and the directories syncgate and rsync keep inside it.
//!
//! Every owner-side command holds an exclusive lock ([`DestLock`]) on
//! [`LOCK_FILE`] inside syncgate's private directory in dest ([`TEMP_DIR`],
//! mode 0700): a file only the owner can open, so no reader can block a
//! sync by locking it (dest itself is readable by the reader group, and a
//! lock on it could be taken by any of them). `transfer` passes that lock
//! on to rsync, so it stays held until the last rsync process is gone: a
//! new transfer never overlaps a dying one.
//!
//! The private directory is not part of the published tree (readers must
//! be able to list every directory), so the last holder removes it with
//! the lock file when it lets go. The lock file is only ever unlinked by a
//! process that holds the lock on it, and only when nobody else does; one
//! who gets the lock checks that the file still has its name, and starts
//! over otherwise. So all holders always lock one and the same inode.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

use crate::config::Mirror;
use crate::error::{Error, IoContext, Result};

/// syncgate's private directory inside dest (mode 0700, the owner's): the
/// dest lock, rsync's temporary directory (same filesystem, so renames are
/// atomic) and a first sync's staging copy. Emptied at the start of every
/// transfer, except for the lock and a first sync's staging copy that a
/// later first sync resumes; removed when the last holder of the lock lets
/// go. No rsync takes or deletes anything of this name at dest's top;
/// fix-perms, the plan and publishing skip it there, and fix-perms removes
/// anything of that name that is not syncgate's own real directory.
pub const TEMP_DIR: &str = ".syncgate-tmp";

/// The dest lock, below [`TEMP_DIR`]: a plain file of the owner, mode 0600.
pub const LOCK_FILE: &str = "lock";

/// A first sync's staging copy, below [`TEMP_DIR`].
pub const FRESH_DIR: &str = "fresh";

/// Where a first sync holds the last files while the rest is published,
/// below [`TEMP_DIR`].
pub const HOLD_DIR: &str = "last";

/// Name of rsync's `--delay-updates` partial directory (rsync's name, not
/// ours); removed anywhere below dest, whatever its type, and never taken
/// from upstream.
pub const RSYNC_PARTIAL_DIR: &str = ".~tmp~";

/// How long an owner-side command waits for a previous one to let go of dest.
const DEST_LOCK_WAIT: Duration = Duration::from_secs(60);

/// dest's lock, held; let go when dropped (or when the last rsync that
/// inherited it exits).
pub struct DestLock {
    /// dest itself (for its mtime).
    dir: File,
    /// [`TEMP_DIR`] in it.
    private: File,
    /// [`LOCK_FILE`] in that, locked (`None` once closed, in `drop`).
    lock: Option<File>,
}

impl DestLock {
    /// Opens the mirror's lock directory (dest, or with snapshots the
    /// snapshot root: [`crate::owner::snapshot::layout::lock_dir`]), creating it if missing, without
    /// following a symlink, makes sure its private directory is there, and locks the lock file
    /// in it exclusively, waiting up to a minute for an earlier holder.
    pub fn acquire(mirror: &Mirror) -> Result<DestLock> {
        let dest = &crate::owner::snapshot::layout::lock_dir(mirror);
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
            let private = open_private_dir(&dir, dest)?;
            let lock = open_lock_file(&private, dest)?;
            match lock.try_lock() {
                Ok(()) if still_named(&dir, &private, &lock) => {
                    return Ok(DestLock {
                        dir,
                        private,
                        lock: Some(lock),
                    })
                }
                // Removed by the holder we waited for: start over.
                Ok(()) => continue,
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
        if let Some(lock) = &self.lock {
            nix::fcntl::fcntl(lock, nix::fcntl::FcntlArg::F_SETFD(flags))
                .map_err(|e| Error::Internal(format!("fcntl: {e}")))?;
        }
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
        set_mtime_of(&self.dir, mtime);
    }
}

impl Drop for DestLock {
    /// Lets go of the lock; when nobody else holds it (no rsync that
    /// inherited it is still alive, no other command took it meanwhile),
    /// removes the lock file and, when empty, the private directory, and
    /// puts dest's mtime back.
    fn drop(&mut self) {
        // Closed, not unlocked: an rsync that inherited it shares its open
        // file description, and an unlock would let go of the lock for it too.
        drop(self.lock.take());
        let Ok(again) = nix::fcntl::openat(
            self.private.as_fd(),
            LOCK_FILE,
            OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return;
        };
        let again = File::from(again);
        // Our own open file description still holds it while a child that
        // inherited it lives: then this fails, and everything stays.
        if again.try_lock().is_err() || !still_named(&self.dir, &self.private, &again) {
            return;
        }
        if nix::unistd::unlinkat(self.private.as_fd(), LOCK_FILE, UnlinkatFlags::NoRemoveDir)
            .is_err()
        {
            return;
        }
        let before = mtime_of(&self.dir);
        if nix::unistd::unlinkat(self.dir.as_fd(), TEMP_DIR, UnlinkatFlags::RemoveDir).is_ok() {
            set_mtime_of(&self.dir, before);
        }
    }
}

/// `fstatat` without following a symlink.
fn lstat_at(dir: BorrowedFd<'_>, name: &str) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn same_file(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Whether `lock` is still [`LOCK_FILE`] in `private`, and that still
/// [`TEMP_DIR`] in `dir`.
fn still_named(dir: &File, private: &File, lock: &File) -> bool {
    let named = |parent: &File, name: &str, f: &File| match (
        lstat_at(parent.as_fd(), name),
        nix::sys::stat::fstat(f),
    ) {
        (Ok(a), Ok(b)) => same_file(&a, &b),
        _ => false,
    };
    named(private, LOCK_FILE, lock) && named(dir, TEMP_DIR, private)
}

/// Opens dest's private directory, creating it (mode 0700) when missing
/// and replacing whatever else has its name (a symlink, a file: only the
/// owner writes in dest). It must be this process's user's; its mode is
/// made 0700.
fn open_private_dir(dir: &File, dest: &Path) -> Result<File> {
    let path = dest.join(TEMP_DIR);
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let at = dir.as_fd();
    let mut tries = 0;
    let fd = loop {
        tries += 1;
        let err = match nix::fcntl::openat(at, TEMP_DIR, flags, Mode::empty()) {
            Ok(fd) => break fd,
            Err(e) => e,
        };
        let io =
            |what: &str, e: Errno| Error::io(format!("cannot {what} {}", path.display()), e.into());
        if tries > 5 {
            return Err(io("open", err));
        }
        match err {
            Errno::ENOENT => {}
            Errno::ELOOP | Errno::ENOTDIR => {
                match nix::unistd::unlinkat(at, TEMP_DIR, UnlinkatFlags::NoRemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(io("remove", e)),
                }
            }
            e => return Err(io("open", e)),
        }
        // Creating it changes dest's mtime, which must stay rsync's.
        let before = mtime_of(dir);
        match nix::sys::stat::mkdirat(at, TEMP_DIR, Mode::S_IRWXU) {
            Ok(()) => set_mtime_of(dir, before),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(io("create", e)),
        }
    };
    let private = File::from(fd);
    let st = nix::sys::stat::fstat(&private)
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e.into()))?;
    let me = nix::unistd::geteuid().as_raw();
    if st.st_uid != me {
        return Err(Error::Internal(format!(
            "{} is owned by uid {}, not by uid {me} who runs this; remove it",
            path.display(),
            st.st_uid
        )));
    }
    // Private: 0700 (a setgid bit inherited from dest is kept).
    if st.st_mode & 0o777 != 0o700 {
        let mode = Mode::from_bits_truncate(0o700 | (st.st_mode & 0o2000));
        nix::sys::stat::fchmod(&private, mode)
            .map_err(|e| Error::io(format!("cannot chmod {}", path.display()), e.into()))?;
    }
    Ok(private)
}

/// Opens (creating it) the lock file in the private directory without
/// following a symlink, refusing anything but a plain file of this process's
/// user with one link.
fn open_lock_file(private: &File, dest: &Path) -> Result<File> {
    let path = dest.join(TEMP_DIR).join(LOCK_FILE);
    let fd = nix::fcntl::openat(
        private.as_fd(),
        LOCK_FILE,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::S_IRUSR | Mode::S_IWUSR,
    )
    .map_err(|e| {
        let why = if e == Errno::ELOOP {
            "it is a symlink".to_string()
        } else {
            e.desc().to_string()
        };
        Error::Internal(format!(
            "cannot open the dest lock {}: {why}",
            path.display()
        ))
    })?;
    let lock = File::from(fd);
    let st = nix::sys::stat::fstat(&lock)
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e.into()))?;
    let me = nix::unistd::geteuid().as_raw();
    let bad = if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG {
        Some("is not a regular file".to_string())
    } else if st.st_uid != me {
        Some(format!("is owned by uid {}, not {me}", st.st_uid))
    } else if st.st_nlink != 1 {
        Some(format!("has {} hard links, expected 1", st.st_nlink))
    } else {
        None
    };
    match bad {
        Some(why) => Err(Error::Internal(format!(
            "refusing the dest lock {}: it {why}",
            path.display()
        ))),
        None => Ok(lock),
    }
}

fn set_mtime_of(dir: &File, mtime: Option<TimeSpec>) {
    if let Some(t) = mtime {
        let _ = nix::sys::stat::futimens(dir, &TimeSpec::UTIME_OMIT, &t);
    }
}

/// The mtime of the open directory `dir`.
pub fn mtime_of(dir: &File) -> Option<TimeSpec> {
    nix::sys::stat::fstat(dir)
        .ok()
        .map(|st| TimeSpec::new(st.st_mtime, st.st_mtime_nsec))
}

/// Empties (or creates) rsync's temporary directory: leftovers of an
/// aborted run go away here, except the dest lock and `keep` (a first
/// sync's staging copy, which the next first sync resumes).
pub fn prepare_temp_dir(dest: &Path, keep: Option<&str>) -> Result<()> {
    let tmp = dest.join(TEMP_DIR);
    match std::fs::symlink_metadata(&tmp) {
        Ok(md) if md.file_type().is_dir() => {
            for entry in
                std::fs::read_dir(&tmp).context(|| format!("cannot read {}", tmp.display()))?
            {
                let entry = entry.context(|| format!("cannot read {}", tmp.display()))?;
                let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir && keep.is_some_and(|k| entry.file_name() == k)
                    || entry.file_name() == LOCK_FILE
                {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mirror(dest: &Path) -> crate::config::Config {
        let text = format!(
            "state_dir = \"/var/lib/syncgate\"\nprivilege = \"direct\"\n\n[mirror.m]\nupstream = \"rsync://example.org/m/\"\ndest = \"{}\"\nowner = \"root\"\nreader_group = \"root\"\npublish = \"two-stage\"\n",
            dest.display()
        );
        crate::config::Config::parse(Path::new("/etc/syncgate/syncgate.toml"), &text).unwrap()
    }

    #[test]
    fn the_lock_is_a_private_file_removed_by_its_last_holder() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        let cfg = mirror(&dest);
        let m = cfg.mirror("m").unwrap();
        let lock = DestLock::acquire(m).unwrap();
        let (private, file) = (dest.join(TEMP_DIR), dest.join(TEMP_DIR).join(LOCK_FILE));
        let md = std::fs::symlink_metadata(&private).unwrap();
        assert!(md.is_dir() && md.mode() & 0o777 == 0o700);
        let md = std::fs::symlink_metadata(&file).unwrap();
        assert!(md.is_file() && md.mode() & 0o777 == 0o600);

        // A copy of the open file (as an rsync that inherited it holds)
        // keeps it locked, and in place, when the command lets go.
        let inherited = lock.lock.as_ref().unwrap().try_clone().unwrap();
        drop(lock);
        assert!(file.exists());
        let other = File::open(&file).unwrap();
        assert!(
            other.try_lock().is_err(),
            "the inherited copy lost the lock"
        );
        drop(other);
        drop(inherited);

        // The next holder is the last one: it removes both.
        let before = std::fs::symlink_metadata(&dest).unwrap().mtime();
        drop(DestLock::acquire(m).unwrap());
        assert!(std::fs::symlink_metadata(&private).is_err());
        assert_eq!(std::fs::symlink_metadata(&dest).unwrap().mtime(), before);
    }

    #[test]
    fn what_takes_the_private_name_is_replaced_and_a_bad_lock_refused() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let cfg = mirror(&dest);
        let m = cfg.mirror("m").unwrap();
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), dest.join(TEMP_DIR)).unwrap();
        drop(DestLock::acquire(m).unwrap());
        assert!(std::fs::symlink_metadata(dest.join(TEMP_DIR)).is_err());
        assert_eq!(
            std::fs::read_dir(t.path().join("elsewhere"))
                .unwrap()
                .count(),
            0
        );

        std::fs::write(dest.join(TEMP_DIR), b"x").unwrap();
        let lock = DestLock::acquire(m).unwrap();
        assert!(dest.join(TEMP_DIR).is_dir());
        drop(lock);

        std::fs::create_dir(dest.join(TEMP_DIR)).unwrap();
        std::fs::write(t.path().join("other"), b"").unwrap();
        std::fs::hard_link(t.path().join("other"), dest.join(TEMP_DIR).join(LOCK_FILE)).unwrap();
        let err = DestLock::acquire(m).err().unwrap().to_string();
        assert!(err.contains("hard links"), "{err}");
        std::fs::remove_file(dest.join(TEMP_DIR).join(LOCK_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dest.join(TEMP_DIR).join(LOCK_FILE)).unwrap();
        let err = DestLock::acquire(m).err().unwrap().to_string();
        assert!(err.contains("symlink"), "{err}");
    }
}
