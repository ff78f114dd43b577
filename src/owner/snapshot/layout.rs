//! The snapshot layout beside dest, and the one step that makes a
//! snapshot live.
//!
//! ```text
//! /srv/mirror/iso            -> .iso.snapshots/20261203T021530Z   (symlink: what readers open)
//! /srv/mirror/.iso.snapshots/
//!     20261202T021500Z/      a kept snapshot (rollback target)
//!     20261203T021530Z/      the live snapshot
//!     .syncgate-tmp/         private (0700): the dest lock, the snapshot being built
//! ```
//!
//! A snapshot's id is the UTC second it was made live (`YYYYMMDDTHHMMSSZ`),
//! with `.N` when two fall in one second: ids sort in the order they were
//! made. The symlink's target is relative to dest's parent.
//!
//! [`switch`] makes a snapshot live by `rename(2)` of a new symlink over
//! dest: a reader resolving dest sees the old snapshot or the new one, never
//! neither. A dest that is still a real directory (a two-stage mirror
//! switched to snapshots) is exchanged with the symlink in one
//! `renameat2(RENAME_EXCHANGE)` and kept as a snapshot itself.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

use crate::config::{Mirror, PublishMode};
use crate::error::{Error, IoContext, Result};
use crate::owner::dest::TEMP_DIR;

/// The snapshot being built, below the root's [`TEMP_DIR`]. A run that did
/// not finish leaves it; the next run builds on it (rsync `--delete` clears
/// what upstream no longer has).
pub const BUILD_DIR: &str = "build";

/// The new symlink, below the root's [`TEMP_DIR`], before it is renamed
/// over dest (and, after a conversion, the old dest directory).
const LINK_TMP: &str = "dest-link";

/// How the mirror is published by this owner-side run: as configured, but
/// when `publish` is not set (snapshots by default) and the owner cannot
/// write dest's parent, and no snapshot was ever made there, in place
/// (two-stage): the config of a mirror set up before snapshots keeps
/// working, and `check` and every run say what to change.
pub fn mode(m: &Mirror) -> PublishMode {
    if m.publish.explicit || m.publish.mode == PublishMode::TwoStage {
        return m.publish.mode;
    }
    let made = std::fs::symlink_metadata(m.snapshot_root()).is_ok()
        || std::fs::symlink_metadata(&m.dest).is_ok_and(|md| md.file_type().is_symlink());
    if made || parent_writable(m) {
        PublishMode::Snapshot
    } else {
        PublishMode::TwoStage
    }
}

/// Whether this process may create entries in dest's parent.
pub fn parent_writable(m: &Mirror) -> bool {
    let parent = m.dest.parent().unwrap_or(Path::new("/"));
    nix::unistd::faccessat(
        AT_FDCWD,
        parent,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .is_ok()
}

/// What a run says when [`mode`] fell back to publishing in place.
pub fn fallback_warning(m: &Mirror) -> String {
    let parent = m.dest.parent().unwrap_or(Path::new("/"));
    format!(
        "warning: publishing in place (two-stage): snapshots are the default, but {} cannot write {}, where dest's symlink and {} go; make it the owner's (chown {}:{} {}; chmod 2750 {}) for snapshots, or set publish = \"two-stage\" in [mirror.{}] to keep this and silence the warning",
        m.owner,
        parent.display(),
        m.snapshot_root().display(),
        m.owner,
        m.reader_group,
        parent.display(),
        parent.display(),
        m.name
    )
}

/// The directory whose private directory holds the owner side's lock and
/// temporary files: dest, or with snapshots the snapshot root (dest is then
/// a symlink that changes with each run).
pub fn lock_dir(m: &Mirror) -> PathBuf {
    match mode(m) {
        PublishMode::Snapshot => m.snapshot_root(),
        PublishMode::TwoStage => m.dest.clone(),
    }
}

/// What dest is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Live {
    /// Nothing there yet.
    Missing,
    /// A real directory (a mirror published in place until now); `empty`
    /// when it holds nothing but syncgate's private directory.
    Dir { empty: bool },
    /// The `dest` symlink naming this snapshot.
    Snapshot(String),
}

