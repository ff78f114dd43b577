//! The owner-side commands `transfer` and `fix-perms`. They run as the
//! image owner (through sudo in production), take only a mirror name, and
//! read everything else from the config, which must then be root-owned.
//!
//! Both hold an exclusive lock on the dest directory itself. `transfer`
//! passes that lock on to rsync, so it stays held until the last rsync
//! process is gone: a new transfer never overlaps a dying one.
//!
//! Each prints exactly one JSON line on stdout (its report) and human
//! progress on stderr; the gate reads both through pipes.

pub mod fixperms;
pub mod plan;
pub mod publish;
pub mod rsync;

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Mirror, Privilege};
use crate::error::{Error, IoContext, Result};
use crate::owner::rsync::argv;
use crate::owner::rsync::Stats;
use crate::sys::child::{self, Stream, Watcher};

/// How long an owner-side command waits for a previous one to let go of dest.
const DEST_LOCK_WAIT: Duration = Duration::from_secs(60);
/// Time rsync gets between SIGTERM and SIGKILL.
const RSYNC_GRACE: Duration = Duration::from_secs(5);

/// Which way a transfer went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Stage 1, then (when needed) stage 2, into a dest that holds a mirror.
    #[default]
    Staged,
    /// A first sync: one pass into a staging copy, published by renames.
    Fresh,
    /// The plan found nothing to publish or delete.
    Unchanged,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransferReport {
    pub ok: bool,
    pub message: String,
    /// rsync's exit code of the stage that decided the result.
    pub rsync_exit: Option<i32>,
    /// The plan's dry run (none on a first sync).
    #[serde(default)]
    pub plan: Option<Stats>,
    /// Stage 1, or a first sync's single pass.
    pub stage1: Stats,
    pub stage2: Option<Stats>,
    pub stage2_full: bool,
    #[serde(default)]
    pub route: Route,
    /// Everything this transfer published already went through fix-perms
    /// (a first sync), or nothing changed (the plan compared every entry's
    /// mode and group); the gate then skips the fix-perms step.
    #[serde(default)]
    pub perms_done: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FixPermsReport {
    pub ok: bool,
    pub message: String,
    pub entries: u64,
    pub changed: u64,
    pub removed: u64,
    pub notes: Vec<String>,
}

/// Why someone other than root could change what `path` holds, if anyone
/// could. The file and every directory above it, both along the path as
/// given and along the path its symlinks resolve to, must be owned by root
/// and not writable by group or others; a write-protected parent is not
/// enough when a directory further up can be renamed away. A root-owned
/// sticky directory (`/tmp`) is fine above the file: nobody else may rename
/// or remove root's entries in it. Returns the offending path and why.
pub fn untrusted_path(path: &Path) -> Option<(std::path::PathBuf, String)> {
    let real = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) => return Some((path.to_path_buf(), format!("cannot resolve it: {e}"))),
    };
    for (top, given) in [(path, true), (real.as_path(), false)] {
        for (i, p) in top.ancestors().enumerate() {
            if p.as_os_str().is_empty() {
                continue;
            }
            let md = match std::fs::symlink_metadata(p) {
                Ok(md) => md,
                Err(e) => return Some((p.to_path_buf(), format!("cannot stat it: {e}"))),
            };
            let mode = md.mode() & 0o7777;
            let ft = md.file_type();
            let bad = if md.uid() != 0 {
                Some(format!("it is owned by uid {}, not root", md.uid()))
            } else if ft.is_symlink() {
                // A symlink's own mode means nothing; its directory is checked next.
                None
            } else if i == 0 && !ft.is_file() {
                Some("it is not a regular file".to_string())
            } else if mode & 0o022 != 0 && !(i > 0 && ft.is_dir() && mode & 0o1000 != 0) {
                Some(format!("it is writable by group or others (mode {mode:o})"))
            } else {
                None
            };
            if let Some(why) = bad {
                let what = if i == 0 && given {
                    "the config file".to_string()
                } else if i == 0 {
                    format!("the config file {} resolves to", path.display())
                } else {
                    format!("a directory above the config file {}", path.display())
                };
                return Some((p.to_path_buf(), format!("{what}: {why}")));
            }
        }
    }
    None
}

