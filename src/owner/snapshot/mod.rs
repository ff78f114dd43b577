//! The snapshot route (`publish = "snapshot"`): every release a reader can
//! see is one whole, verified tree.
//!
//! 1. the plan: one dry run against the live snapshot, while its entries
//!    are counted; when nothing is to be published or deleted, the transfer
//!    ends here and builds nothing; the counts also say how much would go
//!    (checked against `max_delete`);
//! 2. the build: a link farm of the live snapshot in a private directory
//!    beside it (`farm.rs`), then one rsync pass that replaces what changed;
//! 3. fix-perms on the build (only what rsync wrote can be wrong: a linked
//!    file is the live one's inode, already right);
//! 4. verification: the checksum files of the build against the files they
//!    list, and their OpenPGP signatures when the config asks
//!    (src/owner/verify);
//! 5. the switch: the build is renamed to its id in the snapshot root and
//!    one `rename(2)` of the dest symlink makes it live
//!    (src/owner/snapshot/layout.rs);
//! 6. old snapshots beyond `keep` are removed.
//!
//! A run that stops or fails before step 5 leaves the live snapshot as it
//! was; its build stays in the private directory and the next run builds
//! on it. One that fails verification removes its build, so nothing it
//! brought is trusted later without being checked again.

mod farm;
pub mod layout;
mod rollback;

pub use rollback::rollback;

use std::path::{Path, PathBuf};

use crate::config::VerifyMode;
use crate::error::{IoContext, Result};
use crate::owner::dest::TEMP_DIR;
use crate::owner::fixperms;
use crate::owner::report::{transferred, Route, SnapshotInfo, TransferReport};
use crate::owner::rsync::argv;
use crate::owner::staged::{plan_failed, unchanged};
use crate::owner::transfer::Transfer;
use crate::owner::verify::verify_tree;

use layout::{Live, BUILD_DIR};

