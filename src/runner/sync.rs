//! `syncgate sync`: one request per mirror through the queue, with a
//! decision line before anything runs and an outcome line after.

use crate::audit::events::{End, Outcome, Via};
use crate::audit::Audit;
use crate::config::Config;
use crate::error::{Error, Exit, Result};
use crate::queue::admit::Caps;
use crate::queue::statedir::StateDir;
use crate::queue::{self, Served};
use crate::run::Requester;
use crate::run::RunResult;
use crate::sys::progress::{human_secs, say};

/// The line a requester reads when its request has been served.
fn summary(name: &str, s: &Served) -> String {
    let r = &s.record;
    let how = if s.coalesced {
        format!("served by run #{} (it started after this request)", r.run)
    } else {
        format!("run #{}", r.run)
    };
    let took = human_secs(r.ended.saturating_sub(r.started));
    match r.result {
        RunResult::Success if r.shortcut => format!(
            "{name}: {how} succeeded in {took}: unchanged (upstream's change marker is as at the last verified sync; nothing walked)"
        ),
        RunResult::Success => format!(
            "{name}: {how} succeeded in {took}: {} files, {} bytes transferred, {} deleted",
            r.files, r.bytes, r.deleted
        ),
        _ => format!(
            "{name}: {how} {} after {took}: {}{}",
            match r.result {
                RunResult::Failed => "FAILED",
                RunResult::VerifyFailed => "FAILED verification",
                other => other.as_str(),
            },
            r.message,
            r.rsync_exit
                .filter(|c| *c != 0)
                .map(|c| format!(" [rsync exit {c}: {}]", crate::owner::rsync::describe(c)))
                .unwrap_or_default()
        ),
    }
}

/// Serves `mirrors` one after another. Each mirror's result is said as it
/// ends; if any did not succeed, the error carries the worst exit code.
pub fn sync(
    cfg: &Config,
    mirrors: &[String],
    base: &Requester,
    via: Option<Via>,
    audit: &mut Audit,
) -> Result<()> {
    for m in mirrors {
        cfg.mirror(m)?;
    }
    if mirrors.is_empty() {
        say(&format!(
            "no mirrors are configured in {}; nothing to do",
            cfg.path.display()
        ));
        return Ok(());
    }
    let sd = match StateDir::open(&cfg.state_dir) {
        Ok(sd) => sd,
        Err(e) => {
            for name in mirrors {
                audit.record(&Outcome {
                    req: base,
                    mirror: name,
                    via,
                    end: End::Failed(&e),
                });
            }
            return Err(e);
        }
    };
    let mut worst = Exit::Ok;
    for name in mirrors {
        let mirror = cfg.mirror(name)?;
        let req = if mirrors.len() > 1 {
            base.for_mirror(name)
        } else {
            base.clone()
        };
        let run = |id| crate::runner::execute(cfg, mirror, id, req.stage, req.full);
        let caps = via.map(|v| Caps {
            key: v.key,
            key_max: cfg.keys.get(v.key).and_then(|k| k.max_waiting),
        });
        let served = queue::serve(cfg, &sd, mirror, &req, caps, audit, run);
        let pushed = served.as_ref().ok().cloned();
        worst = worst.worst(report(name, &req, via, served, audit));
        // The metrics show the run at once, before any downstream push
        // (which may wait for the downstreams' own syncs).
        crate::observe::after_request(cfg, audit);
        if let Some(s) = pushed {
            if let Some(e) = crate::hub::after_sync(cfg, mirror, &req, &s, audit) {
                worst = worst.worst(e);
            }
            if !mirror.fanout.downstreams.is_empty() {
                // How the pushes went (or that they are under way).
                crate::observe::after_request(cfg, audit);
            }
        }
    }
    match worst {
        Exit::Ok => Ok(()),
        worst => Err(Error::SyncFailed(worst)),
    }
}

/// Says and audits how one mirror's request ended; its exit code.
fn report(
    name: &str,
    req: &Requester,
    via: Option<Via>,
    served: Result<Served>,
    audit: &mut Audit,
) -> Exit {
    match served {
        Ok(s) => {
            say(&summary(name, &s));
            audit.record(&Outcome {
                req,
                mirror: name,
                via,
                end: End::Served {
                    record: &s.record,
                    coalesced: s.coalesced,
                    queue_wait: s.waited,
                },
            });
            s.record.exit_code
        }
        Err(e) => {
            audit.record(&Outcome {
                req,
                mirror: name,
                via,
                end: End::Failed(&e),
            });
            say(&format!("{name}: {e}"));
            e.exit()
        }
    }
}

/// `syncgate rollback`: one run, in the mirror's queue, that makes an
/// older snapshot live (never coalesced with a sync).
pub fn rollback(
    cfg: &Config,
    name: &str,
    to: Option<&str>,
    req: &Requester,
    audit: &mut Audit,
) -> Result<()> {
    let mirror = cfg.mirror(name)?;
    let sd = StateDir::open(&cfg.state_dir)?;
    let run = |id| crate::runner::execute_rollback(cfg, mirror, id, to);
    let served = queue::serve_alone(cfg, &sd, mirror, req, audit, run);
    let pushed = served.as_ref().ok().cloned();
    let mut worst = report(name, req, None, served, audit);
    crate::observe::after_request(cfg, audit);
    // The release readers see changed: downstreams follow it.
    if let Some(s) = pushed {
        if let Some(e) = crate::hub::after_sync(cfg, mirror, req, &s, audit) {
            worst = worst.worst(e);
        }
        if !mirror.fanout.downstreams.is_empty() {
            crate::observe::after_request(cfg, audit);
        }
    }
    match worst {
        Exit::Ok => Ok(()),
        worst => Err(Error::SyncFailed(worst)),
    }
}