/// Refuses to act on a config the caller could have written.
fn check_trust(cfg: &Config, mirror: &Mirror) -> Result<()> {
    if cfg.privilege != Privilege::Sudo {
        return Ok(());
    }
    let uid = nix::unistd::getuid().as_raw();
    if uid != mirror.owner_uid {
        return Err(Error::Usage(format!(
            "this command runs as the owner of mirror {} ({}, uid {}), not uid {uid}",
            mirror.name, mirror.owner, mirror.owner_uid
        )));
    }
    if let Some((p, why)) = untrusted_path(&cfg.path) {
        return Err(Error::Config(format!(
            "{} must be owned by root and not writable by group or others, and so must every directory above it ({why}); refusing to run as {}",
            p.display(),
            mirror.owner
        )));
    }
    Ok(())
}

/// Opens dest (creating it if missing) without following a symlink, and
/// locks it exclusively.
fn lock_dest(mirror: &Mirror) -> Result<File> {
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
            Ok(()) => return Ok(dir),
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

/// The mtime of the open directory `dir`.
fn mtime_of(dir: &File) -> Option<nix::sys::time::TimeSpec> {
    nix::sys::stat::fstat(dir)
        .ok()
        .map(|st| nix::sys::time::TimeSpec::new(st.st_mtime, st.st_mtime_nsec))
}

/// Sets the mtime of the open directory `dir` (its atime is left alone).
/// rsync compares directory mtimes too: dest's own must stay what rsync
/// set (upstream's), or the next plan itemizes "./" and a no-change sync
/// takes the two-stage path.
fn set_mtime(dir: &File, mtime: Option<nix::sys::time::TimeSpec>) {
    if let Some(t) = mtime {
        let _ = nix::sys::stat::futimens(dir, &nix::sys::time::TimeSpec::UTIME_OMIT, &t);
    }
}

/// Empties (or creates) rsync's temporary directory: leftovers of an
/// aborted run go away here, except `keep` (a first sync's staging copy,
/// which the next first sync resumes).
fn prepare_temp_dir(dest: &Path, keep: Option<&str>) -> Result<()> {
    let tmp = dest.join(argv::TEMP_DIR);
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
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp)
                .context(|| format!("cannot create {}", tmp.display()))?;
        }
        Err(_) => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp)
                .context(|| format!("cannot create {}", tmp.display()))?;
        }
    }
    Ok(())
}

/// Removes rsync's `--delay-updates` holding directories (`.~tmp~`) below
/// dest, without following symlinks. After a stage 2 that did not finish
/// they hold checksum files and markers that were never published, some
/// of them partial (rsync keeps an interrupted file there), under published
/// directories. Returns how many were removed; what cannot be removed is
/// left to fix-perms after the next successful run.
fn remove_delayed_updates(dest: &Path) -> u64 {
    let mut removed = 0;
    let mut dirs = vec![(dest.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() || (depth == 0 && e.file_name() == argv::TEMP_DIR) {
                continue;
            }
            if e.file_name() == crate::owner::fixperms::RSYNC_PARTIAL_DIR {
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

/// Waits up to `limit` until process group `pgid` is empty: when the main
/// rsync has exited, its own children may still be finishing (moving an
/// interrupted file into `.~tmp~`, say). Reads /proc only; signals nothing.
fn wait_group_empty(pgid: u32, limit: Duration) {
    let member = |stat: &str| -> bool {
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp ...
        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
    };
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let busy = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name().to_string_lossy().parse::<u32>().is_ok()
                        && std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| member(&s))
                })
            })
            .unwrap_or(false);
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Watches stdin when it is a pipe from the gate: EOF means the gate died.
fn watch_lifeline() -> Arc<AtomicBool> {
    let cut = Arc::new(AtomicBool::new(false));
    let is_pipe = nix::sys::stat::fstat(std::io::stdin())
        .map(|st| {
            nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
                == nix::sys::stat::SFlag::S_IFIFO
        })
        .unwrap_or(false);
    if is_pipe {
        let flag = cut.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            flag.store(true, Ordering::SeqCst);
        });
    }
    cut
}

