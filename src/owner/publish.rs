//! Publishing a first sync: a complete staging copy goes live by renames.
//!
//! A first sync into an empty dest copies everything in one rsync pass into
//! `DEST/.syncgate-tmp/fresh` (mode 0700 above it: readers see none of it),
//! fix-perms runs on that copy, and then [`publish`] moves it into dest:
//!
//! 1. every entry that may match a "last" pattern is moved aside into
//!    `DEST/.syncgate-tmp/last` (a directory that matches goes as a whole);
//! 2. every top-level entry of the staging copy is renamed into dest: each
//!    appears complete, in one step, with no last file in it;
//! 3. the last files are renamed into their places, and the directories
//!    they were taken from get back the mtimes rsync gave them.
//!
//! So a reader sees every checksum file, signature and marker only after
//! all the rest, as with the two-stage path, and never a partial file. All
//! renames stay on one filesystem (dest). What a failure leaves is complete
//! entries in dest plus leftovers in `.syncgate-tmp`, which the next sync
//! (then an ordinary two-stage one) removes.
//!
//! "May match" over-approximates rsync's pattern rules: each pattern's last
//! component is matched (rsync's wildcards, [`glob`]) against every name, whatever its
//! depth, anchoring or trailing `/`. Holding back more than rsync would
//! only delays those entries to step 3. Patterns with `**` can match across
//! directories, which this cannot bound; a mirror with one takes the
//! two-stage path for its first sync too ([`handles`]).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::time::TimeSpec;

use crate::owner::dest::{RSYNC_PARTIAL_DIR, TEMP_DIR};
use crate::owner::fixperms::MAX_DEPTH;

/// Whether a first sync with these last patterns can be published by
/// renames (no pattern contains `**`).
pub fn handles(last: &[String]) -> bool {
    !last.iter().any(|p| p.contains("**"))
}

/// Whether dest holds nothing yet but syncgate's own temp dir.
pub fn is_empty(dest: &Path) -> std::io::Result<bool> {
    for e in std::fs::read_dir(dest)? {
        if e?.file_name() != TEMP_DIR {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether an entry called `name` may match one of the rsync patterns
/// `last`, wherever it is (an over-approximation; see the module docs).
fn may_be_last(name: &OsStr, last: &[String]) -> bool {
    let name = name.as_bytes();
    last.iter().any(|p| {
        let p = p.trim_end_matches('/');
        let tail = p.rsplit('/').next().unwrap_or(p);
        glob(tail.as_bytes(), name)
    })
}

/// rsync's wildcards within one name: `*` (any run), `?` (any byte), `[…]`
/// (a class, `!` or `^` negates, `a-z` ranges), `\` (the next byte as is).
/// An unterminated class matches its `[` literally.
pub(crate) fn glob(p: &[u8], n: &[u8]) -> bool {
    // Iterative, with one backtrack point for the last `*` (linear enough
    // for names, no recursion).
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => class(&p[pi..], n[ni]).map(|len| pi + len),
            Some(b'\\') if pi + 1 < p.len() => (p[pi + 1] == n[ni]).then_some(pi + 2),
            Some(&c) => (c == n[ni]).then_some(pi + 1),
            None => None,
        };
        match step {
            Some(next) => {
                pi = next;
                ni += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    pi = sp + 1;
                    ni = sn + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `p` (`[` …): the class's
/// length when it matches, `None` when not. An unterminated `[` is literal.
fn class(p: &[u8], c: u8) -> Option<usize> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let Some(&a) = p.get(i) else {
            return (c == b'[').then_some(1);
        };
        if a == b']' && !first {
            break;
        }
        first = false;
        let (a, w) = if a == b'\\' && i + 1 < p.len() {
            (p[i + 1], 2)
        } else {
            (a, 1)
        };
        if p.get(i + w) == Some(&b'-') && p.get(i + w + 1).is_some_and(|&b| b != b']') {
            let b = p[i + w + 1];
            hit |= a <= c && c <= b;
            i += w + 2;
        } else {
            hit |= a == c;
            i += w;
        }
    }
    (hit != negate).then_some(i + 1)
}

/// What [`publish`] moved.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Top-level entries renamed into dest in step 2.
    pub entries: u64,
    /// Last files (or directories) renamed into place in step 3.
    pub last: u64,
}

/// Renames `from` to `to`, refusing to replace anything at `to`.
fn rename_new(from: &Path, to: &Path) -> Result<(), String> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // A filesystem without RENAME_NOREPLACE: dest is locked and only
        // its owner writes there, so check, then rename.
        Err(nix::errno::Errno::EINVAL) if std::fs::symlink_metadata(to).is_err() => {
            std::fs::rename(from, to)
                .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))
        }
        Err(e) => Err(format!(
            "cannot move {} to {}: {}",
            from.display(),
            to.display(),
            std::io::Error::from(e)
        )),
    }
}

