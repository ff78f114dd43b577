//! Per-mirror state, kept as JSON in `state_dir/MIRROR.state.json` and
//! replaced atomically. Written only by the holder of the mirror lock; read
//! by anyone (status, and requests noting what has started when they arrive).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::queue::statedir::{Read, StateDir};

/// How many finished runs are kept.
pub const HISTORY: usize = 100;

pub use crate::run::{now, Outcome, Requester, RunRecord, RunResult, Running, Stage, Trigger};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MirrorState {
    pub version: u32,
    /// Highest run id that has started (run ids count up from 1).
    pub last_started: u64,
    pub running: Option<Running>,
    /// Finished runs, oldest first.
    pub runs: Vec<RunRecord>,
    pub last_success: Option<u64>,
    /// The newest successful run that published a change (a hub pushes
    /// its downstreams until each has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<u64>,
    /// Cumulative counts (the metrics' counters): they only go up, and the
    /// runs the state file forgets stay counted.
    #[serde(default, skip_serializing_if = "Counts::is_empty")]
    pub counts: Counts,
}

/// What a mirror has done since its state file was created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Finished runs by result (`success`, `failed`, … as in
    /// [`RunResult::as_str`]), `died` ones included.
    pub runs: BTreeMap<String, u64>,
    /// Requests served, coalesced ones included.
    pub requests: u64,
    /// Finished runs since the last success that did not succeed.
    pub failures_in_row: u64,
}

impl Counts {
    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

/// What reading the state file found.
pub struct Loaded {
    pub state: MirrorState,
    /// Set when the file was unreadable or corrupt and was replaced by an
    /// empty state; the caller logs it.
    pub warning: Option<String>,
}

impl MirrorState {
    pub fn load(dir: &StateDir, mirror: &str) -> crate::error::Result<Loaded> {
        let path = dir.state_path(mirror);
        let bytes = match dir.read(&path)? {
            Read::Bytes(b) => b,
            Read::Missing => {
                return Ok(Loaded {
                    state: MirrorState::default(),
                    warning: None,
                })
            }
            Read::Unusable(why) => {
                return Ok(Loaded {
                    state: MirrorState::default(),
                    warning: Some(format!(
                        "state file {} is corrupt (it is {why}); starting from an empty history",
                        path.display()
                    )),
                })
            }
        };
        match serde_json::from_slice::<MirrorState>(&bytes) {
            Ok(state) => Ok(Loaded {
                state,
                warning: None,
            }),
            Err(e) => Ok(Loaded {
                state: MirrorState::default(),
                warning: Some(format!(
                    "state file {} is corrupt ({e}); starting from an empty history",
                    path.display()
                )),
            }),
        }
    }

    pub fn save(&self, dir: &StateDir, mirror: &str) -> crate::error::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        bytes.push(b'\n');
        dir.write_atomic(&dir.state_path(mirror), &bytes)
    }

    /// The first finished run that started after `arrival` (the value of
    /// `last_started` when the request arrived) and does what was asked
    /// ([`RunRecord::serves`]: `want`, and a walk when `full`). Runs that
    /// died never finished and do not count.
    pub fn covering_run(&self, arrival: u64, want: Stage, full: bool) -> Option<usize> {
        self.runs
            .iter()
            .position(|r| r.run > arrival && r.result != RunResult::Died && r.serves(want, full))
    }

    pub fn push(&mut self, rec: RunRecord) {
        let before = self.failures_in_row();
        *self
            .counts
            .runs
            .entry(rec.result.as_str().to_string())
            .or_default() += 1;
        self.counts.requests += rec.served;
        if rec.result == RunResult::Success {
            self.last_success = Some(rec.ended);
            self.counts.failures_in_row = 0;
            if rec.stage.is_all() && rec.published_change() {
                self.last_change = Some(rec.run);
            }
        } else {
            // `before` came from the runs when the state file predates the
            // counts.
            self.counts.failures_in_row = before + 1;
        }
        self.runs.push(rec);
        if self.runs.len() > HISTORY {
            let extra = self.runs.len() - HISTORY;
            self.runs.drain(..extra);
        }
    }

    /// The release a hub's downstreams should have: the newest run that
    /// published a change, or (state written before that was kept) the
    /// newest success.
    pub fn release(&self) -> Option<u64> {
        self.last_change.or_else(|| {
            self.runs
                .iter()
                .rev()
                .find(|r| r.result == RunResult::Success && r.stage.is_all())
                .map(|r| r.run)
        })
    }

    pub fn last_run(&self) -> Option<&RunRecord> {
        self.runs.last()
    }

    /// A coalesced request got a finished run's result.
    pub fn count_coalesced(&mut self) {
        self.counts.requests += 1;
    }

