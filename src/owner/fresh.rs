//! The first-sync route: into an empty dest, one rsync pass into a private
//! staging copy, fix-perms on that copy, then [`publish::publish`] moves it
//! in by renames.

use std::fs::File;

use crate::error::Result;
use crate::owner::dest::{mtime_of, FRESH_DIR, HOLD_DIR, TEMP_DIR};
use crate::owner::report::{transferred, Route, TransferReport};
use crate::owner::rsync::argv;
use crate::owner::transfer::Transfer;
use crate::owner::{fixperms, publish};

impl Transfer<'_> {
    /// A first sync into an empty dest: one rsync pass into a private
    /// staging copy, fix-perms on that copy, then [`publish::publish`].
    /// With `stage1`, the copy is made and fixed but not published (the
    /// next full transfer resumes it and publishes it).
    pub fn fresh(&self, stage1: bool) -> Result<TransferReport> {
        let m = self.mirror;
        let mut report = TransferReport {
            route: Route::Fresh,
            ..Default::default()
        };
        let tmp = m.dest.join(TEMP_DIR);
        let staging = tmp.join(FRESH_DIR);
        crate::sys::progress::say(&format!(
            "first sync: dest is empty; copying everything into {} (private), published when complete",
            staging.display()
        ));
        let end = self.run_rsync(&argv::rsync_fresh(self.cfg, m))?;
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
        let policy = m.perm_policy();
        let fixed = match fixperms::fix_tree(&staging, &policy) {
            Ok(r) => r,
            Err(e) => {
                report.message = format!(
                    "permissions could not be enforced on the new copy, nothing published: {e}"
                );
                return Ok(report);
            }
        };
        if stage1 {
            crate::sys::progress::say(&format!(
                "stage 1: the first copy is complete in {} (private; permissions: {} entries checked, {} repaired); stage 2 publishes it",
                staging.display(),
                fixed.entries,
                fixed.changed
            ));
            report.ok = true;
            report.perms_done = true;
            report.message = "stage 1: first copy complete, not yet published".into();
            return Ok(report);
        }
        // rsync gave the copy's root upstream's mtime; dest gets it after the
        // renames, as a two-stage sync would have left it.
        let root_mtime = File::open(&staging).ok().and_then(|d| mtime_of(&d));
        let done = match publish::publish(&staging, &tmp.join(HOLD_DIR), &m.dest, &m.last) {
            Ok(d) => d,
            Err(e) => {
                report.message =
                    format!("publishing the first sync failed: {e}; the next sync completes it");
                return Ok(report);
            }
        };
        if let Err(e) = fixperms::fix_root(&m.dest, &policy) {
            report.message = format!("permissions could not be enforced on dest: {e}");
            return Ok(report);
        }
        self.lock.set_mtime(root_mtime);
        crate::sys::progress::say(&format!(
            "published {} top-level entries, then {} last files (checksums, signatures, markers); permissions: {} entries checked, {} repaired, {} removed",
            done.entries, done.last, fixed.entries, fixed.changed, fixed.removed
        ));
        report.ok = true;
        report.perms_done = true;
        report.message = format!("first sync {}", transferred(report.rsync_exit));
        self.write_trace(&m.dest, &report);
        Ok(report)
    }
}
