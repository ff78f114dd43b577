//! The system calls of the walk, each relative to an open directory and
//! none following a symlink (the `*at` family, `O_NOFOLLOW`).

use std::ffi::{OsStr, OsString};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, OFlag};
use nix::libc;
use nix::sys::stat::{self, FchmodatFlags, FileStat, Mode};
use nix::unistd::{self, Gid, Uid};

use super::{io, FixError, PERM_MASK};

/// File type of a stat result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink,
    /// Device node, fifo or socket (its name).
    Special(&'static str),
}

impl Kind {
    pub(super) fn of(st: &FileStat) -> Kind {
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

pub(super) fn perm_bits(st: &FileStat) -> u32 {
    st.st_mode & PERM_MASK
}

pub(super) fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// The entry a repair applies to: an open fd (the root) or a name relative
/// to a directory fd, never followed if it is a symlink.
#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a OsStr),
}

impl Target<'_> {
    pub(super) fn stat(self) -> nix::Result<FileStat> {
        match self {
            Target::Fd(fd) => stat::fstat(fd),
            Target::At(dir, name) => stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        }
    }

    pub(super) fn chown(self, uid: u32, gid: u32) -> nix::Result<()> {
        let (u, g) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        match self {
            Target::Fd(fd) => unistd::fchown(fd, u, g),
            Target::At(dir, name) => {
                unistd::fchownat(dir, name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
            }
        }
    }

    pub(super) fn chmod(self, mode: u32, expect: &FileStat) -> nix::Result<()> {
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
pub(super) fn chmod_nofollow(
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
pub(super) fn chmod_via_fd(
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
pub(super) fn open_dir_at(
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
pub(super) fn read_names(dir: &mut Dir) -> nix::Result<Vec<OsString>> {
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
