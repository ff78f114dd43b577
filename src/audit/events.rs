//! Every audit line syncgate writes, as a typed event. Each event renders
//! its own [`Line`] (the keys, their order, their values) and picks its
//! [`Level`]; callers build an event and hand it to [`Audit::record`].
//!
//! The line format is an interface (README "Reading the audit log"): keys
//! are added at the end, never renamed, removed or reordered.
//!
//! [`Audit::record`]: crate::audit::Audit::record

use std::net::IpAddr;

use crate::audit::{Level, Line};
use crate::error::Error;
use crate::run::{Requester, RunRecord, RunResult, Running};

/// One audit event: its severity and its line.
pub trait Event {
    fn level(&self) -> Level;
    fn line(&self) -> Line;
}

/// The client's address and port, from `SSH_CONNECTION`.
pub type Client = Option<(IpAddr, u16)>;

/// How an SSH request came in: the key (from the admin-written
/// authorized_keys line) and the client. Added to its outcome lines.
#[derive(Debug, Clone, Copy)]
pub struct Via<'a> {
    pub key: &'a str,
    pub client: Client,
}

/// `event=decision`: the gate's verdict on one SSH request, written before
/// anything runs.
pub struct Decision<'a> {
    pub request: &'a str,
    pub key: &'a str,
    pub client: Client,
    /// The client's command, already escaped and capped for the log;
    /// `None` for an interactive login (no command).
    pub command: Option<&'a str>,
    pub verdict: Verdict<'a>,
}

pub enum Verdict<'a> {
    /// Accepted; `action` is the request in canonical form.
    Allow { action: &'a str },
    /// Refused; `reason` is the refusal's stable reason.
    Refuse { reason: &'a str },
    /// The key named on the forced command is not in the config.
    UnknownKey,
    /// The config could not be loaded.
    ConfigError { message: &'a str },
}

impl Event for Decision<'_> {
    fn level(&self) -> Level {
        match self.verdict {
            Verdict::Allow { .. } => Level::Notice,
            Verdict::Refuse { .. } => Level::Warning,
            Verdict::UnknownKey | Verdict::ConfigError { .. } => Level::Error,
        }
    }

    fn line(&self) -> Line {
        let mut l = Line::new("decision");
        l.kv("request", self.request).kv("key", self.key);
        match self.client {
            Some((ip, port)) => l.kv("client", ip).kv("port", port),
            None => l.kv("client", "-").kv("port", "-"),
        };
        l.kv("command", self.command.unwrap_or("(none)"));
        match &self.verdict {
            Verdict::Allow { action } => l
                .kv("decision", "allow")
                .kv("reason", "ok")
                .kv("action", action),
            Verdict::Refuse { reason } => l.kv("decision", "refuse").kv("reason", reason),
            Verdict::UnknownKey => l.kv("decision", "refuse").kv("reason", "unknown-key"),
            Verdict::ConfigError { message } => l
                .kv("decision", "error")
                .kv("reason", "config")
                .kv("message", message),
        };
        l
    }
}

/// `event=request`: a local `syncgate sync` (command line or timer),
/// allowed because whoever runs it may read the config.
pub struct Request<'a> {
    pub req: &'a Requester,
    pub mirrors: &'a [String],
}

impl Event for Request<'_> {
    fn level(&self) -> Level {
        Level::Notice
    }

    fn line(&self) -> Line {
        let mut l = Line::new("request");
        l.kv("request", &self.req.request)
            .kv("trigger", self.req.trigger)
            .kv("from", &self.req.who)
            .kv("command", format!("sync {}", self.mirrors.join(" ")))
            .kv("decision", "allow")
            .kv("reason", "local");
        l
    }
}

/// `event=state-corrupt`: the mirror's state file was unreadable and was
/// replaced by an empty history.
pub struct StateCorrupt<'a> {
    pub mirror: &'a str,
    pub detail: &'a str,
}

