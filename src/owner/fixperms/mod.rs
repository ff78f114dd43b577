//! Permission helper core: enforce owner, group and mode on a published
//! mirror tree.
//!
//! [`fix_tree`] walks the tree below `root` and makes every entry match a
//! [`PermPolicy`]:
//!
//! * the root and every directory: `uid:gid`, mode `dir_mode`;
//! * every regular file: `uid:gid`, mode `file_mode` (so setuid, setgid and
//!   sticky bits are stripped);
//! * every symlink that stays inside the tree: `uid:gid` (`lchown`; a
//!   symlink's mode is never changed);
//! * symlinks that may leave the tree, device nodes, fifos and sockets are
//!   removed;
//! * entries named `.~tmp~` (rsync `--delay-updates` leftovers) are
//!   removed at any depth, recursively for a directory, whatever their type;
//! * the top-level entry `.syncgate-tmp` (rsync `--temp-dir` and the dest
//!   lock, managed by `transfer`) is skipped entirely when it is a real
//!   directory of the owner (or of this process); anything else of that
//!   name (a symlink, a file) is removed.
//!
//! Both names are defined in `src/owner/dest.rs`. The walk is in
//! `walk.rs`, its system calls in `at.rs`, the symlink rule in `links.rs`.
//!
//! # No symlink is ever followed
//!
//! The root is opened with `O_DIRECTORY | O_NOFOLLOW` (a symlinked root is an
//! error; symlinks in the components *above* the root are the caller's
//! choice). Below the root every system call is relative to a directory fd:
//! `fstatat(AT_SYMLINK_NOFOLLOW)`, `fchownat(AT_SYMLINK_NOFOLLOW)`,
//! `fchmodat(AT_SYMLINK_NOFOLLOW)`, `readlinkat`, `unlinkat`, and
//! subdirectories are opened with `openat(O_DIRECTORY | O_NOFOLLOW)`.
//! `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW` are the guarantee; comparing the opened
//! inode with the stat'ed one additionally reports entries that were
//! replaced mid-walk (it cannot catch a replacement that happens to reuse
//! the inode number, which is harmless: that is still a real in-tree
//! entry). The walk holds one fd per
//! directory level and refuses to go deeper than [`MAX_DEPTH`]. It does not
//! cross into other filesystems (mount points are reported as problems).
//!
//! # Symlink containment
//!
//! A symlink is kept only if its target provably stays inside the tree:
//! the target must be relative, and it is resolved lexically from the
//! link's directory. `..` is only accepted as a *leading* component (and
//! never above the root): `..` after a name cannot be resolved lexically,
//! because the name may itself be a symlink (`q -> .` plus `p -> q/..`
//! lexically resolves to the root but really points at the root's parent).
//! With that rule every kept link lands in a real in-tree directory and
//! then descends through names that are in-tree directories or links kept
//! under the same rule, so chains of kept links cannot escape either.
//! Targets that go through the top-level `.syncgate-tmp` are treated as
//! outside because that directory is not checked.
//!
//! # Only what is wrong is changed
//!
//! Owner, group and mode are compared with `fstatat` first; `fchownat` and
//! `fchmodat` are only called for entries that differ, so running on a
//! correct tree changes no inode (ctime stays the same). `chmod` runs after
//! `chown` because `chown` can clear setuid/setgid bits. Repaired
//! directories are re-checked when `dir_mode` has the setgid bit, because
//! the kernel silently drops a setgid bit that a non-root caller outside
//! the group may not set (that is reported as [`FixError::NotApplied`]).
//!
//! # Errors
//!
//! Policy and root problems fail immediately. Problems with single entries
//! (for instance `EPERM` from `chown` because the entry belongs to another
//! user and the helper does not run as root) are collected while the walk
//! goes on repairing everything else; the walk then fails with
//! [`FixError::Incomplete`], which lists the problems (capped at
//! [`MAX_PROBLEMS`]) together with the partial [`FixReport`].
//!
//! A regular file with more than one hard link that is owned by a uid other
//! than the policy's is not taken over (another link may be outside the
//! tree, e.g. a hard link to a system file); that is reported as a problem.
//!
//! The process umask does not matter: nothing is created, and `chmod` sets
//! absolute modes.

