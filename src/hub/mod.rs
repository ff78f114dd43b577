//! A hub: after a publish, push every downstream mirror (Debian's push
//! protocol over ssh), in parallel, never letting a slow or dead one hold
//! up the others or the builder beyond what the admin chose.
//!
//! - [`after_sync`]: what the gate does once a request was served: nothing
//!   (no downstreams, the run failed), the pushes now (`cascade = "wait"`,
//!   the systemd timer's runs, and a mid-tier's `sync:mhop sync:stage1`),
//!   or a detached `syncgate push --detached` (`cascade = "detach"`).
//! - [`push`]: the fan-out under the mirror's push lock
//!   (`STATE_DIR/MIRROR.push.lock`), so pushes of one mirror never overlap;
//!   each downstream is pushed until it has the newest release.
//! - `fanout.rs` schedules the pushes, `ssh.rs` runs one, `state.rs` keeps
//!   what each downstream last got.
//!
//! Partial files never travel: a push starts only after the local publish
//! is complete (with snapshots, after the switch), so a downstream pulls a
//! whole release.

pub mod fanout;
pub mod ssh;
pub mod state;

use std::path::PathBuf;

use nix::fcntl::FlockArg;

use crate::audit::Audit;
use crate::config::{Cascade, Config, Hub, Mirror};
use crate::error::{Error, Exit, Result};
use crate::queue::lock::flock_at as lock;
use crate::queue::state::MirrorState;
use crate::queue::statedir::StateDir;
use crate::queue::Served;
use crate::run::{Requester, RunResult, Stage, Trigger};
use crate::sys::progress::say;
use fanout::Kind;
use state::PushState;

pub fn push_lock_path(sd: &StateDir, mirror: &str) -> PathBuf {
    sd.file(&format!("{mirror}.push.lock"))
}

/// Held by the one detached pusher that waits for the push lock: a second
/// one would find nothing the first will not push.
fn waiter_lock_path(sd: &StateDir, mirror: &str) -> PathBuf {
    sd.file(&format!("{mirror}.push-wait.lock"))
}

fn hub(cfg: &Config) -> Result<&Hub> {
    cfg.hub.as_ref().ok_or_else(|| {
        Error::Config(format!(
            "{}: downstreams need a [hub] table",
            cfg.path.display()
        ))
    })
}

/// What the gate does after `req` was served for `mirror`. Returns an exit
/// code when the pushes change the request's result (`require`).
pub fn after_sync(
    cfg: &Config,
    mirror: &Mirror,
    req: &Requester,
    served: &Served,
    audit: &mut Audit,
) -> Option<Exit> {
    let fo = &mirror.fanout;
    if fo.downstreams.is_empty() || served.record.result != RunResult::Success {
        return None;
    }
    let kind = match (req.stage, req.mhop) {
        // A plain stage 1 publishes nothing and pushes nothing (ftpsync's
        // rule); a multi-hop one takes the subtree's stage 1 along.
        (Stage::Stage1, false) => return None,
        (Stage::Stage1, true) => Kind::Stage1,
        (Stage::Stage2, _) => Kind::Stage2,
        (Stage::All, _) => Kind::Full,
    };
    // The timer's run pushes itself: nobody waits for it, and systemd
    // ends a oneshot unit's leftover processes when its main one exits.
    let inline = fo.cascade == Cascade::Wait || kind != Kind::Full || req.trigger == Trigger::Timer;
    if !inline {
        if !anyone_behind(cfg, mirror) {
            return None;
        }
        return match detach(cfg, mirror) {
            Ok(()) => None,
            Err(e) => {
                say(&format!(
                    "{}: warning: cannot start the downstream pushes: {e}",
                    mirror.name
                ));
                None
            }
        };
    }
    match push(cfg, mirror, kind, Some(served.record.ended), audit) {
        Ok(ok) if kind == Kind::Full && (ok as u64) < fo.require => {
            say(&format!(
                "{}: published here, but only {ok} of the {} downstreams got it (require = {})",
                mirror.name,
                fo.downstreams.len(),
                fo.require
            ));
            Some(Exit::Downstream)
        }
        Ok(_) => None,
        Err(e) => {
            say(&format!("{}: downstream pushes: {e}", mirror.name));
            (fo.require > 0).then_some(Exit::Downstream)
        }
    }
}

/// Starts `syncgate push --detached MIRROR` in its own session, with no
/// terminal and no pipes to the caller: it outlives the request.
fn detach(cfg: &Config, mirror: &Mirror) -> std::io::Result<()> {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(&cfg.binary);
    cmd.arg("--config")
        .arg(&cfg.path)
        .args(["push", "--detached", &mirror.name])
        .env_clear()
        .env("PATH", crate::sys::child::SAFE_PATH)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    setsid_on_exec(&mut cmd);
    let child = cmd.spawn()?;
    say(&format!(
        "{}: pushing the downstreams that lack release #{} in the background (pid {}; status shows how they end)",
        mirror.name,
        MirrorState::load(&StateDir::open(&cfg.state_dir).map_err(std::io::Error::other)?, &mirror.name)
            .ok()
            .and_then(|l| l.state.release())
            .unwrap_or(0),
        child.id()
    ));
    Ok(())
}

