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
//! * directories named `.~tmp~` (rsync `--delay-updates` leftovers) are
//!   removed recursively at any depth;
//! * the top-level entry `.syncgate-tmp` (rsync `--temp-dir`, managed
//!   elsewhere) is skipped entirely.
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

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag, AT_FDCWD};
use nix::libc;
use nix::sys::stat::{self, FchmodatFlags, FileStat, Mode};
use nix::unistd::{self, Gid, Uid, UnlinkatFlags};

/// Top-level entry that belongs to rsync's `--temp-dir`; never touched.
pub const SYNCGATE_TMP: &str = crate::owner::rsync::argv::TEMP_DIR;
/// Name of rsync's `--delay-updates` partial directory; removed anywhere.
pub const RSYNC_PARTIAL_DIR: &str = ".~tmp~";
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

/// File type of a stat result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    /// Device node, fifo or socket (its name).
    Special(&'static str),
}

impl Kind {
    fn of(st: &FileStat) -> Kind {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Special("fifo"),
            libc::S_IFSOCK => Kind::Special("socket"),
            libc::S_IFCHR => Kind::Special("character device"),
            libc::S_IFBLK => Kind::Special("block device"),
            _ => Kind::Special("file of unknown type"),
        }
    }
}

fn perm_bits(st: &FileStat) -> u32 {
    st.st_mode & PERM_MASK
}

fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

fn io(path: &Path, op: impl Into<String>, errno: Errno) -> FixError {
    FixError::Io {
        path: path.to_owned(),
        op: op.into(),
        errno,
    }
}

/// The entry a repair applies to: an open fd (the root) or a name relative
/// to a directory fd, never followed if it is a symlink.
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a OsStr),
}

impl Target<'_> {
    fn stat(self) -> nix::Result<FileStat> {
        match self {
            Target::Fd(fd) => stat::fstat(fd),
            Target::At(dir, name) => stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        }
    }

    fn chown(self, uid: u32, gid: u32) -> nix::Result<()> {
        let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match self {
            Target::Fd(fd) => unistd::fchown(fd, u, g),
            Target::At(dir, name) => {
                unistd::fchownat(dir, name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
            }
        }
    }

    fn chmod(self, mode: u32, expect: &FileStat) -> nix::Result<()> {
        let m = Mode::from_bits_truncate(mode);
        match self {
            Target::Fd(fd) => stat::fchmod(fd, m),
            Target::At(dir, name) => chmod_nofollow(dir, name, m, expect),
        }
    }
}

/// `fchmodat(AT_SYMLINK_NOFOLLOW)`. glibc implements it race-free (via
/// `fchmodat2`, or an `O_PATH|O_NOFOLLOW` fd and /proc); where that is not
/// available (EOPNOTSUPP, e.g. /proc not mounted) fall back to opening the
/// entry with `O_NOFOLLOW`, checking it is the stat'ed inode, and `fchmod`.
fn chmod_nofollow(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mode: Mode,
    expect: &FileStat,
) -> nix::Result<()> {
    match stat::fchmodat(dir, name, mode, FchmodatFlags::NoFollowSymlink) {
        Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => chmod_via_fd(dir, name, mode, expect),
        r => r,
    }
}

/// Fallback of [`chmod_nofollow`]: `openat(O_NOFOLLOW)` (ELOOP on a
/// symlink), check the inode (ESTALE if it was replaced), `fchmod`.
fn chmod_via_fd(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    mode: Mode,
    expect: &FileStat,
) -> nix::Result<()> {
    let fd = fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let now = stat::fstat(&fd)?;
    if !same_inode(&now, expect) {
        return Err(Errno::ESTALE);
    }
    stat::fchmod(&fd, mode)
}

/// Opens a subdirectory without following symlinks and checks it is the
/// inode that was stat'ed.
fn open_dir_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    expect: &FileStat,
) -> Result<Dir, FixError> {
    let fd = fcntl::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT => FixError::Raced {
            path: path.to_owned(),
        },
        e => io(path, "open directory", e),
    })?;
    let now = stat::fstat(&fd).map_err(|e| io(path, "fstat", e))?;
    if !same_inode(&now, expect) {
        return Err(FixError::Raced {
            path: path.to_owned(),
        });
    }
    Dir::from_fd(fd).map_err(|e| io(path, "fdopendir", e))
}

/// All names in a directory except `.` and `..`, sorted (read completely
/// before anything is changed, so removals cannot disturb `readdir`).
fn read_names(dir: &mut Dir) -> nix::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for ent in dir.iter() {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// Why a symlink in the directory `dir` (its names from the root; empty for
/// the root itself) with `target` may leave the tree, or `None` if it
/// provably stays inside. See the module docs.
fn link_escape_reason(dir: &[OsString], target: &OsStr) -> Option<&'static str> {
    let bytes = target.as_bytes();
    if bytes.is_empty() {
        return Some("empty target");
    }
    if bytes[0] == b'/' {
        return Some("absolute target");
    }
    let mut depth = dir.len();
    let mut named = false;
    for comp in bytes.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." if named => {
                return Some("'..' after a name (cannot be resolved without following links)")
            }
            b".." if depth == 0 => return Some("'..' climbs above the tree root"),
            b".." => depth -= 1,
            name => {
                if depth == 0 && !named && name == SYNCGATE_TMP.as_bytes() {
                    return Some("points into .syncgate-tmp, which is not part of the tree");
                }
                named = true;
            }
        }
    }
    None
}

