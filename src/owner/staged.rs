//! The two-stage route, into a dest that already holds a mirror:
//!
//! 1. the plan (src/owner/plan.rs): one dry run; when nothing is to be
//!    published or deleted, the transfer ends here ([`Route::Unchanged`]);
//! 2. stage 1: everything but the last files, deleting nothing;
//! 3. the probe, when stage 1 neither brought nor would delete anything:
//!    did any last file change upstream?
//! 4. stage 2: everything, with delayed updates and deletes, so the
//!    checksum files and markers land together with the files they name.

use crate::error::Result;
use crate::owner::plan;
use crate::owner::report::{transferred, Route, TransferReport};
use crate::owner::rsync::{argv, RsyncEnd, Stats};
use crate::owner::transfer::Transfer;

/// What the plan found.
enum Plan {
    /// Nothing to publish or delete.
    Unchanged,
    /// Something (said on stderr); the dry run's stats.
    Changed(Stats),
    /// The dry run itself did not finish or failed.
    Failed(RsyncEnd),
}

impl Transfer<'_> {
    /// The plan, then the stages that are needed.
    ///
    /// With `stage1`, only stage 1 (a push's stage 1: no last file, no
    /// deletion).
    pub fn staged(&self, stage1: bool) -> Result<TransferReport> {
        let mut report = TransferReport::default();
        match self.plan()? {
            Plan::Failed(end) => return Ok(plan_failed(end)),
            Plan::Unchanged => return Ok(unchanged()),
            Plan::Changed(stats) => report.plan = Some(stats),
        }
        if !self.stage1(&mut report)? {
            return Ok(report);
        }
        if stage1 {
            crate::sys::progress::say(
                "stage 1 done: checksum files, markers and deletions wait for stage 2",
            );
            report.ok = true;
            report.message = format!("stage 1 {}", transferred(report.rsync_exit));
            return Ok(report);
        }
        let pending = report.stage1.deletes_skipped;
        // Stage 2 runs in full whenever anything among the last files changed
        // or anything is to be deleted: files that changed upstream after stage
        // 1 then land together with the checksum files that name them. When
        // stage 1 itself brought new files, new checksums almost always follow,
        // so the probe is skipped and stage 2 runs in full (always safe).
        let stage1_changed = report.stage1.files_transferred + report.stage1.files_created > 0;
        let full = if pending > 0 || stage1_changed {
            true
        } else {
            match self.probe(&mut report)? {
                Some(changed) => changed,
                None => return Ok(report),
            }
        };
        if !full {
            crate::sys::progress::say(
                "stage 2: no checksum file or marker changed upstream; nothing to publish",
            );
            report.ok = true;
            report.message = transferred(report.rsync_exit);
            return Ok(report);
        }
        self.stage2(&mut report, pending)?;
        Ok(report)
    }

    /// The plan: one dry run, with dest counted meanwhile.
    fn plan(&self) -> Result<Plan> {
        let dest = self.mirror.dest.clone();
        let counter = std::thread::spawn(move || plan::count_tree(&dest));
        let end = self.run_rsync(&argv::rsync_plan(self.cfg, self.mirror))?;
        let counted = crate::owner::trace::discount(
            self.mirror,
            &self.mirror.dest,
            counter.join().unwrap_or(None),
        );
        if end.stopped || end.signal.is_some() || !matches!(end.code, 0 | 24) {
            return Ok(Plan::Failed(end));
        }
        match plan::change(&end.stats, end.code, end.errors.len(), counted) {
            None => Ok(Plan::Unchanged),
            Some(why) => {
                crate::sys::progress::say(&format!("changed: {why}"));
                Ok(Plan::Changed(end.stats))
            }
        }
    }

    /// Stage 1 into `report`; whether the transfer goes on (it did not
    /// fail, and what it would delete is within max_delete).
    fn stage1(&self, report: &mut TransferReport) -> Result<bool> {
        let m = self.mirror;
        crate::sys::progress::say(&format!(
            "stage 1: all but {} (no deletions)",
            m.last.join(" ")
        ));
        let end = self.run_rsync(&argv::rsync_stage1(self.cfg, m))?;
        report.stage1 = end.stats.clone();
        report.rsync_exit = Some(end.code);
        if end.stopped {
            report.message =
                "stage 1 stopped (sync aborted or timed out); nothing published".into();
            return Ok(false);
        }
        if end.signal.is_some() || !matches!(end.code, 0 | 24 | 25) {
            report.message = format!(
                "stage 1 failed: {}; checksum files and markers were not published",
                end.failure()
            );
            return Ok(false);
        }
        let pending = report.stage1.deletes_skipped;
        if pending > m.max_delete {
            report.rsync_exit = Some(25);
            report.message = format!(
                "upstream would delete {pending} files, more than max_delete = {}; nothing was deleted and no checksum file or marker was published (raise max_delete if this is intended)",
                m.max_delete
            );
            return Ok(false);
        }
        Ok(true)
    }

    /// The probe between the stages: whether any last file changed
    /// upstream, or `None` when it did not finish (said in `report`).
    fn probe(&self, report: &mut TransferReport) -> Result<Option<bool>> {
        let probe = self.run_rsync(&argv::rsync_probe(self.cfg, self.mirror))?;
        if probe.stopped {
            report.message =
                "stopped between the stages (sync aborted or timed out); nothing published".into();
            return Ok(None);
        }
        if probe.signal.is_some() || !matches!(probe.code, 0 | 24) {
            report.rsync_exit = Some(probe.code);
            report.message = format!(
                "checking the last files failed: {}; checksum files and markers were not published",
                probe.failure()
            );
            return Ok(None);
        }
        Ok(Some(probe.stats.itemized > 0))
    }

    /// Stage 2 (in full), with `pending` deletions, into `report`.
    fn stage2(&self, report: &mut TransferReport, pending: u64) -> Result<()> {
        crate::sys::progress::say(&format!(
            "stage 2: everything, with delayed updates{}",
            if pending > 0 {
                format!(" and {pending} deletions")
            } else {
                String::new()
            }
        ));
        let end = self.run_rsync(&argv::rsync_stage2(self.cfg, self.mirror))?;
        let code = end.code;
        report.stage2 = Some(end.stats.clone());
        report.stage2_full = true;
        report.rsync_exit = Some(code);
        if end.stopped {
            report.message = "stage 2 stopped (sync aborted or timed out)".into();
        } else if end.signal.is_some() || !matches!(code, 0 | 24) {
            report.message = format!("stage 2 failed: {}", end.failure());
        } else {
            report.ok = true;
            report.message = transferred(Some(code));
            self.write_trace(&self.mirror.dest, report);
        }
        Ok(())
    }
}

/// The plan did not finish or failed: nothing changed.
pub(super) fn plan_failed(end: RsyncEnd) -> TransferReport {
    let mut report = TransferReport {
        rsync_exit: Some(end.code),
        ..Default::default()
    };
    if end.stopped {
        report.message =
            "comparing with upstream stopped (sync aborted or timed out); nothing changed".into();
    } else {
        report.message = format!(
            "comparing with upstream failed: {}; nothing changed",
            end.failure()
        );
        report.plan = Some(end.stats);
    }
    report
}

/// The plan found nothing to publish or delete.
pub(super) fn unchanged() -> TransferReport {
    crate::sys::progress::say(
        "unchanged: the mirror matches upstream; nothing to publish or delete",
    );
    TransferReport {
        route: Route::Unchanged,
        rsync_exit: Some(0),
        ok: true,
        perms_done: true,
        message: "unchanged".into(),
        ..Default::default()
    }
}
