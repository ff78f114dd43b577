//! The upstream change marker (`change_marker`): a poll of an unchanged
//! upstream costs one tiny transfer instead of a walk of both trees.
//!
//! Every run of a mirror with a change marker starts with one small rsync
//! (the same that looks for upstream's busy markers, src/owner/busy.rs):
//! it copies the marker file into the private directory. When its bytes
//! are those the last *successful, published and verified* run fetched
//! at its start, and what readers see is still what that run published,
//! and no full walk is due (`full_every`), the run ends at once as
//! `unchanged`, without walking either tree ([`Transfer::marker_shortcut`]).
//! Any doubt walks the tree as before.
//!
//! What the last such run fetched is kept in [`store_path`], beside dest
//! (`PARENT/.NAME.syncgate-marker`, mode 0600, the owner's): outside the
//! served tree, where no rsync writes, so an upstream can neither plant
//! nor replace it. It holds the marker's SHA-256, a fingerprint of the
//! config that shapes the tree, what was published (the live snapshot's
//! id, or dest itself: device, inode, mtime) and when the tree was last
//! walked. It is removed before every walk and written only after one
//! published successfully ([`Transfer::marker_remember`]): never after a
//! push's stage 1, a failure or a failed verification. A run published in
//! place whose permissions the gate then enforces (`fix-perms`) stores it
//! as pending; only a fix-perms that succeeds confirms it ([`confirm`]).
//!
//! Limits: the shortcut trusts that dest is changed only by syncgate. A
//! file changed deep inside dest (not at its top) behind syncgate's back is
//! noticed only by the next walk: `sync --full`, or `full_every`.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, Mirror, PublishMode};
use crate::owner::report::{Route, SnapshotInfo, TransferReport};
use crate::owner::snapshot::layout::{self, Live};
use crate::owner::transfer::Transfer;
use crate::sys::progress::{human_secs, say};

/// The largest store file read (it holds a few hundred bytes).
const STORE_MAX: u64 = 64 * 1024;

/// What the upstream probe found of the change marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The marker's bytes, as their SHA-256 and length.
    Got { sha256: String, len: u64 },
    /// Upstream has no regular file at that path.
    Missing,
    /// The probe failed (said why): the walk finds out more.
    Unknown(String),
}

/// What readers were shown by the run that stored the marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The live snapshot's id, or `None` when published in place.
    pub snapshot: Option<String>,
    /// The published tree's top directory (the live snapshot, or dest).
    pub dev: u64,
    pub ino: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
}

/// The store: what the last successful, published and verified run of a
/// walk fetched at its start, and what it published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The change marker's path (a new `change_marker` starts afresh).
    pub marker: String,
    pub sha256: String,
    pub len: u64,
    /// [`fingerprint`] of the config that run had.
    pub config: String,
    pub published: Published,
    /// When the last full walk started (seconds since the epoch).
    pub full_walk: u64,
    /// Published in place, fix-perms not yet done: no shortcut.
    #[serde(default)]
    pub perms_pending: bool,
}

/// Where the store of mirror `m` is: `PARENT/.NAME.syncgate-marker`
/// beside dest (NAME: dest's last component).
pub fn store_path(m: &Mirror) -> PathBuf {
    let name = m
        .dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    m.dest
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".{name}.syncgate-marker"))
}

/// A digest of everything in the config that decides what the published
/// tree holds: the walk's rsync argv (upstream, excludes, modes, group),
/// the permission policy, the last files and how it is published and
/// verified. A changed config walks.
pub fn fingerprint(cfg: &Config, m: &Mirror) -> String {
    let mut h = Sha256::new();
    for a in crate::owner::rsync::argv::rsync_plan(cfg, m) {
        h.update(a.as_bytes());
        h.update([0]);
    }
    h.update(format!("{:?}\0{:?}\0{:?}", m.perm_policy(), m.last, m.publish).as_bytes());
    hex(&h.finalize())
}