impl Transfer<'_> {
    /// The snapshot route (see the module docs).
    ///
    /// With `stage1`, the new snapshot is built and verified but not made
    /// live (a push's stage 1); the next full transfer finds it built and
    /// switches.
    pub fn snapshot(&self, stage1: bool) -> Result<TransferReport> {
        let m = self.mirror;
        let root = m.snapshot_root();
        // The root must let the reader group through to the snapshots.
        if let Err(e) = fixperms::fix_root(&root, &m.perm_policy()) {
            return Ok(failed(format!("cannot set up {}: {e}", root.display())));
        }
        let was = layout::live(m)?;
        let live_dir = layout::live_dir(m, &was);
        let mut report = TransferReport {
            route: Route::Snapshot,
            ..Default::default()
        };
        if let Some(live) = &live_dir {
            match self.snapshot_plan(live, &mut report)? {
                PlanEnd::GoOn => {}
                PlanEnd::Stop(r) => return Ok(*r),
                PlanEnd::Unchanged => {
                    let mut r = unchanged();
                    r.snapshot = info(&root, &was, false);
                    return Ok(r);
                }
            }
        }
        let build = root.join(TEMP_DIR).join(BUILD_DIR);
        if !self.build(&build, live_dir.as_deref(), &mut report)? {
            return Ok(report);
        }
        let fixed = match fixperms::fix_tree(&build, &m.perm_policy()) {
            Ok(r) => r,
            Err(e) => {
                report.message = format!(
                    "permissions could not be enforced on the new snapshot, nothing went live: {e}"
                );
                return Ok(report);
            }
        };
        crate::sys::progress::say(&format!(
            "permissions: {} entries checked, {} repaired, {} removed",
            fixed.entries, fixed.changed, fixed.removed
        ));
        if !self.verify(&build, live_dir.as_deref(), &mut report)? {
            return Ok(report);
        }
        if stage1 {
            crate::sys::progress::say(
                "stage 1: the new snapshot is built and verified; stage 2 makes it live",
            );
            report.ok = true;
            report.perms_done = true;
            report.message = format!(
                "stage 1: snapshot built and verified, not yet live ({})",
                transferred(report.rsync_exit)
            );
            report.snapshot = info(&root, &was, false);
            return Ok(report);
        }
        self.write_trace(&build, &report);
        let id = self.go_live(&root, &build, &was)?;
        let previous = match &was {
            Live::Snapshot(p) => Some(p.as_str()),
            _ => None,
        };
        let kept = layout::prune(&root, m.publish.keep, &id, previous)?;
        crate::sys::progress::say(&format!("snapshot {id} is live; kept: {}", kept.join(" ")));
        report.ok = true;
        report.perms_done = true;
        report.message = format!("snapshot {id} {}", transferred(report.rsync_exit));
        report.snapshot = Some(SnapshotInfo {
            live: id,
            kept,
            switched: true,
        });
        Ok(report)
    }

    /// The plan against the live snapshot; whether the run goes on.
    fn snapshot_plan(&self, live: &Path, report: &mut TransferReport) -> Result<PlanEnd> {
        let m = self.mirror;
        let dir = live.to_path_buf();
        let counter = std::thread::spawn(move || crate::owner::plan::count_tree(&dir));
        let end = self.run_rsync(&argv::rsync_snapshot_plan(self.cfg, m, live, false))?;
        let counted = crate::owner::trace::discount(m, live, counter.join().unwrap_or(None));
        if end.stopped || end.signal.is_some() || !matches!(end.code, 0 | 24) {
            return Ok(PlanEnd::Stop(Box::new(plan_failed(end))));
        }
        match crate::owner::plan::change(&end.stats, end.code, end.errors.len(), counted) {
            None => return Ok(PlanEnd::Unchanged),
            Some(why) => {
                crate::sys::progress::say(&format!("changed: {why}"));
            }
        }
        // What the new snapshot will not have, from the counts the plan
        // already made; when they cannot say, or say too many (an admin's
        // excluded files in dest count too), a dry run with --delete counts
        // exactly.
        let mut stats = end.stats;
        stats.files_deleted = match counted.and_then(|c| crate::owner::plan::gone(&stats, c)) {
            Some(n) if n <= m.max_delete => n,
            _ => {
                let exact = self.run_rsync(&argv::rsync_snapshot_plan(self.cfg, m, live, true))?;
                if exact.stopped || exact.signal.is_some() || !matches!(exact.code, 0 | 24) {
                    return Ok(PlanEnd::Stop(Box::new(plan_failed(exact))));
                }
                exact.stats.files_deleted
            }
        };
        let deletes = stats.files_deleted;
        report.plan = Some(stats);
        if deletes > m.max_delete {
            report.rsync_exit = Some(25);
            report.message = format!(
                "upstream would delete {deletes} files, more than max_delete = {}; no snapshot was built and the live one is unchanged (raise max_delete if this is intended)",
                m.max_delete
            );
            return Ok(PlanEnd::Stop(Box::new(std::mem::take(report))));
        }
        Ok(PlanEnd::GoOn)
    }

    /// The build pass; whether it succeeded (said in `report` if not).
    fn build(
        &self,
        build: &Path,
        live: Option<&Path>,
        report: &mut TransferReport,
    ) -> Result<bool> {
        let resumed = build.is_dir();
        crate::sys::progress::say(&format!(
            "snapshot: building the new release in {}{}{}",
            build.display(),
            if resumed {
                " (continuing an unfinished build)"
            } else {
                ""
            },
            match live {
                Some(l) => format!(", unchanged files hard-linked from {}", l.display()),
                None => String::new(),
            }
        ));
        if let Some(live) = live {
            match farm::link_farm(live, build, self.mirror.dir_mode) {
                Ok(f) => {
                    crate::sys::progress::say(&format!(
                        "snapshot: {} directories made and {} entries hard-linked from the live snapshot{}",
                        f.dirs,
                        f.links,
                        if f.skipped > 0 {
                            format!("; {} the owner may not link (not its own: changed behind syncgate's back) are taken from upstream again", f.skipped)
                        } else {
                            String::new()
                        }
                    ));
                }
                Err(e) => {
                    report.message = format!(
                        "building the snapshot failed: {e}; the live snapshot is unchanged"
                    );
                    return Ok(false);
                }
            }
        }
        let end = self.run_rsync(&argv::rsync_snapshot(self.cfg, self.mirror, build))?;
        report.stage1 = end.stats.clone();
        report.rsync_exit = Some(end.code);
        if end.stopped {
            report.message = "building the snapshot stopped (sync aborted or timed out); the live snapshot is unchanged, the next sync continues the build".into();
            return Ok(false);
        }
        if end.signal.is_some() || !matches!(end.code, 0 | 24) {
            report.message = format!(
                "building the snapshot failed: {}; the live snapshot is unchanged, the next sync continues the build",
                end.failure()
            );
            return Ok(false);
        }
        Ok(true)
    }

    /// Verification of the build; whether it passed (said in `report` if
    /// not, and the build removed).
    fn verify(
        &self,
        build: &Path,
        live: Option<&Path>,
        report: &mut TransferReport,
    ) -> Result<bool> {
        let p = &self.mirror.publish;
        if p.verify == VerifyMode::Off {
            crate::sys::progress::say("verify = \"off\": the new snapshot goes live unchecked");
            return Ok(true);
        }
        match verify_tree(build, live, p) {
            Ok(v) => {
                crate::sys::progress::say(&format!(
                    "verified: {} checksum file(s), {} file(s) hashed ({} bytes){}",
                    v.checksum_files,
                    v.files_hashed,
                    v.bytes_hashed,
                    if p.signature.is_some() {
                        format!(", {} signature(s)", v.signatures)
                    } else {
                        String::new()
                    }
                ));
                Ok(true)
            }
            Err(e) => {
                // Nothing it brought is trusted later without being checked
                // again: the next run starts the build afresh.
                let removed = layout::remove_any(build);
                report.verify_failed = true;
                report.message = format!(
                    "the new snapshot failed verification, nothing went live: {e}{}",
                    match removed {
                        Ok(()) => String::new(),
                        Err(e) => format!(" (and its build could not be removed: {e})"),
                    }
                );
                Ok(false)
            }
        }
    }

    /// Renames the build to a new id in the root and makes it live.
    fn go_live(&self, root: &Path, build: &Path, was: &Live) -> Result<String> {
        let m = self.mirror;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut taken = layout::list(root)?;
        let old = match was {
            Live::Dir { empty: false } => {
                let old = layout::next_id(now, &taken);
                taken.push(old.clone());
                Some(old)
            }
            _ => None,
        };
        let id = layout::next_id(now, &taken);
        let target: PathBuf = root.join(&id);
        std::fs::rename(build, &target)
            .context(|| format!("cannot move the new snapshot to {}", target.display()))?;
        layout::switch(m, &id, was, old.as_deref())?;
        if let Some(old) = old {
            crate::sys::progress::say(&format!(
                "dest was a directory: it is now snapshot {old}, and dest a symlink to the snapshot in use"
            ));
        }
        Ok(id)
    }
}

/// How the plan ended.
enum PlanEnd {
    GoOn,
    Unchanged,
    Stop(Box<TransferReport>),
}

fn failed(message: String) -> TransferReport {
    TransferReport {
        route: Route::Snapshot,
        message,
        ..Default::default()
    }
}

/// The snapshots as they are, for a run that switched nothing.
fn info(root: &Path, live: &Live, switched: bool) -> Option<SnapshotInfo> {
    let Live::Snapshot(id) = live else {
        return None;
    };
    Some(SnapshotInfo {
        live: id.clone(),
        kept: layout::list(root).unwrap_or_default(),
        switched,
    })
}
