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

/// Where a transfer is, while rsync runs: what the owner side tells the
/// gate on stderr, one line ([`TransferProgress::to_line`]) about once a
/// second, and what the gate shows its caller at the heartbeat
/// ([`TransferProgress::human`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferProgress {
    /// Bytes of file data this rsync pass has transferred.
    pub bytes: u64,
    /// Bytes per second.
    pub rate: u64,
    /// Bytes this pass is expected to transfer (the plan's count), when a
    /// plan counted them and the pass has not gone beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// Seconds left: from `expected` and the rate, or else rsync's estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<u64>,
    /// Files of the list checked so far, and how many are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<u64>,
    /// The file list is still growing (rsync's incremental recursion).
    #[serde(default)]
    pub listing: bool,
}

/// How a progress line on the owner side's stderr starts. Nothing else the
/// owner side prints starts so: its own lines and rsync's start
/// `syncgate: `.
pub const PROGRESS_PREFIX: &str = "syncgate-progress: ";

impl TransferProgress {
    /// The line for the gate.
    pub fn to_line(&self) -> String {
        format!(
            "{PROGRESS_PREFIX}{}",
            serde_json::to_string(self).expect("progress serializes")
        )
    }

    /// The progress a line of the owner side's stderr carries, if any.
    pub fn from_line(line: &str) -> Option<TransferProgress> {
        serde_json::from_str(line.strip_prefix(PROGRESS_PREFIX)?).ok()
    }

    /// "1.2 GiB of 3.1 GiB transferred (38%), 110.0 MiB/s, ETA 0:26, 1000 of
    /// 2000+ files checked".
    pub fn human(&self) -> String {
        use crate::sys::progress::human_bytes;
        let mut s = match self.expected {
            Some(e) if e > 0 => format!(
                "{} of {} transferred ({}%)",
                human_bytes(self.bytes),
                human_bytes(e),
                (self.bytes.min(e) as u128 * 100 / e as u128)
            ),
            _ => format!("{} transferred", human_bytes(self.bytes)),
        };
        s.push_str(&format!(", {}/s", human_bytes(self.rate)));
        if let Some(eta) = self.eta {
            let (h, m, sec) = (eta / 3600, eta % 3600 / 60, eta % 60);
            if h > 0 {
                s.push_str(&format!(", ETA {h}:{m:02}:{sec:02}"));
            } else {
                s.push_str(&format!(", ETA {m}:{sec:02}"));
            }
        }
        if let (Some(c), Some(l)) = (self.checked, self.listed) {
            if self.listing {
                s.push_str(&format!(", {c} of {l}+ files checked"));
            } else if l > 0 {
                s.push_str(&format!(
                    ", {}% of the files checked",
                    c.min(l) as u128 * 100 / l as u128
                ));
            }
        }
        s
    }
}

/// "vanished" or not: rsync's 24 is a success with a remark.
pub(super) fn transferred(code: Option<i32>) -> String {
    if code == Some(24) {
        "transferred (some upstream files vanished during the transfer)".into()
    } else {
        "transferred".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_goes_over_one_line_and_reads_as_words() {
        let p = TransferProgress {
            bytes: 1_288_490_189,
            rate: 110 << 20,
            expected: Some(3_328_599_654),
            eta: Some(26),
            checked: Some(760),
            listed: Some(2000),
            listing: false,
        };
        let line = p.to_line();
        assert!(line.starts_with("syncgate-progress: {"), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(TransferProgress::from_line(&line), Some(p));
        assert_eq!(
            p.human(),
            "1.2 GiB of 3.1 GiB transferred (38%), 110.0 MiB/s, ETA 0:26, 38% of the files checked"
        );
        let q = TransferProgress {
            bytes: 512,
            rate: 0,
            expected: None,
            eta: Some(3723),
            checked: Some(10),
            listed: Some(400),
            listing: true,
        };
        assert_eq!(
            q.human(),
            "512 B transferred, 0 B/s, ETA 1:02:03, 10 of 400+ files checked"
        );
        for other in [
            "syncgate: iso: rsync: [sender] ...",
            "syncgate-progress: not json",
            "{\"bytes\":1,\"rate\":2}",
        ] {
            assert_eq!(TransferProgress::from_line(other), None, "{other}");
        }
    }
}