    /// Finished runs since the last success that did not succeed. A state
    /// file from before the counts were kept: counted in its runs.
    pub fn failures_in_row(&self) -> u64 {
        if !self.counts.runs.is_empty() {
            return self.counts.failures_in_row;
        }
        self.runs
            .iter()
            .rev()
            .take_while(|r| r.result != RunResult::Success)
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    fn rec(run: u64, result: RunResult) -> RunRecord {
        RunRecord {
            run,
            trigger: Trigger::Cli,
            request: String::new(),
            requester: String::new(),
            started: 0,
            ended: 0,
            outcome: Outcome {
                exit_code: if result == RunResult::Success {
                    Exit::Ok
                } else {
                    Exit::SyncFailed
                },
                ..Outcome::failed(result, String::new(), None)
            },
            served: 1,
            stage: Stage::All,
        }
    }

    /// A state file as syncgate wrote it before `RunRecord` embedded
    /// `Outcome`: it still reads, and writes back byte for byte.
    #[test]
    fn the_state_file_format_is_unchanged() {
        let old = r#"{
  "version": 0,
  "last_started": 3,
  "running": {
    "run": 3,
    "pid": 4242,
    "trigger": "ssh",
    "request": "r1795255600-4242",
    "requester": "key=jenkins client=192.0.2.7:51234",
    "started": 1795255600
  },
  "runs": [
    {
      "run": 1,
      "trigger": "timer",
      "request": "r1795255501-4241",
      "requester": "user=syncgate uid=998",
      "started": 1795255501,
      "ended": 1795255543,
      "result": "success",
      "exit_code": 0,
      "rsync_exit": 0,
      "message": "2 files changed",
      "bytes": 734003200,
      "files": 3,
      "deleted": 1,
      "served": 2
    },
    {
      "run": 2,
      "trigger": "cli",
      "request": "r1795255550-4243",
      "requester": "user=root uid=0",
      "started": 1795255550,
      "ended": 1795255560,
      "result": "failed",
      "exit_code": 1,
      "rsync_exit": null,
      "message": "transfer exited 1 without a report",
      "bytes": 0,
      "files": 0,
      "deleted": 0,
      "served": 1
    }
  ],
  "last_success": 1795255543
}"#;
        let st: MirrorState = serde_json::from_str(old).unwrap();
        assert_eq!(st.runs[0].result, RunResult::Success);
        assert_eq!(st.runs[0].exit_code, Exit::Ok);
        assert_eq!(st.runs[1].exit_code, Exit::SyncFailed);
        assert_eq!(st.runs[1].rsync_exit, None);
        assert_eq!(serde_json::to_string_pretty(&st).unwrap(), old);
    }

    #[test]
    fn a_request_is_covered_only_by_a_run_that_started_after_it_arrived() {
        let mut s = MirrorState::default();
        s.push(rec(1, RunResult::Success));
        s.push(rec(2, RunResult::Failed));
        assert_eq!(s.covering_run(0, Stage::All, false), Some(0));
        assert_eq!(s.covering_run(1, Stage::All, false), Some(1));
        assert_eq!(s.covering_run(2, Stage::All, false), None);
    }

    #[test]
    fn a_stage_1_run_serves_only_stage_1_requests() {
        let mut s = MirrorState::default();
        let mut r = rec(1, RunResult::Success);
        r.stage = Stage::Stage1;
        s.push(r);
        s.push(rec(2, RunResult::Success));
        assert_eq!(s.covering_run(0, Stage::Stage1, false), Some(0));
        assert_eq!(s.covering_run(0, Stage::All, false), Some(1));
        assert_eq!(s.covering_run(0, Stage::Stage2, false), Some(1));
        assert_eq!(s.covering_run(1, Stage::Stage1, false), Some(1));
        assert_eq!(s.covering_run(2, Stage::Stage2, false), None);
    }

    #[test]
    fn a_full_request_is_served_only_by_a_run_that_walked() {
        let mut s = MirrorState::default();
        let mut r = rec(1, RunResult::Success);
        r.outcome.shortcut = true;
        s.push(r);
        assert_eq!(s.covering_run(0, Stage::All, false), Some(0));
        assert_eq!(s.covering_run(0, Stage::All, true), None);
        s.push(rec(2, RunResult::Success));
        assert_eq!(s.covering_run(0, Stage::All, true), Some(1));
        assert_eq!(s.covering_run(0, Stage::Stage2, true), Some(1));
    }

    #[test]
    fn a_run_that_died_covers_nobody() {
        let mut s = MirrorState::default();
        s.push(rec(3, RunResult::Died));
        assert_eq!(s.covering_run(2, Stage::All, false), None);
        s.push(rec(4, RunResult::Timeout));
        assert_eq!(s.covering_run(2, Stage::All, false), Some(1));
    }

    #[test]
    fn counts_only_go_up_and_outlive_the_kept_runs() {
        let mut s = MirrorState::default();
        for i in 0..(HISTORY as u64 + 10) {
            s.push(rec(i + 1, RunResult::Success));
        }
        s.push(rec(200, RunResult::Failed));
        s.push(rec(201, RunResult::Died));
        s.count_coalesced();
        assert_eq!(s.counts.runs["success"], HISTORY as u64 + 10);
        assert_eq!((s.counts.runs["failed"], s.counts.runs["died"]), (1, 1));
        // `served` of each pushed run (1 in `rec`), and one coalesced.
        assert_eq!(s.counts.requests, HISTORY as u64 + 13);
        assert_eq!(s.failures_in_row(), 2);
        s.push(rec(202, RunResult::Success));
        assert_eq!(s.failures_in_row(), 0);
        let back: MirrorState = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.counts, s.counts);
    }

    #[test]
    fn failures_in_row_of_an_old_state_file_come_from_its_runs() {
        let mut s = MirrorState::default();
        s.runs.push(rec(1, RunResult::Success));
        s.runs.push(rec(2, RunResult::Failed));
        s.runs.push(rec(3, RunResult::Timeout));
        assert_eq!(s.failures_in_row(), 2);
        s.push(rec(4, RunResult::Failed));
        assert_eq!(s.failures_in_row(), 3);
        assert_eq!(s.counts.runs.len(), 1, "only what it saw is counted");
    }

    #[test]
    fn history_is_bounded() {
        let mut s = MirrorState::default();
        for i in 0..(HISTORY as u64 + 10) {
            s.push(rec(i + 1, RunResult::Success));
        }
        assert_eq!(s.runs.len(), HISTORY);
        assert_eq!(s.runs[0].run, 11);
    }
}
