//! The owner side: the commands `transfer` and `fix-perms`. They run as the
//! image owner (through sudo in production), take only a mirror name, and
//! read everything else from the config, which must then be root-owned, as
//! must the programs they run (`trust.rs`).
//!
//! Both hold an exclusive lock on a file in syncgate's private directory in
//! dest, which only the owner can open (`DestLock`, `dest.rs`, which also
//! names syncgate's own entries inside dest; no rsync takes them from
//! upstream). `transfer` passes that lock on to rsync, so it stays held
//! until the last rsync process is gone: a new transfer never overlaps a
//! dying one.
//!
//! Each prints exactly one JSON line on stdout (its report, `report.rs`) and
//! human progress on stderr; the gate reads both through pipes.
//!
//! A transfer (`Transfer`, `transfer.rs`) takes one of three routes: a first
//! sync (`fresh.rs`, published by `publish.rs`), or the plan (`plan.rs`) and,
//! when it found something to do, the two stages (`staged.rs`). Every rsync
//! it runs is built in [`rsync::argv`] and run by [`rsync::run`]; `lifeline.rs`
//! notices when the gate is gone.

mod busy;
mod dest;
pub mod fixperms;
mod fresh;
mod lifeline;
pub mod marker;
mod plan;
mod publish;
mod report;
pub mod rsync;
pub mod snapshot;
mod staged;
mod trace;
mod transfer;
mod trust;
pub mod verify;

pub use report::{
    FixPermsReport, Route, SnapshotInfo, TransferProgress, TransferReport, PROGRESS_PREFIX,
};
pub use snapshot::rollback;
pub use trust::untrusted_path;
pub use verify::{verify_tree, VerifyFailure, VerifyReport};

use crate::config::{Config, PublishMode};
use crate::error::Result;
use crate::owner::dest::DestLock;
use crate::owner::transfer::Transfer;
use crate::run::Stage;

/// `syncgate transfer MIRROR`: the plan and the stages, or a first sync.
/// With [`Stage::Stage1`] (`prepare`), everything but publishing; with
/// `full` (`transfer --full`), a walk whatever the change marker says.
pub fn transfer(cfg: &Config, name: &str, stage: Stage, full: bool) -> Result<TransferReport> {
    let m = cfg.mirror(name)?;
    trust::check_trust(cfg, m)?;
    let cut = lifeline::watch_lifeline();
    crate::sys::signals::install();
    if snapshot::layout::mode(m) == PublishMode::Snapshot
        && std::fs::symlink_metadata(m.snapshot_root()).is_err()
        && !snapshot::layout::parent_writable(m)
    {
        let parent = m.dest.parent().unwrap_or(std::path::Path::new("/"));
        return Ok(TransferReport {
            message: format!(
                "publish = \"snapshot\" needs dest's parent {0} to be the owner's (the new release goes live by renaming a symlink there): chown {1}:{2} {0}; chmod 2750 {0}, or set publish = \"two-stage\"; nothing changed",
                parent.display(),
                m.owner,
                m.reader_group
            ),
            ..Default::default()
        });
    }
    Transfer::begin(cfg, m, cut)?.run(stage, full)
}

/// `syncgate fix-perms MIRROR`: verify and repair owner, group and modes.
pub fn fix_perms(cfg: &Config, name: &str) -> Result<FixPermsReport> {
    let m = cfg.mirror(name)?;
    trust::check_trust(cfg, m)?;
    let _lock = DestLock::acquire(m)?;
    // With snapshots, the live one (dest is a symlink to it).
    let tree = match snapshot::layout::mode(m) {
        PublishMode::TwoStage => Some(m.dest.clone()),
        PublishMode::Snapshot => {
            let live = snapshot::layout::live(m)?;
            snapshot::layout::live_dir(m, &live)
        }
    };
    let Some(tree) = tree else {
        return Ok(FixPermsReport {
            ok: true,
            message: "nothing published yet".into(),
            ..Default::default()
        });
    };
    let r = fixperms::fix_tree(&tree, &m.perm_policy());
    // The change marker a transfer stored pending this fix-perms.
    match &r {
        Ok(_) => marker::confirm(m),
        Err(_) => marker::forget(m),
    }
    Ok(match r {
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
    })
}
