//! One sync run, from the gate's side: the owner-side `transfer` and then
//! `fix-perms`, each launched through the argv in [`crate::runner::argv`], with the
//! wall-clock timeout, heartbeats and signal handling enforced here.

pub mod argv;
pub mod sync;

use std::time::{Duration, Instant};

use crate::config::{Config, Mirror, Privilege};
use crate::owner::{FixPermsReport, TransferProgress, TransferReport};
use crate::run::{Outcome, RunResult, Stage};
use crate::runner::argv::OwnerVerb;
use crate::sys::child::{self, Ending, Stream, Watcher};
use crate::sys::progress::{human_secs, say};

/// Time an owner-side command gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

struct GateWatch<'a> {
    mirror: &'a str,
    run: u64,
    started: Instant,
    beat: Duration,
    next_beat: Instant,
    stdout: Vec<String>,
    stderr_tail: Vec<String>,
    /// The owner side's latest progress, if it came since the last
    /// heartbeat.
    progress: Option<TransferProgress>,
}

impl GateWatch<'_> {
    /// The heartbeat: how long the run has been going and, while rsync
    /// moves data, where it is.
    fn heartbeat(&mut self) -> String {
        let mut s = format!(
            "{}: run #{} running for {}",
            self.mirror,
            self.run,
            human_secs(self.started.elapsed().as_secs())
        );
        if let Some(p) = self.progress.take() {
            s.push_str(": ");
            s.push_str(&p.human());
        }
        s
    }
}

impl Watcher for GateWatch<'_> {
    fn line(&mut self, stream: Stream, line: &str) {
        match stream {
            Stream::Stdout => self.stdout.push(line.to_string()),
            Stream::Stderr if line.starts_with(crate::owner::PROGRESS_PREFIX) => {
                // Kept for the next heartbeat, not relayed.
                if let Some(p) = TransferProgress::from_line(line) {
                    self.progress = Some(p);
                }
            }
            Stream::Stderr => {
                // Already "syncgate: ..." from the owner side; rsync's and
                // sudo's own lines pass through as they are.
                crate::sys::progress::relay(line);
                if self.stderr_tail.len() == 10 {
                    self.stderr_tail.remove(0);
                }
                self.stderr_tail.push(line.to_string());
            }
        }
    }
    fn tick(&mut self) {
        if Instant::now() >= self.next_beat {
            self.next_beat += self.beat;
            let beat = self.heartbeat();
            say(&beat);
        }
    }
    fn abort(&mut self) -> bool {
        crate::sys::signals::terminate_requested()
    }
}

enum Step<T> {
    Report(T),
    Stopped(RunResult, String),
    NoReport(String),
}

fn run_owner_step<T: serde::de::DeserializeOwned>(
    cfg: &Config,
    m: &Mirror,
    verb: OwnerVerb,
    run: u64,
    started: Instant,
    deadline: Instant,
) -> Step<T> {
    let argv = argv::launch(cfg, m, verb);
    run_owner_argv(cfg, m, &argv, verb.as_str(), run, started, deadline)
}

fn run_owner_argv<T: serde::de::DeserializeOwned>(
    cfg: &Config,
    m: &Mirror,
    argv: &[String],
    what: &str,
    run: u64,
    started: Instant,
    deadline: Instant,
) -> Step<T> {
    let mut child = match child::spawn(child::Spec {
        argv,
        env: vec![],
        own_group: true,
        die_with_parent: true,
        lifeline: true,
    }) {
        Ok(c) => c,
        Err(e) => return Step::NoReport(format!("cannot run {}: {e}", argv[0])),
    };
    let beat = Duration::from_secs(cfg.heartbeat);
    let mut w = GateWatch {
        mirror: &m.name,
        run,
        started,
        beat,
        next_beat: Instant::now() + beat,
        stdout: vec![],
        stderr_tail: vec![],
        progress: None,
    };
    let fin = match child.wait(Some(deadline), GRACE, &mut w) {
        Ok(f) => f,
        Err(e) => return Step::NoReport(format!("waiting for {what}: {e}")),
    };
    match fin.ending {
        Ending::TimedOut => {
            return Step::Stopped(
                RunResult::Timeout,
                format!(
                    "timed out after {} (timeout = {}s); rsync was stopped",
                    human_secs(started.elapsed().as_secs()),
                    m.timeout
                ),
            )
        }
        Ending::Aborted => {
            return Step::Stopped(
                RunResult::Aborted,
                "stopped by a signal; rsync was stopped".into(),
            )
        }
        Ending::Exited => {}
    }
    if let Some(report) = w
        .stdout
        .iter()
        .rev()
        .find_map(|l| serde_json::from_str::<T>(l).ok())
    {
        return Step::Report(report);
    }
    let code = child::code_of(&fin.status);
    let mut msg = format!("{what} exited {code} without a report");
    if let Some(last) = w.stderr_tail.last() {
        msg.push_str(&format!(": {last}"));
    }
    if cfg.privilege == Privilege::Sudo && w.stderr_tail.iter().any(|l| l.starts_with("sudo:")) {
        msg.push_str(" (the sudoers rule does not match this config: run `syncgate check`)");
    }
    Step::NoReport(msg)
}

