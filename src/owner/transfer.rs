//! One `transfer`: what every rsync of it shares ([`Transfer`]), and the
//! choice between its routes: a first sync into an empty dest
//! (src/owner/fresh.rs) or the plan and the two stages (src/owner/staged.rs).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::{Config, Mirror, PublishMode};
use crate::error::{IoContext, Result};
use crate::owner::dest::{self, DestLock, FRESH_DIR};
use crate::owner::publish;
use crate::owner::report::TransferReport;
use crate::owner::rsync::{run_rsync, RsyncEnd};
use crate::owner::snapshot::layout::{self, BUILD_DIR};
use crate::run::Stage;

/// A transfer of one mirror, dest locked: everything its rsync runs share.
pub struct Transfer<'a> {
    pub cfg: &'a Config,
    pub mirror: &'a Mirror,
    /// The owner's home directory (rsync's `HOME`, for ssh's files).
    home: String,
    pub lock: DestLock,
    /// When it began (seconds since the epoch), for the trace file and
    /// the change marker's last full walk.
    pub(super) started: u64,
    /// Set when the gate is gone: every rsync is stopped.
    pub(super) cut: Arc<AtomicBool>,
}

impl<'a> Transfer<'a> {
    /// Locks dest (waiting for an earlier transfer to let go of it).
    pub fn begin(cfg: &'a Config, mirror: &'a Mirror, cut: Arc<AtomicBool>) -> Result<Self> {
        let lock = DestLock::acquire(mirror)?;
        Ok(Transfer {
            cfg,
            mirror,
            home: home_of(nix::unistd::getuid().as_raw()),
            lock,
            started: crate::run::now(),
            cut,
        })
    }

    /// Takes the route that fits dest, then clears up after it: rsync's
    /// temp dir, and after a failure the delayed updates it left.
    ///
    /// `stage`: [`Stage::Stage1`] does everything but publishing (a push's
    /// stage 1); anything else does everything. `full`: walk the trees
    /// even when the change marker says upstream has not changed.
    pub fn run(&self, stage: Stage, full: bool) -> Result<TransferReport> {
        let stage1 = stage == Stage::Stage1;
        let seen = match self.wait_while_upstream_is_busy()? {
            Ok(seen) => seen,
            Err(report) => return Ok(report),
        };
        if let Some(report) = self.marker_shortcut(seen.as_ref(), stage1, full) {
            return Ok(report);
        }
        let result = self.walk(stage1);
        if let Ok(report) = &result {
            self.marker_remember(seen.as_ref(), stage1, report);
        }
        result
    }

    /// The walk: the route that fits dest.
    fn walk(&self, stage1: bool) -> Result<TransferReport> {
        let m = self.mirror;
        match layout::mode(m) {
            PublishMode::Snapshot => {
                dest::prepare_temp_dir(&m.snapshot_root(), Some(BUILD_DIR))?;
                return self.snapshot(stage1);
            }
            PublishMode::TwoStage if m.publish.mode == PublishMode::Snapshot => {
                crate::sys::progress::say(&layout::fallback_warning(m));
            }
            PublishMode::TwoStage => {}
        }
        let fresh = publish::handles(&m.last)
            && publish::is_empty(&m.dest)
                .context(|| format!("cannot read dest {}", m.dest.display()))?;
        // Creating and removing the temp dir changes dest's mtime; put it back.
        let before = self.lock.mtime();
        dest::prepare_temp_dir(&m.dest, fresh.then_some(FRESH_DIR))?;
        self.lock.set_mtime(before);
        let result = if fresh {
            self.fresh(stage1)
        } else {
            self.staged(stage1)
        };
        if !matches!(&result, Ok(r) if r.ok) {
            let n = dest::remove_delayed_updates(&m.dest);
            if n > 0 {
                crate::sys::progress::say(&format!(
                    "removed {n} unpublished delayed-update director{} (.~tmp~)",
                    if n == 1 { "y" } else { "ies" }
                ));
            }
        }
        // The temp dir (mode 0700) is not part of the published tree: readers
        // must be able to list every directory. rsync empties it on every exit
        // it controls; the dest lock removes it with the lock file when it
        // lets go (src/owner/dest.rs); what an aborted run leaves is removed
        // at the next run.
        result
    }

    /// Writes the trace file into the tree at `root` after a publish (when
    /// the mirror has one); a failure is said, not fatal: the release is
    /// published (or about to be) whatever its trace says.
    pub fn write_trace(&self, root: &std::path::Path, report: &TransferReport) {
        let p = crate::owner::trace::Publish {
            started: self.started,
            bytes_received: report.stage1.bytes_received
                + report.stage2.as_ref().map_or(0, |s| s.bytes_received),
        };
        if let Err(e) = crate::owner::trace::write(self.mirror, root, &p) {
            crate::sys::progress::say(&format!("warning: trace file: {e}"));
        }
    }

    /// Runs one rsync of this transfer (see [`run_rsync`]).
    pub fn run_rsync(&self, argv: &[String]) -> Result<RsyncEnd> {
        run_rsync(argv, &self.home, &self.lock, &self.cut)
    }
}

fn home_of(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.dir.display().to_string())
        .unwrap_or_else(|| "/".into())
}