mod at;
mod links;
mod walk;

#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{self, Mode};
use nix::unistd;

use at::{same_inode, Kind, Target};
use walk::Walker;

/// Maximum number of repair notes kept in a [`FixReport`] (a final
/// `"... N more"` line is appended when more were produced).
pub const MAX_NOTES: usize = 100;
/// Maximum number of problems listed in [`FixError::Incomplete`].
pub const MAX_PROBLEMS: usize = 50;
/// Maximum directory nesting below the root (one fd is held per level).
pub const MAX_DEPTH: usize = 256;

/// Permission bits plus setuid, setgid and sticky.
const PERM_MASK: u32 = 0o7777;

/// Ownership and modes every entry of the tree must have; defined, with its
/// validation, once in the config.
pub use crate::config::PermPolicy;

/// What [`fix_tree`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixReport {
    /// Entries checked and kept, including the root (excludes removed
    /// entries and the skipped `.syncgate-tmp`).
    pub entries: u64,
    /// Entries whose owner, group or mode was changed.
    pub changed: u64,
    /// Directory entries unlinked (escaping symlinks, special files, and
    /// every entry of removed `.~tmp~` directories including the directory).
    pub removed: u64,
    /// One line per repair or removal, at most [`MAX_NOTES`] plus a final
    /// `"... N more"` line.
    pub notes: Vec<String>,
}

/// Why [`fix_tree`] failed. Every variant about an entry names its path.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// The policy violates its invariants.
    #[error("invalid permission policy: {0}")]
    InvalidPolicy(String),

    /// The process can neither change owners (root) nor is it the owner.
    #[error(
        "fix-perms runs as uid {euid}, but the tree must belong to uid {want_uid}; \
         run it as uid {want_uid} (the image owner) or as root"
    )]
    WrongUser { euid: u32, want_uid: u32 },

    /// The root is a symlink.
    #[error("{path:?}: the tree root is a symlink; refusing to follow it (configure the real directory)")]
    RootIsSymlink { path: PathBuf },

    /// The root is not a directory.
    #[error("{path:?}: the tree root is not a directory")]
    RootNotDirectory { path: PathBuf },

    /// A system call failed.
    #[error("{path:?}: {op} failed: {errno}")]
    Io {
        path: PathBuf,
        op: String,
        errno: Errno,
    },

    /// `chown` was refused (EPERM).
    #[error("{}", foreign_owner_message(.path, *.cur_uid, *.cur_gid, *.want_uid, *.want_gid, *.euid))]
    ForeignOwner {
        path: PathBuf,
        cur_uid: u32,
        cur_gid: u32,
        want_uid: u32,
        want_gid: u32,
        euid: u32,
    },

    /// A multiply-linked file owned by someone else is not taken over.
    #[error(
        "{path:?}: regular file with {nlink} hard links owned by {cur_uid}:{cur_gid}; \
         not taking it over because another link may be outside the tree. \
         Fix: find its other links (find / -xdev -samefile PATH) and replace it \
         with a copy or chown it by hand"
    )]
    ForeignHardlink {
        path: PathBuf,
        nlink: u64,
        cur_uid: u32,
        cur_gid: u32,
    },

    /// The entry lives on another filesystem (mount point).
    #[error("{path:?}: on another filesystem (mount point); not crossing it. Fix: unmount it or move it out of the mirror tree")]
    CrossDevice { path: PathBuf },

    /// The tree is nested deeper than [`MAX_DEPTH`].
    #[error("{path:?}: directories nested deeper than {max} levels; not descending")]
    TooDeep { path: PathBuf, max: usize },

    /// The entry was replaced between checking and using it.
    #[error("{path:?}: replaced while being fixed (is something writing to the mirror?); re-run when the mirror is idle")]
    Raced { path: PathBuf },

    /// A repair succeeded but the entry still does not match.
    #[error("{path:?}: still {actual} after the repair, wanted {wanted}")]
    NotApplied {
        path: PathBuf,
        actual: String,
        wanted: String,
    },

    /// The walk finished but some entries could not be fixed.
    #[error("{}", incomplete_message(.root, .problems, *.omitted, .report))]
    Incomplete {
        root: PathBuf,
        /// The first [`MAX_PROBLEMS`] problems.
        problems: Vec<FixError>,
        /// Problems not listed.
        omitted: u64,
        /// What was done anyway.
        report: Box<FixReport>,
    },
}

