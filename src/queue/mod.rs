//! The per-mirror queue and request coalescing.
//!
//! A request notes `last_started` when it arrives, then blocks on the
//! mirror's kernel lock. Holding the lock, it is satisfied by the first
//! *finished* run whose id is greater than what it noted (that run started
//! after the request arrived); its result is that run's result. If there is
//! none, it runs the sync itself. So a burst of requests that arrive while a
//! sync runs is served by exactly one further run.
//!
//! A run that was in progress when its process vanished (kill -9) is found
//! by the next lock holder, recorded as `died`, and never counts as a
//! success or as covering anyone.

pub mod state;
pub mod statedir;

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::{Audit, Level, Line};
use crate::config::{Config, Mirror};
use crate::error::{Error, Result};
use crate::queue::state::{now, MirrorState, RunRecord, RunResult, Running, Trigger};
use crate::queue::statedir::StateDir;
use crate::sys::progress::{human_secs, say};

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
}

/// How a request was served.
#[derive(Debug, Clone)]
pub struct Served {
    pub record: RunRecord,
    pub coalesced: bool,
    /// Seconds spent waiting for the lock.
    pub waited: u64,
}

/// Waits for the mirror lock: heartbeat, queue timeout, and leaving the
/// queue when the caller disconnects or a signal arrives.
fn acquire(
    cfg: &Config,
    mirror: &Mirror,
    file: File,
    st: &MirrorState,
    audit: &mut Audit,
    req: &Requester,
) -> Result<File> {
    let file = match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => file,
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("cannot lock the mirror", e)),
    };
    let behind = |st: &MirrorState| match &st.running {
        Some(r) => format!(
            "run #{} ({}, running for {})",
            r.run,
            r.trigger,
            human_secs(now().saturating_sub(r.started))
        ),
        None => "another request".to_string(),
    };
    say(&format!("{}: queued behind {}", mirror.name, behind(st)));

    let cancelled = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    {
        let cancelled = cancelled.clone();
        std::thread::spawn(move || {
            let r = file.lock().map(|()| file);
            if let Ok(f) = &r {
                if cancelled.load(Ordering::SeqCst) {
                    let _ = f.unlock();
                    return;
                }
            }
            let _ = tx.send(r);
        });
    }
    let start = Instant::now();
    let limit = Duration::from_secs(mirror.queue_timeout);
    let beat = Duration::from_secs(cfg.heartbeat);
    let mut next_beat = start + beat;
    let leave = |why: &str, audit: &mut Audit| {
        cancelled.store(true, Ordering::SeqCst);
        let mut l = Line::new("abandoned");
        l.kv("request", &req.request)
            .kv("mirror", &mirror.name)
            .kv("queue_wait", start.elapsed().as_secs())
            .kv("reason", why);
        audit.log(Level::Warning, &l);
    };
    loop {
        let got = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Ok(f)) => Some(f),
            Ok(Err(e)) => return Err(Error::io("cannot lock the mirror", e)),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::Internal("lock waiter vanished".into()))
            }
            Err(RecvTimeoutError::Timeout) => None,
        };
        // Also checked when the lock has just arrived: a caller that left
        // while queued must not start a run (or be coalesced) just because
        // its turn came before the next poll. Dropping the lock releases it.
        if crate::sys::progress::caller_gone() {
            leave("client-disconnected", audit);
            return Err(Error::Abandoned("client disconnected while queued".into()));
        }
        if crate::sys::signals::terminate_requested() || crate::sys::signals::hangup_received() {
            leave("signal", audit);
            return Err(Error::Abandoned("stopped by a signal while queued".into()));
        }
        if let Some(f) = got {
            return Ok(f);
        }
        let waited = start.elapsed();
        if waited >= limit {
            leave("queue-timeout", audit);
            return Err(Error::QueueTimeout {
                mirror: mirror.name.clone(),
                waited: waited.as_secs(),
                limit: mirror.queue_timeout,
            });
        }
        if Instant::now() >= next_beat {
            next_beat += beat;
            let st = MirrorState::load_quiet(&mirror.name, cfg);
            say(&format!(
                "{}: still queued behind {}; waited {}",
                mirror.name,
                behind(&st),
                human_secs(waited.as_secs())
            ));
        }
    }
}

