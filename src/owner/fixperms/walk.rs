//! The walk: every entry below the root visited once, repaired where it
//! differs from the policy, removed where it may not stay.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags};
use nix::sys::stat::{self, FileStat, Mode};
use nix::unistd::{self, UnlinkatFlags};

use super::at::{chmod_nofollow, open_dir_at, perm_bits, read_names, Kind, Target};
use super::links::link_escape_reason;
use super::{io, FixError, FixReport, PermPolicy, MAX_DEPTH, MAX_NOTES, MAX_PROBLEMS};
use crate::owner::dest::{RSYNC_PARTIAL_DIR, TEMP_DIR};

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

pub(super) struct Walker<'p> {
    policy: &'p PermPolicy,
    euid: u32,
    root_dev: u64,
    pub(super) entries: u64,
    changed: u64,
    removed: u64,
    notes: Vec<String>,
    notes_omitted: u64,
    problems: Vec<FixError>,
    problems_omitted: u64,
}

impl<'p> Walker<'p> {
    pub(super) fn new(policy: &'p PermPolicy, euid: u32, root_dev: u64) -> Self {
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

    pub(super) fn finish(self, root: &Path) -> Result<FixReport, FixError> {
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
    pub(super) fn walk(&mut self, dir: &mut Dir, dir_path: &Path, comps: &mut Vec<OsString>) {
        let names = match read_names(dir) {
            Ok(n) => n,
            Err(e) => return self.problem(io(dir_path, "readdir", e)),
        };
        for name in names {
            let path = dir_path.join(&name);
            if comps.is_empty() && name == TEMP_DIR {
                self.visit_private(dir.as_fd(), &name, &path);
                continue;
            }
            self.visit(dir.as_fd(), &name, &path, comps);
        }
    }

    /// The top-level `.syncgate-tmp`: skipped when it is syncgate's own
    /// real directory (this process's or the owner's), removed otherwise
    /// (a symlink, a file, anything else that took its name).
    fn visit_private(&mut self, parent: BorrowedFd<'_>, name: &OsStr, path: &Path) {
        let st = match stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::ENOENT) => return,
            Err(e) => return self.problem(io(path, "fstatat", e)),
        };
        let kind = Kind::of(&st);
        if kind == Kind::Dir && (st.st_uid == self.euid || st.st_uid == self.policy.uid) {
            return;
        }
        self.remove_impostor(
            parent,
            name,
            path,
            &st,
            kind,
            "syncgate's private directory",
        );
    }

    /// Removes the entry `name`, which has a name syncgate or rsync keeps
    /// for itself (`whose`) but is not theirs.
    fn remove_impostor(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        st: &FileStat,
        kind: Kind,
        whose: &str,
    ) {
        if kind == Kind::Dir {
            return self.remove_partial(parent, name, path, st, 1);
        }
        match unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {
                self.removed += 1;
                self.note(format!("{path:?}: removed, it has the name of {whose}"));
            }
            Err(e) => self.problem(io(path, "unlink", e)),
        }
    }

    /// Checks the entry `name` of `parent` (at `path`), and descends into
    /// it when it is a directory.
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
                self.remove_partial(parent, name, path, &st, comps.len() + 1)
            }
            kind if name == RSYNC_PARTIAL_DIR => {
                self.remove_impostor(parent, name, path, &st, kind, "rsync's holding directory")
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
            Kind::Symlink => self.visit_link(parent, name, path, &st, comps),
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

    /// Removes the rsync leftover directory `name` (a `.~tmp~` at `depth`).
    fn remove_partial(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        st: &FileStat,
        depth: usize,
    ) {
        let mut n = 0;
        let r = remove_tree(parent, name, path, st, self.root_dev, depth, &mut n);
        self.removed += n;
        match r {
            Ok(()) => self.note(format!(
                "{path:?}: removed rsync leftover directory ({n} entries)"
            )),
            Err(e) => self.problem(e),
        }
    }

    /// Keeps (and repairs) the symlink `name` if it stays inside the tree,
    /// removes it otherwise.
    fn visit_link(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &Path,
        st: &FileStat,
        comps: &[OsString],
    ) {
        let dest = match fcntl::readlinkat(parent, name) {
            Ok(d) => d,
            Err(Errno::ENOENT) => return,
            Err(e) => return self.problem(io(path, "readlink", e)),
        };
        match link_escape_reason(comps, &dest) {
            None => {
                self.entries += 1;
                self.fix_entry(Target::At(parent, name), path, st, Kind::Symlink);
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

    /// Sets owner, group and (except for symlinks) mode of one entry, only
    /// where they differ from the policy.
    pub(super) fn fix_entry(&mut self, target: Target<'_>, path: &Path, st: &FileStat, kind: Kind) {
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
        self.check_applied(target, path, want_mode);
    }

    /// Reports a problem unless the entry now has the policy's owner, group
    /// and `want_mode`.
    fn check_applied(&mut self, target: Target<'_>, path: &Path, want_mode: Option<u32>) {
        let (uid, gid) = (self.policy.uid, self.policy.gid);
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
