//! `syncgate status`: what each mirror is doing and how its last runs went,
//! how fresh it is (`max_age`), and `status --check`, the same read as a
//! Nagios/Icinga plugin.
//!
//! [`collect`] is the one reading of a mirror's state, lock and history:
//! the text, `--json`, `--check` and the metrics file all render it.

use std::io::Write;

use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
use crate::hub::state::{PushRecord, PushState};
use crate::queue::history::{self, Timing};
use crate::queue::state::{Counts, MirrorState};
use crate::queue::statedir::StateDir;
use crate::run::{now, RunRecord, RunResult, Running, Snapshots};
use crate::sys::progress::human_secs;
use crate::sys::timefmt::iso;

/// How much of the end of a mirror's history `status` reads for the
/// typical duration: some 40 runs, enough for [`TYPICAL_OF`] successes
/// unless most runs fail (the state file's runs are added then).
pub const RECENT_BYTES: u64 = 16 << 10;

/// How many of the recent successful runs the typical duration is the
/// median of.
pub const TYPICAL_OF: usize = 20;

/// A run still recorded as running this long after its mirror's `timeout`
/// is stuck (the gate stops a run at `timeout`).
pub const STUCK_GRACE: u64 = 300;

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
    /// Finished runs since the last success that did not succeed.
    pub failures_in_row: u64,
    /// Median duration in seconds of the last (up to 20) successful runs
    /// in the history; `null` before the first success.
    pub typical_duration: Option<u64>,
    /// The mirror's `max_age` in seconds; `null` when not configured.
    pub max_age: Option<u64>,
    /// `fresh` (last success within `max_age`), `stale` (older), `never`
    /// (no success yet) or `unknown` (no `max_age` configured).
    pub freshness: &'static str,
    /// Cumulative counts: `runs` by result, `requests` served (coalesced
    /// included), `failures_in_row`.
    pub counts: Counts,
    /// Lines of the history file that were skipped (a crash mid-write).
    pub history_warning: Option<String>,
    /// A hub's downstream mirrors and how their last push went.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downstreams: Vec<DownstreamStatus>,
    /// A hub: the run id of its newest release (what every downstream
    /// should have).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<u64>,
    /// A hub: a push of this mirror is under way (its push lock is held).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pushing: bool,
    /// Every finished run kept in the state, oldest first (the status
    /// page's chart; not part of the JSON).
    #[serde(skip)]
    pub(crate) runs: Vec<RunRecord>,
}

#[cfg(test)]
impl MirrorStatus {
    /// An idle mirror that never ran, for tests to change.
    pub(crate) fn blank(name: &str) -> MirrorStatus {
        MirrorStatus {
            name: name.into(),
            state: "idle",
            running: None,
            waiting: 0,
            last_run: None,
            last_success: None,
            last_success_age: None,
            snapshot: None,
            warning: None,
            failures_in_row: 0,
            typical_duration: None,
            max_age: None,
            freshness: "unknown",
            counts: Counts::default(),
            history_warning: None,
            downstreams: Vec::new(),
            release: None,
            pushing: false,
            runs: Vec::new(),
        }
    }
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

/// The median of `v` (the mean of the two middle values for an even count).
fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

/// The median duration of the last [`TYPICAL_OF`] successful `runs`
/// (oldest first).
pub fn typical_duration(runs: &[Timing]) -> Option<u64> {
    median(
        runs.iter()
            .rev()
            .filter(|r| r.result == RunResult::Success)
            .take(TYPICAL_OF)
            .map(|r| r.ended.saturating_sub(r.started))
            .collect(),
    )
}

/// `fresh`, `stale`, `never` or `unknown` (no `max_age`).
pub fn freshness(max_age: Option<u64>, last_success_age: Option<u64>) -> &'static str {
    match (max_age, last_success_age) {
        (None, _) => "unknown",
        (Some(_), None) => "never",
        (Some(max), Some(age)) if age > max => "stale",
        (Some(_), Some(_)) => "fresh",
    }
}