struct RsyncWatch<'a> {
    stats: Stats,
    errors: Vec<String>,
    cut: &'a AtomicBool,
}

impl Watcher for RsyncWatch<'_> {
    fn line(&mut self, stream: Stream, line: &str) {
        self.stats.feed(line);
        if stream == Stream::Stderr && !line.trim().is_empty() {
            crate::sys::progress::say(line);
            if self.errors.len() < 20 {
                self.errors.push(line.to_string());
            }
        }
    }
    fn abort(&mut self) -> bool {
        self.cut.load(Ordering::SeqCst) || crate::sys::signals::terminate_requested()
    }
}

/// How one rsync run ended.
struct RsyncEnd {
    /// Its exit code, or 128 + the signal that killed it.
    code: i32,
    /// The signal that killed it, if one did.
    signal: Option<i32>,
    stats: Stats,
    /// Its stderr lines (the first 20).
    errors: Vec<String>,
    /// We stopped it (gate gone, signal, timeout).
    stopped: bool,
}

impl RsyncEnd {
    /// "rsync exited 11 (error in file I/O): rsync: [receiver] write failed
    /// on ...: No space left on device (28)", or "rsync was killed by signal
    /// 9 (SIGKILL)": rsync's own code or its death, then the line of its
    /// stderr most likely to name the cause.
    fn failure(&self) -> String {
        let what = match self.signal {
            Some(sig) => format!(
                "rsync was killed by signal {sig} ({})",
                nix::sys::signal::Signal::try_from(sig)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal")
            ),
            None => format!(
                "rsync exited {} ({})",
                self.code,
                crate::owner::rsync::describe(self.code)
            ),
        };
        match first_cause(&self.errors) {
            Some(line) => format!("{what}: {line}"),
            None => what,
        }
    }
}

/// The stderr line that names the cause of a failure: rsync reports the
/// cause first ("write failed on ...: No space left on device") and then
/// its consequences (a broken pipe between its own processes, the generic
/// "rsync error: ... (code N)" summary), so the first line that is neither
/// the summary nor a notice wins; the summary is the fallback.
fn first_cause(errors: &[String]) -> Option<&str> {
    let generic = |l: &str| l.starts_with("rsync error:") || l.starts_with("Deletions stopped");
    errors
        .iter()
        .find(|l| !generic(l))
        .or_else(|| errors.first())
        .map(|l| l.trim())
}

fn run_rsync(argv: &[String], home: &str, lock: &File, cut: &AtomicBool) -> Result<RsyncEnd> {
    // The dest lock goes to rsync and every process it forks.
    nix::fcntl::fcntl(
        lock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| Error::Internal(format!("fcntl: {e}")))?;
    let _ = lock.as_raw_fd();
    let mut child = child::spawn(child::Spec {
        argv,
        env: vec![("HOME".into(), home.into())],
        own_group: true,
        die_with_parent: true,
        lifeline: false,
    })
    .context(|| format!("cannot run {}", argv[0]))?;
    let mut w = RsyncWatch {
        stats: Stats::default(),
        errors: Vec::new(),
        cut,
    };
    let fin = child
        .wait(None, RSYNC_GRACE, &mut w)
        .context(|| "waiting for rsync".into())?;
    if !fin.status.success() {
        wait_group_empty(child.pid(), RSYNC_GRACE);
    }
    nix::fcntl::fcntl(
        lock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| Error::Internal(format!("fcntl: {e}")))?;
    Ok(RsyncEnd {
        code: child::code_of(&fin.status),
        signal: std::os::unix::process::ExitStatusExt::signal(&fin.status),
        stats: w.stats,
        errors: w.errors,
        stopped: fin.ending != child::Ending::Exited,
    })
}

fn home_of(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir.display().to_string())
        .unwrap_or_else(|| "/".into())
}

