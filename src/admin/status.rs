//! `syncgate status`: what each mirror is doing and how its last runs went.

use std::io::Write;

use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::hub::state::{PushRecord, PushState};
use crate::queue::state::MirrorState;
use crate::queue::statedir::StateDir;
use crate::run::{now, RunRecord, Running, Snapshots};
use crate::sys::progress::human_secs;
use crate::sys::timefmt::iso;

/// The `status --json` document. Field names are a stable interface:
/// fields may be added, never renamed or removed, within `version` 1.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    pub version: u32,
    pub generated: u64,
    pub mirrors: Vec<MirrorStatus>,
}

#[derive(Debug, Serialize)]
pub struct MirrorStatus {
    pub name: String,
    /// "idle", "running", or "stale" (a run is recorded as running but no
    /// process holds the lock: it died and the next request will record it).
    pub state: &'static str,
    pub running: Option<Running>,
    pub waiting: u64,
    pub last_run: Option<RunRecord>,
    pub last_success: Option<u64>,
    pub last_success_age: Option<u64>,
    /// With snapshot publishing: the live snapshot and the kept ones, as the
    /// last run that reported them left them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshots>,
    pub warning: Option<String>,
    /// A hub's downstream mirrors and how their last push went.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downstreams: Vec<DownstreamStatus>,
    /// A hub: a push of this mirror is under way (its push lock is held).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pushing: bool,
    /// Every finished run kept in the state, oldest first (the status
    /// page's chart; not part of the JSON).
    #[serde(skip)]
    pub(crate) runs: Vec<RunRecord>,
}

#[derive(Debug, Serialize)]
pub struct DownstreamStatus {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub mode: &'static str,
    pub kind: &'static str,
    pub last_push: Option<PushRecord>,
    /// Seconds since the last push ended.
    pub age: Option<u64>,
    /// The hub's release (run id) the downstream last got in full.
    pub release: Option<u64>,
}

fn downstreams(cfg: &Config, sd: &StateDir, name: &str, t: u64) -> Vec<DownstreamStatus> {
    let Ok(m) = cfg.mirror(name) else {
        return Vec::new();
    };
    if m.fanout.downstreams.is_empty() {
        return Vec::new();
    }
    let st = PushState::load(sd, name)
        .map(|(s, _)| s)
        .unwrap_or_default();
    m.fanout
        .downstreams
        .iter()
        .map(|d| {
            let s = st.get(&d.name);
            DownstreamStatus {
                name: d.name.clone(),
                host: d.host.clone(),
                port: d.port,
                mode: d.mode.as_str(),
                kind: d.kind.as_str(),
                age: s.last_push.as_ref().map(|p| t.saturating_sub(p.ended)),
                last_push: s.last_push,
                release: s.release,
            }
        })
        .collect()
}

pub(crate) fn collect(cfg: &Config, sd: &StateDir, names: &[String]) -> Result<StatusDoc> {
    let t = now();
    let mut mirrors = Vec::new();
    for name in names {
        let mut loaded = MirrorState::load(sd, name)?;
        let mut usage = crate::sys::proc_locks::usage(&sd.lock_path(name));
        if loaded.state.running.is_some() && !usage.held {
            // The run may have ended between reading the state and looking
            // at the lock: read again before calling it stale.
            loaded = MirrorState::load(sd, name)?;
            usage = crate::sys::proc_locks::usage(&sd.lock_path(name));
        }
        let st = loaded.state;
        let state = match (&st.running, usage.held) {
            (Some(_), true) => "running",
            (Some(_), false) => "stale",
            (None, _) => "idle",
        };
        mirrors.push(MirrorStatus {
            name: name.clone(),
            state,
            waiting: usage.waiting,
            last_run: st.last_run().cloned(),
            last_success: st.last_success,
            last_success_age: st.last_success.map(|s| t.saturating_sub(s)),
            snapshot: st
                .runs
                .iter()
                .rev()
                .find_map(|r| r.outcome.snapshot.clone()),
            running: st.running,
            warning: loaded.warning,
            downstreams: downstreams(cfg, sd, name, t),
            pushing: crate::sys::proc_locks::usage(&crate::hub::push_lock_path(sd, name)).held,
            runs: st.runs,
        });
    }
    Ok(StatusDoc {
        version: 1,
        generated: t,
        mirrors,
    })
}

