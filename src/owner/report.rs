//! The owner side's reports: the one JSON line each command prints for the
//! gate (src/runner reads them). Field names and their JSON are an
//! interface between the two sides of sudo: change them on both sides.

use serde::{Deserialize, Serialize};

use crate::owner::rsync::Stats;

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
    /// A new snapshot, built beside the live one, made live in one step.
    Snapshot,
}

pub use crate::run::Snapshots as SnapshotInfo;

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
    /// With snapshots: which is live and which are kept.
    #[serde(default)]
    pub snapshot: Option<SnapshotInfo>,
    /// The new snapshot failed verification (checksums or a signature):
    /// nothing went live.
    #[serde(default)]
    pub verify_failed: bool,
    /// The change marker was as at the last verified sync: the run ended
    /// without walking either tree (src/owner/marker.rs).
    #[serde(default)]
    pub shortcut: bool,
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

/// "vanished" or not: rsync's 24 is a success with a remark.
pub(super) fn transferred(code: Option<i32>) -> String {
    if code == Some(24) {
        "transferred (some upstream files vanished during the transfer)".into()
    } else {
        "transferred".into()
    }
}