/// Runs the sync. Never panics on child trouble: every way it can end is an
/// [`Outcome`] with a message.
/// `stage`: what the run does ([`Stage::Stage1`]: `prepare`, else `transfer`);
/// `full`: walk the trees whatever the change marker says (`transfer --full`).
pub fn execute(cfg: &Config, m: &Mirror, run: u64, stage: Stage, full: bool) -> Outcome {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(m.timeout);

    let verb = match stage.run_does() {
        Stage::Stage1 => OwnerVerb::Prepare,
        _ if full => OwnerVerb::TransferFull,
        _ => OwnerVerb::Transfer,
    };
    let t: TransferReport = match run_owner_step(cfg, m, verb, run, started, deadline) {
        Step::Report(r) => r,
        Step::Stopped(result, msg) => return Outcome::failed(result, msg, None),
        Step::NoReport(msg) => return Outcome::failed(RunResult::Failed, msg, None),
    };
    if !t.ok {
        let result = if t.verify_failed {
            RunResult::VerifyFailed
        } else {
            RunResult::Failed
        };
        let mut o = Outcome::failed(result, t.message, t.rsync_exit);
        o.snapshot = t.snapshot;
        return o;
    }
    let s2 = t.stage2.clone().unwrap_or_default();
    let bytes = t.stage1.bytes_transferred + s2.bytes_transferred;
    let files = t.stage1.files_transferred + s2.files_transferred;
    // A snapshot deletes nothing: what upstream no longer has is simply
    // not in the new tree; the plan counted it.
    let deleted = match t.route {
        crate::owner::Route::Snapshot => t.plan.as_ref().map_or(0, |p| p.files_deleted),
        _ => s2.files_deleted,
    };
    // A first sync fixed its copy before publishing it; an unchanged mirror
    // was just compared entry by entry, mode and group included.
    let message = if t.perms_done {
        t.message
    } else {
        let f: FixPermsReport =
            match run_owner_step(cfg, m, OwnerVerb::FixPerms, run, started, deadline) {
                Step::Report(r) => r,
                Step::Stopped(result, msg) => return Outcome::failed(result, msg, t.rsync_exit),
                Step::NoReport(msg) => {
                    return Outcome::failed(RunResult::Failed, msg, t.rsync_exit)
                }
            };
        if !f.ok {
            return Outcome::failed(
                RunResult::Failed,
                format!("permissions could not be enforced: {}", f.message),
                t.rsync_exit,
            );
        }
        format!("{}; permissions: {}", t.message, f.message)
    };
    let mut o = Outcome::success(message, t.rsync_exit, bytes, files, deleted);
    o.snapshot = t.snapshot;
    o.shortcut = t.shortcut;
    // The plan listed the whole tree; without one (a first sync), the one
    // pass did.
    o.size = [t.plan.as_ref(), t.stage2.as_ref(), Some(&t.stage1)]
        .into_iter()
        .flatten()
        .find_map(|s| s.total_size);
    o
}

/// Runs the owner side of a rollback (`to`: a snapshot id, or the one
/// before the live one). Like [`execute`], never panics.
pub fn execute_rollback(cfg: &Config, m: &Mirror, run: u64, to: Option<&str>) -> Outcome {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(m.timeout);
    let argv = argv::launch_rollback(cfg, m, to);
    let t: TransferReport =
        match run_owner_argv(cfg, m, &argv, argv::OWNER_ROLLBACK, run, started, deadline) {
            Step::Report(r) => r,
            Step::Stopped(result, msg) => return Outcome::failed(result, msg, None),
            Step::NoReport(msg) => return Outcome::failed(RunResult::Failed, msg, None),
        };
    let mut o = if t.ok {
        Outcome::success(t.message, None, 0, 0, 0)
    } else {
        Outcome::failed(RunResult::Failed, t.message, None)
    };
    o.snapshot = t.snapshot;
    o
}