/// What is published now, as [`Published`] says it.
pub fn published(m: &Mirror) -> Result<Published, String> {
    let (snapshot, top) = match layout::mode(m) {
        PublishMode::Snapshot => match layout::live(m).map_err(|e| e.to_string())? {
            Live::Snapshot(id) => {
                let top = m.snapshot_root().join(&id);
                (Some(id), top)
            }
            _ => return Err("no snapshot is live".into()),
        },
        PublishMode::TwoStage => (None, m.dest.clone()),
    };
    let md = std::fs::symlink_metadata(&top).map_err(|e| format!("{}: {e}", top.display()))?;
    if !md.is_dir() {
        return Err(format!("{} is not a directory", top.display()));
    }
    Ok(Published {
        snapshot,
        dev: md.dev(),
        ino: md.ino(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec(),
    })
}

/// Whether a run may end without walking: `Ok(seconds until the next full
/// walk is due)`, or `Err(why it walks)`. Pure: the caller gathers `now`
/// (what is published, or why that could not be said) and the clock.
pub fn decide(
    stored: Option<&Stored>,
    seen: &Seen,
    marker: &str,
    config: &str,
    now: &Result<Published, String>,
    clock: u64,
    full_every: u64,
) -> Result<u64, String> {
    let (sha256, len) = match seen {
        Seen::Got { sha256, len } => (sha256, *len),
        Seen::Missing => return Err(format!("upstream has no file {marker}")),
        Seen::Unknown(why) => return Err(format!("the change marker could not be fetched: {why}")),
    };
    let Some(s) = stored else {
        return Err("no marker is stored from a verified sync".into());
    };
    if s.marker != marker || s.config != config {
        return Err("the mirror's config changed since the last verified sync".into());
    }
    if s.perms_pending {
        return Err("the last sync did not finish enforcing permissions".into());
    }
    if s.sha256 != *sha256 || s.len != len {
        return Err(format!("upstream's {marker} changed"));
    }
    let now = now
        .as_ref()
        .map_err(|e| format!("what is published cannot be checked: {e}"))?;
    if now.snapshot != s.published.snapshot {
        return Err("the live snapshot is not the one the last verified sync published".into());
    }
    if *now != s.published {
        return Err("dest changed since the last verified sync".into());
    }
    let due = s.full_walk.saturating_add(full_every);
    if clock < s.full_walk || clock >= due {
        return Err(format!(
            "a full walk is due (full_every = {})",
            human_secs(full_every)
        ));
    }
    Ok(due - clock)
}

/// Reads the store: `Ok(None)` when there is none. Refuses anything but a
/// plain file of this user, unreadable by others, of sane size.
pub fn load(m: &Mirror) -> Result<Option<Stored>, String> {
    let path = store_path(m);
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let md = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if !md.is_file() || md.uid() != me || md.mode() & 0o077 != 0 || md.len() > STORE_MAX {
        return Err(format!(
            "{} is not a private file of uid {me} (mode 0600)",
            path.display()
        ));
    }
    let mut text = String::new();
    f.take(STORE_MAX)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{} is corrupt: {e}", path.display()))
}

/// Writes the store atomically (a private temporary file renamed over it).
pub fn save(m: &Mirror, s: &Stored) -> Result<(), String> {
    let path = store_path(m);
    let tmp = path.with_extension("syncgate-marker.new");
    let _ = std::fs::remove_file(&tmp);
    let mut text = serde_json::to_string(s).expect("the store serializes");
    text.push('\n');
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Removes the store (before a walk, or after a failed fix-perms).
pub fn forget(m: &Mirror) {
    let path = store_path(m);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            say(&format!(
                "warning: cannot remove {}: {e}; remove it by hand, or a run after a failed one may skip its walk",
                path.display()
            ));
        }
    }
}