/// `syncgate transfer MIRROR`: both rsync stages.
pub fn transfer(cfg: &Config, name: &str) -> Result<TransferReport> {
    let m = cfg.mirror(name)?;
    check_trust(cfg, m)?;
    let cut = watch_lifeline();
    crate::sys::signals::install();
    let lock = lock_dest(m)?;
    let fresh = publish::handles(&m.last)
        && publish::is_empty(&m.dest)
            .context(|| format!("cannot read dest {}", m.dest.display()))?;
    // Creating and removing the temp dir changes dest's mtime; put it back.
    let before = mtime_of(&lock);
    prepare_temp_dir(&m.dest, fresh.then_some(argv::FRESH_DIR))?;
    set_mtime(&lock, before);
    let home = home_of(nix::unistd::getuid().as_raw());
    let result = if fresh {
        transfer_fresh(cfg, m, &home, &lock, &cut)
    } else {
        transfer_locked(cfg, m, &home, &lock, &cut)
    };
    if !matches!(&result, Ok(r) if r.ok) {
        let n = remove_delayed_updates(&m.dest);
        if n > 0 {
            crate::sys::progress::say(&format!(
                "removed {n} unpublished delayed-update director{} (.~tmp~)",
                if n == 1 { "y" } else { "ies" }
            ));
        }
    }
    // The temp dir (mode 0700) is not part of the published tree: readers
    // must be able to list every directory. rsync empties it on every exit
    // it controls; what an aborted run leaves is removed at the next run.
    let before = mtime_of(&lock);
    if std::fs::remove_dir(m.dest.join(argv::TEMP_DIR)).is_ok() {
        set_mtime(&lock, before);
    }
    result
}

fn policy_of(m: &Mirror) -> crate::owner::fixperms::PermPolicy {
    crate::owner::fixperms::PermPolicy {
        uid: m.owner_uid,
        gid: m.reader_gid,
        file_mode: m.file_mode,
        dir_mode: m.dir_mode,
    }
}

/// "vanished" or not: rsync's 24 is a success with a remark.
fn transferred(code: Option<i32>) -> String {
    if code == Some(24) {
        "transferred (some upstream files vanished during the transfer)".into()
    } else {
        "transferred".into()
    }
}

/// A first sync into an empty dest: one rsync pass into a private staging
/// copy, fix-perms on that copy, then [`publish::publish`].
fn transfer_fresh(
    cfg: &Config,
    m: &Mirror,
    home: &str,
    lock: &File,
    cut: &AtomicBool,
) -> Result<TransferReport> {
    let mut report = TransferReport {
        route: Route::Fresh,
        ..Default::default()
    };
    let tmp = m.dest.join(argv::TEMP_DIR);
    let staging = tmp.join(argv::FRESH_DIR);
    crate::sys::progress::say(&format!(
        "first sync: dest is empty; copying everything into {} (private), published when complete",
        staging.display()
    ));
    let end = run_rsync(&argv::rsync_fresh(cfg, m), home, lock, cut)?;
    report.stage1 = end.stats.clone();
    report.rsync_exit = Some(end.code);
    if end.stopped {
        report.message = "first sync stopped (sync aborted or timed out); nothing published, the copy so far is resumed by the next sync".into();
        return Ok(report);
    }
    if end.signal.is_some() || !matches!(end.code, 0 | 24) {
        report.message = format!(
            "first sync failed: {}; nothing published, the copy so far is resumed by the next sync",
            end.failure()
        );
        return Ok(report);
    }
    let policy = policy_of(m);
    let fixed = match crate::owner::fixperms::fix_tree(&staging, &policy) {
        Ok(r) => r,
        Err(e) => {
            report.message = format!(
                "permissions could not be enforced on the new copy, nothing published: {e}"
            );
            return Ok(report);
        }
    };
    // rsync gave the copy's root upstream's mtime; dest gets it after the
    // renames, as a two-stage sync would have left it.
    let root_mtime = File::open(&staging).ok().and_then(|d| mtime_of(&d));
    let done = match publish::publish(&staging, &tmp.join(argv::HOLD_DIR), &m.dest, &m.last) {
        Ok(d) => d,
        Err(e) => {
            report.message =
                format!("publishing the first sync failed: {e}; the next sync completes it");
            return Ok(report);
        }
    };
    if let Err(e) = crate::owner::fixperms::fix_root(&m.dest, &policy) {
        report.message = format!("permissions could not be enforced on dest: {e}");
        return Ok(report);
    }
    set_mtime(lock, root_mtime);
    crate::sys::progress::say(&format!(
        "published {} top-level entries, then {} last files (checksums, signatures, markers); permissions: {} entries checked, {} repaired, {} removed",
        done.entries, done.last, fixed.entries, fixed.changed, fixed.removed
    ));
    report.ok = true;
    report.perms_done = true;
    report.message = format!("first sync {}", transferred(report.rsync_exit));
    Ok(report)
}