/// Removes the directory `name` in `parent` and everything below it without
/// following symlinks; counts unlinked entries into `count`.
fn remove_tree(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    st: &FileStat,
    root_dev: u64,
    depth: usize,
    count: &mut u64,
) -> Result<(), FixError> {
    if depth > MAX_DEPTH {
        return Err(FixError::TooDeep {
            path: path.to_owned(),
            max: MAX_DEPTH,
        });
    }
    if st.st_dev != root_dev {
        return Err(FixError::CrossDevice {
            path: path.to_owned(),
        });
    }
    // A non-root owner needs rwx to empty the directory.
    if perm_bits(st) & 0o700 != 0o700 {
        chmod_nofollow(parent, name, Mode::S_IRWXU, st).map_err(|e| io(path, "chmod 0700", e))?;
    }
    let mut dir = open_dir_at(parent, name, path, st)?;
    let names = read_names(&mut dir).map_err(|e| io(path, "readdir", e))?;
    for child in names {
        let cpath = path.join(&child);
        let cst = match stat::fstatat(dir.as_fd(), child.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Ok(s) => s,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(io(&cpath, "fstatat", e)),
        };
        if Kind::of(&cst) == Kind::Dir {
            remove_tree(
                dir.as_fd(),
                &child,
                &cpath,
                &cst,
                root_dev,
                depth + 1,
                count,
            )?;
        } else {
            if cst.st_dev != root_dev {
                return Err(FixError::CrossDevice { path: cpath });
            }
            unistd::unlinkat(dir.as_fd(), child.as_os_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| io(&cpath, "unlink", e))?;
            *count += 1;
        }
    }
    drop(dir);
    unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(|e| io(path, "rmdir", e))?;
    *count += 1;
    Ok(())
}

struct Walker<'p> {
    policy: &'p PermPolicy,
    euid: u32,
    root_dev: u64,
    entries: u64,
    changed: u64,
    removed: u64,
    notes: Vec<String>,
    notes_omitted: u64,
    problems: Vec<FixError>,
    problems_omitted: u64,
}

impl<'p> Walker<'p> {
    fn new(policy: &'p PermPolicy, euid: u32, root_dev: u64) -> Self {
        Walker {
            policy,
            euid,
            root_dev,
            entries: 0,
            changed: 0,
            removed: 0,
            notes: Vec::new(),
            notes_omitted: 0,
            problems: Vec::new(),
            problems_omitted: 0,
        }
    }