/// After fix-perms succeeded: a store the transfer left pending is
/// confirmed (the run that wrote it is now complete).
pub fn confirm(m: &Mirror) {
    if m.change_marker.is_none() {
        return;
    }
    if let Ok(Some(mut s)) = load(m) {
        if s.perms_pending {
            s.perms_pending = false;
            if let Err(e) = save(m, &s) {
                say(&format!("warning: {e}; the next run walks the tree"));
                forget(m);
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the change marker the probe copied into `dir`: each directory on
/// the way and the file itself opened without following a symlink.
pub fn read_fetched(dir: &Path, marker: &str) -> Seen {
    let mut at = match std::fs::File::open(dir) {
        Ok(d) => d,
        Err(e) => return Seen::Unknown(format!("{}: {e}", dir.display())),
    };
    let parts: Vec<&str> = marker.split('/').collect();
    let (file, dirs) = parts.split_last().expect("a marker has a name");
    for d in dirs {
        match nix::fcntl::openat(
            at.as_fd(),
            *d,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => at = std::fs::File::from(fd),
            Err(_) => return Seen::Missing,
        }
    }
    let Ok(fd) = nix::fcntl::openat(
        at.as_fd(),
        *file,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return Seen::Missing;
    };
    let mut f = std::fs::File::from(fd);
    if !f.metadata().is_ok_and(|md| md.is_file()) {
        return Seen::Missing;
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) => return Seen::Unknown(format!("cannot read the fetched marker: {e}")),
        }
    }
    Seen::Got {
        sha256: hex(&h.finalize()),
        len,
    }
}

impl Transfer<'_> {
    /// With a change marker: `Some(report)` when this run may end without
    /// walking (the shortcut); `None` to walk, after saying why and
    /// removing the store (so a walk that does not finish leaves none).
    /// `seen`: what the upstream probe fetched at the start of this run.
    pub fn marker_shortcut(
        &self,
        seen: Option<&Seen>,
        stage1: bool,
        full: bool,
    ) -> Option<TransferReport> {
        let m = self.mirror;
        let marker = m.change_marker.as_deref()?;
        let walk = |why: &str| {
            say(&format!("change marker: walking the whole tree: {why}"));
            forget(m);
            None
        };
        if stage1 {
            forget(m);
            return None;
        }
        if full {
            return walk("a full walk was asked for (sync --full)");
        }
        let Some(seen) = seen else {
            return walk("upstream was not probed");
        };
        if *seen == Seen::Missing {
            say(&format!(
                "warning: upstream ({}) has no file {marker} (change_marker of mirror {}): every run walks the whole tree until it has one; fix change_marker or remove it",
                m.upstream.source_arg(),
                m.name
            ));
        }
        let stored = match load(m) {
            Ok(s) => s,
            Err(e) => return walk(&format!("the stored marker is unusable: {e}")),
        };
        let config = fingerprint(self.cfg, m);
        let now = published(m);
        match decide(
            stored.as_ref(),
            seen,
            marker,
            &config,
            &now,
            crate::run::now(),
            m.full_every,
        ) {
            Err(why) => walk(&why),
            Ok(left) => {
                let message = format!(
                    "unchanged: upstream's {marker} is as at the last verified sync; nothing walked (next full walk in {})",
                    human_secs(left)
                );
                say(&message);
                let snapshot = now.ok().and_then(|p| p.snapshot).map(|live| SnapshotInfo {
                    live,
                    kept: layout::list(&m.snapshot_root()).unwrap_or_default(),
                    switched: false,
                });
                Some(TransferReport {
                    ok: true,
                    route: Route::Unchanged,
                    rsync_exit: Some(0),
                    perms_done: true,
                    shortcut: true,
                    message,
                    snapshot,
                    ..Default::default()
                })
            }
        }
    }

    /// After a walk: when it published successfully (not a stage 1), stores
    /// the marker this run fetched at its start, and what it published.
    pub fn marker_remember(&self, seen: Option<&Seen>, stage1: bool, report: &TransferReport) {
        let m = self.mirror;
        let (Some(marker), Some(Seen::Got { sha256, len })) = (m.change_marker.as_deref(), seen)
        else {
            return;
        };
        if stage1 || !report.ok || report.verify_failed {
            return;
        }
        let published = match published(m) {
            Ok(p) => p,
            Err(e) => {
                say(&format!("warning: change marker not stored: {e}"));
                return;
            }
        };
        let s = Stored {
            marker: marker.to_string(),
            sha256: sha256.clone(),
            len: *len,
            config: fingerprint(self.cfg, m),
            published,
            full_walk: self.started,
            perms_pending: !report.perms_done,
        };
        if let Err(e) = save(m, &s) {
            let parent = m.dest.parent().unwrap_or(Path::new("/"));
            say(&format!(
                "warning: the change marker cannot be kept ({e}), so every run walks the whole tree: make dest's parent the owner's (chown {}:{} {}; chmod 2750 {}), or set change_marker = \"\" in [mirror.{}]",
                m.owner,
                m.reader_group,
                parent.display(),
                parent.display(),
                m.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn got(b: &[u8]) -> Seen {
        Seen::Got {
            sha256: hex(&Sha256::digest(b)),
            len: b.len() as u64,
        }
    }

    fn published(snapshot: Option<&str>, mtime: i64) -> Published {
        Published {
            snapshot: snapshot.map(str::to_string),
            dev: 1,
            ino: 2,
            mtime,
            mtime_nsec: 0,
        }
    }

    fn stored(b: &[u8]) -> Stored {
        let Seen::Got { sha256, len } = got(b) else {
            unreachable!()
        };
        Stored {
            marker: "project/trace/master".into(),
            sha256,
            len,
            config: "cfg".into(),
            published: published(Some("20261203T000001Z"), 100),
            full_walk: 1000,
            perms_pending: false,
        }
    }

    fn run(
        s: Option<&Stored>,
        seen: &Seen,
        now: Result<Published, String>,
        clock: u64,
    ) -> Result<u64, String> {
        decide(s, seen, "project/trace/master", "cfg", &now, clock, 3600)
    }

    #[test]
    fn only_an_identical_marker_over_an_untouched_tree_skips_the_walk() {
        let s = stored(b"Tue Dec  3 02:15:30 UTC 2026\n");
        let same = got(b"Tue Dec  3 02:15:30 UTC 2026\n");
        let live = || Ok(published(Some("20261203T000001Z"), 100));
        assert_eq!(run(Some(&s), &same, live(), 1000), Ok(3600));
        assert_eq!(run(Some(&s), &same, live(), 4599), Ok(1));

        let why = |r: Result<u64, String>| r.unwrap_err();
        assert!(why(run(
            Some(&s),
            &got(b"Tue Dec  3 08:15:30 UTC 2026\n"),
            live(),
            1000
        ))
        .contains("changed"));
        // Same length, other bytes.
        assert!(why(run(
            Some(&s),
            &got(b"Tue Dec  3 02:15:31 UTC 2026\n"),
            live(),
            1000
        ))
        .contains("changed"));
        assert!(why(run(None, &same, live(), 1000)).contains("no marker is stored"));
        assert!(why(run(Some(&s), &Seen::Missing, live(), 1000))
            .contains("upstream has no file project/trace/master"));
        assert!(why(run(Some(&s), &Seen::Unknown("x".into()), live(), 1000))
            .contains("could not be fetched"));
        // Due, or a clock set back: walk.
        assert!(why(run(Some(&s), &same, live(), 4600)).contains("full walk is due"));
        assert!(why(run(Some(&s), &same, live(), 999)).contains("full walk is due"));
        // Another snapshot live (a rollback), dest touched, or unknown.
        assert!(why(run(
            Some(&s),
            &same,
            Ok(published(Some("20261203T000002Z"), 100)),
            1000
        ))
        .contains("live snapshot"));
        assert!(why(run(
            Some(&s),
            &same,
            Ok(published(Some("20261203T000001Z"), 101)),
            1000
        ))
        .contains("dest changed"));
        let mut other_inode = published(Some("20261203T000001Z"), 100);
        other_inode.ino = 3;
        assert!(why(run(Some(&s), &same, Ok(other_inode), 1000)).contains("dest changed"));
        assert!(why(run(Some(&s), &same, Err("gone".into()), 1000)).contains("cannot be checked"));
        // Another config or marker path, or fix-perms still to do.
        let mut c = s.clone();
        c.config = "other".into();
        assert!(why(run(Some(&c), &same, live(), 1000)).contains("config changed"));
        let mut c = s.clone();
        c.marker = "lastupdate".into();
        assert!(why(run(Some(&c), &same, live(), 1000)).contains("config changed"));
        let mut c = s.clone();
        c.perms_pending = true;
        assert!(why(run(Some(&c), &same, live(), 1000)).contains("permissions"));
    }

    fn config(dest: &Path, publish: &str) -> Config {
        let text = format!(
            "state_dir = \"/var/lib/syncgate\"\nprivilege = \"direct\"\n\n[mirror.m]\nupstream = \"rsync://example.org/m/\"\ndest = \"{}\"\nowner = \"root\"\nreader_group = \"root\"\npublish = \"{publish}\"\nchange_marker = \"lastupdate\"\n",
            dest.display()
        );
        Config::parse(Path::new("/etc/syncgate/syncgate.toml"), &text).unwrap()
    }

    #[test]
    fn the_store_is_private_beside_dest_and_refused_when_it_is_not() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("iso");
        std::fs::create_dir(&dest).unwrap();
        let cfg = config(&dest, "two-stage");
        let m = cfg.mirror("m").unwrap();
        assert_eq!(store_path(m), t.path().join(".iso.syncgate-marker"));
        assert_eq!(load(m), Ok(None));
        let mut s = stored(b"x");
        s.published = super::published(m).unwrap();
        save(m, &s).unwrap();
        let md = std::fs::metadata(store_path(m)).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        assert_eq!(load(m), Ok(Some(s.clone())));
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2);

        // Readable by others, a symlink, or garbage: not trusted.
        std::fs::set_permissions(
            store_path(m),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        assert!(load(m).unwrap_err().contains("private"));
        std::fs::remove_file(store_path(m)).unwrap();
        std::fs::write(
            t.path().join("elsewhere"),
            serde_json::to_string(&s).unwrap(),
        )
        .unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), store_path(m)).unwrap();
        assert!(load(m).is_err());
        // Saving replaces the symlink, never writes through it.
        save(m, &s).unwrap();
        assert!(!std::fs::symlink_metadata(store_path(m))
            .unwrap()
            .file_type()
            .is_symlink());
        std::fs::write(store_path(m), b"{").unwrap();
        assert!(load(m).unwrap_err().contains("corrupt"));

        // Pending until fix-perms confirms it; forgotten leaves nothing.
        s.perms_pending = true;
        save(m, &s).unwrap();
        confirm(m);
        assert!(!load(m).unwrap().unwrap().perms_pending);
        forget(m);
        assert_eq!(load(m), Ok(None));
        forget(m);
    }

    #[test]
    fn the_fetched_marker_is_read_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        assert_eq!(read_fetched(d, "project/trace/master"), Seen::Missing);
        std::fs::create_dir_all(d.join("project/trace")).unwrap();
        std::fs::write(d.join("project/trace/master"), b"serial 1\n").unwrap();
        assert_eq!(read_fetched(d, "project/trace/master"), got(b"serial 1\n"));
        std::fs::remove_file(d.join("project/trace/master")).unwrap();
        std::fs::write(d.join("real"), b"serial 1\n").unwrap();
        std::os::unix::fs::symlink("../../real", d.join("project/trace/master")).unwrap();
        assert_eq!(read_fetched(d, "project/trace/master"), Seen::Missing);
        std::fs::create_dir(d.join("other")).unwrap();
        std::fs::write(d.join("other/lastupdate"), b"1\n").unwrap();
        std::os::unix::fs::symlink("other", d.join("via")).unwrap();
        assert_eq!(read_fetched(d, "via/lastupdate"), Seen::Missing);
        assert_eq!(read_fetched(d, "other/lastupdate"), got(b"1\n"));
        assert_eq!(read_fetched(d, "other"), Seen::Missing);
    }

    #[test]
    fn a_config_that_shapes_the_tree_changes_the_fingerprint() {
        let dest = Path::new("/srv/iso");
        let a = config(dest, "two-stage");
        let b = config(dest, "snapshot");
        let fa = fingerprint(&a, a.mirror("m").unwrap());
        assert_eq!(fa, fingerprint(&a, a.mirror("m").unwrap()));
        assert_ne!(fa, fingerprint(&b, b.mirror("m").unwrap()));
    }
}
