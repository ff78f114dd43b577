//! One fan-out: every downstream's pushes, in parallel (at most
//! `max_parallel` at once), with runmirrors' staged rule: stage 2 starts
//! when every staged downstream has answered stage 1, or `push_delay` has
//! passed (a downstream that missed it is reported and still gets stage 2).
//!
//! Each push is one thread running one ssh; this thread schedules them
//! and records each start and end (audit line, push state) as it happens.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::audit::events::{PushEnd, PushStart, PushWaitMissed};
use crate::audit::Audit;
use crate::config::{Downstream, Hub, Mirror};
use crate::hub::ssh::{self, Pushed, Step};
use crate::hub::state::{PushRecord, PushState};
use crate::queue::statedir::StateDir;
use crate::run::now;
use crate::sys::progress::say;

/// Which pushes a fan-out does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// After a publish: `all` downstreams get `sync:all`, staged and mhop
    /// ones stage 1, the wait, then stage 2.
    Full,
    /// A mid-tier hub answering its upstream's `sync:mhop sync:stage1`:
    /// stage 1 to its staged and mhop downstreams only.
    Stage1,
    /// After its upstream's `sync:stage2`: stage 2 to staged and mhop
    /// downstreams (they had stage 1), `sync:all` to the others.
    Stage2,
}

/// The steps of one downstream in a fan-out of `kind`.
pub fn steps(ds: &Downstream, kind: Kind) -> Vec<Step> {
    match (kind, ds.mode.staged()) {
        (Kind::Full, false) | (Kind::Stage2, false) => vec![Step::All],
        (Kind::Full, true) => vec![Step::Stage1, Step::Stage2],
        (Kind::Stage1, true) => vec![Step::Stage1],
        (Kind::Stage1, false) => vec![],
        (Kind::Stage2, true) => vec![Step::Stage2],
    }
}

/// How a fan-out ended, per downstream (its last step's result).
pub struct Report {
    pub ended: Vec<(String, PushRecord)>,
}

impl Report {
    /// Downstreams whose last step went through.
    pub fn ok(&self) -> usize {
        self.ended.iter().filter(|(_, r)| r.result.ok()).count()
    }
}