/// Whether `s` is a snapshot id: `YYYYMMDDTHHMMSSZ` with an optional `.N`.
pub fn is_id(s: &str) -> bool {
    let (base, n) = match s.split_once('.') {
        Some((b, n)) => (b, Some(n)),
        None => (s, None),
    };
    let b = base.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && n.is_none_or(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|c| c.is_ascii_digit()))
}

/// Orders ids by the instant, then by `.N`.
pub fn cmp_ids(a: &str, b: &str) -> Ordering {
    let split = |s: &str| {
        let (base, n) = s.split_once('.').unwrap_or((s, "0"));
        (base.to_string(), n.parse::<u64>().unwrap_or(0))
    };
    split(a).cmp(&split(b))
}

/// A new id for `now` (seconds since the epoch), later than every id in `taken`.
pub fn next_id(now: u64, taken: &[String]) -> String {
    let base: String = crate::sys::timefmt::iso(now)
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let newest = taken.iter().max_by(|a, b| cmp_ids(a, b));
    match newest {
        Some(n) if cmp_ids(&base, n) != Ordering::Greater => {
            let (nb, k) = n.split_once('.').unwrap_or((n, "0"));
            format!("{nb}.{}", k.parse::<u64>().unwrap_or(0) + 1)
        }
        _ => base,
    }
}

/// The snapshots in the root, oldest first.
pub fn list(root: &Path) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
        Err(e) => return Err(Error::io(format!("cannot read {}", root.display()), e)),
    };
    for e in rd {
        let e = e.context(|| format!("cannot read {}", root.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_id(&name) && e.file_type().is_ok_and(|t| t.is_dir()) {
            ids.push(name);
        }
    }
    ids.sort_by(|a, b| cmp_ids(a, b));
    Ok(ids)
}

/// What dest is now; an error when it is something syncgate did not make
/// (a symlink elsewhere, a file).
pub fn live(m: &Mirror) -> Result<Live> {
    let dest = &m.dest;
    let md = match std::fs::symlink_metadata(dest) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Live::Missing),
        Err(e) => return Err(Error::io(format!("cannot stat dest {}", dest.display()), e)),
    };
    if md.is_dir() {
        let mut empty = true;
        for e in std::fs::read_dir(dest).context(|| format!("cannot read {}", dest.display()))? {
            let e = e.context(|| format!("cannot read {}", dest.display()))?;
            if e.file_name() != TEMP_DIR {
                empty = false;
                break;
            }
        }
        return Ok(Live::Dir { empty });
    }
    if md.file_type().is_symlink() {
        let target = std::fs::read_link(dest)
            .context(|| format!("cannot read the symlink {}", dest.display()))?;
        let id = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if is_id(&id)
            && target == m.snapshot_link_target(&id)
            && m.snapshot_root().join(&id).is_dir()
        {
            return Ok(Live::Snapshot(id));
        }
        return Err(Error::Internal(format!(
            "dest {} is a symlink to {}, not to a snapshot in {}: syncgate replaces only its own symlink (move it away)",
            dest.display(),
            target.display(),
            m.snapshot_root().display()
        )));
    }
    Err(Error::Internal(format!(
        "dest {} is neither a directory nor syncgate's symlink: move it away",
        dest.display()
    )))
}

/// The directory the live release is in, if any.
pub fn live_dir(m: &Mirror, live: &Live) -> Option<PathBuf> {
    match live {
        Live::Missing | Live::Dir { empty: true } => None,
        Live::Dir { empty: false } => Some(m.dest.clone()),
        Live::Snapshot(id) => Some(m.snapshot_root().join(id)),
    }
}

