//! `syncgate sync`: one request per mirror through the queue, with a
//! decision line before anything runs and an outcome line after.

use crate::audit::{Audit, Level, Line};
use crate::config::Config;
use crate::error::{exit, Error, Result};
use crate::queue::state::RunResult;
use crate::queue::statedir::StateDir;
use crate::queue::{self, Requester};
use crate::sys::progress::{human_secs, say};

/// The start of an `outcome` line: who asked for which mirror.
fn outcome_line(req: &Requester, mirror: &str, extra: &[(&str, String)]) -> Line {
    let mut l = Line::new("outcome");
    l.kv("request", &req.request)
        .kv("mirror", mirror)
        .kv("trigger", req.trigger);
    for (k, v) in extra {
        l.kv(k, v);
    }
    l
}

/// An `outcome` line for a request that ended in an error before or
/// instead of a run.
fn error_outcome(
    audit: &mut Audit,
    req: &Requester,
    mirror: &str,
    extra: &[(&str, String)],
    e: &Error,
) {
    let mut l = outcome_line(req, mirror, extra);
    l.kv(
        "result",
        match e {
            Error::QueueTimeout { .. } => "queue-timeout",
            Error::Abandoned(_) => "abandoned",
            _ => "error",
        },
    )
    .kv("exit", e.exit_code())
    .kv("message", e.to_string());
    audit.log(Level::Error, &l);
}

/// Serves `mirrors` one after another and returns the worst exit code.
pub fn sync(
    cfg: &Config,
    mirrors: &[String],
    base: &Requester,
    extra: &[(&str, String)],
    audit: &mut Audit,
) -> Result<u8> {
    for m in mirrors {
        cfg.mirror(m)?;
    }
    if mirrors.is_empty() {
        say(&format!(
            "no mirrors are configured in {}; nothing to do",
            cfg.path.display()
        ));
        return Ok(exit::OK);
    }
    let sd = match StateDir::open(&cfg.state_dir) {
        Ok(sd) => sd,
        Err(e) => {
            for name in mirrors {
                error_outcome(audit, base, name, extra, &e);
            }
            return Err(e);
        }
    };
    let mut worst = exit::OK;
    for name in mirrors {
        let mirror = cfg.mirror(name)?;
        let req = Requester {
            request: if mirrors.len() > 1 {
                format!("{}.{name}", base.request)
            } else {
                base.request.clone()
            },
            ..base.clone()
        };
        match queue::serve(cfg, &sd, mirror, &req, audit) {
            Ok(s) => {
                let r = &s.record;
                let how = if s.coalesced {
                    format!("served by run #{} (it started after this request)", r.run)
                } else {
                    format!("run #{}", r.run)
                };
                let took = human_secs(r.ended.saturating_sub(r.started));
                let summary = match r.result {
                    RunResult::Success => format!(
                        "{name}: {how} succeeded in {took}: {} files, {} bytes transferred, {} deleted",
                        r.files, r.bytes, r.deleted
                    ),
                    _ => format!(
                        "{name}: {how} {} after {took}: {}{}",
                        if r.result == RunResult::Failed { "FAILED" } else { r.result.as_str() },
                        r.message,
                        r.rsync_exit
                            .filter(|c| *c != 0)
                            .map(|c| format!(" [rsync exit {c}: {}]", crate::owner::rsync::describe(c)))
                            .unwrap_or_default()
                    ),
                };
                say(&summary);
                let mut l = outcome_line(&req, name, extra);
                l.kv("run", r.run)
                    .kv("coalesced", if s.coalesced { "yes" } else { "no" })
                    .kv("queue_wait", s.waited)
                    .kv("duration", r.ended.saturating_sub(r.started))
                    .kv("bytes", r.bytes)
                    .kv("files", r.files)
                    .kv("deleted", r.deleted)
                    .kv(
                        "rsync_exit",
                        r.rsync_exit
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into()),
                    )
                    .kv("result", r.result.as_str())
                    .kv("exit", r.exit_code);
                if r.result != RunResult::Success {
                    l.kv("message", &r.message);
                }
                audit.log(
                    if r.result == RunResult::Success {
                        Level::Info
                    } else {
                        Level::Error
                    },
                    &l,
                );
                worst = worst.max(r.exit_code);
            }
            Err(e) => {
                error_outcome(audit, &req, name, extra, &e);
                say(&format!("{name}: {e}"));
                worst = worst.max(e.exit_code());
            }
        }
    }
    Ok(worst)
}
