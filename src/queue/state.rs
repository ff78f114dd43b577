//! Per-mirror state, kept as JSON in `state_dir/MIRROR.state.json` and
//! replaced atomically. Written only by the holder of the mirror lock; read
//! by anyone (status, and requests noting what has started when they arrive).

use serde::{Deserialize, Serialize};

use crate::queue::statedir::StateDir;

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
        f.write_str(match self {
            Trigger::Cli => "cli",
            Trigger::Ssh => "ssh",
            Trigger::Timer => "timer",
        })
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run: u64,
    pub trigger: Trigger,
    pub request: String,
    pub requester: String,
    pub started: u64,
    pub ended: u64,
    pub result: RunResult,
    /// syncgate's exit code for the requests this run served.
    pub exit_code: u8,
    /// rsync's own exit code of the stage that decided the result, if rsync ran.
    pub rsync_exit: Option<i32>,
    pub message: String,
    pub bytes: u64,
    pub files: u64,
    pub deleted: u64,
    /// Requests that got this run's result (the one that ran it included).
    pub served: u64,
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
        let Some(bytes) = dir.read(&path)? else {
            return Ok(Loaded {
                state: MirrorState::default(),
                warning: None,
            });
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
            result,
            exit_code: 0,
            rsync_exit: None,
            message: String::new(),
            bytes: 0,
            files: 0,
            deleted: 0,
            served: 1,
        }
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