/// What the plan found.
enum Plan {
    /// Nothing to publish or delete.
    Unchanged,
    /// Something (said on stderr); the dry run's stats.
    Changed(Stats),
    /// The dry run itself did not finish or failed.
    Failed(RsyncEnd),
}

/// The plan: one dry run, with dest counted meanwhile.
fn run_plan(cfg: &Config, m: &Mirror, home: &str, lock: &File, cut: &AtomicBool) -> Result<Plan> {
    let dest = m.dest.clone();
    let counter = std::thread::spawn(move || crate::owner::plan::count_tree(&dest));
    let end = run_rsync(&argv::rsync_plan(cfg, m), home, lock, cut)?;
    let counted = counter.join().unwrap_or(None);
    if end.stopped || end.signal.is_some() || !matches!(end.code, 0 | 24) {
        return Ok(Plan::Failed(end));
    }
    match crate::owner::plan::change(&end.stats, end.code, end.errors.len(), counted) {
        None => Ok(Plan::Unchanged),
        Some(why) => {
            crate::sys::progress::say(&format!("changed: {why}"));
            Ok(Plan::Changed(end.stats))
        }
    }
}

fn transfer_locked(
    cfg: &Config,
    m: &Mirror,
    home: &str,
    lock: &File,
    cut: &AtomicBool,
) -> Result<TransferReport> {
    let mut report = TransferReport::default();

    match run_plan(cfg, m, home, lock, cut)? {
        Plan::Failed(end) if end.stopped => {
            report.rsync_exit = Some(end.code);
            report.message =
                "comparing with upstream stopped (sync aborted or timed out); nothing changed"
                    .into();
            return Ok(report);
        }
        Plan::Failed(end) => {
            report.rsync_exit = Some(end.code);
            report.plan = Some(end.stats.clone());
            report.message = format!(
                "comparing with upstream failed: {}; nothing changed",
                end.failure()
            );
            return Ok(report);
        }
        Plan::Unchanged => {
            crate::sys::progress::say(
                "unchanged: the mirror matches upstream; nothing to publish or delete",
            );
            report.route = Route::Unchanged;
            report.rsync_exit = Some(0);
            report.ok = true;
            report.perms_done = true;
            report.message = "unchanged".into();
            return Ok(report);
        }
        Plan::Changed(stats) => report.plan = Some(stats),
    }

    let a1 = argv::rsync_stage1(cfg, m);
    crate::sys::progress::say(&format!(
        "stage 1: all but {} (no deletions)",
        m.last.join(" ")
    ));
    let end = run_rsync(&a1, home, lock, cut)?;
    report.stage1 = end.stats.clone();
    report.rsync_exit = Some(end.code);
    if end.stopped {
        report.message = "stage 1 stopped (sync aborted or timed out); nothing published".into();
        return Ok(report);
    }
    if end.signal.is_some() || !matches!(end.code, 0 | 24 | 25) {
        report.message = format!(
            "stage 1 failed: {}; checksum files and markers were not published",
            end.failure()
        );
        return Ok(report);
    }
    let pending = report.stage1.deletes_skipped;
    if pending > m.max_delete {
        report.rsync_exit = Some(25);
        report.message = format!(
            "upstream would delete {pending} files, more than max_delete = {}; nothing was deleted and no checksum file or marker was published (raise max_delete if this is intended)",
            m.max_delete
        );
        return Ok(report);
    }

    // Stage 2 runs in full whenever anything among the last files changed
    // or anything is to be deleted: files that changed upstream after stage
    // 1 then land together with the checksum files that name them. When
    // stage 1 itself brought new files, new checksums almost always follow,
    // so the probe is skipped and stage 2 runs in full (always safe).
    let stage1_changed = report.stage1.files_transferred + report.stage1.files_created > 0;
    let full = if pending > 0 || stage1_changed {
        true
    } else {
        let probe = run_rsync(&argv::rsync_probe(cfg, m), home, lock, cut)?;
        if probe.stopped {
            report.message =
                "stopped between the stages (sync aborted or timed out); nothing published".into();
            return Ok(report);
        }
        if probe.signal.is_some() || !matches!(probe.code, 0 | 24) {
            report.rsync_exit = Some(probe.code);
            report.message = format!(
                "checking the last files failed: {}; checksum files and markers were not published",
                probe.failure()
            );
            return Ok(report);
        }
        probe.stats.itemized > 0
    };
    if !full {
        crate::sys::progress::say(
            "stage 2: no checksum file or marker changed upstream; nothing to publish",
        );
        report.ok = true;
        report.message = transferred(report.rsync_exit);
        return Ok(report);
    }
    let a2 = argv::rsync_stage2(cfg, m);
    crate::sys::progress::say(&format!(
        "stage 2: everything, with delayed updates{}",
        if pending > 0 {
            format!(" and {pending} deletions")
        } else {
            String::new()
        }
    ));
    let end = run_rsync(&a2, home, lock, cut)?;
    let code = end.code;
    report.stage2 = Some(end.stats.clone());
    report.stage2_full = full;
    report.rsync_exit = Some(code);
    if end.stopped {
        report.message = "stage 2 stopped (sync aborted or timed out)".into();
        return Ok(report);
    }
    if end.signal.is_some() || !matches!(code, 0 | 24) {
        report.message = format!("stage 2 failed: {}", end.failure());
        return Ok(report);
    }
    report.ok = true;
    report.message = transferred(Some(code));
    Ok(report)
}