/// Serves one request for one mirror: queue, coalesce or run, record.
pub fn serve(
    cfg: &Config,
    sd: &StateDir,
    mirror: &Mirror,
    req: &Requester,
    audit: &mut Audit,
) -> Result<Served> {
    let name = &mirror.name;
    let lock = sd.lock_file(name)?;
    let arrived = Instant::now();
    let at_arrival = MirrorState::load(sd, name)?.state;
    let arrival = at_arrival.last_started;

    let lock = acquire(cfg, mirror, lock, &at_arrival, audit, req)?;
    let waited = arrived.elapsed().as_secs();

    let loaded = MirrorState::load(sd, name)?;
    let mut st = loaded.state;
    if let Some(w) = loaded.warning {
        say(&format!("warning: {w}"));
        let mut l = Line::new("state-corrupt");
        l.kv("mirror", name).kv("detail", &w);
        audit.log(Level::Warning, &l);
    }
    if let Some(dead) = st.running.take() {
        let msg = format!(
            "run #{} (pid {}, {} by {}) died without recording a result",
            dead.run, dead.pid, dead.trigger, dead.requester
        );
        say(&format!("{name}: {msg}"));
        let mut l = Line::new("run-died");
        l.kv("mirror", name)
            .kv("run", dead.run)
            .kv("pid", dead.pid)
            .kv("request", &dead.request);
        audit.log(Level::Warning, &l);
        st.push(RunRecord {
            run: dead.run,
            trigger: dead.trigger,
            request: dead.request,
            requester: dead.requester,
            started: dead.started,
            ended: now(),
            result: RunResult::Died,
            exit_code: crate::error::exit::SYNC_FAILED,
            rsync_exit: None,
            message: msg,
            bytes: 0,
            files: 0,
            deleted: 0,
            served: 0,
        });
        st.save(sd, name)?;
    }

    if let Some(i) = st.covering_run(arrival) {
        st.runs[i].served += 1;
        let record = st.runs[i].clone();
        st.save(sd, name)?;
        drop(lock);
        return Ok(Served {
            record,
            coalesced: true,
            waited,
        });
    }

    let run = st.last_started + 1;
    let started = now();
    st.last_started = run;
    st.running = Some(Running {
        run,
        pid: std::process::id(),
        trigger: req.trigger,
        request: req.request.clone(),
        requester: req.who.clone(),
        started,
    });
    st.save(sd, name)?;
    let mut l = Line::new("run-start");
    l.kv("mirror", name)
        .kv("run", run)
        .kv("request", &req.request)
        .kv("trigger", req.trigger);
    audit.log(Level::Info, &l);
    say(&format!("{name}: run #{run} started"));

    let outcome = crate::runner::execute(cfg, mirror, run);
    let record = RunRecord {
        run,
        trigger: req.trigger,
        request: req.request.clone(),
        requester: req.who.clone(),
        started,
        ended: now(),
        result: outcome.result,
        exit_code: outcome.exit_code,
        rsync_exit: outcome.rsync_exit,
        message: outcome.message,
        bytes: outcome.bytes,
        files: outcome.files,
        deleted: outcome.deleted,
        served: 1,
    };
    st.running = None;
    st.push(record.clone());
    if let Err(e) = st.save(sd, name) {
        // The run is still recorded as running, so the next lock holder
        // records it as died: it never counts as a success. Say what
        // happened to the sync itself, and fail the request.
        return Err(Error::Internal(format!(
            "run #{run} ended ({}) but its result could not be recorded: {e}; the next request records it as died",
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

impl MirrorState {
    /// Best-effort read for progress messages.
    fn load_quiet(name: &str, cfg: &Config) -> MirrorState {
        StateDir::open(&cfg.state_dir)
            .and_then(|sd| MirrorState::load(&sd, name))
            .map(|l| l.state)
            .unwrap_or_default()
    }
}