impl Event for StateCorrupt<'_> {
    fn level(&self) -> Level {
        Level::Warning
    }

    fn line(&self) -> Line {
        let mut l = Line::new("state-corrupt");
        l.kv("mirror", self.mirror).kv("detail", self.detail);
        l
    }
}

/// `event=observe-failed`: the run history or the metrics file could not
/// be written (the run itself stands).
pub struct ObserveFailed<'a> {
    /// The mirror whose run it was (`None` for the metrics file, which
    /// covers every mirror).
    pub mirror: Option<&'a str>,
    /// `history` or `metrics`.
    pub what: &'a str,
    pub detail: &'a str,
}

impl Event for ObserveFailed<'_> {
    fn level(&self) -> Level {
        Level::Warning
    }

    fn line(&self) -> Line {
        let mut l = Line::new("observe-failed");
        if let Some(m) = self.mirror {
            l.kv("mirror", m);
        }
        l.kv("what", self.what).kv("detail", self.detail);
        l
    }
}

/// `event=run-died`: the lock holder found a run whose process vanished.
pub struct RunDied<'a> {
    pub mirror: &'a str,
    pub dead: &'a Running,
}

impl Event for RunDied<'_> {
    fn level(&self) -> Level {
        Level::Warning
    }

    fn line(&self) -> Line {
        let mut l = Line::new("run-died");
        l.kv("mirror", self.mirror)
            .kv("run", self.dead.run)
            .kv("pid", self.dead.pid)
            .kv("request", &self.dead.request);
        l
    }
}

/// `event=run-start`: a request holds the lock and starts a run.
pub struct RunStart<'a> {
    pub mirror: &'a str,
    pub run: u64,
    pub req: &'a Requester,
}

impl Event for RunStart<'_> {
    fn level(&self) -> Level {
        Level::Info
    }

    fn line(&self) -> Line {
        let mut l = Line::new("run-start");
        l.kv("mirror", self.mirror)
            .kv("run", self.run)
            .kv("request", &self.req.request)
            .kv("trigger", self.req.trigger);
        l
    }
}

/// Why a request left the queue before it was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    ClientDisconnected,
    Signal,
    QueueTimeout,
}

impl Leave {
    pub fn as_str(self) -> &'static str {
        match self {
            Leave::ClientDisconnected => "client-disconnected",
            Leave::Signal => "signal",
            Leave::QueueTimeout => "queue-timeout",
        }
    }
}

/// `event=abandoned`: a request left the queue.
pub struct Abandoned<'a> {
    pub request: &'a str,
    pub mirror: &'a str,
    /// Seconds it waited.
    pub queue_wait: u64,
    pub reason: Leave,
}

impl Event for Abandoned<'_> {
    fn level(&self) -> Level {
        Level::Warning
    }

    fn line(&self) -> Line {
        let mut l = Line::new("abandoned");
        l.kv("request", self.request)
            .kv("mirror", self.mirror)
            .kv("queue_wait", self.queue_wait)
            .kv("reason", self.reason.as_str());
        l
    }
}

/// `event=refused reason=queue-full`: a request that would have had to
/// wait found `max_waiting` requests of its mirror (`limit=mirror`) or of
/// its key (`limit=key`) already waiting, and was answered at once (75).
pub struct QueueFull<'a> {
    pub request: &'a str,
    pub mirror: &'a str,
    pub key: Option<&'a str>,
    /// `mirror` or `key`.
    pub limit: &'a str,
    pub waiting: u64,
    pub max_waiting: u64,
}

impl Event for QueueFull<'_> {
    fn level(&self) -> Level {
        Level::Warning
    }

    fn line(&self) -> Line {
        let mut l = Line::new("refused");
        l.kv("request", self.request)
            .kv("mirror", self.mirror)
            .kv("key", self.key.unwrap_or("-"))
            .kv("reason", "queue-full")
            .kv("limit", self.limit)
            .kv("waiting", self.waiting)
            .kv("max_waiting", self.max_waiting);
        l
    }
}

