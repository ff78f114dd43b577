//! What a hub knows about its downstreams: `STATE_DIR/MIRROR.push.json`,
//! written only by the holder of the mirror's push lock, read by anyone
//! (`status`, the metrics).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::queue::statedir::{Read, StateDir};

/// How one push (one ssh, one stage) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushResult {
    /// A syncgate downstream synced and answered 0.
    Success,
    /// An ftpsync downstream took the push (it syncs in the background).
    Triggered,
    /// ssh failed (255: no connection, refused key, host key) or the
    /// downstream's sync failed (its exit status).
    Failed,
    /// Killed at the downstream's `timeout`.
    Timeout,
    /// Stopped by a signal to syncgate.
    Aborted,
}

impl PushResult {
    pub fn as_str(self) -> &'static str {
        match self {
            PushResult::Success => "success",
            PushResult::Triggered => "triggered",
            PushResult::Failed => "failed",
            PushResult::Timeout => "timeout",
            PushResult::Aborted => "aborted",
        }
    }

    /// Whether the downstream has (or is getting) the release.
    pub fn ok(self) -> bool {
        matches!(self, PushResult::Success | PushResult::Triggered)
    }
}

/// One push as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRecord {
    /// The hub's release (run id) this push carried.
    pub run: u64,
    /// `all`, `stage1` or `stage2`.
    pub stage: String,
    pub started: u64,
    pub ended: u64,
    pub result: PushResult,
    /// ssh's exit status (the downstream's, when ssh got that far).
    pub exit: Option<i32>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownstreamState {
    pub last_push: Option<PushRecord>,
    /// The hub's release the downstream last got in full (`all` or
    /// `stage2` succeeded or was triggered).
    pub release: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushState {
    pub version: u32,
    #[serde(default)]
    pub downstreams: BTreeMap<String, DownstreamState>,
}

pub fn path(sd: &StateDir, mirror: &str) -> PathBuf {
    sd.file(&format!("{mirror}.push.json"))
}

impl PushState {
    /// Reads the push state; a missing or unusable file is an empty state
    /// (every downstream then gets the next push), with the reason.
    pub fn load(sd: &StateDir, mirror: &str) -> Result<(PushState, Option<String>)> {
        let p = path(sd, mirror);
        Ok(match sd.read(&p)? {
            Read::Missing => (PushState::default(), None),
            Read::Unusable(why) => (
                PushState::default(),
                Some(format!(
                    "{} is unusable ({why}); starting afresh",
                    p.display()
                )),
            ),
            Read::Bytes(b) => match serde_json::from_slice(&b) {
                Ok(st) => (st, None),
                Err(e) => (
                    PushState::default(),
                    Some(format!("{} is corrupt ({e}); starting afresh", p.display())),
                ),
            },
        })
    }

    pub fn save(&self, sd: &StateDir, mirror: &str) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("push state serializes");
        bytes.push(b'\n');
        sd.write_atomic(&path(sd, mirror), &bytes)
    }

    pub fn get(&self, downstream: &str) -> DownstreamState {
        self.downstreams
            .get(downstream)
            .cloned()
            .unwrap_or_default()
    }

    /// Records a push that ended; a full push (`all`, `stage2`) that went
    /// through moves the downstream to `rec.run`.
    pub fn record(&mut self, downstream: &str, rec: PushRecord) {
        let e = self.downstreams.entry(downstream.to_string()).or_default();
        if rec.result.ok() && rec.stage != "stage1" {
            e.release = Some(e.release.map_or(rec.run, |r| r.max(rec.run)));
        }
        e.last_push = Some(rec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(run: u64, stage: &str, result: PushResult) -> PushRecord {
        PushRecord {
            run,
            stage: stage.into(),
            started: 1,
            ended: 2,
            result,
            exit: Some(0),
            message: String::new(),
        }
    }

    #[test]
    fn only_a_full_push_that_went_through_moves_the_release() {
        let mut st = PushState::default();
        st.record("a", rec(3, "stage1", PushResult::Success));
        assert_eq!(st.get("a").release, None);
        st.record("a", rec(3, "stage2", PushResult::Success));
        assert_eq!(st.get("a").release, Some(3));
        st.record("a", rec(5, "all", PushResult::Timeout));
        assert_eq!(st.get("a").release, Some(3));
        assert_eq!(st.get("a").last_push.unwrap().result, PushResult::Timeout);
        st.record("a", rec(5, "all", PushResult::Triggered));
        assert_eq!(st.get("a").release, Some(5));
        // An older release pushed late never moves it back.
        st.record("a", rec(4, "all", PushResult::Success));
        assert_eq!(st.get("a").release, Some(5));
        assert_eq!(st.get("b"), DownstreamState::default());
    }
}
