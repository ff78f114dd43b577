//! The per-mirror queue and request coalescing.
//!
//! A request notes `last_started` when it arrives, then blocks on the
//! mirror's kernel lock ([`lock`]). Holding the lock, it is satisfied by the
//! first *finished* run whose id is greater than what it noted (that run
//! started after the request arrived); its result is that run's result. If
//! there is none, it runs the sync itself. So a burst of requests that
//! arrive while a sync runs is served by exactly one further run.
//!
//! A run that was in progress when its process vanished (kill -9) is found
//! by the next lock holder, recorded as `died`, and never counts as a
//! success or as covering anyone.
//!
//! The queue does not know how a run is done: [`serve`] is handed the run
//! as a closure that returns its [`Outcome`].

pub mod admit;
pub mod history;
pub mod lock;
pub mod state;
pub mod statedir;

use std::time::Instant;

use crate::audit::events::{ObserveFailed, RunDied, RunStart, StateCorrupt};
use crate::audit::Audit;
use crate::config::{Config, Mirror};
use crate::error::{Error, Result};
use crate::queue::admit::Caps;
use crate::queue::lock::{LockFile, Queue};
use crate::queue::state::{MirrorState, Outcome, Requester, RunRecord, RunResult, Running};
use crate::queue::statedir::StateDir;
use crate::sys::progress::say;

/// How a request was served.
#[derive(Debug, Clone)]
pub struct Served {
    pub record: RunRecord,
    pub coalesced: bool,
    /// Seconds spent waiting for the lock.
    pub waited: u64,
}

/// Serves one request for one mirror: queue, coalesce or run, record.
/// `run` does the sync; it gets the run id. `caps`: an SSH request's
/// `max_waiting` caps (see [`admit`]); `None` for a local request.
pub fn serve(
    cfg: &Config,
    sd: &StateDir,
    mirror: &Mirror,
    req: &Requester,
    caps: Option<Caps>,
    audit: &mut Audit,
    run: impl FnOnce(u64) -> Outcome,
) -> Result<Served> {
    serve_as(cfg, sd, mirror, req, caps, audit, true, run)
}

/// [`serve`] for a request no sync can answer (a rollback): it waits its
/// turn in the same queue and always runs `run` itself.
pub fn serve_alone(
    cfg: &Config,
    sd: &StateDir,
    mirror: &Mirror,
    req: &Requester,
    audit: &mut Audit,
    run: impl FnOnce(u64) -> Outcome,
) -> Result<Served> {
    serve_as(cfg, sd, mirror, req, None, audit, false, run)
}

#[allow(clippy::too_many_arguments)]
fn serve_as(
    cfg: &Config,
    sd: &StateDir,
    mirror: &Mirror,
    req: &Requester,
    caps: Option<Caps>,
    audit: &mut Audit,
    coalesce: bool,
    run: impl FnOnce(u64) -> Outcome,
) -> Result<Served> {
    let name = &mirror.name;
    let lock = LockFile::open(sd, name)?;
    let arrived = Instant::now();
    let at_arrival = MirrorState::load(sd, name)?.state;
    let arrival = at_arrival.last_started;

    let q = Queue { cfg, sd, mirror };
    let lock = lock.acquire(&q, &at_arrival, audit, req, caps)?;
    let waited = arrived.elapsed().as_secs();

    let mut st = load_and_recover(cfg, sd, name, audit)?;

    if let Some(i) = st
        .covering_run(arrival, req.stage, req.full)
        .filter(|_| coalesce)
    {
        st.runs[i].served += 1;
        st.count_coalesced();
        let record = st.runs[i].clone();
        st.save(sd, name)?;
        drop(lock);
        return Ok(Served {
            record,
            coalesced: true,
            waited,
        });
    }

    let running = Running {
        run: st.last_started + 1,
        pid: std::process::id(),
        trigger: req.trigger,
        request: req.request.clone(),
        requester: req.who.clone(),
        started: state::now(),
        stage: req.stage.run_does(),
    };
    let id = running.run;
    st.last_started = id;
    st.running = Some(running.clone());
    st.save(sd, name)?;
    audit.record(&RunStart {
        mirror: name,
        run: id,
        req,
    });
    say(&format!("{name}: run #{id} started"));

    let record = RunRecord::finish(running, run(id), 1);
    st.running = None;
    st.push(record.clone());
    let saved = st.save(sd, name);
    record_history(cfg, sd, name, &record, audit);
    if let Err(e) = saved {
        // The run is still recorded as running, so the next lock holder
        // records it as died: it never counts as a success. Say what
        // happened to the sync itself, and fail the request.
        return Err(Error::Internal(format!(
            "run #{id} ended ({}) but its result could not be recorded: {e}; the next request records it as died",
            record.result.as_str()
        )));
    }
    drop(lock);
    Ok(Served {
        record,
        coalesced: false,
        waited,
    })
}

/// Reads the state as the lock holder: a corrupt file is reported and
/// replaced, a run whose process vanished is recorded as died.
fn load_and_recover(
    cfg: &Config,
    sd: &StateDir,
    name: &str,
    audit: &mut Audit,
) -> Result<MirrorState> {
    let loaded = MirrorState::load(sd, name)?;
    let mut st = loaded.state;
    if let Some(w) = loaded.warning {
        say(&format!("warning: {w}"));
        audit.record(&StateCorrupt {
            mirror: name,
            detail: &w,
        });
    }
    if let Some(dead) = st.running.take() {
        let msg = format!(
            "run #{} (pid {}, {} by {}) died without recording a result",
            dead.run, dead.pid, dead.trigger, dead.requester
        );
        say(&format!("{name}: {msg}"));
        audit.record(&RunDied {
            mirror: name,
            dead: &dead,
        });
        let record = RunRecord::finish(dead, Outcome::failed(RunResult::Died, msg, None), 0);
        st.push(record.clone());
        st.save(sd, name)?;
        record_history(cfg, sd, name, &record, audit);
    }
    Ok(st)
}

/// Appends a finished run to the mirror's history (holding its lock). A
/// history that cannot be written is said and audited; the run stands.
fn record_history(cfg: &Config, sd: &StateDir, name: &str, record: &RunRecord, audit: &mut Audit) {
    if let Err(e) = history::append(sd, name, record, cfg.history_size) {
        let detail = format!("run #{} is not in the history: {e}", record.run);
        say(&format!("{name}: warning: {detail}"));
        audit.record(&ObserveFailed {
            mirror: Some(name),
            what: "history",
            detail: &detail,
        });
    }
}