/// `event=outcome`: how one request for one mirror ended.
pub struct Outcome<'a> {
    pub req: &'a Requester,
    pub mirror: &'a str,
    pub via: Option<Via<'a>>,
    pub end: End<'a>,
}

pub enum End<'a> {
    /// A run served it: the one it started, or one it was coalesced into.
    Served {
        record: &'a RunRecord,
        coalesced: bool,
        /// Seconds it waited for the lock.
        queue_wait: u64,
    },
    /// It ended in an error before or instead of a run.
    Failed(&'a Error),
}

impl Event for Outcome<'_> {
    fn level(&self) -> Level {
        match self.end {
            End::Served { record, .. } if record.result == RunResult::Success => Level::Info,
            _ => Level::Error,
        }
    }

    fn line(&self) -> Line {
        let mut l = Line::new("outcome");
        l.kv("request", &self.req.request)
            .kv("mirror", self.mirror)
            .kv("trigger", self.req.trigger);
        if let Some(via) = self.via {
            l.kv("key", via.key);
            if let Some((ip, port)) = via.client {
                l.kv("client", format!("{ip}:{port}"));
            }
        }
        match self.end {
            End::Served {
                record: r,
                coalesced,
                queue_wait,
            } => {
                l.kv("run", r.run)
                    .kv("coalesced", if coalesced { "yes" } else { "no" })
                    .kv("queue_wait", queue_wait)
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
                    .kv("exit", r.exit_code.code());
                if r.result != RunResult::Success {
                    l.kv("message", &r.message);
                }
            }
            End::Failed(e) => {
                let result = match e {
                    Error::QueueTimeout { .. } => "queue-timeout",
                    Error::QueueFull { .. } => "queue-full",
                    Error::Abandoned(_) => "abandoned",
                    _ => "error",
                };
                l.kv("result", result)
                    .kv("exit", e.exit().code())
                    .kv("message", e.to_string());
            }
        }
        l
    }
}

/// `event=push-start`: a hub starts one push (one ssh) to a downstream.
pub struct PushStart<'a> {
    pub mirror: &'a str,
    pub downstream: &'a crate::config::Downstream,
    /// `all`, `stage1` or `stage2`.
    pub stage: &'a str,
    /// The hub's release (run id) the push carries.
    pub run: u64,
}

impl Event for PushStart<'_> {
    fn level(&self) -> Level {
        Level::Info
    }

    fn line(&self) -> Line {
        let d = self.downstream;
        let mut l = Line::new("push-start");
        l.kv("mirror", self.mirror)
            .kv("downstream", &d.name)
            .kv("host", &d.host)
            .kv("port", d.port)
            .kv("user", &d.user)
            .kv("archive", &d.archive)
            .kv("kind", d.kind)
            .kv("stage", self.stage)
            .kv("run", self.run);
        l
    }
}

/// `event=push-end`: how one push ended.
pub struct PushEnd<'a> {
    pub mirror: &'a str,
    pub downstream: &'a crate::config::Downstream,
    pub stage: &'a str,
    pub run: u64,
    /// `success`, `triggered`, `failed`, `timeout`, `aborted`.
    pub result: &'a str,
    /// Whether the downstream has (or is getting) the release.
    pub ok: bool,
    /// ssh's exit status (`-` when it was killed).
    pub exit: Option<i32>,
    pub took: std::time::Duration,
    pub message: &'a str,
}

impl Event for PushEnd<'_> {
    fn level(&self) -> Level {
        if self.ok {
            Level::Notice
        } else {
            Level::Warning
        }
    }

    fn line(&self) -> Line {
        let d = self.downstream;
        let mut l = Line::new("push-end");
        l.kv("mirror", self.mirror)
            .kv("downstream", &d.name)
            .kv("host", &d.host)
            .kv("port", d.port)
            .kv("stage", self.stage)
            .kv("run", self.run)
            .kv("result", self.result)
            .kv(
                "exit",
                self.exit
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
            )
            .kv("duration", format!("{:.1}", self.took.as_secs_f64()))
            .kv("message", self.message);
        l
    }
}