impl From<crate::config::InvalidPolicy> for FixError {
    fn from(e: crate::config::InvalidPolicy) -> Self {
        FixError::InvalidPolicy(e.0)
    }
}

fn foreign_owner_message(
    path: &Path,
    cur_uid: u32,
    cur_gid: u32,
    want_uid: u32,
    want_gid: u32,
    euid: u32,
) -> String {
    let why = if euid == 0 {
        "chown failed with EPERM although running as root (immutable or append-only \
         attribute? id not mapped in this user namespace?)"
            .to_string()
    } else {
        format!(
            "chown failed with EPERM: fix-perms runs as uid {euid}, and only root may change \
             an owner (changing the group needs owning the entry and membership in gid {want_gid})"
        )
    };
    format!(
        "{path:?}: owned by {cur_uid}:{cur_gid}, must be {want_uid}:{want_gid}; {why}. \
         Fix: as root run `chown -h {want_uid}:{want_gid} -- {}`, and find out what writes \
         to the mirror as {cur_uid}:{cur_gid}",
        shell_words::quote(&path.to_string_lossy())
    )
}

fn incomplete_message(
    root: &Path,
    problems: &[FixError],
    omitted: u64,
    report: &FixReport,
) -> String {
    let total = problems.len() as u64 + omitted;
    let mut s = format!(
        "fix-perms could not fix {total} problem(s) under {root:?} \
         (checked {} entries, repaired {}, removed {}):",
        report.entries, report.changed, report.removed
    );
    for p in problems {
        let _ = write!(s, "\n  - {p}");
    }
    if omitted > 0 {
        let _ = write!(s, "\n  - ... {omitted} more");
    }
    s
}

/// Makes the tree below `root` match `policy`; see the module docs for the
/// rules. Returns what was done, or every problem found (capped) in
/// [`FixError::Incomplete`] if some entries could not be fixed.
pub fn fix_tree(root: &Path, policy: &PermPolicy) -> Result<FixReport, FixError> {
    fix(root, policy, true)
}

/// [`fix_tree`] for the root directory alone, without entering it: for a
/// dest whose contents were fixed before they were moved in.
pub fn fix_root(root: &Path, policy: &PermPolicy) -> Result<FixReport, FixError> {
    fix(root, policy, false)
}

fn fix(root: &Path, policy: &PermPolicy, recurse: bool) -> Result<FixReport, FixError> {
    policy.validate()?;
    let euid = unistd::geteuid().as_raw();
    if euid != 0 && euid != policy.uid {
        return Err(FixError::WrongUser {
            euid,
            want_uid: policy.uid,
        });
    }

    let lst = stat::fstatat(AT_FDCWD, root, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| io(root, "lstat", e))?;
    match Kind::of(&lst) {
        Kind::Dir => {}
        Kind::Symlink => {
            return Err(FixError::RootIsSymlink {
                path: root.to_owned(),
            })
        }
        _ => {
            return Err(FixError::RootNotDirectory {
                path: root.to_owned(),
            })
        }
    }
    let fd = fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP => FixError::RootIsSymlink {
            path: root.to_owned(),
        },
        e => io(root, "open", e),
    })?;
    let st = stat::fstat(&fd).map_err(|e| io(root, "fstat", e))?;
    if !same_inode(&st, &lst) {
        return Err(FixError::Raced {
            path: root.to_owned(),
        });
    }

    let mut w = Walker::new(policy, euid, st.st_dev);
    w.entries += 1;
    w.fix_entry(Target::Fd(fd.as_fd()), root, &st, Kind::Dir);
    if recurse {
        let mut dir = Dir::from_fd(fd).map_err(|e| io(root, "fdopendir", e))?;
        let mut comps = Vec::new();
        w.walk(&mut dir, root, &mut comps);
    }
    w.finish(root)
}

fn io(path: &Path, op: impl Into<String>, errno: Errno) -> FixError {
    FixError::Io {
        path: path.to_owned(),
        op: op.into(),
        errno,
    }
}