    fn note(&mut self, line: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(line);
        } else {
            self.notes_omitted += 1;
        }
    }

    fn problem(&mut self, e: FixError) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(e);
        } else {
            self.problems_omitted += 1;
        }
    }

    fn finish(self, root: &Path) -> Result<FixReport, FixError> {
        let mut notes = self.notes;
        if self.notes_omitted > 0 {
            notes.push(format!("... {} more", self.notes_omitted));
        }
        let report = FixReport {
            entries: self.entries,
            changed: self.changed,
            removed: self.removed,
            notes,
        };
        if self.problems.is_empty() {
            Ok(report)
        } else {
            Err(FixError::Incomplete {
                root: root.to_owned(),
                problems: self.problems,
                omitted: self.problems_omitted,
                report: Box::new(report),
            })
        }
    }

    /// Visits every entry of `dir` (at `dir_path`, reached through the
    /// directory names `comps` from the root).
    fn walk(&mut self, dir: &mut Dir, dir_path: &Path, comps: &mut Vec<OsString>) {
        let names = match read_names(dir) {
            Ok(n) => n,
            Err(e) => return self.problem(io(dir_path, "readdir", e)),
        };
        for name in names {
            if comps.is_empty() && name == SYNCGATE_TMP {
                continue;
            }
            let path = dir_path.join(&name);
            self.visit(dir.as_fd(), &name, &path, comps);
        }
    }

    fn visit(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        comps: &mut Vec<OsString>,
    ) {
        let st = match stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::ENOENT) => return, // gone: nothing to fix
            Err(e) => return self.problem(io(path, "fstatat", e)),
        };
        if st.st_dev != self.root_dev {
            return self.problem(FixError::CrossDevice {
                path: path.to_owned(),
            });
        }
        let target = Target::At(parent, name);
        match Kind::of(&st) {
            Kind::Dir if name == RSYNC_PARTIAL_DIR => {
                let mut n = 0;
                let r = remove_tree(
                    parent,
                    name,
                    path,
                    &st,
                    self.root_dev,
                    comps.len() + 1,
                    &mut n,
                );
                self.removed += n;
                match r {
                    Ok(()) => self.note(format!(
                        "{path:?}: removed rsync leftover directory ({n} entries)"
                    )),
                    Err(e) => self.problem(e),
                }
            }
            Kind::Dir => {
                self.entries += 1;
                self.fix_entry(target, path, &st, Kind::Dir);
                if comps.len() + 1 > MAX_DEPTH {
                    return self.problem(FixError::TooDeep {
                        path: path.to_owned(),
                        max: MAX_DEPTH,
                    });
                }
                match open_dir_at(parent, name, path, &st) {
                    Ok(mut sub) => {
                        comps.push(name.to_owned());
                        self.walk(&mut sub, path, comps);
                        comps.pop();
                    }
                    Err(e) => self.problem(e),
                }
            }
            Kind::File => {
                self.entries += 1;
                if st.st_nlink > 1 && st.st_uid != self.policy.uid {
                    return self.problem(FixError::ForeignHardlink {
                        path: path.to_owned(),
                        nlink: st.st_nlink as u64,
                        cur_uid: st.st_uid,
                        cur_gid: st.st_gid,
                    });
                }
                self.fix_entry(target, path, &st, Kind::File);
            }
            Kind::Symlink => {
                let dest = match fcntl::readlinkat(parent, name) {
                    Ok(d) => d,
                    Err(Errno::ENOENT) => return,
                    Err(e) => return self.problem(io(path, "readlink", e)),
                };
                match link_escape_reason(comps, &dest) {
                    None => {
                        self.entries += 1;
                        self.fix_entry(target, path, &st, Kind::Symlink);
                    }
                    Some(why) => match unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
                        Ok(()) => {
                            self.removed += 1;
                            self.note(format!("{path:?}: removed symlink to {dest:?} ({why})"));
                        }
                        Err(e) => self.problem(io(path, "unlink symlink", e)),
                    },
                }
            }
            Kind::Special(what) => match unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            {
                Ok(()) => {
                    self.removed += 1;
                    self.note(format!("{path:?}: removed {what}"));
                }
                Err(e) => self.problem(io(path, format!("unlink {what}"), e)),
            },
        }
    }

    /// Sets owner, group and (except for symlinks) mode of one entry, only
    /// where they differ from the policy.
    fn fix_entry(&mut self, target: Target<'_>, path: &Path, st: &FileStat, kind: Kind) {
        let (uid, gid) = (self.policy.uid, self.policy.gid);
        let want_mode = match kind {
            Kind::Dir => Some(self.policy.dir_mode),
            Kind::File => Some(self.policy.file_mode),
            _ => None,
        };
        let owner_ok = st.st_uid == uid && st.st_gid == gid;
        let mode_ok = want_mode.is_none_or(|m| perm_bits(st) == m);
        if owner_ok && mode_ok {
            return;
        }

        let mut done = Vec::new();
        let mut failed = false;
        let mut cur = *st;
        if !owner_ok {
            match target.chown(uid, gid) {
                Ok(()) => {
                    done.push(format!("owner {}:{} -> {uid}:{gid}", st.st_uid, st.st_gid));
                    // chown may have cleared setuid/setgid bits that are
                    // wanted (a wrong mode gets a chmod anyway).
                    if want_mode.is_some_and(|m| m & 0o6000 != 0 && perm_bits(st) == m) {
                        match target.stat() {
                            Ok(s) => cur = s,
                            Err(e) => {
                                failed = true;
                                self.problem(io(path, "fstatat", e));
                            }
                        }
                    }
                }
                Err(Errno::EPERM) => {
                    failed = true;
                    self.problem(FixError::ForeignOwner {
                        path: path.to_owned(),
                        cur_uid: st.st_uid,
                        cur_gid: st.st_gid,
                        want_uid: uid,
                        want_gid: gid,
                        euid: self.euid,
                    });
                }
                Err(e) => {
                    failed = true;
                    self.problem(io(path, format!("chown to {uid}:{gid}"), e));
                }
            }
        }
        if let Some(m) = want_mode {
            if perm_bits(&cur) != m {
                match target.chmod(m, st) {
                    Ok(()) => done.push(format!("mode {:04o} -> {m:04o}", perm_bits(st))),
                    // Not our entry: the chown problem above already says so.
                    Err(Errno::EPERM) if failed => {}
                    Err(e) => {
                        failed = true;
                        self.problem(io(path, format!("chmod to {m:04o}"), e));
                    }
                }
            } else if perm_bits(&cur) != perm_bits(st) {
                done.push(format!(
                    "mode {:04o} -> {m:04o} (cleared by chown)",
                    perm_bits(st)
                ));
            }
        }
        if done.is_empty() {
            return;
        }
        self.changed += 1;
        self.note(format!("{path:?}: {}", done.join(", ")));
        // Verify where the kernel may silently refuse part of a chmod: it
        // drops setgid if the caller is not in the group (file modes have
        // no special bits, so only setgid directories need the extra stat).
        if failed || want_mode.is_none_or(|m| m & 0o6000 == 0) {
            return;
        }
        match target.stat() {
            Ok(now) => {
                let mode_bad = want_mode.is_some_and(|m| perm_bits(&now) != m);
                if now.st_uid != uid || now.st_gid != gid || mode_bad {
                    let mut actual = format!("{}:{}", now.st_uid, now.st_gid);
                    let mut wanted = format!("{uid}:{gid}");
                    if let Some(m) = want_mode {
                        let _ = write!(actual, " mode {:04o}", perm_bits(&now));
                        let _ = write!(wanted, " mode {m:04o}");
                    }
                    self.problem(FixError::NotApplied {
                        path: path.to_owned(),
                        actual,
                        wanted,
                    });
                }
            }
            Err(e) => self.problem(io(path, "fstatat", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    /// (ino, ctime_sec, ctime_nsec, mode, uid, gid)
    type Snap = BTreeMap<PathBuf, (u64, i64, i64, u32, u32, u32)>;

    fn is_root() -> bool {
        unistd::geteuid().is_root()
    }

    fn me() -> (u32, u32) {
        (unistd::geteuid().as_raw(), unistd::getegid().as_raw())
    }

    fn policy() -> PermPolicy {
        let (uid, gid) = me();
        PermPolicy {
            uid,
            gid,
            file_mode: 0o640,
            dir_mode: 0o750,
        }
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chgrp(p: &Path, gid: u32) {
        lchown(p, None, Some(gid)).unwrap();
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & PERM_MASK
    }

    fn owner_of(p: &Path) -> (u32, u32) {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    }

    fn mkdir(p: &Path, mode: u32) {
        fs::create_dir(p).unwrap();
        chmod(p, mode);
    }

    fn mkfile(p: &Path, mode: u32) {
        fs::write(p, b"data").unwrap();
        chmod(p, mode);
    }

    fn stat_one(p: &Path) -> (u64, i64, i64, u32, u32, u32) {
        let m = fs::symlink_metadata(p).unwrap();
        (
            m.ino(),
            m.ctime(),
            m.ctime_nsec(),
            m.mode() & PERM_MASK,
            m.uid(),
            m.gid(),
        )
    }

    /// lstat of every entry below and including `p`, never following links.
    fn snapshot(p: &Path) -> Snap {
        let mut out = Snap::new();
        let mut todo = vec![p.to_owned()];
        while let Some(p) = todo.pop() {
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                for e in fs::read_dir(&p).unwrap() {
                    todo.push(e.unwrap().path());
                }
            }
            out.insert(p.clone(), stat_one(&p));
        }
        out
    }

    /// Sleep long enough that any inode change gets a new ctime, and prove
    /// that ctime really detects a no-op chown on this filesystem.
    fn settle(scratch_dir: &Path) {
        let probe = scratch_dir.join("ctime-probe");
        fs::write(&probe, b"").unwrap();
        let before = stat_one(&probe);
        std::thread::sleep(Duration::from_millis(30));
        let (uid, gid) = (before.4, before.5);
        std::os::unix::fs::chown(&probe, Some(uid), Some(gid)).unwrap();
        let after = stat_one(&probe);
        assert_ne!(
            (before.1, before.2),
            (after.1, after.2),
            "ctime does not detect a no-op chown here; the test would prove nothing"
        );
        fs::remove_file(&probe).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }

    /// tmp/ holds `m` (the tree) and room for "outside" files.
    fn setup() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("m");
        mkdir(&root, 0o750);
        (tmp, root)
    }

    /// A tree that already matches `policy()`.
    fn correct_tree(root: &Path) {
        mkdir(&root.join("sub"), 0o750);
        mkdir(&root.join("sub/deeper"), 0o750);
        mkfile(&root.join("a.iso"), 0o640);
        mkfile(&root.join("sub/x.iso"), 0o640);
        mkfile(&root.join("sub/deeper/y.iso"), 0o640);
        symlink("sub/x.iso", root.join("current")).unwrap();
        symlink("../a.iso", root.join("sub/up")).unwrap();
        symlink("deeper", root.join("sub/alias")).unwrap();
        symlink(".", root.join("self")).unwrap();
    }

    #[test]
    fn correct_tree_is_left_untouched() {
        let (tmp, root) = setup();
        correct_tree(&root);
        settle(tmp.path());
        let before = snapshot(&root);
        let rep = fix_tree(&root, &policy()).unwrap();
        assert_eq!(rep.changed, 0, "{rep:?}");
        assert_eq!(rep.removed, 0);
        assert!(rep.notes.is_empty(), "{:?}", rep.notes);
        assert_eq!(rep.entries, before.len() as u64);
        assert_eq!(snapshot(&root), before);
        let rep2 = fix_tree(&root, &policy()).unwrap();
        assert_eq!(rep2, rep);
        assert_eq!(snapshot(&root), before);
    }

    #[test]
    fn second_run_after_repair_changes_nothing() {
        let (tmp, root) = setup();
        correct_tree(&root);
        chmod(&root, 0o777);
        chmod(&root.join("a.iso"), 0o666);
        chmod(&root.join("sub/deeper"), 0o700);
        let first = fix_tree(&root, &policy()).unwrap();
        assert_eq!(first.changed, 3, "{first:?}");
        settle(tmp.path());
        let before = snapshot(&root);
        let second = fix_tree(&root, &policy()).unwrap();
        assert_eq!(second.changed, 0, "{second:?}");
        assert!(second.notes.is_empty());
        assert_eq!(snapshot(&root), before);
    }

    #[test]
    fn drift_is_repaired_exactly() {
        if !is_root() {
            eprintln!("skipped: needs root to create foreign groups");
            return;
        }
        let (_tmp, root) = setup();
        chmod(&root, 0o700);
        mkfile(&root.join("world-writable"), 0o666);
        mkfile(&root.join("setuid"), 0o4755);
        mkfile(&root.join("sticky"), 0o1644);
        mkdir(&root.join("open-dir"), 0o777);
        mkdir(&root.join("setgid-dir"), 0o2770);
        mkfile(&root.join("setgid-dir/wrong-group"), 0o640);
        chgrp(&root.join("setgid-dir/wrong-group"), 12345);
        mkfile(&root.join("open-dir/wrong-owner"), 0o640);
        lchown(root.join("open-dir/wrong-owner"), Some(12345), Some(12345)).unwrap();
        mkfile(&root.join("fine"), 0o640);
        symlink("fine", root.join("link-wrong-group")).unwrap();
        chgrp(&root.join("link-wrong-group"), 12345);

        let rep = fix_tree(&root, &policy()).unwrap();
        let (uid, gid) = me();
        for (p, mode) in [
            ("", 0o750),
            ("world-writable", 0o640),
            ("setuid", 0o640),
            ("sticky", 0o640),
            ("open-dir", 0o750),
            ("setgid-dir", 0o750),
            ("setgid-dir/wrong-group", 0o640),
            ("open-dir/wrong-owner", 0o640),
            ("fine", 0o640),
        ] {
            let p = root.join(p);
            assert_eq!(mode_of(&p), mode, "{p:?}");
            assert_eq!(owner_of(&p), (uid, gid), "{p:?}");
        }
        assert_eq!(owner_of(&root.join("link-wrong-group")), (uid, gid));
        assert_eq!(rep.entries, 10);
        assert_eq!(rep.changed, 9, "{:#?}", rep.notes);
        assert_eq!(rep.removed, 0);
        assert_eq!(rep.notes.len(), 9);
        assert!(
            rep.notes
                .iter()
                .any(|n| n.contains("setuid") && n.contains("mode 4755 -> 0640")),
            "{:#?}",
            rep.notes
        );
        assert!(rep
            .notes
            .iter()
            .any(|n| n.contains("wrong-owner") && n.contains("owner 12345:12345 -> ")));
    }

    #[test]
    fn setgid_dir_mode_and_foreign_policy_owner() {
        if !is_root() {
            eprintln!("skipped: needs root to chown to other ids");
            return;
        }
        let (_tmp, root) = setup();
        mkdir(&root.join("d"), 0o755);
        mkdir(&root.join("g"), 0o2750);
        mkfile(&root.join("d/f"), 0o4750);
        let pol = PermPolicy {
            uid: 4242,
            gid: 4343,
            file_mode: 0o644,
            dir_mode: 0o2750,
        };
        let rep = fix_tree(&root, &pol).unwrap();
        assert_eq!(rep.changed, 4, "{rep:?}");
        for p in ["", "d", "g"] {
            assert_eq!(mode_of(&root.join(p)), 0o2750, "{p}");
            assert_eq!(owner_of(&root.join(p)), (4242, 4343));
        }
        // chown cleared setuid; chmod then set the wanted mode.
        assert_eq!(mode_of(&root.join("d/f")), 0o644);
        assert_eq!(owner_of(&root.join("d/f")), (4242, 4343));
        let again = fix_tree(&root, &pol).unwrap();
        assert_eq!(again.changed, 0);
    }

    #[test]
    fn escaping_symlinks_are_removed_and_targets_untouched() {
        let (tmp, root) = setup();
        let outside = tmp.path().join("secret");
        mkfile(&outside, 0o600);
        if is_root() {
            chgrp(&outside, 12345);
        }
        let outside_dir = tmp.path().join("outside-dir");
        mkdir(&outside_dir, 0o700);
        mkfile(&outside_dir.join("f"), 0o604);
        mkdir(&root.join("sub"), 0o750);
        mkdir(&root.join("sub/deep"), 0o750);
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../secret", root.join("rel")).unwrap();
        symlink("../../secret", root.join("sub/rel2")).unwrap();
        symlink("../../../secret", root.join("sub/deep/rel3")).unwrap();
        symlink("../outside-dir", root.join("dirlink")).unwrap();
        symlink("/etc", root.join("sub/etc")).unwrap();
        // Lexically inside, but really escapes via `self -> .`.
        symlink(".", root.join("self")).unwrap();
        symlink("self/..", root.join("sneaky")).unwrap();
        symlink("sub/../../secret", root.join("zigzag")).unwrap();
        settle(tmp.path());
        let outside_before = snapshot(tmp.path().join("secret").as_path());
        let outside_dir_before = snapshot(&outside_dir);
        let etc_before: Snap = fs::read_dir("/etc")
            .unwrap()
            .map(|e| e.unwrap().path())
            .chain([PathBuf::from("/etc")])
            .map(|p| {
                let s = stat_one(&p);
                (p, s)
            })
            .collect();

        let rep = fix_tree(&root, &policy()).unwrap();

        for gone in [
            "abs",
            "rel",
            "sub/rel2",
            "sub/deep/rel3",
            "dirlink",
            "sub/etc",
            "sneaky",
            "zigzag",
        ] {
            assert!(
                fs::symlink_metadata(root.join(gone)).is_err(),
                "{gone} should be removed"
            );
        }
        assert!(fs::symlink_metadata(root.join("self")).is_ok());
        assert_eq!(rep.removed, 8, "{:#?}", rep.notes);
        assert_eq!(rep.changed, 0, "{:#?}", rep.notes);
        assert_eq!(rep.notes.len(), 8);
        assert!(rep
            .notes
            .iter()
            .any(|n| n.contains("abs") && n.contains("absolute")));
        assert!(rep
            .notes
            .iter()
            .any(|n| n.contains("sneaky") && n.contains("after a name")));
        assert_eq!(snapshot(&outside), outside_before);
        assert_eq!(mode_of(&outside), 0o600);
        assert_eq!(snapshot(&outside_dir), outside_dir_before);
        for (p, s) in etc_before {
            assert_eq!(stat_one(&p), s, "{p:?} was touched");
        }
    }

    #[test]
    fn in_tree_symlink_is_kept_and_not_followed() {
        if !is_root() {
            eprintln!("skipped: needs root to create foreign groups");
            return;
        }
        let (tmp, root) = setup();
        mkdir(&root.join("sub"), 0o750);
        // Target already correct; the link itself has the wrong group.
        mkfile(&root.join("sub/x.iso"), 0o640);
        symlink("sub/x.iso", root.join("current")).unwrap();
        chgrp(&root.join("current"), 12345);
        // A second target that is wrong: fixed as its own entry, once.
        mkfile(&root.join("sub/y.iso"), 0o600);
        symlink("y.iso", root.join("sub/latest")).unwrap();
        settle(tmp.path());
        let x_before = stat_one(&root.join("sub/x.iso"));

        let rep = fix_tree(&root, &policy()).unwrap();

        assert_eq!(
            fs::read_link(root.join("current")).unwrap(),
            Path::new("sub/x.iso")
        );
        assert_eq!(owner_of(&root.join("current")), me());
        assert_eq!(
            stat_one(&root.join("sub/x.iso")),
            x_before,
            "target touched through link"
        );
        assert_eq!(mode_of(&root.join("sub/y.iso")), 0o640);
        assert_eq!(rep.changed, 2, "{:#?}", rep.notes);
        assert_eq!(rep.notes.iter().filter(|n| n.contains("y.iso")).count(), 1);
        assert!(rep
            .notes
            .iter()
            .any(|n| n.contains("current") && n.contains("owner")));
        // root, sub, x.iso, current, y.iso, latest
        assert_eq!(rep.entries, 6);
    }

    #[test]
    fn symlinked_subdir_is_not_descended() {
        let (tmp, root) = setup();
        mkdir(&root.join("sub"), 0o750);
        mkfile(&root.join("sub/f"), 0o600);
        symlink("sub", root.join("alias")).unwrap();
        symlink("/etc", root.join("etc")).unwrap();
        let rep = fix_tree(&root, &policy()).unwrap();
        // root, sub, sub/f, alias: the file is seen once, not via alias.
        assert_eq!(rep.entries, 4);
        assert_eq!(rep.changed, 1);
        assert_eq!(rep.removed, 1);
        assert!(fs::symlink_metadata(root.join("alias"))
            .unwrap()
            .is_symlink());
        drop(tmp);
    }

    #[test]
    fn fifos_sockets_and_devices_are_removed() {
        let (_tmp, root) = setup();
        mkdir(&root.join("sub"), 0o750);
        unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        let sock = root.join("sub/sock");
        drop(UnixListener::bind(&sock).unwrap());
        let mut expected = 2;
        let dev = root.join("null");
        // CAP_MKNOD may be missing in containers.
        if stat::mknod(
            &dev,
            stat::SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            stat::makedev(1, 3),
        )
        .is_ok()
        {
            expected += 1;
        }
        let rep = fix_tree(&root, &policy()).unwrap();
        assert_eq!(rep.removed, expected, "{:#?}", rep.notes);
        assert!(fs::symlink_metadata(root.join("fifo")).is_err());
        assert!(fs::symlink_metadata(&sock).is_err());
        assert!(fs::symlink_metadata(&dev).is_err());
        assert!(rep.notes.iter().any(|n| n.contains("removed fifo")));
        assert!(rep.notes.iter().any(|n| n.contains("removed socket")));
    }

    #[test]
    fn rsync_leftovers_removed_and_syncgate_tmp_skipped() {
        let (tmp, root) = setup();
        let outside = tmp.path().join("keep");
        mkdir(&outside, 0o700);
        mkfile(&outside.join("precious"), 0o600);

        // depth 0
        let t0 = root.join(RSYNC_PARTIAL_DIR);
        mkdir(&t0, 0o700);
        mkdir(&t0.join("a"), 0o755);
        mkfile(&t0.join("a/part.iso"), 0o600);
        symlink(&outside, t0.join("a/out")).unwrap();
        mkdir(&t0.join("locked"), 0o000);
        // depth 2
        mkdir(&root.join("d1"), 0o750);
        mkdir(&root.join("d1/d2"), 0o750);
        let t2 = root.join("d1/d2").join(RSYNC_PARTIAL_DIR);
        mkdir(&t2, 0o500);
        // a file named like the partial dir is an ordinary file
        mkfile(&root.join("d1").join(RSYNC_PARTIAL_DIR), 0o640);

        // top-level .syncgate-tmp: left alone entirely
        let st = root.join(SYNCGATE_TMP);
        mkdir(&st, 0o777);
        mkfile(&st.join("inflight"), 0o666);
        symlink("/etc/passwd", st.join("escape")).unwrap();
        unistd::mkfifo(&st.join("fifo"), Mode::from_bits_truncate(0o666)).unwrap();
        // ... but only at the top level
        let nested = root.join("d1").join(SYNCGATE_TMP);
        mkdir(&nested, 0o777);
        // and links must not route through it
        symlink(format!("{SYNCGATE_TMP}/escape"), root.join("via-tmp")).unwrap();

        settle(tmp.path());
        let st_before = snapshot(&st);
        let outside_before = snapshot(&outside);

        let rep = fix_tree(&root, &policy()).unwrap();

        assert!(fs::symlink_metadata(&t0).is_err());
        assert!(fs::symlink_metadata(&t2).is_err());
        assert!(fs::symlink_metadata(root.join("via-tmp")).is_err());
        assert_eq!(snapshot(&st), st_before);
        assert_eq!(snapshot(&outside), outside_before);
        assert_eq!(mode_of(&nested), 0o750);
        assert_eq!(mode_of(&root.join("d1").join(RSYNC_PARTIAL_DIR)), 0o640);
        // t0: .~tmp~, a, part.iso, out, locked = 5; t2 = 1; via-tmp = 1
        assert_eq!(rep.removed, 7, "{:#?}", rep.notes);
        assert!(rep
            .notes
            .iter()
            .any(|n| n.contains("removed rsync leftover directory (5 entries)")));
        // root, d1, d2, d1/.~tmp~ (file), d1/.syncgate-tmp
        assert_eq!(rep.entries, 5);
    }

    #[test]
    fn symlinked_root_is_refused() {
        let (tmp, root) = setup();
        mkfile(&root.join("f"), 0o666);
        let link = tmp.path().join("link");
        symlink(&root, &link).unwrap();
        let err = fix_tree(&link, &policy()).unwrap_err();
        assert!(matches!(err, FixError::RootIsSymlink { .. }), "{err}");
        assert!(err.to_string().contains("link"));
        assert_eq!(mode_of(&root.join("f")), 0o666);

        let file = tmp.path().join("plain");
        mkfile(&file, 0o640);
        assert!(matches!(
            fix_tree(&file, &policy()),
            Err(FixError::RootNotDirectory { .. })
        ));
        assert!(matches!(
            fix_tree(&tmp.path().join("missing"), &policy()),
            Err(FixError::Io {
                errno: Errno::ENOENT,
                ..
            })
        ));
    }

    #[test]
    fn policy_is_validated() {
        let ok = policy();
        ok.validate().unwrap();
        PermPolicy {
            dir_mode: 0o2750,
            ..ok
        }
        .validate()
        .unwrap();
        PermPolicy {
            file_mode: 0o755,
            dir_mode: 0o755,
            ..ok
        }
        .validate()
        .unwrap();
        for bad in [
            PermPolicy {
                file_mode: 0o660,
                ..ok
            },
            PermPolicy {
                file_mode: 0o642,
                ..ok
            },
            PermPolicy {
                file_mode: 0o4640,
                ..ok
            },
            PermPolicy {
                file_mode: 0o2640,
                ..ok
            },
            PermPolicy {
                file_mode: 0o1640,
                ..ok
            },
            PermPolicy {
                file_mode: 0o10640,
                ..ok
            },
            PermPolicy {
                dir_mode: 0o770,
                ..ok
            },
            PermPolicy {
                dir_mode: 0o757,
                ..ok
            },
            PermPolicy {
                dir_mode: 0o4750,
                ..ok
            },
            PermPolicy {
                dir_mode: 0o1750,
                ..ok
            },
            PermPolicy {
                dir_mode: 0o550,
                ..ok
            },
            PermPolicy {
                uid: u32::MAX,
                ..ok
            },
            PermPolicy {
                gid: u32::MAX,
                ..ok
            },
        ] {
            let err = FixError::from(bad.validate().unwrap_err());
            assert!(matches!(err, FixError::InvalidPolicy(_)), "{bad:?}");
            // fix_tree refuses before touching anything
            assert!(matches!(
                fix_tree(Path::new("/nonexistent"), &bad),
                Err(FixError::InvalidPolicy(_))
            ));
        }
    }

    #[test]
    fn link_classification() {
        let d = |names: &[&str]| names.iter().map(OsString::from).collect::<Vec<_>>();
        let inside = |dir: &[&str], t: &str| link_escape_reason(&d(dir), OsStr::new(t)).is_none();
        assert!(inside(&[], "x.iso"));
        assert!(inside(&[], "sub/x.iso"));
        assert!(inside(&[], "./sub/./x.iso"));
        assert!(inside(&[], "."));
        assert!(inside(&["a"], ".."));
        assert!(inside(&["a"], "../b"));
        assert!(inside(&["a", "b"], "../../c/d"));
        assert!(inside(&["a"], "../.syncgate-tmp-not/x"));
        assert!(inside(&["a"], ".syncgate-tmp/x"), "nested name is ordinary");
        assert!(inside(&[], "sub//x/"));

        assert!(!inside(&[], "/etc/passwd"));
        assert!(!inside(&[], ""));
        assert!(!inside(&[], ".."));
        assert!(!inside(&[], "../x"));
        assert!(!inside(&[], "./../x"));
        assert!(!inside(&["a"], "../../x"));
        assert!(!inside(&["a", "b"], "../../../x"));
        assert!(!inside(&[], "sub/../x"), "'..' after a name");
        assert!(!inside(&[], "self/.."));
        assert!(!inside(&[], ".syncgate-tmp"));
        assert!(!inside(&[], "./.syncgate-tmp/x"));
        assert!(!inside(&["a"], "../.syncgate-tmp/x"));
    }

    fn foreign_owner(euid: u32) -> FixError {
        FixError::ForeignOwner {
            path: PathBuf::from("/srv/mirror/it's.iso"),
            cur_uid: 1001,
            cur_gid: 1002,
            want_uid: 2000,
            want_gid: 2001,
            euid,
        }
    }

    #[test]
    fn foreign_owner_error_names_path_owner_and_fix() {
        let s = foreign_owner(2000).to_string();
        assert!(
            s.starts_with("\"/srv/mirror/it's.iso\": owned by 1001:1002, must be 2000:2001"),
            "{s}"
        );
        assert!(s.contains("EPERM"), "{s}");
        assert!(s.contains("runs as uid 2000"), "{s}");
        assert!(
            s.contains(r#"chown -h 2000:2001 -- '/srv/mirror/it'\''s.iso'"#),
            "{s}"
        );
        let s = foreign_owner(0).to_string();
        assert!(s.contains("although running as root"), "{s}");

        let many = FixError::Incomplete {
            root: PathBuf::from("/srv/mirror"),
            problems: vec![
                foreign_owner(2000),
                io(Path::new("/srv/mirror/x"), "chmod to 0640", Errno::EROFS),
            ],
            omitted: 7,
            report: Box::new(FixReport {
                entries: 10,
                changed: 3,
                removed: 1,
                notes: vec![],
            }),
        };
        let s = many.to_string();
        assert!(
            s.starts_with("fix-perms could not fix 9 problem(s) under \"/srv/mirror\""),
            "{s}"
        );
        assert!(
            s.contains("checked 10 entries, repaired 3, removed 1"),
            "{s}"
        );
        assert!(
            s.contains("\n  - \"/srv/mirror/it's.iso\": owned by 1001:1002"),
            "{s}"
        );
        assert!(
            s.contains("\n  - \"/srv/mirror/x\": chmod to 0640 failed: EROFS"),
            "{s}"
        );
        assert!(s.ends_with("\n  - ... 7 more"), "{s}");
    }

    #[test]
    fn problems_are_collected_and_the_rest_is_fixed() {
        if !is_root() {
            eprintln!("skipped: needs root to create foreign owners");
            return;
        }
        let (tmp, root) = setup();
        // Hard links owned by someone else: refused, each reported.
        let outside = tmp.path().join("shadow");
        mkfile(&outside, 0o600);
        lchown(&outside, Some(12345), Some(12345)).unwrap();
        fs::hard_link(&outside, root.join("hl1")).unwrap();
        mkdir(&root.join("sub"), 0o777);
        fs::hard_link(&outside, root.join("sub/hl2")).unwrap();
        // Drift elsewhere is still repaired.
        mkfile(&root.join("sub/drift"), 0o666);
        // Hard links already owned by the policy owner are fine.
        mkfile(&root.join("own"), 0o644);
        fs::hard_link(root.join("own"), root.join("own2")).unwrap();

        let err = fix_tree(&root, &policy()).unwrap_err();
        let FixError::Incomplete {
            problems,
            omitted,
            report,
            ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(problems.len(), 2, "{err}");
        assert_eq!(*omitted, 0);
        assert!(problems
            .iter()
            .all(|p| matches!(p, FixError::ForeignHardlink { nlink: 3, .. })));
        let s = err.to_string();
        assert!(
            s.contains("hl1") && s.contains("hl2") && s.contains("12345:12345"),
            "{s}"
        );
        assert_eq!(owner_of(&outside), (12345, 12345));
        assert_eq!(mode_of(&outside), 0o600);
        assert_eq!(mode_of(&root.join("sub")), 0o750);
        assert_eq!(mode_of(&root.join("sub/drift")), 0o640);
        assert_eq!(mode_of(&root.join("own")), 0o640);
        // sub, sub/drift, own (own2 is the same inode: already right)
        assert_eq!(report.changed, 3, "{:#?}", report.notes);
    }

    #[test]
    fn notes_are_capped() {
        let (_tmp, root) = setup();
        for i in 0..(MAX_NOTES + 50) {
            mkfile(&root.join(format!("f{i:03}")), 0o600);
        }
        let rep = fix_tree(&root, &policy()).unwrap();
        assert_eq!(rep.changed, MAX_NOTES as u64 + 50);
        assert_eq!(rep.notes.len(), MAX_NOTES + 1);
        assert_eq!(rep.notes.last().unwrap(), "... 50 more");
        assert!(rep.notes[0].contains("f000") && rep.notes[0].contains("mode 0600 -> 0640"));
    }

    #[test]
    fn too_deep_is_reported() {
        let (_tmp, root) = setup();
        let mut p = root.clone();
        for _ in 0..(MAX_DEPTH + 1) {
            p.push("d");
            mkdir(&p, 0o750);
        }
        mkfile(&p.join("f"), 0o640);
        let err = fix_tree(&root, &policy()).unwrap_err();
        let FixError::Incomplete { problems, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(problems.len(), 1);
        assert!(matches!(problems[0], FixError::TooDeep { .. }), "{err}");
    }

    fn open_root(root: &Path) -> Dir {
        Dir::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    fn lstat_at(dir: &Dir, name: &str) -> FileStat {
        stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).unwrap()
    }

    #[test]
    fn chmod_primitives_never_follow_symlinks() {
        let (tmp, root) = setup();
        let outside = tmp.path().join("target");
        mkfile(&outside, 0o600);
        mkfile(&root.join("f"), 0o600);
        symlink(&outside, root.join("link")).unwrap();
        let dir = open_root(&root);
        let fd = dir.as_fd();
        let m = Mode::from_bits_truncate(0o644);
        let link_st = lstat_at(&dir, "link");
        let f_st = lstat_at(&dir, "f");

        // The primary path refuses symlinks (glibc: EOPNOTSUPP) ...
        assert!(chmod_nofollow(fd, OsStr::new("link"), m, &link_st).is_err());
        // ... and so does the fallback.
        assert_eq!(
            chmod_via_fd(fd, OsStr::new("link"), m, &link_st),
            Err(Errno::ELOOP)
        );
        assert_eq!(mode_of(&outside), 0o600);

        // Both work on regular files.
        chmod_nofollow(fd, OsStr::new("f"), m, &f_st).unwrap();
        assert_eq!(mode_of(&root.join("f")), 0o644);
        chmod_via_fd(fd, OsStr::new("f"), Mode::from_bits_truncate(0o640), &f_st).unwrap();
        assert_eq!(mode_of(&root.join("f")), 0o640);

        // The fallback notices a replaced entry (kept alive under another
        // name so that its inode number is not reused).
        fs::rename(root.join("f"), root.join("f.old")).unwrap();
        mkfile(&root.join("f"), 0o600);
        assert_eq!(
            chmod_via_fd(fd, OsStr::new("f"), m, &f_st),
            Err(Errno::ESTALE)
        );
        assert_eq!(mode_of(&root.join("f")), 0o600);
    }

    #[test]
    fn directory_swapped_for_symlink_is_not_entered() {
        let (tmp, root) = setup();
        let outside = tmp.path().join("elsewhere");
        mkdir(&outside, 0o700);
        mkdir(&root.join("d"), 0o750);
        let dir = open_root(&root);
        let st = lstat_at(&dir, "d");
        // Swap the directory for a symlink between stat and open (the old
        // one is kept so that its inode number is not reused).
        fs::rename(root.join("d"), root.join("d.old")).unwrap();
        symlink(&outside, root.join("d")).unwrap();
        let err = open_dir_at(dir.as_fd(), OsStr::new("d"), &root.join("d"), &st).unwrap_err();
        assert!(matches!(err, FixError::Raced { .. }), "{err}");
        // Swap for another directory: inode check catches it.
        fs::remove_file(root.join("d")).unwrap();
        mkdir(&root.join("d"), 0o750);
        let err = open_dir_at(dir.as_fd(), OsStr::new("d"), &root.join("d"), &st).unwrap_err();
        assert!(matches!(err, FixError::Raced { .. }), "{err}");
    }

    const UMASK_ENV: &str = "SYNCGATE_FIXPERMS_UMASK_CHILD";

    /// Helper run in a child process by `umask_does_not_matter` (umask is
    /// process-wide, so it must not change in the shared test process).
    #[test]
    #[ignore = "run via umask_does_not_matter"]
    fn umask_child() {
        let Ok(mask) = std::env::var(UMASK_ENV) else {
            return;
        };
        let mask = u32::from_str_radix(&mask, 8).unwrap();
        stat::umask(Mode::from_bits_truncate(mask));
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("m");
        fs::create_dir(&root).unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/f"), b"x").unwrap();
        fs::write(root.join("g"), b"x").unwrap();
        fix_tree(&root, &policy()).unwrap();
        for (p, m) in [("", 0o750), ("sub", 0o750), ("sub/f", 0o640), ("g", 0o640)] {
            assert_eq!(mode_of(&root.join(p)), m, "umask {mask:o}: {p}");
        }
        assert_eq!(fix_tree(&root, &policy()).unwrap().changed, 0);
    }

    #[test]
    fn umask_does_not_matter() {
        if !is_root() {
            // Without root, a 0777 umask leaves unreadable fixtures.
            eprintln!("skipped: needs root");
            return;
        }
        for mask in ["777", "000", "022", "077"] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "owner::fixperms::tests::umask_child",
                    "--exact",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env(UMASK_ENV, mask)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains("1 passed"),
                "umask {mask}: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[test]
    fn wrong_user_is_refused_early() {
        if is_root() {
            // Root may manage any owner; the check only applies to others.
            return;
        }
        let pol = PermPolicy {
            uid: me().0 + 1,
            ..policy()
        };
        assert!(matches!(
            fix_tree(Path::new("/"), &pol),
            Err(FixError::WrongUser { .. })
        ));
    }
}