/// Where `status` prints its text form (the JSON always goes to stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextTo {
    /// `syncgate status` on the command line.
    Stdout,
    /// The SSH verb: stdout carries only machine output.
    Stderr,
}

/// `status`: collects `names` and prints them as JSON (stdout) or as text.
pub fn show(cfg: &Config, names: &[String], json: bool, text_to: TextTo) -> Result<()> {
    let sd = StateDir::open(&cfg.state_dir)?;
    let doc = collect(cfg, &sd, names)?;
    // A reader that went away (`| head`, a client that left) is not an error.
    if json {
        let _ = std::io::stdout().write_all(to_json(&doc).as_bytes());
    } else if text_to == TextTo::Stdout {
        let _ = std::io::stdout().write_all(render(&doc).as_bytes());
    } else {
        let _ = std::io::stderr().write_all(render(&doc).as_bytes());
    }
    Ok(())
}

/// The `status --json` text (also the status page's `status.json`).
pub(crate) fn to_json(doc: &StatusDoc) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("status serializes");
    s.push('\n');
    s
}

fn render(doc: &StatusDoc) -> String {
    let mut out = String::new();
    let t = doc.generated;
    for m in &doc.mirrors {
        let head = match (&m.running, m.state) {
            (Some(r), "running") => format!(
                "running run #{} since {} ({}), {} by {}",
                r.run,
                iso(r.started),
                human_secs(t.saturating_sub(r.started)),
                r.trigger,
                r.requester
            ),
            (Some(r), _) => format!(
                "stale: run #{} (pid {}) died; the next request records it",
                r.run, r.pid
            ),
            _ => "idle".into(),
        };
        out.push_str(&format!("{}: {}; {} waiting\n", m.name, head, m.waiting));
        match &m.last_run {
            Some(r) => out.push_str(&format!(
                "  last run: #{} {} at {} ({} ago, took {}): {} files, {} bytes, {} deleted, served {}{}\n",
                r.run,
                r.result.as_str(),
                iso(r.ended),
                human_secs(t.saturating_sub(r.ended)),
                human_secs(r.ended.saturating_sub(r.started)),
                r.files,
                r.bytes,
                r.deleted,
                r.served,
                if r.message.is_empty() { String::new() } else { format!("; {}", r.message) }
            )),
            None => out.push_str("  last run: never\n"),
        }
        if let Some(snap) = &m.snapshot {
            out.push_str(&format!(
                "  snapshot: {} live; kept: {}\n",
                snap.live,
                snap.kept.join(" ")
            ));
        }
        match m.last_success {
            Some(s) => out.push_str(&format!(
                "  last success: {} ({} ago)\n",
                iso(s),
                human_secs(t.saturating_sub(s))
            )),
            None => out.push_str("  last success: never\n"),
        }
        if m.pushing {
            out.push_str("  pushing downstreams now\n");
        }
        for d in &m.downstreams {
            let how = match &d.last_push {
                Some(p) => format!(
                    "{} {} of release #{} {} ago (took {}){}",
                    p.stage,
                    p.result.as_str(),
                    p.run,
                    human_secs(t.saturating_sub(p.ended)),
                    human_secs(p.ended.saturating_sub(p.started)),
                    if p.result.ok() {
                        String::new()
                    } else {
                        format!(": {}", p.message)
                    }
                ),
                None => "never pushed".into(),
            };
            let has = d
                .release
                .map(|r| format!("has #{r}"))
                .unwrap_or_else(|| "has nothing from here yet".into());
            out.push_str(&format!(
                "  downstream {} ({}:{}, {}, {}): {how}; {has}\n",
                d.name, d.host, d.port, d.kind, d.mode
            ));
        }
        if let Some(w) = &m.warning {
            out.push_str(&format!("  warning: {w}\n"));
        }
    }
    out
}
