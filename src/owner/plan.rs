//! Whether a sync has anything to do, decided in one rsync pass.
//!
//! The plan ([`crate::owner::rsync::argv::rsync_plan`]) is a dry run over everything,
//! last files included. While it runs, [`count_tree`] counts dest's entries
//! by type (names only, from `getdents`; no `stat`). Nothing is to be done
//! exactly when:
//!
//! * rsync exited 0, wrote nothing to stderr and itemized nothing: every
//!   entry it listed (but the unsafe symlinks and special files it skips)
//!   exists in dest with the same type, size, mtime, mode and group, so
//!   dest holds all of them; and
//! * dest holds, type by type, exactly as many entries as that: then it
//!   holds nothing else, so `--delete` would delete nothing.
//!
//! Anything else, including an entry this cannot count or an excluded file
//! an admin keeps in dest, sends the sync down the two-stage path, which
//! finds out for itself. The plan never says "unchanged" when something is
//! to be published or deleted; at worst it says "changed" needlessly.

use std::path::Path;

use crate::owner::dest::TEMP_DIR;
use crate::owner::rsync::{Kinds, Stats};

/// Deepest directory level [`count_tree`] descends to (as fix-perms).
const MAX_DEPTH: usize = crate::owner::fixperms::MAX_DEPTH;

/// Counts the entries below `root` by type, without following symlinks
/// and without the top-level [`TEMP_DIR`]. `None` when a directory cannot
/// be read or the tree is deeper than fix-perms would walk.
pub fn count_tree(root: &Path) -> Option<Kinds> {
    let mut k = Kinds::default();
    let mut dirs = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        for e in std::fs::read_dir(&dir).ok()? {
            let e = e.ok()?;
            if depth == 0 && e.file_name() == TEMP_DIR {
                continue;
            }
            // d_type from getdents; std falls back to lstat when the
            // filesystem does not fill it in. Never follows a symlink.
            let ft = e.file_type().ok()?;
            if ft.is_dir() {
                k.dir += 1;
                if depth + 1 >= MAX_DEPTH {
                    return None;
                }
                dirs.push((e.path(), depth + 1));
            } else if ft.is_file() {
                k.reg += 1;
            } else if ft.is_symlink() {
                k.link += 1;
            } else {
                k.other += 1;
            }
        }
    }
    Some(k)
}

/// Why the plan does not prove that nothing is to be done, or `None` when
/// it does. `stderr_lines`: what rsync wrote to stderr; `dest`: what
/// [`count_tree`] found.
pub fn change(plan: &Stats, code: i32, stderr_lines: usize, dest: Option<Kinds>) -> Option<String> {
    if code != 0 {
        return Some(format!("the dry run exited {code}"));
    }
    if stderr_lines > 0 {
        return Some("the dry run reported problems".into());
    }
    if plan.itemized > 0 {
        return Some(format!("{} entries differ from upstream", plan.itemized));
    }
    let Some(listed) = plan.listed else {
        return Some("rsync did not count its file list".into());
    };
    let Some(dest) = dest else {
        return Some("dest could not be counted".into());
    };
    // The transfer root "." is listed; dest itself is not counted.
    let (Some(dir), Some(link)) = (
        listed.dir.checked_sub(1),
        listed.link.checked_sub(plan.unsafe_links),
    ) else {
        return Some("rsync's counts do not add up".into());
    };
    let expected = Kinds {
        reg: listed.reg,
        dir,
        link,
        other: 0,
    };
    if listed.other != plan.skipped_special {
        return Some("rsync skipped special files it did not name".into());
    }
    (dest != expected).then(|| {
        format!(
            "dest holds entries upstream does not have (dest: {} files, {} directories, {} symlinks, {} others; upstream: {}, {}, {}, 0)",
            dest.reg, dest.dir, dest.link, dest.other, expected.reg, expected.dir, expected.link
        )
    })
}