/// Makes snapshot `id` (a complete directory in the root) live: a new
/// symlink renamed over dest. When dest was a real directory, it is
/// exchanged with the symlink in one step and then kept as snapshot
/// `keep_old` (or removed when it held nothing, or `keep_old` is `None`).
pub fn switch(m: &Mirror, id: &str, was: &Live, keep_old: Option<&str>) -> Result<()> {
    let root = m.snapshot_root();
    let tmp = root.join(TEMP_DIR).join(LINK_TMP);
    remove_any(&tmp)?;
    std::os::unix::fs::symlink(m.snapshot_link_target(id), &tmp)
        .context(|| format!("cannot create the symlink {}", tmp.display()))?;
    let failed = |e: nix::errno::Errno| {
        Error::io(
            format!("cannot make snapshot {id} live at {}", m.dest.display()),
            e.into(),
        )
    };
    match was {
        Live::Dir { empty } => {
            renameat2(
                AT_FDCWD,
                &tmp,
                AT_FDCWD,
                &m.dest,
                RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(failed)?;
            // `tmp` is now the directory dest was.
            let _ = remove_any(&tmp.join(TEMP_DIR));
            match keep_old {
                Some(old) if !empty => std::fs::rename(&tmp, root.join(old))
                    .context(|| format!("cannot keep the old dest as snapshot {old}"))?,
                _ => remove_any(&tmp)?,
            }
        }
        Live::Missing | Live::Snapshot(_) => {
            std::fs::rename(&tmp, &m.dest).map_err(|e| {
                Error::io(
                    format!("cannot make snapshot {id} live at {}", m.dest.display()),
                    e,
                )
            })?;
        }
    }
    sync_dir(m.dest.parent().unwrap_or(Path::new("/")));
    Ok(())
}

/// Removes old snapshots, keeping `keep` of them: the live one, then the
/// one that was live before it (`previous`: after a rollback, the release
/// rolled back to, not the one rolled back from), then the newest others.
/// Returns the ids kept (oldest first) and says what it could not remove.
pub fn prune(root: &Path, keep: u64, live: &str, previous: Option<&str>) -> Result<Vec<String>> {
    let ids = list(root)?;
    let keep = keep.max(1) as usize;
    let mut chosen: Vec<&str> = vec![live];
    if let Some(p) = previous.filter(|p| keep > 1 && *p != live && ids.iter().any(|i| i == p)) {
        chosen.push(p);
    }
    for id in ids.iter().rev() {
        if chosen.len() >= keep {
            break;
        }
        if !chosen.contains(&id.as_str()) {
            chosen.push(id);
        }
    }
    let mut kept = Vec::new();
    for id in &ids {
        if chosen.contains(&id.as_str()) {
            kept.push(id.clone());
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(root.join(id)) {
            crate::sys::progress::say(&format!("warning: cannot remove old snapshot {id}: {e}"));
            kept.push(id.clone());
        }
    }
    Ok(kept)
}

/// Removes `p` whatever it is (nothing when it is not there).
pub fn remove_any(p: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
    };
    r.context(|| format!("cannot remove {}", p.display()))
}

/// fsync of a directory, so a rename in it survives a crash (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(dest: &Path) -> crate::config::Config {
        let text = format!(
            "state_dir = \"/var/lib/syncgate\"\nprivilege = \"direct\"\n\n[mirror.m]\nupstream = \"rsync://example.org/m/\"\ndest = \"{}\"\nowner = \"root\"\nreader_group = \"root\"\npublish = \"snapshot\"\n",
            dest.display()
        );
        crate::config::Config::parse(Path::new("/etc/syncgate/syncgate.toml"), &text).unwrap()
    }

    #[test]
    fn ids_sort_in_the_order_they_were_made() {
        assert!(is_id("20261203T021530Z"));
        assert!(is_id("20261203T021530Z.12"));
        for bad in [
            "",
            "20261203T021530",
            "2026120XT021530Z",
            "20261203T021530Z.",
            "20261203T021530Z.x",
            "../x",
            ".syncgate-tmp",
        ] {
            assert!(!is_id(bad), "{bad:?}");
        }
        let t = 1_764_728_130; // 2025-12-03T02:15:30Z
        let a = next_id(t, &[]);
        assert_eq!(a, "20251203T021530Z");
        let b = next_id(t, std::slice::from_ref(&a));
        assert_eq!(b, "20251203T021530Z.1");
        let mut taken = vec![a.clone(), b.clone()];
        for _ in 0..10 {
            let n = next_id(t, &taken);
            assert_eq!(cmp_ids(&n, taken.last().unwrap()), Ordering::Greater, "{n}");
            taken.push(n);
        }
        assert_eq!(taken.last().unwrap(), "20251203T021530Z.11");
        // A clock set back never makes an older-looking id.
        let back = next_id(t - 3600, &taken);
        assert_eq!(cmp_ids(&back, taken.last().unwrap()), Ordering::Greater);
        assert_eq!(next_id(t + 1, &taken), "20251203T021531Z");
    }

    #[test]
    fn switch_converts_a_directory_and_then_replaces_the_symlink() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("iso");
        let cfg = mirror(&dest);
        let m = cfg.mirror("m").unwrap();
        assert_eq!(live(m).unwrap(), Live::Missing);
        std::fs::create_dir(&dest).unwrap();
        assert_eq!(live(m).unwrap(), Live::Dir { empty: true });
        std::fs::write(dest.join("old.iso"), b"old").unwrap();
        let was = live(m).unwrap();
        assert_eq!(was, Live::Dir { empty: false });

        let root = m.snapshot_root();
        assert_eq!(root, t.path().join(".iso.snapshots"));
        std::fs::create_dir_all(root.join(TEMP_DIR)).unwrap();
        std::fs::create_dir(root.join("20261203T000002Z")).unwrap();
        std::fs::write(root.join("20261203T000002Z/new.iso"), b"new").unwrap();
        switch(m, "20261203T000002Z", &was, Some("20261203T000001Z")).unwrap();
        assert_eq!(live(m).unwrap(), Live::Snapshot("20261203T000002Z".into()));
        assert_eq!(std::fs::read(dest.join("new.iso")).unwrap(), b"new");
        assert_eq!(
            std::fs::read_link(&dest).unwrap(),
            Path::new(".iso.snapshots/20261203T000002Z")
        );
        assert_eq!(
            std::fs::read(root.join("20261203T000001Z/old.iso")).unwrap(),
            b"old"
        );
        assert_eq!(
            list(&root).unwrap(),
            ["20261203T000001Z", "20261203T000002Z"]
        );

        std::fs::create_dir(root.join("20261203T000003Z")).unwrap();
        let was = live(m).unwrap();
        switch(m, "20261203T000003Z", &was, None).unwrap();
        assert_eq!(live(m).unwrap(), Live::Snapshot("20261203T000003Z".into()));
        assert_eq!(
            prune(&root, 2, "20261203T000003Z", Some("20261203T000002Z")).unwrap(),
            ["20261203T000002Z", "20261203T000003Z"]
        );
        assert!(!root.join("20261203T000001Z").exists());
        // After a rollback (live 2, 3 rolled back from), the next snapshot 4
        // keeps 2, the release rolled back to, and drops 3.
        std::fs::create_dir(root.join("20261203T000004Z")).unwrap();
        assert_eq!(
            prune(&root, 2, "20261203T000004Z", Some("20261203T000002Z")).unwrap(),
            ["20261203T000002Z", "20261203T000004Z"]
        );
        // keep = 1: only the live one.
        assert_eq!(
            prune(&root, 1, "20261203T000004Z", Some("20261203T000002Z")).unwrap(),
            ["20261203T000004Z"]
        );
    }

    #[test]
    fn a_symlink_syncgate_did_not_make_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("iso");
        let cfg = mirror(&dest);
        let m = cfg.mirror("m").unwrap();
        std::os::unix::fs::symlink("/etc", &dest).unwrap();
        let e = live(m).unwrap_err().to_string();
        assert!(e.contains("not to a snapshot"), "{e}");
        std::fs::remove_file(&dest).unwrap();
        std::fs::create_dir_all(m.snapshot_root().join("20261203T000001Z")).unwrap();
        std::os::unix::fs::symlink(".iso.snapshots/../../etc", &dest).unwrap();
        assert!(live(m).is_err());
        std::fs::remove_file(&dest).unwrap();
        std::os::unix::fs::symlink(".iso.snapshots/20261203T000001Z", &dest).unwrap();
        assert_eq!(live(m).unwrap(), Live::Snapshot("20261203T000001Z".into()));
    }
}