/// Pushes `targets` (indices into the mirror's downstreams) the release
/// `release`, recording every push in the push state as it ends. The
/// caller holds the mirror's push lock.
pub fn run(
    hub: &Hub,
    mirror: &Mirror,
    targets: &[usize],
    kind: Kind,
    release: u64,
    sd: &StateDir,
    audit: &mut Audit,
) -> Report {
    let all = &mirror.fanout.downstreams;
    let plan: Vec<(usize, VecDeque<Step>)> = targets
        .iter()
        .map(|&i| (i, VecDeque::from(steps(&all[i], kind))))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let mut report = Report { ended: Vec::new() };
    if plan.is_empty() {
        return report;
    }
    let name = &mirror.name;
    say(&format!(
        "{name}: pushing release #{release} to {} downstream{}",
        plan.len(),
        if plan.len() == 1 { "" } else { "s" }
    ));
    let start = Instant::now();
    let barrier_at = start + Duration::from_secs(mirror.fanout.push_delay);
    // Downstreams still owing their stage 1 answer; stage 2 waits for it.
    let mut owing: Vec<usize> = plan
        .iter()
        .filter(|(_, s)| s.front() == Some(&Step::Stage1) && s.len() > 1)
        .map(|(i, _)| *i)
        .collect();
    let mut barrier_open = owing.is_empty();
    let mut ready: VecDeque<(usize, Step)> = VecDeque::new();
    let mut later: Vec<(usize, VecDeque<Step>)> = Vec::new();
    for (i, mut s) in plan {
        let first = s.pop_front().expect("not empty");
        ready.push_back((i, first));
        if !s.is_empty() {
            later.push((i, s));
        }
    }
    let (tx, rx) = mpsc::channel::<(usize, Step, u64, Pushed)>();
    let mut running = 0usize;
    let mut state = PushState::load(sd, name)
        .map(|(s, _)| s)
        .unwrap_or_default();

    std::thread::scope(|scope| {
        loop {
            while running < hub.max_parallel {
                let Some((i, step)) = ready.pop_front() else {
                    break;
                };
                let ds = &all[i];
                audit.record(&PushStart {
                    mirror: name,
                    downstream: ds,
                    stage: step.as_str(),
                    run: release,
                });
                let tx = tx.clone();
                let started = now();
                scope.spawn(move || {
                    let _ = tx.send((i, step, started, ssh::push(hub, ds, step)));
                });
                running += 1;
            }
            if running == 0 && ready.is_empty() {
                if later.is_empty() {
                    break;
                }
                // Nothing runs, so nobody owes stage 1 any more.
                barrier_open = true;
                release_waiting(&mut later, &mut ready, &[]);
                continue;
            }
            let wait = if barrier_open {
                Duration::from_secs(3600)
            } else {
                barrier_at.saturating_duration_since(Instant::now())
            };
            match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok((i, step, started, p)) => {
                    running -= 1;
                    let ds = &all[i];
                    let rec = PushRecord {
                        run: release,
                        stage: step.as_str().into(),
                        started,
                        ended: now(),
                        result: p.result,
                        exit: p.exit,
                        message: p.message.clone(),
                    };
                    audit.record(&PushEnd {
                        mirror: name,
                        downstream: ds,
                        stage: step.as_str(),
                        run: release,
                        result: p.result.as_str(),
                        ok: p.result.ok(),
                        exit: p.exit,
                        took: p.took,
                        message: &p.message,
                    });
                    say(&format!(
                        "{name}: downstream {} ({}): {} {} after {:.1} s{}",
                        ds.name,
                        ds.host,
                        step.as_str(),
                        p.result.as_str(),
                        p.took.as_secs_f64(),
                        if p.result.ok() {
                            String::new()
                        } else {
                            format!(": {}", p.message)
                        }
                    ));
                    state.record(&ds.name, rec.clone());
                    if let Err(e) = state.save(sd, name) {
                        say(&format!("{name}: warning: cannot record the push: {e}"));
                    }
                    if step == Step::Stage1 {
                        owing.retain(|&o| o != i);
                    }
                    if let Some(pos) = later.iter().position(|(j, _)| *j == i) {
                        if barrier_open {
                            let (_, mut s) = later.remove(pos);
                            ready.push_back((i, s.pop_front().expect("not empty")));
                            if !s.is_empty() {
                                later.push((i, s));
                            }
                        }
                    } else {
                        report.ended.push((ds.name.clone(), rec));
                    }
                    if !barrier_open && owing.is_empty() {
                        barrier_open = true;
                        release_waiting(&mut later, &mut ready, &owing);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !barrier_open && Instant::now() >= barrier_at {
                        barrier_open = true;
                        let missed: Vec<&str> =
                            owing.iter().map(|&i| all[i].name.as_str()).collect();
                        say(&format!(
                            "{name}: push_delay ({} s) passed; still in stage 1: {}; stage 2 goes ahead",
                            mirror.fanout.push_delay,
                            missed.join(", ")
                        ));
                        audit.record(&PushWaitMissed {
                            mirror: name,
                            run: release,
                            push_delay: mirror.fanout.push_delay,
                            missed: &missed,
                        });
                        release_waiting(&mut later, &mut ready, &owing);
                    }
                }
                // Never: this thread holds a sender.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    report
}

/// Once the wait is over: every downstream that has answered stage 1 gets
/// its next step now; the ones still in stage 1 (`owing`) get it when
/// they answer.
fn release_waiting(
    later: &mut Vec<(usize, VecDeque<Step>)>,
    ready: &mut VecDeque<(usize, Step)>,
    owing: &[usize],
) {
    let mut keep = Vec::new();
    for (i, mut s) in later.drain(..) {
        if owing.contains(&i) {
            keep.push((i, s));
            continue;
        }
        ready.push_back((i, s.pop_front().expect("not empty")));
        if !s.is_empty() {
            keep.push((i, s));
        }
    }
    *later = keep;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DownstreamKind, PushMode};

    fn ds(mode: PushMode) -> Downstream {
        Downstream {
            name: "d".into(),
            host: "h".into(),
            port: 22,
            user: "u".into(),
            archive: "a".into(),
            key: "/k".into(),
            kind: DownstreamKind::Syncgate,
            mode,
            timeout: 60,
        }
    }

    #[test]
    fn steps_follow_runmirrors() {
        use Step::*;
        let all = ds(PushMode::All);
        let staged = ds(PushMode::Staged);
        let mhop = ds(PushMode::Mhop);
        assert_eq!(steps(&all, Kind::Full), vec![All]);
        assert_eq!(steps(&staged, Kind::Full), vec![Stage1, Stage2]);
        assert_eq!(steps(&mhop, Kind::Full), vec![Stage1, Stage2]);
        assert_eq!(steps(&all, Kind::Stage1), vec![]);
        assert_eq!(steps(&mhop, Kind::Stage1), vec![Stage1]);
        assert_eq!(steps(&all, Kind::Stage2), vec![All]);
        assert_eq!(steps(&staged, Kind::Stage2), vec![Stage2]);
    }
}