/// How much [`collect`] reads beyond the state files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Everything (`status`, `--check`): the kernel's lock table and the
    /// end of every history.
    Full,
    /// What a request can afford after it is served (the metrics file):
    /// the lock table only while some mirror has a run in progress, and a
    /// history only when its state file's 100 runs hold fewer than 20
    /// successes. A read of /proc/locks can wait for an RCU grace period,
    /// 5 to 15 ms on a busy machine; without a run in progress nobody
    /// waits longer than a lock holder takes to coalesce (milliseconds),
    /// so `waiting` is 0.
    Quick,
}

/// Reads every mirror in `names`: state file, lock usage and the end of
/// its history.
pub fn collect(cfg: &Config, sd: &StateDir, names: &[String], depth: Depth) -> Result<StatusDoc> {
    let t = now();
    let mut mirrors = Vec::new();
    let mut states = Vec::new();
    for name in names {
        states.push(MirrorState::load(sd, name)?);
    }
    let any_running = states.iter().any(|l| l.state.running.is_some());
    let mut table = (depth == Depth::Full || any_running).then(crate::sys::proc_locks::Table::read);
    for (name, mut loaded) in names.iter().zip(states) {
        let mut usage = table
            .as_ref()
            .map(|t| t.usage(&sd.lock_path(name)))
            .unwrap_or_default();
        if loaded.state.running.is_some() && !usage.held {
            // The run may have ended between reading the state and looking
            // at the lock: read again before calling it stale.
            loaded = MirrorState::load(sd, name)?;
            usage = crate::sys::proc_locks::usage(&sd.lock_path(name));
        }
        let st = loaded.state;
        let kept: Vec<Timing> = st.runs.iter().map(Timing::from).collect();
        let enough = |runs: &[Timing]| {
            runs.iter()
                .filter(|r| r.result == RunResult::Success)
                .count()
                >= TYPICAL_OF
        };
        let (mut recent, mut history_warning) = (Vec::new(), None);
        if depth == Depth::Full || !enough(&kept) {
            match history::read::<Timing>(sd, name, RECENT_BYTES) {
                Ok(h) => {
                    recent = h.runs;
                    history_warning = (!h.warnings.is_empty()).then(|| h.warnings.join("; "));
                }
                Err(e) => history_warning = Some(e.to_string()),
            }
        }
        if !enough(&recent) && kept.len() > recent.len() {
            // Too little history (new, or mostly failures), or not read:
            // the state file's runs reach further back.
            recent = kept;
        }
        let max_age = cfg.mirrors.get(name).and_then(|m| m.max_age);
        let last_success_age = st.last_success.map(|s| t.saturating_sub(s));
        let state = match (&st.running, usage.held) {
            (Some(_), true) => "running",
            (Some(_), false) => "stale",
            (None, _) => "idle",
        };
        let release = cfg
            .mirror(name)
            .is_ok_and(|m| !m.fanout.downstreams.is_empty())
            .then(|| st.release())
            .flatten();
        mirrors.push(MirrorStatus {
            name: name.clone(),
            state,
            waiting: usage.waiting,
            last_run: st.last_run().cloned(),
            last_success: st.last_success,
            last_success_age,
            snapshot: st
                .runs
                .iter()
                .rev()
                .find_map(|r| r.outcome.snapshot.clone()),
            failures_in_row: st.failures_in_row(),
            typical_duration: typical_duration(&recent),
            max_age,
            freshness: freshness(max_age, last_success_age),
            counts: st.counts,
            history_warning,
            running: st.running,
            warning: loaded.warning,
            downstreams: downstreams(cfg, sd, name, t),
            release,
            pushing: {
                let lock = crate::hub::push_lock_path(sd, name);
                // Only a hub's mirror has a push lock file to look up.
                lock.exists()
                    && table
                        .get_or_insert_with(crate::sys::proc_locks::Table::read)
                        .usage(&lock)
                        .held
            },
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
    let doc = collect(cfg, &sd, names, Depth::Full)?;
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
        out.push_str(&format!("  freshness: {}\n", freshness_text(m)));
        if m.failures_in_row > 0 {
            out.push_str(&format!("  failures in a row: {}\n", m.failures_in_row));
        }
        if let Some(d) = m.typical_duration {
            out.push_str(&format!(
                "  typical duration: {} (median of the last successful runs, up to {TYPICAL_OF})\n",
                human_secs(d)
            ));
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
        if let Some(w) = &m.history_warning {
            out.push_str(&format!("  warning: history: {w}\n"));
        }
    }
    out
}

/// The freshness line of the text form: what the word means, with numbers.
fn freshness_text(m: &MirrorStatus) -> String {
    let max = m.max_age.map(human_secs).unwrap_or_default();
    match (m.freshness, m.last_success_age) {
        ("fresh", Some(age)) => format!(
            "fresh (last success {} ago, max_age {max})",
            human_secs(age)
        ),
        ("stale", Some(age)) => format!(
            "OUT OF DATE: last success {} ago, more than max_age {max}",
            human_secs(age)
        ),
        ("never", _) => format!("OUT OF DATE: never synced (max_age {max})"),
        _ => "not watched (no max_age configured)".into(),
    }
}

/// A monitoring plugin's result (Nagios/Icinga plugin API): its exit
/// status and word. `status --check` exits with these, not with syncgate's
/// own codes ([`crate::error::Exit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Plugin {
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn word(self) -> &'static str {
        match self {
            Plugin::Ok => "OK",
            Plugin::Warning => "WARNING",
            Plugin::Critical => "CRITICAL",
            Plugin::Unknown => "UNKNOWN",
        }
    }

    /// How bad: OK < WARNING < UNKNOWN < CRITICAL (a mirror known to be
    /// out of date is worse than one whose state cannot be read).
    fn rank(self) -> u8 {
        match self {
            Plugin::Ok => 0,
            Plugin::Warning => 1,
            Plugin::Unknown => 2,
            Plugin::Critical => 3,
        }
    }

    pub fn worst(self, other: Plugin) -> Plugin {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// Plugin output text: no `|` (it starts the perfdata) and one line.
fn plugin_text(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The rules of `status --check` for one mirror, worst first:
///
/// * UNKNOWN: its state file is unreadable or corrupt.
/// * CRITICAL: it never synced successfully, or its last success is older
///   than `max_age`.
/// * WARNING: its last finished run did not succeed (but it is still
///   fresh); a run died without a result and nobody has noticed yet
///   (`state` stale); or a run has been running for longer than the
///   mirror's `timeout` plus [`STUCK_GRACE`].
/// * OK otherwise.
///
/// Returns the mirror's result and what to say about it.
pub fn check_mirror(m: &MirrorStatus, timeout: u64, now: u64) -> (Plugin, String) {
    let mut worst = Plugin::Ok;
    let mut said = Vec::new();
    let mut note = |p: Plugin, text: String| {
        worst = worst.worst(p);
        said.push(text);
    };
    if let Some(w) = &m.warning {
        note(Plugin::Unknown, format!("state unreadable: {w}"));
    }
    let max = m.max_age.map(human_secs);
    match (m.last_success_age, &max) {
        (None, Some(max)) => note(Plugin::Critical, format!("never synced (max_age {max})")),
        (None, None) => note(Plugin::Critical, "never synced".into()),
        (Some(age), Some(max)) if m.freshness == "stale" => note(
            Plugin::Critical,
            format!("last success {} ago (max_age {max})", human_secs(age)),
        ),
        _ => {}
    }
    if m.failures_in_row > 0 {
        if let Some(r) = &m.last_run {
            note(
                Plugin::Warning,
                format!(
                    "last run #{} {} ({} in a row): {}",
                    r.run,
                    r.result.as_str(),
                    m.failures_in_row,
                    r.message
                ),
            );
        }
    }
    match (&m.running, m.state) {
        (Some(r), "stale") => note(
            Plugin::Warning,
            format!("run #{} (pid {}) died without a result", r.run, r.pid),
        ),
        (Some(r), "running") if now.saturating_sub(r.started) > timeout + STUCK_GRACE => note(
            Plugin::Warning,
            format!(
                "run #{} stuck: running for {} (timeout {})",
                r.run,
                human_secs(now.saturating_sub(r.started)),
                human_secs(timeout)
            ),
        ),
        _ => {}
    }
    // A hub: a downstream whose last push of the newest release failed
    // (not one a push is still under way for).
    if !m.pushing {
        let behind: Vec<String> = m
            .downstreams
            .iter()
            .filter(|d| m.release.is_some() && d.release < m.release)
            .filter_map(|d| {
                let p = d.last_push.as_ref()?;
                (!p.result.ok()).then(|| format!("{} {}", d.name, p.result.as_str()))
            })
            .collect();
        if !behind.is_empty() {
            note(
                Plugin::Warning,
                format!(
                    "downstreams without release #{}: {}",
                    m.release.unwrap_or(0),
                    behind.join(", ")
                ),
            );
        }
    }
    if said.is_empty() {
        said.push(match m.last_success_age {
            Some(age) => format!("OK, last success {} ago", human_secs(age)),
            None => "OK".into(),
        });
    }
    (
        worst,
        plugin_text(&format!("{}: {}", m.name, said.join(", "))),
    )
}

/// The perfdata of one mirror: `NAME_age` (seconds since the last
/// success, critical above `max_age`), `NAME_failures` (in a row, warning
/// above 0), `NAME_duration` (the last run's seconds), `NAME_waiting`.
fn perfdata(m: &MirrorStatus) -> String {
    let age = m
        .last_success_age
        .map_or("U".to_string(), |a| format!("{a}s"));
    let crit = m.max_age.map(|a| a.to_string()).unwrap_or_default();
    let duration = m.last_run.as_ref().map_or("U".to_string(), |r| {
        format!("{}s", r.ended.saturating_sub(r.started))
    });
    format!(
        "{n}_age={age};;{crit};0 {n}_failures={f};0;;0 {n}_duration={duration};;;0 {n}_waiting={w};;;0",
        n = m.name,
        f = m.failures_in_row,
        w = m.waiting
    )
}

/// `status --check`: one plugin line for `doc`, and its result.
pub fn check_line(cfg: &Config, doc: &StatusDoc) -> (Plugin, String) {
    if doc.mirrors.is_empty() {
        return (
            Plugin::Unknown,
            format!(
                "SYNCGATE UNKNOWN - no mirrors are configured in {}",
                cfg.path.display()
            ),
        );
    }
    let mut worst = Plugin::Ok;
    let mut texts = Vec::new();
    let mut perf = Vec::new();
    for m in &doc.mirrors {
        let timeout = cfg.mirrors.get(&m.name).map_or(u64::MAX / 2, |c| c.timeout);
        let (p, text) = check_mirror(m, timeout, doc.generated);
        worst = worst.worst(p);
        texts.push(text);
        perf.push(perfdata(m));
    }
    (
        worst,
        format!(
            "SYNCGATE {} - {} | {}",
            worst.word(),
            texts.join("; "),
            perf.join(" ")
        ),
    )
}

/// `syncgate status --check [MIRROR]`: prints one plugin line and returns
/// the plugin's exit status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). Any
/// error (config, state dir, unknown mirror) is UNKNOWN.
pub fn check(config: &std::path::Path, mirror: Option<&str>) -> Plugin {
    let run = || -> Result<(Plugin, String)> {
        let cfg = Config::load(config)?;
        let names = match mirror {
            Some(m) => vec![cfg.mirror(m)?.name.clone()],
            None => cfg.mirror_names(),
        };
        let sd = StateDir::open(&cfg.state_dir)?;
        let doc = collect(&cfg, &sd, &names, Depth::Full)?;
        Ok(check_line(&cfg, &doc))
    };
    let (p, line) = match run() {
        Ok(r) => r,
        Err(e) => (
            Plugin::Unknown,
            format!("SYNCGATE UNKNOWN - {}", plugin_text(&e.to_string())),
        ),
    };
    let _ = std::io::stdout().write_all(format!("{line}\n").as_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;
    use crate::run::{Outcome, Stage, Trigger};

    const NOW: u64 = 1_795_300_000;

    fn run(n: u64, result: RunResult, started: u64, took: u64) -> RunRecord {
        RunRecord {
            run: n,
            trigger: Trigger::Timer,
            request: format!("r{n}"),
            requester: "user=syncgate uid=998".into(),
            started,
            ended: started + took,
            outcome: Outcome {
                exit_code: if result == RunResult::Success {
                    Exit::Ok
                } else {
                    Exit::SyncFailed
                },
                ..Outcome::failed(result, "rsync said | no\nmore".to_string(), Some(23))
            },
            served: 1,
            stage: Stage::All,
        }
    }

    /// A mirror whose last success was `age` seconds ago (None: never),
    /// with `max_age`, and `failures` failed runs since.
    fn mirror(age: Option<u64>, max_age: Option<u64>, failures: u64) -> MirrorStatus {
        let last_success = age.map(|a| NOW - a);
        let last_run = if failures > 0 {
            Some(run(9, RunResult::Failed, NOW - 100, 40))
        } else {
            last_success.map(|s| run(8, RunResult::Success, s - 60, 60))
        };
        MirrorStatus {
            waiting: 2,
            last_run,
            last_success,
            last_success_age: age,
            failures_in_row: failures,
            max_age,
            freshness: freshness(max_age, age),
            ..MirrorStatus::blank("iso")
        }
    }

    fn check(m: &MirrorStatus) -> (Plugin, String) {
        check_mirror(m, 3600, NOW)
    }

    #[test]
    fn a_hub_warns_about_a_downstream_whose_push_failed() {
        use crate::hub::state::{PushRecord, PushResult};
        let mut m = mirror(Some(60), Some(3600), 0);
        m.release = Some(5);
        let push = |result| PushRecord {
            run: 5,
            stage: "all".into(),
            started: NOW - 10,
            ended: NOW - 5,
            result,
            exit: Some(255),
            message: String::new(),
        };
        let ds = |name: &str, release, last_push| DownstreamStatus {
            name: name.into(),
            host: "h".into(),
            port: 22,
            mode: "all",
            kind: "syncgate",
            last_push,
            age: Some(5),
            release,
        };
        m.downstreams = vec![
            ds("ok", Some(5), Some(push(PushResult::Success))),
            ds("never", None, None),
        ];
        assert_eq!(check(&m).0, Plugin::Ok);
        m.downstreams
            .push(ds("dead", Some(3), Some(push(PushResult::Failed))));
        let (p, text) = check(&m);
        assert_eq!(p, Plugin::Warning);
        assert!(
            text.contains("downstreams without release #5: dead failed"),
            "{text}"
        );
        m.pushing = true;
        assert_eq!(check(&m).0, Plugin::Ok, "a push is under way");
    }

    #[test]
    fn freshness_is_measured_against_max_age() {
        assert_eq!(freshness(None, Some(10)), "unknown");
        assert_eq!(freshness(None, None), "unknown");
        assert_eq!(freshness(Some(60), None), "never");
        assert_eq!(freshness(Some(60), Some(60)), "fresh");
        assert_eq!(freshness(Some(60), Some(61)), "stale");
    }

    #[test]
    fn a_fresh_mirror_whose_last_run_succeeded_is_ok() {
        let (p, text) = check(&mirror(Some(600), Some(7200), 0));
        assert_eq!(p, Plugin::Ok);
        assert_eq!(text, "iso: OK, last success 10m00s ago");
        assert_eq!(
            check(&mirror(Some(600_000), None, 0)).0,
            Plugin::Ok,
            "no max_age: no age rule"
        );
    }

    #[test]
    fn past_max_age_or_never_synced_is_critical() {
        assert_eq!(
            check(&mirror(Some(18_000), Some(7200), 0)),
            (
                Plugin::Critical,
                "iso: last success 5h00m ago (max_age 2h00m)".into()
            )
        );
        assert_eq!(
            check(&mirror(None, Some(7200), 0)),
            (Plugin::Critical, "iso: never synced (max_age 2h00m)".into())
        );
        assert_eq!(check(&mirror(None, None, 0)).0, Plugin::Critical);
        // Both: the worst decides, both are said.
        let (p, text) = check(&mirror(Some(18_000), Some(7200), 3));
        assert_eq!(p, Plugin::Critical);
        assert!(
            text.contains("5h00m ago") && text.contains("3 in a row"),
            "{text}"
        );
    }

    #[test]
    fn a_failed_last_run_of_a_fresh_mirror_is_a_warning_in_one_line_without_a_pipe() {
        let (p, text) = check(&mirror(Some(600), Some(7200), 2));
        assert_eq!(p, Plugin::Warning);
        assert_eq!(
            text,
            "iso: last run #9 failed (2 in a row): rsync said / no more"
        );
    }

    #[test]
    fn a_dead_or_stuck_run_is_a_warning_and_a_corrupt_state_unknown() {
        let mut m = mirror(Some(600), Some(7200), 0);
        m.running = Some(Running {
            run: 10,
            pid: 4242,
            trigger: Trigger::Ssh,
            request: "r10".into(),
            requester: "key=jenkins".into(),
            started: NOW - 3600 - STUCK_GRACE,
            stage: Stage::All,
        });
        m.state = "running";
        assert_eq!(check(&m).0, Plugin::Ok, "within timeout + grace");
        m.running.as_mut().unwrap().started -= 1;
        assert_eq!(
            check(&m),
            (
                Plugin::Warning,
                "iso: run #10 stuck: running for 1h05m (timeout 1h00m)".into()
            )
        );
        m.state = "stale";
        assert_eq!(
            check(&m),
            (
                Plugin::Warning,
                "iso: run #10 (pid 4242) died without a result".into()
            )
        );
        let mut m = mirror(Some(600), Some(7200), 0);
        m.warning = Some("state file x is corrupt".into());
        assert_eq!(check(&m).0, Plugin::Unknown);
    }

    #[test]
    fn the_worst_mirror_decides_critical_above_unknown_above_warning() {
        assert_eq!(Plugin::Warning.worst(Plugin::Unknown), Plugin::Unknown);
        assert_eq!(Plugin::Unknown.worst(Plugin::Critical), Plugin::Critical);
        assert_eq!(Plugin::Critical.worst(Plugin::Ok), Plugin::Critical);
        assert_eq!(
            [
                Plugin::Ok,
                Plugin::Warning,
                Plugin::Critical,
                Plugin::Unknown
            ]
            .map(Plugin::code),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn the_check_line_carries_valid_perfdata() {
        let cfg = Config::parse(
            std::path::Path::new("/etc/syncgate/syncgate.toml"),
            "state_dir = \"/s\"\n[mirror.iso]\nupstream = \"/up\"\ndest = \"/srv/iso\"\nowner = \"daemon\"\nreader_group = \"daemon\"\nmax_age = \"2h\"\n",
        )
        .unwrap();
        let mut never = mirror(None, None, 0);
        never.name = "new".into();
        let doc = StatusDoc {
            version: 1,
            generated: NOW,
            mirrors: vec![mirror(Some(18_000), Some(7200), 0), never],
        };
        let (p, line) = check_line(&cfg, &doc);
        assert_eq!(p, Plugin::Critical);
        assert_eq!(
            line,
            "SYNCGATE CRITICAL - iso: last success 5h00m ago (max_age 2h00m); new: never synced \
             | iso_age=18000s;;7200;0 iso_failures=0;0;;0 iso_duration=60s;;;0 iso_waiting=2;;;0 \
             new_age=U;;;0 new_failures=0;0;;0 new_duration=U;;;0 new_waiting=2;;;0"
        );
        let empty = StatusDoc {
            version: 1,
            generated: NOW,
            mirrors: vec![],
        };
        assert_eq!(check_line(&cfg, &empty).0, Plugin::Unknown);
    }

    #[test]
    fn the_typical_duration_is_the_median_of_recent_successes() {
        let mut runs: Vec<Timing> = (0..30)
            .map(|i| {
                let took = if i < 10 { 1000 } else { i };
                Timing::from(&run(i, RunResult::Success, 1000 * i, took))
            })
            .collect();
        runs.push(Timing::from(&run(31, RunResult::Failed, 40_000, 5000)));
        // The last 20 successes took 10..29 s: the median is (19 + 20) / 2.
        assert_eq!(typical_duration(&runs), Some(19));
        assert_eq!(typical_duration(&runs[..1]), Some(1000));
        assert_eq!(typical_duration(&runs[30..]), None);
    }
}
