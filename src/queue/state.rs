//! Per-mirror state, kept as JSON in `state_dir/MIRROR.state.json` and
//! replaced atomically. Written only by the holder of the mirror lock; read
//! by anyone (status, and requests noting what has started when they arrive).

use serde::{Deserialize, Serialize};

use crate::error::Exit;
use crate::queue::statedir::{Read, StateDir};

/// How many finished runs are kept.
pub const HISTORY: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Cli,
    Ssh,
    Timer,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Cli => "cli",
            Trigger::Ssh => "ssh",
            Trigger::Timer => "timer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    Success,
    Failed,
    Timeout,
    /// Stopped by a signal to syncgate (admin, systemd).
    Aborted,
    /// The process running it vanished (kill -9, crash, reboot). Such a run
    /// never finished, so it serves no request.
    Died,
}

impl RunResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Failed => "failed",
            RunResult::Timeout => "timeout",
            RunResult::Aborted => "aborted",
            RunResult::Died => "died",
        }
    }
}

/// Who asked, for state, status and the audit trail.
#[derive(Debug, Clone)]
pub struct Requester {
    pub trigger: Trigger,
    /// Unique id of this request, e.g. `r1732185600-4242`.
    pub request: String,
    /// `user=root`, or `key=jenkins client=192.0.2.7:51234`.
    pub who: String,
}

impl Requester {
    pub fn new(trigger: Trigger, who: String) -> Requester {
        Requester {
            trigger,
            request: format!("r{}-{}", now(), std::process::id()),
            who,
        }
    }

    /// The same requester asking for one of several mirrors: its own id.
    pub fn for_mirror(&self, mirror: &str) -> Requester {
        Requester {
            request: format!("{}.{mirror}", self.request),
            ..self.clone()
        }
    }
}

/// The run in progress, written before rsync starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub run: u64,
    pub pid: u32,
    pub trigger: Trigger,
    pub request: String,
    pub requester: String,
    pub started: u64,
}

/// How one run ended: what the runner hands back to the queue, which
/// records it in a [`RunRecord`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub result: RunResult,
    /// syncgate's exit code for the requests this run served.
    pub exit_code: Exit,
    /// rsync's own exit code of the stage that decided the result, if rsync ran.
    pub rsync_exit: Option<i32>,
    pub message: String,
    pub bytes: u64,
    pub files: u64,
    pub deleted: u64,
}

impl Outcome {
    /// A run that succeeded.
    pub fn success(
        message: String,
        rsync_exit: Option<i32>,
        bytes: u64,
        files: u64,
        deleted: u64,
    ) -> Outcome {
        Outcome {
            result: RunResult::Success,
            exit_code: Exit::Ok,
            rsync_exit,
            message,
            bytes,
            files,
            deleted,
        }
    }

    /// A run that did not succeed (`result` is not `Success`).
    pub fn failed(result: RunResult, message: String, rsync_exit: Option<i32>) -> Outcome {
        Outcome {
            result,
            exit_code: Exit::SyncFailed,
            rsync_exit,
            message,
            bytes: 0,
            files: 0,
            deleted: 0,
        }
    }
}

/// A finished run: the [`Running`] entry it was, when it ended, its
/// [`Outcome`] (flattened: the state file keeps one flat object per run),
/// and how many requests it served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: u64,
    pub trigger: Trigger,
    pub request: String,
    pub requester: String,
    pub started: u64,
    pub ended: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Requests that got this run's result (the one that ran it included).
    pub served: u64,
}

impl RunRecord {
    /// Records how `running` ended, now.
    pub fn finish(running: Running, outcome: Outcome, served: u64) -> RunRecord {
        RunRecord {
            run: running.run,
            trigger: running.trigger,
            request: running.request,
            requester: running.requester,
            started: running.started,
            ended: now(),
            outcome,
            served,
        }
    }
}

/// A record reads as its outcome: `record.result`, `record.message`, ...
impl std::ops::Deref for RunRecord {
    type Target = Outcome;
    fn deref(&self) -> &Outcome {
        &self.outcome
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MirrorState {
    pub version: u32,
    /// Highest run id that has started (run ids count up from 1).
    pub last_started: u64,
    pub running: Option<Running>,
    /// Finished runs, oldest first.
    pub runs: Vec<RunRecord>,
    pub last_success: Option<u64>,
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
    /// `last_started` when the request arrived). Runs that died never
    /// finished and do not count.
    pub fn covering_run(&self, arrival: u64) -> Option<usize> {
        self.runs
            .iter()
            .position(|r| r.run > arrival && r.result != RunResult::Died)
    }

    pub fn push(&mut self, rec: RunRecord) {
        if rec.result == RunResult::Success {
            self.last_success = Some(rec.ended);
        }
        self.runs.push(rec);
        if self.runs.len() > HISTORY {
            let extra = self.runs.len() - HISTORY;
            self.runs.drain(..extra);
        }
    }

    pub fn last_run(&self) -> Option<&RunRecord> {
        self.runs.last()
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.covering_run(0), Some(0));
        assert_eq!(s.covering_run(1), Some(1));
        assert_eq!(s.covering_run(2), None);
    }

    #[test]
    fn a_run_that_died_covers_nobody() {
        let mut s = MirrorState::default();
        s.push(rec(3, RunResult::Died));
        assert_eq!(s.covering_run(2), None);
        s.push(rec(4, RunResult::Timeout));
        assert_eq!(s.covering_run(2), Some(1));
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