/// `event=push-wait`: a staged fan-out's `push_delay` passed before every
/// downstream answered stage 1; stage 2 went ahead (runmirrors' rule).
pub struct PushWaitMissed<'a> {
    pub mirror: &'a str,
    pub run: u64,
    pub push_delay: u64,
    pub missed: &'a [&'a str],
}

impl Event for PushWaitMissed<'_> {
    fn level(&self) -> Level {
        Level::Warning
    }

    fn line(&self) -> Line {
        let mut l = Line::new("push-wait");
        l.kv("mirror", self.mirror)
            .kv("run", self.run)
            .kv("push_delay", self.push_delay)
            .kv("missed", self.missed.join(","));
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use crate::run::{Outcome as RunOutcome, Trigger};

    fn req() -> Requester {
        Requester {
            trigger: Trigger::Ssh,
            request: "r1-2".into(),
            who: "key=jenkins client=192.0.2.7:51234".into(),
            stage: crate::run::Stage::All,
            full: false,
            mhop: false,
        }
    }

    #[test]
    fn a_decision_line_names_the_client_and_the_verdict() {
        let d = Decision {
            request: "r1-2",
            key: "jenkins",
            client: Some(("192.0.2.7".parse().unwrap(), 51234)),
            command: Some("sync iso"),
            verdict: Verdict::Allow { action: "sync iso" },
        };
        assert_eq!(
            d.line().as_str(),
            r#"event=decision request=r1-2 key=jenkins client=192.0.2.7 port=51234 command="sync iso" decision=allow reason=ok action="sync iso""#
        );
        assert_eq!(d.level(), Level::Notice);
        let d = Decision {
            client: None,
            command: None,
            verdict: Verdict::ConfigError { message: "bad" },
            ..d
        };
        assert_eq!(
            d.line().as_str(),
            "event=decision request=r1-2 key=jenkins client=- port=- command=(none) decision=error reason=config message=bad"
        );
    }

    #[test]
    fn an_outcome_line_has_the_run_figures_and_a_failure_its_message() {
        let rec = RunRecord {
            run: 7,
            trigger: Trigger::Ssh,
            request: "r1-2".into(),
            requester: String::new(),
            started: 100,
            ended: 142,
            outcome: RunOutcome::failed(RunResult::Failed, "rsync exited 23".into(), Some(23)),
            served: 1,
            stage: crate::run::Stage::All,
        };
        let req = req();
        let o = Outcome {
            req: &req,
            mirror: "iso",
            via: Some(Via {
                key: "jenkins",
                client: Some(("192.0.2.7".parse().unwrap(), 51234)),
            }),
            end: End::Served {
                record: &rec,
                coalesced: false,
                queue_wait: 3,
            },
        };
        assert_eq!(
            o.line().as_str(),
            r#"event=outcome request=r1-2 mirror=iso trigger=ssh key=jenkins client=192.0.2.7:51234 run=7 coalesced=no queue_wait=3 duration=42 bytes=0 files=0 deleted=0 rsync_exit=23 result=failed exit=1 message="rsync exited 23""#
        );
        assert_eq!(o.level(), Level::Error);
        let e = Error::Abandoned("client disconnected while queued".into());
        let o = Outcome {
            via: None,
            end: End::Failed(&e),
            ..o
        };
        assert_eq!(
            o.line().as_str(),
            r#"event=outcome request=r1-2 mirror=iso trigger=ssh result=abandoned exit=1 message="client disconnected while queued""#
        );
        assert_eq!(Exit::SyncFailed.code(), 1);
    }
}