/// Whether some downstream lacks the newest release (a detached pusher
/// has work). In doubt, yes.
fn anyone_behind(cfg: &Config, mirror: &Mirror) -> bool {
    let Ok(sd) = StateDir::open(&cfg.state_dir) else {
        return true;
    };
    let Ok(Some(release)) = MirrorState::load(&sd, &mirror.name).map(|l| l.state.release()) else {
        return true;
    };
    let Ok((st, _)) = PushState::load(&sd, &mirror.name) else {
        return true;
    };
    mirror
        .fanout
        .downstreams
        .iter()
        .any(|d| st.get(&d.name).release.is_none_or(|r| r < release))
}

#[allow(unsafe_code)]
fn setsid_on_exec(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

/// Pushes `mirror`'s downstreams under its push lock; returns how many
/// have the release when it is done.
///
/// `since`: the time the caller's publish ended (or the detached pusher
/// started). A downstream is pushed unless it has the newest release, or
/// a push of that release to it started at or after `since` (it covers
/// this caller, as a run covers the requests that arrived before it
/// started): so a burst of requests does not push a dead downstream once
/// each. `None` (`syncgate push MIRROR`) pushes every downstream.
pub fn push(
    cfg: &Config,
    mirror: &Mirror,
    kind: Kind,
    since: Option<u64>,
    audit: &mut Audit,
) -> Result<usize> {
    let sd = StateDir::open(&cfg.state_dir)?;
    let _held = lock(
        &sd,
        &push_lock_path(&sd, &mirror.name),
        FlockArg::LockExclusive,
    )?;
    push_locked(cfg, mirror, kind, since, &sd, audit)
}

fn push_locked(
    cfg: &Config,
    mirror: &Mirror,
    kind: Kind,
    since: Option<u64>,
    sd: &StateDir,
    audit: &mut Audit,
) -> Result<usize> {
    let hub = hub(cfg)?;
    let name = &mirror.name;
    let all = &mirror.fanout.downstreams;
    let mut pushed: Option<u64> = None;
    loop {
        // A multi-hop stage 1 carries what the subtree prepares, which
        // may be this host's first release: nothing is published yet.
        let release = match (MirrorState::load(sd, name)?.state.release(), kind) {
            (Some(r), _) => r,
            (None, Kind::Stage1) => 0,
            (None, _) => {
                say(&format!("{name}: nothing published yet; no pushes"));
                return Ok(0);
            }
        };
        if pushed.is_some_and(|p| p >= release) {
            break;
        }
        let (st, warning) = PushState::load(sd, name)?;
        if let Some(w) = warning {
            say(&format!("{name}: warning: {w}"));
        }
        let due = |i: &usize| {
            let Some(since) = since else { return true };
            let s = st.get(&all[*i].name);
            if kind == Kind::Full && s.release.is_some_and(|r| r >= release) {
                return false;
            }
            !s.last_push
                .is_some_and(|p| p.run >= release && p.started >= since)
        };
        let targets: Vec<usize> = (0..all.len()).filter(due).collect();
        if targets.is_empty() {
            break;
        }
        fanout::run(hub, mirror, &targets, kind, release, sd, audit);
        pushed = Some(release);
        if kind != Kind::Full || since.is_none() {
            break;
        }
    }
    let (st, _) = PushState::load(sd, name)?;
    let release = MirrorState::load(sd, name)?.state.release();
    Ok(all
        .iter()
        .filter(|d| {
            let s = st.get(&d.name);
            match kind {
                Kind::Full | Kind::Stage2 => s.release.is_some() && s.release >= release,
                Kind::Stage1 => s.last_push.is_some_and(|p| p.result.ok()),
            }
        })
        .count())
}

/// `syncgate push [--detached] MIRROR`.
pub fn push_command(cfg: &Config, name: &str, detached: bool, audit: &mut Audit) -> Result<()> {
    let mirror = cfg.mirror(name)?;
    if mirror.fanout.downstreams.is_empty() {
        return Err(Error::Usage(format!(
            "mirror {name} has no downstreams ([mirror.{name}.downstream.NAME] in {})",
            cfg.path.display()
        )));
    }
    if detached {
        let since = crate::run::now();
        // One waiting pusher is enough: it reads the newest release once it
        // holds the push lock, so it pushes whatever a second would.
        let sd = StateDir::open(&cfg.state_dir)?;
        let wait_path = waiter_lock_path(&sd, name);
        let Some(waiting) = lock(&sd, &wait_path, FlockArg::LockExclusiveNonblock)? else {
            return Ok(());
        };
        let _held = lock(&sd, &push_lock_path(&sd, name), FlockArg::LockExclusive)?;
        drop(waiting);
        push_locked(cfg, mirror, Kind::Full, Some(since), &sd, audit)?;
        drop(_held);
        crate::observe::after_request(cfg, audit);
        return Ok(());
    }
    let ok = push(cfg, mirror, Kind::Full, None, audit)?;
    crate::observe::after_request(cfg, audit);
    let n = mirror.fanout.downstreams.len();
    say(&format!("{name}: {ok} of {n} downstreams have the release"));
    if ok < n {
        return Err(Error::SyncFailed(Exit::Downstream));
    }
    Ok(())
}
