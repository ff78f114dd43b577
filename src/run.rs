//! The vocabulary of one run, shared by the queue (which stores it), the
//! runner (which produces it) and the audit trail (which reports it): who
//! asked and how ([`Requester`], [`Trigger`]), how it ended ([`RunResult`],
//! [`Outcome`]) and what the state file keeps of it ([`RunRecord`],
//! [`Running`]).

use serde::{Deserialize, Serialize};

use crate::error::Exit;

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
    /// A new snapshot did not verify (a checksum or a signature): nothing
    /// went live.
    #[serde(rename = "verify-failed")]
    VerifyFailed,
}

impl RunResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunResult::Success => "success",
            RunResult::Failed => "failed",
            RunResult::Timeout => "timeout",
            RunResult::Aborted => "aborted",
            RunResult::Died => "died",
            RunResult::VerifyFailed => "verify-failed",
        }
    }
}

/// How much of a sync a request asks for, in the words of Debian's push
/// protocol (`sync:stage1`, `sync:stage2`, `sync:all`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Everything, published (`sync`, `sync:all`).
    #[default]
    All,
    /// Everything but publishing: in place, all but the last files and no
    /// deletions; with snapshots, the new snapshot built and verified but
    /// not switched.
    Stage1,
    /// Publishing: a full sync that finds stage 1's work done.
    Stage2,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::All, Stage::Stage1, Stage::Stage2];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::All => "all",
            Stage::Stage1 => "stage1",
            Stage::Stage2 => "stage2",
        }
    }

    pub fn is_all(&self) -> bool {
        *self == Stage::All
    }

    /// What a run started for a request asking this does: stage 1 only, or
    /// everything (stage 2 is a full sync that finds stage 1's work done).
    pub fn run_does(self) -> Stage {
        match self {
            Stage::Stage1 => Stage::Stage1,
            Stage::All | Stage::Stage2 => Stage::All,
        }
    }

    /// Whether a run that did `did` serves a request that asked for this.
    pub fn served_by(self, did: Stage) -> bool {
        match self {
            Stage::Stage1 => true,
            Stage::All | Stage::Stage2 => did != Stage::Stage1,
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
    /// How much of a sync was asked for (`All` unless an ftpsync push said
    /// `sync:stage1` or `sync:stage2`).
    pub stage: Stage,
    /// A full walk was asked for (`sync --full`): served only by a run
    /// that walked, whatever the change marker said.
    pub full: bool,
    /// An ftpsync push said `sync:mhop`: a hub pushes its own staged
    /// downstreams' stage 1 before it answers stage 1.
    pub mhop: bool,
}

impl Requester {
    pub fn new(trigger: Trigger, who: String) -> Requester {
        Requester {
            trigger,
            request: format!("r{}-{}", now(), std::process::id()),
            who,
            stage: Stage::All,
            full: false,
            mhop: false,
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
    /// What the run does: [`Stage::Stage1`] or everything ([`Stage::All`]).
    #[serde(default, skip_serializing_if = "Stage::is_all")]
    pub stage: Stage,
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
    /// The size in bytes of the tree the run listed upstream (rsync's
    /// "Total file size"), when it listed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// With snapshot publishing: which snapshot is live and which are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshots>,
    /// The run ended on upstream's unchanged change marker, without walking
    /// either tree (so it serves no `sync --full` request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shortcut: bool,
}

/// A snapshot-published mirror's snapshots after a transfer (the owner
/// side reports them; state and status show them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshots {
    /// The live snapshot's id.
    pub live: String,
    /// Every snapshot kept (the live one included), oldest first.
    pub kept: Vec<String>,
    /// Whether this run built `live` and made it live.
    pub switched: bool,
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
            size: None,
            snapshot: None,
            shortcut: false,
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
            size: None,
            snapshot: None,
            shortcut: false,
        }
    }
}

/// A finished run: the [`Running`] entry it was, when it ended, its
/// [`Outcome`] (flattened: the state file keeps one flat object per run),
/// and how many requests it served. Read through [`FlatRecord`]: serde's
/// `flatten` buffers every field of every run, which made reading a state
/// file of 100 runs take half a millisecond.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "FlatRecord")]
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
    /// What the run did: stage 1 only, or everything.
    #[serde(default, skip_serializing_if = "Stage::is_all")]
    pub stage: Stage,
}

/// A [`RunRecord`] as the state file and the history keep it: one flat
/// object (the same fields, in the same order, as it is written).
#[derive(Deserialize)]
struct FlatRecord {
    run: u64,
    trigger: Trigger,
    request: String,
    requester: String,
    started: u64,
    ended: u64,
    result: RunResult,
    exit_code: Exit,
    rsync_exit: Option<i32>,
    message: String,
    bytes: u64,
    files: u64,
    deleted: u64,
    #[serde(default)]
    snapshot: Option<Snapshots>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    shortcut: bool,
    served: u64,
    #[serde(default)]
    stage: Stage,
}

impl From<FlatRecord> for RunRecord {
    fn from(f: FlatRecord) -> RunRecord {
        RunRecord {
            run: f.run,
            trigger: f.trigger,
            request: f.request,
            requester: f.requester,
            started: f.started,
            ended: f.ended,
            outcome: Outcome {
                result: f.result,
                exit_code: f.exit_code,
                rsync_exit: f.rsync_exit,
                message: f.message,
                bytes: f.bytes,
                files: f.files,
                deleted: f.deleted,
                snapshot: f.snapshot,
                size: f.size,
                shortcut: f.shortcut,
            },
            served: f.served,
            stage: f.stage,
        }
    }
}

impl RunRecord {
    /// Whether this run serves a request that asked for `want` (and for a
    /// full walk when `full`): stage 1 serves only stage 1, and a run that
    /// did not walk serves no `--full` request.
    pub fn serves(&self, want: Stage, full: bool) -> bool {
        want.served_by(self.stage) && !(full && self.outcome.shortcut)
    }

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
            stage: running.stage,
        }
    }
}

impl RunRecord {
    /// Whether this run changed what readers see: files transferred or
    /// deleted, or a new snapshot switched live.
    pub fn published_change(&self) -> bool {
        self.files > 0
            || self.deleted > 0
            || self.outcome.snapshot.as_ref().is_some_and(|s| s.switched)
    }
}

/// A record reads as its outcome: `record.result`, `record.message`, ...
impl std::ops::Deref for RunRecord {
    type Target = Outcome;
    fn deref(&self) -> &Outcome {
        &self.outcome
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

    /// Every field of a record survives a write and a read: a field added
    /// to [`Outcome`] or [`RunRecord`] but not to [`FlatRecord`] fails here.
    #[test]
    fn a_record_reads_back_as_written() {
        let rec = RunRecord {
            run: 7,
            trigger: Trigger::Ssh,
            request: "r1-2".into(),
            requester: "key=jenkins".into(),
            started: 10,
            ended: 20,
            outcome: Outcome {
                snapshot: Some(Snapshots {
                    live: "b".into(),
                    kept: vec!["a".into(), "b".into()],
                    switched: true,
                }),
                size: Some(12345),
                ..Outcome::success("done".into(), Some(0), 1, 2, 3)
            },
            served: 4,
            stage: Stage::Stage1,
        };
        let json = serde_json::to_value(&rec).unwrap();
        let back: RunRecord = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
        for key in json.as_object().unwrap().keys() {
            assert!(!json[key].is_null(), "{key} is set in this test");
        }
    }
}