/// `syncgate fix-perms MIRROR`: verify and repair owner, group and modes.
pub fn fix_perms(cfg: &Config, name: &str) -> Result<FixPermsReport> {
    let m = cfg.mirror(name)?;
    check_trust(cfg, m)?;
    let _lock = lock_dest(m)?;
    Ok(
        match crate::owner::fixperms::fix_tree(&m.dest, &policy_of(m)) {
            Ok(r) => FixPermsReport {
                ok: true,
                message: format!(
                    "{} entries checked, {} repaired, {} removed",
                    r.entries, r.changed, r.removed
                ),
                entries: r.entries,
                changed: r.changed,
                removed: r.removed,
                notes: r.notes,
            },
            Err(e) => FixPermsReport {
                ok: false,
                message: e.to_string(),
                ..Default::default()
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_failure_names_its_first_cause_not_its_consequences() {
        let full = lines(&[
            "rsync: [receiver] write failed on \"/srv/m/big.iso\": No space left on device (28)",
            "rsync error: error in file IO (code 11) at receiver.c(657) [receiver=3.5.0]",
            "rsync: [sender] write error: Broken pipe (32)",
        ]);
        assert_eq!(
            first_cause(&full),
            Some("rsync: [receiver] write failed on \"/srv/m/big.iso\": No space left on device (28)")
        );
        let only_summary = lines(&["rsync error: timeout in data send/receive (code 30)"]);
        assert_eq!(first_cause(&only_summary), Some(only_summary[0].as_str()));
        assert_eq!(first_cause(&[]), None);
    }

    #[test]
    fn a_killed_rsync_is_named_as_such() {
        let end = RsyncEnd {
            code: 137,
            signal: Some(9),
            stats: Stats::default(),
            errors: vec![],
            stopped: false,
        };
        assert_eq!(end.failure(), "rsync was killed by signal 9 (SIGKILL)");
        let end = RsyncEnd {
            code: 10,
            signal: None,
            errors: lines(&[
                "rsync: failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)",
                "rsync error: error in socket IO (code 10) at clientserver.c(139) [Receiver=3.5.0]",
            ]),
            ..end
        };
        assert_eq!(
            end.failure(),
            "rsync exited 10 (error in socket I/O): rsync: failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)"
        );
    }
}