/// The entries below `staging` that may match `last`, as paths relative to
/// it, sorted; a matching directory is not entered.
fn last_entries(staging: &Path, last: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut dirs = vec![(PathBuf::new(), 0usize)];
    while let Some((rel, depth)) = dirs.pop() {
        let here = staging.join(&rel);
        let read =
            std::fs::read_dir(&here).map_err(|e| format!("cannot read {}: {e}", here.display()))?;
        let mut names: Vec<(OsString, bool)> = Vec::new();
        for e in read {
            let e = e.map_err(|e| format!("cannot read {}: {e}", here.display()))?;
            let ft = e
                .file_type()
                .map_err(|err| format!("cannot stat {}: {err}", e.path().display()))?;
            names.push((e.file_name(), ft.is_dir()));
        }
        names.sort();
        for (name, is_dir) in names {
            let path = rel.join(&name);
            if may_be_last(&name, last) {
                found.push(path);
            } else if is_dir {
                if depth + 1 >= MAX_DEPTH {
                    return Err(format!(
                        "{} is nested deeper than {MAX_DEPTH} directories",
                        staging.join(&path).display()
                    ));
                }
                dirs.push((path, depth + 1));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Moves the complete copy in `staging` into `dest` (see the module docs),
/// using `hold` (which must not exist) for the last files meanwhile.
/// Removes `staging` and `hold` when done.
pub fn publish(
    staging: &Path,
    hold: &Path,
    dest: &Path,
    last: &[String],
) -> Result<Published, String> {
    refuse_private_names(staging)?;
    let held = last_entries(staging, last)?;
    let parents = parent_mtimes(staging, &held);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(hold)
        .map_err(|e| format!("cannot create {}: {e}", hold.display()))?;
    for (i, rel) in held.iter().enumerate() {
        rename_new(&staging.join(rel), &hold.join(i.to_string()))?;
    }

    let mut top: Vec<OsString> = std::fs::read_dir(staging)
        .map_err(|e| format!("cannot read {}: {e}", staging.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", staging.display()))?;
    top.sort();
    let mut done = Published::default();
    for name in &top {
        rename_new(&staging.join(name), &dest.join(name))?;
        done.entries += 1;
    }
    for (i, rel) in held.iter().enumerate() {
        rename_new(&hold.join(i.to_string()), &dest.join(rel))?;
        done.last += 1;
    }
    for (rel, mtime) in &parents {
        set_mtime(&dest.join(rel), mtime);
    }
    for d in [staging, hold] {
        std::fs::remove_dir(d).map_err(|e| format!("cannot remove {}: {e}", d.display()))?;
    }
    Ok(done)
}

/// Refuses a staging copy that holds, at its top, an entry named like
/// syncgate's private dir or rsync's holding dir: published, it would take
/// the private dir's place in dest (or fail on it). rsync never brings one
/// (every rsync excludes them) and fix-perms removes a holding dir's name
/// at any depth; this is the last line, checked before anything moves.
fn refuse_private_names(staging: &Path) -> Result<(), String> {
    for e in
        std::fs::read_dir(staging).map_err(|e| format!("cannot read {}: {e}", staging.display()))?
    {
        let name = e
            .map_err(|e| format!("cannot read {}: {e}", staging.display()))?
            .file_name();
        if name == TEMP_DIR || name == RSYNC_PARTIAL_DIR {
            return Err(format!(
                "{}: {name:?} is a name syncgate keeps for itself in dest; refusing to publish it",
                staging.join(&name).display()
            ));
        }
    }
    Ok(())
}

/// The mtimes rsync gave the directories below `staging` that hold
/// entries of `held` (dest itself excluded: its mtime is the caller's).
/// Moving an entry out and back in changes its directory's mtime; left so,
/// the next plan would itemize the directory and a resync with nothing new
/// upstream would take the two-stage path.
fn parent_mtimes(staging: &Path, held: &[PathBuf]) -> BTreeMap<PathBuf, TimeSpec> {
    let mut out = BTreeMap::new();
    for rel in held {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            continue;
        };
        if out.contains_key(parent) {
            continue;
        }
        if let Ok(md) = std::fs::symlink_metadata(staging.join(parent)) {
            out.insert(
                parent.to_path_buf(),
                TimeSpec::new(md.mtime(), md.mtime_nsec()),
            );
        }
    }
    out
}

/// Sets the mtime of `path` without following a symlink (its atime is left
/// alone); best effort, as for dest's own mtime.
fn set_mtime(path: &Path, mtime: &TimeSpec) {
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &TimeSpec::UTIME_OMIT,
        mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn pats(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn may_be_last_over_approximates_rsync_patterns() {
        let last = pats(&["SHA256SUMS*", "*.json", "/current", "meta/*.sig", "dir/"]);
        for yes in [
            "SHA256SUMS",
            "SHA256SUMS.gpg",
            "a.json",
            "current",
            "x.sig",
            "dir",
            ".json",
        ] {
            assert!(may_be_last(OsStr::new(yes), &last), "{yes}");
        }
        for no in ["a.iso", "SHA512SUMS", "json", "currentx", "pool"] {
            assert!(!may_be_last(OsStr::new(no), &last), "{no}");
        }
        assert!(handles(&last));
        for (p, n, want) in [
            ("*", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("?.iso", "a.iso", true),
            ("?.iso", ".iso", false),
            ("[abc].sig", "b.sig", true),
            ("[!abc].sig", "b.sig", false),
            ("[^abc].sig", "d.sig", true),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[]]", "]", true),
            ("[x", "[x", true),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("*SUMS*", "SHA256SUMS.gpg", true),
            ("**", "anything", true),
        ] {
            assert_eq!(glob(p.as_bytes(), n.as_bytes()), want, "{p} ~ {n}");
        }
        assert!(!handles(&pats(&["**/SUMS"])));
    }

    #[test]
    fn last_files_arrive_after_everything_else_and_nothing_is_replaced() {
        let t = tempfile::tempdir().unwrap();
        let (staging, hold, dest) = (t.path().join("s"), t.path().join("h"), t.path().join("d"));
        fs::create_dir_all(staging.join("images/sub")).unwrap();
        fs::create_dir_all(staging.join("current")).unwrap();
        fs::write(staging.join("images/a.iso"), b"a").unwrap();
        fs::write(staging.join("images/SHA256SUMS"), b"sums").unwrap();
        fs::write(staging.join("images/sub/b.json"), b"{}").unwrap();
        fs::write(staging.join("release.json"), b"{}").unwrap();
        fs::write(staging.join("current/x"), b"x").unwrap();
        fs::create_dir(&dest).unwrap();
        let last = pats(&["SHA256SUMS*", "*.json", "current"]);
        let held = last_entries(&staging, &last).unwrap();
        assert_eq!(
            held,
            [
                "current",
                "images/SHA256SUMS",
                "images/sub/b.json",
                "release.json"
            ]
            .map(PathBuf::from)
        );
        let done = publish(&staging, &hold, &dest, &last).unwrap();
        assert_eq!(
            done,
            Published {
                entries: 1,
                last: 4
            }
        );
        for (p, want) in [
            ("images/a.iso", "a"),
            ("images/SHA256SUMS", "sums"),
            ("images/sub/b.json", "{}"),
            ("release.json", "{}"),
            ("current/x", "x"),
        ] {
            assert_eq!(fs::read_to_string(dest.join(p)).unwrap(), want, "{p}");
        }
        assert!(!staging.exists() && !hold.exists());

        // Something already in dest is never replaced.
        fs::create_dir_all(staging.join("images")).unwrap();
        let err = publish(&staging, &hold, &dest, &last).unwrap_err();
        assert!(err.contains("cannot move"), "{err}");
        assert!(dest.join("images/a.iso").exists());
    }

    #[test]
    fn directories_keep_the_mtimes_rsync_gave_them() {
        let t = tempfile::tempdir().unwrap();
        let (staging, hold, dest) = (t.path().join("s"), t.path().join("h"), t.path().join("d"));
        fs::create_dir_all(staging.join("images/sub")).unwrap();
        fs::write(staging.join("images/a.iso"), b"a").unwrap();
        fs::write(staging.join("images/SHA256SUMS"), b"sums").unwrap();
        fs::write(staging.join("images/sub/b.json"), b"{}").unwrap();
        fs::create_dir(&dest).unwrap();
        let old = TimeSpec::new(1_000_000_000, 123);
        for d in ["images", "images/sub"] {
            set_mtime(&staging.join(d), &old);
        }
        publish(&staging, &hold, &dest, &pats(&["SHA256SUMS*", "*.json"])).unwrap();
        for d in ["images", "images/sub"] {
            let md = fs::symlink_metadata(dest.join(d)).unwrap();
            assert_eq!((md.mtime(), md.mtime_nsec()), (1_000_000_000, 123), "{d}");
        }
    }

    #[test]
    fn an_entry_named_like_a_private_dir_is_refused_before_anything_moves() {
        for name in [TEMP_DIR, RSYNC_PARTIAL_DIR] {
            let t = tempfile::tempdir().unwrap();
            let (staging, hold, dest) =
                (t.path().join("s"), t.path().join("h"), t.path().join("d"));
            fs::create_dir_all(&staging).unwrap();
            fs::create_dir(&dest).unwrap();
            fs::write(staging.join(".a"), b"a").unwrap();
            fs::write(staging.join("SHA256SUMS"), b"s").unwrap();
            std::os::unix::fs::symlink(".", staging.join(name)).unwrap();
            let err = publish(&staging, &hold, &dest, &pats(&["SHA256SUMS"])).unwrap_err();
            assert!(err.contains("refusing to publish"), "{err}");
            assert_eq!(fs::read_dir(&dest).unwrap().count(), 0, "{name}");
            assert!(!hold.exists());
        }
    }

    #[test]
    fn an_empty_dest_is_one_with_nothing_but_the_temp_dir() {
        let t = tempfile::tempdir().unwrap();
        assert!(is_empty(t.path()).unwrap());
        fs::create_dir(t.path().join(TEMP_DIR)).unwrap();
        assert!(is_empty(t.path()).unwrap());
        fs::write(t.path().join(".hidden"), b"").unwrap();
        assert!(!is_empty(t.path()).unwrap());
    }
}