/// How many entries of dest (counted: `dest`) upstream no longer has,
/// from a dry run without `--delete`: dest's entries minus those the run
/// listed and found there (listed, less the transfer root, the unsafe
/// symlinks and special files it skips, and what it would create). `None`
/// when rsync did not count its list. Counts an admin's excluded files in
/// dest too: an upper bound.
pub fn gone(plan: &Stats, dest: Kinds) -> Option<u64> {
    let l = plan.listed?;
    let listed = (l.reg + l.dir + l.link + l.other)
        .checked_sub(1 + plan.unsafe_links + plan.skipped_special)?;
    let there = listed.saturating_sub(plan.files_created);
    Some((dest.reg + dest.dir + dest.link + dest.other).saturating_sub(there))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(reg: u64, dir: u64, link: u64, other: u64) -> Stats {
        Stats {
            listed: Some(Kinds {
                reg,
                dir,
                link,
                other,
            }),
            ..Stats::default()
        }
    }

    fn k(reg: u64, dir: u64, link: u64, other: u64) -> Option<Kinds> {
        Some(Kinds {
            reg,
            dir,
            link,
            other,
        })
    }

    #[test]
    fn nothing_to_do_only_when_every_count_matches() {
        let s = listed(10, 3, 1, 0);
        assert_eq!(change(&s, 0, 0, k(10, 2, 1, 0)), None);
        // One extra file in dest: something to delete.
        assert!(change(&s, 0, 0, k(11, 2, 1, 0)).is_some());
        // An extra directory, an extra link, a fifo.
        assert!(change(&s, 0, 0, k(10, 3, 1, 0)).is_some());
        assert!(change(&s, 0, 0, k(10, 2, 2, 0)).is_some());
        assert!(change(&s, 0, 0, k(10, 2, 1, 1)).is_some());
        // Fewer entries than listed cannot be "nothing itemized", but is
        // never "unchanged" either.
        assert!(change(&s, 0, 0, k(9, 2, 1, 0)).is_some());
    }

    #[test]
    fn anything_itemized_reported_or_uncounted_is_a_change() {
        let s = listed(10, 3, 1, 0);
        let ok = k(10, 2, 1, 0);
        assert!(change(&s, 24, 0, ok).is_some());
        assert!(change(&s, 0, 1, ok).is_some());
        assert!(change(
            &Stats {
                itemized: 1,
                ..s.clone()
            },
            0,
            0,
            ok
        )
        .is_some());
        assert!(change(&s, 0, 0, None).is_some());
        assert!(change(&Stats::default(), 0, 0, ok).is_some());
        // Counts that cannot be right are never "unchanged".
        assert!(change(&listed(0, 0, 0, 0), 0, 0, k(0, 0, 0, 0)).is_some());
        let more_unsafe = Stats {
            unsafe_links: 2,
            ..listed(10, 3, 1, 0)
        };
        assert!(change(&more_unsafe, 0, 0, k(10, 2, 0, 0)).is_some());
    }

    #[test]
    fn skipped_unsafe_links_and_special_files_are_not_expected_in_dest() {
        let s = Stats {
            unsafe_links: 1,
            skipped_special: 2,
            ..listed(10, 3, 2, 2)
        };
        assert_eq!(change(&s, 0, 0, k(10, 2, 1, 0)), None);
        // An extra file in dest where one was skipped is still a change.
        assert!(change(&s, 0, 0, k(10, 2, 2, 0)).is_some());
        // Special files listed but not all of them named as skipped.
        let s = Stats {
            skipped_special: 1,
            ..s
        };
        assert!(change(&s, 0, 0, k(10, 2, 1, 0)).is_some());
    }

    #[test]
    fn the_tree_is_counted_without_the_temp_dir_and_without_following_links() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::create_dir_all(r.join(TEMP_DIR).join("x")).unwrap();
        std::fs::write(r.join(TEMP_DIR).join("x/f"), b"").unwrap();
        std::fs::write(r.join("a/b/f"), b"").unwrap();
        std::fs::write(r.join("g"), b"").unwrap();
        std::os::unix::fs::symlink("/", r.join("a/root")).unwrap();
        std::os::unix::fs::symlink("b", r.join("a/l")).unwrap();
        nix::unistd::mkfifo(&r.join("p"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(count_tree(r), k(2, 2, 2, 1));
        // A nested directory named like the temp dir is counted.
        std::fs::create_dir(r.join("a").join(TEMP_DIR)).unwrap();
        assert_eq!(count_tree(r), k(2, 3, 2, 1));
        assert_eq!(count_tree(&r.join("missing")), None);
    }

    #[test]
    fn what_is_gone_is_dest_less_what_the_dry_run_found_there() {
        // Upstream: ./, 3 files, 1 dir, 1 unsafe symlink; 1 file is new.
        let mut plan = listed(3, 2, 1, 0);
        plan.unsafe_links = 1;
        plan.files_created = 1;
        // dest: the 2 old files, the dir, and 2 files upstream dropped.
        assert_eq!(gone(&plan, k(4, 1, 0, 0).unwrap()), Some(2));
        assert_eq!(gone(&plan, k(2, 1, 0, 0).unwrap()), Some(0));
        assert_eq!(gone(&Stats::default(), k(2, 1, 0, 0).unwrap()), None);
    }
}
