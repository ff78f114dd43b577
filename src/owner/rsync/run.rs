//! Running one rsync: its process group, the dest lock it inherits, its
//! output fed to [`Stats`], and how it ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result};
use crate::owner::dest::DestLock;
use crate::owner::report::TransferProgress;
use crate::owner::rsync::progress::{self, Update};
use crate::owner::rsync::{argv, describe, Stats};
use crate::sys::child::{self, Stream, Watcher};

/// Time rsync gets between SIGTERM and SIGKILL.
const RSYNC_GRACE: Duration = Duration::from_secs(5);

/// How often the gate is told where a transfer is (it shows its caller
/// the latest at each heartbeat).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The bytes the last plan ([`argv::is_plan`]) counted for the pass after
/// it to transfer. An owner-side process does one transfer, whose passes
/// run one after another, so the next pass that moves data is the one the
/// plan counted for; it takes the count.
static PLANNED: Mutex<Option<u64>> = Mutex::new(None);

/// Where one rsync pass is: rsync's updates, merged, and when the gate was
/// last told.
struct Progress {
    expected: Option<u64>,
    last: TransferProgress,
    rsync_eta: Option<u64>,
    told: Option<Instant>,
}

impl Progress {
    fn new(expected: Option<u64>) -> Progress {
        Progress {
            expected,
            last: TransferProgress::default(),
            rsync_eta: None,
            told: None,
        }
    }

    /// Takes one update; returns what to tell the gate, at most once per
    /// [`PROGRESS_EVERY`].
    fn update(&mut self, u: Update, now: Instant) -> Option<TransferProgress> {
        // At rate 0 (the first update) rsync's estimate means nothing.
        if u.eta.is_some() {
            self.rsync_eta = u.eta.filter(|_| u.rate > 0);
        }
        // Beyond the plan's count (upstream changed since): rsync's figures.
        let expected = self.expected.filter(|e| u.bytes <= *e);
        let eta = match expected {
            Some(e) if u.rate > 0 => Some((e - u.bytes) / u.rate),
            Some(_) => None,
            None if u.rate > 0 => self.rsync_eta,
            None => None,
        };
        let p = &mut self.last;
        p.bytes = u.bytes;
        p.rate = u.rate;
        p.expected = expected;
        p.eta = eta;
        if let Some((left, total, fin)) = u.to_check {
            p.checked = Some(total - left);
            p.listed = Some(total);
            p.listing = !fin;
        }
        if self
            .told
            .is_some_and(|t| now.duration_since(t) < PROGRESS_EVERY)
        {
            return None;
        }
        self.told = Some(now);
        Some(*p)
    }
}

struct RsyncWatch<'a> {
    pub stats: Stats,
    pub errors: Vec<String>,
    cut: &'a AtomicBool,
    /// This rsync is the counting pass ([`argv::counts_deletions`]): the
    /// lines it prints about the deletions it held back on purpose are
    /// not relayed (they still count, in `stats`).
    counting: bool,
    /// This rsync moves data and prints its progress.
    progress: Option<Progress>,
}

impl Watcher for RsyncWatch<'_> {
    fn line(&mut self, stream: Stream, line: &str) {
        if let (Stream::Stdout, Some(p)) = (stream, self.progress.as_mut()) {
            if let Some(u) = progress::parse(line) {
                if let Some(tell) = p.update(u, Instant::now()) {
                    crate::sys::progress::relay(&tell.to_line());
                }
                return;
            }
        }
        self.stats.feed(line);
        if stream == Stream::Stderr && !line.trim().is_empty() {
            if !(self.counting && argv::is_counting_noise(line)) {
                crate::sys::progress::say(line);
            }
            if self.errors.len() < 20 {
                self.errors.push(line.to_string());
            }
        }
    }
    fn abort(&mut self) -> bool {
        self.cut.load(Ordering::SeqCst) || crate::sys::signals::terminate_requested()
    }
}

/// How one rsync run ended.
pub struct RsyncEnd {
    /// Its exit code, or 128 + the signal that killed it.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub stats: Stats,
    /// Its stderr lines (the first 20).
    pub errors: Vec<String>,
    /// We stopped it (gate gone, signal, timeout).
    pub stopped: bool,
}

impl RsyncEnd {
    /// "rsync exited 11 (error in file I/O): rsync: \[receiver\] write failed
    /// on ...: No space left on device (28)", or "rsync was killed by signal
    /// 9 (SIGKILL)": rsync's own code or its death, then the line of its
    /// stderr most likely to name the cause.
    pub fn failure(&self) -> String {
        let what = match self.signal {
            Some(sig) => format!(
                "rsync was killed by signal {sig} ({})",
                nix::sys::signal::Signal::try_from(sig)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal")
            ),
            None => format!("rsync exited {} ({})", self.code, describe(self.code)),
        };
        match first_cause(&self.errors) {
            Some(line) => format!("{what}: {line}"),
            None => what,
        }
    }
}

/// The stderr line that names the cause of a failure: rsync reports the
/// cause first ("write failed on ...: No space left on device") and then
/// its consequences (a broken pipe between its own processes, the generic
/// "rsync error: ... (code N)" summary), so the first line that is neither
/// the summary nor a notice wins; the summary is the fallback.
fn first_cause(errors: &[String]) -> Option<&str> {
    let generic = |l: &str| l.starts_with("rsync error:") || l.starts_with("Deletions stopped");
    errors
        .iter()
        .find(|l| !generic(l))
        .or_else(|| errors.first())
        .map(|l| l.trim())
}

/// Runs rsync (`argv`) with `HOME=home` in its own process group, passing
/// it the dest lock, and stops it (SIGTERM, then SIGKILL after
/// `RSYNC_GRACE`) when `cut` is set or a signal asks this process to end.
pub fn run_rsync(
    argv: &[String],
    home: &str,
    lock: &DestLock,
    cut: &AtomicBool,
) -> Result<RsyncEnd> {
    // The dest lock goes to rsync and every process it forks.
    lock.pass_on(true)?;
    let mut child = child::spawn(child::Spec {
        argv,
        env: vec![("HOME".into(), home.into())],
        own_group: true,
        die_with_parent: true,
        lifeline: false,
    })
    .context(|| format!("cannot run {}", argv[0]))?;
    let planned = {
        let mut planned = PLANNED.lock().unwrap_or_else(|e| e.into_inner());
        if argv::reports_progress(argv) {
            planned.take()
        } else {
            None
        }
    };
    let mut w = RsyncWatch {
        stats: Stats::default(),
        errors: Vec::new(),
        cut,
        counting: argv::counts_deletions(argv),
        progress: argv::reports_progress(argv).then(|| Progress::new(planned)),
    };
    let fin = child
        .wait(None, RSYNC_GRACE, &mut w)
        .context(|| "waiting for rsync".into())?;
    if !fin.status.success() && !wait_group_empty(child.pid(), RSYNC_GRACE) {
        // rsync's own children outlived it (its receiver, stuck on a slow
        // network or disk): a run never leaves a process behind.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(child.pid() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_group_empty(child.pid(), RSYNC_GRACE);
    }
    lock.pass_on(false)?;
    if argv::is_plan(argv) && fin.status.success() {
        *PLANNED.lock().unwrap_or_else(|e| e.into_inner()) = Some(w.stats.bytes_transferred);
    }
    Ok(RsyncEnd {
        code: child::code_of(&fin.status),
        signal: std::os::unix::process::ExitStatusExt::signal(&fin.status),
        stats: w.stats,
        errors: w.errors,
        stopped: fin.ending != child::Ending::Exited,
    })
}

/// Waits up to `limit` until process group `pgid` is empty: when the main
/// rsync has exited, its own children may still be finishing (moving an
/// interrupted file into `.~tmp~`, say). Reads /proc only; signals nothing.
/// Whether the group emptied in time.
fn wait_group_empty(pgid: u32, limit: Duration) -> bool {
    let member = |stat: &str| -> bool {
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp ...
        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
    };
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let busy = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name().to_string_lossy().parse::<u32>().is_ok()
                        && std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| member(&s))
                })
            })
            .unwrap_or(false);
        if !busy {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn progress_is_told_once_a_second_with_the_plans_count_or_rsyncs_estimate() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let up = |bytes, eta, to_check| Update {
            bytes,
            rate: 1000,
            eta,
            to_check,
        };
        let mut p = Progress::new(Some(10_000));
        let first = p.update(up(1000, Some(99), None), at(0)).unwrap();
        assert_eq!(
            (first.bytes, first.expected, first.eta),
            (1000, Some(10_000), Some(9))
        );
        // Within the second: merged, not told.
        assert_eq!(
            p.update(up(2000, None, Some((5, 20, false))), at(500)),
            None
        );
        let second = p.update(up(3000, Some(50), None), at(1000)).unwrap();
        assert_eq!(
            (
                second.bytes,
                second.eta,
                second.checked,
                second.listed,
                second.listing
            ),
            (3000, Some(7), Some(15), Some(20), true)
        );
        // Beyond the plan's count: rsync's own estimate.
        let beyond = p.update(up(12_000, Some(4), None), at(2000)).unwrap();
        assert_eq!((beyond.expected, beyond.eta), (None, Some(4)));
        // No plan (a first sync): rsync's estimate, kept across the lines
        // that end a file (they carry none).
        let mut p = Progress::new(None);
        let start = p
            .update(
                Update {
                    rate: 0,
                    ..up(1, Some(0), None)
                },
                at(0),
            )
            .unwrap();
        assert_eq!((start.rate, start.eta), (0, None), "no estimate at rate 0");
        p.update(up(1, Some(30), None), at(1000)).unwrap();
        let q = p.update(up(2, None, Some((0, 3, true))), at(2000)).unwrap();
        assert_eq!((q.eta, q.checked, q.listing), (Some(30), Some(3), false));
    }

    #[test]
    fn a_failure_names_its_first_cause_not_its_consequences() {
        let full = lines(&[
            "rsync: [receiver] write failed on \"/srv/m/big.iso\": No space left on device (28)",
            "rsync error: error in file IO (code 11) at receiver.c(657) [receiver=3.5.0]",
            "rsync: [sender] write error: Broken pipe (32)",
        ]);
        assert_eq!(
            first_cause(&full),
            Some("rsync: [receiver] write failed on \"/srv/m/big.iso\": No space left on device (28)")
        );
        let only_summary = lines(&["rsync error: timeout in data send/receive (code 30)"]);
        assert_eq!(first_cause(&only_summary), Some(only_summary[0].as_str()));
        assert_eq!(first_cause(&[]), None);
    }

    #[test]
    fn a_killed_rsync_is_named_as_such() {
        let end = RsyncEnd {
            code: 137,
            signal: Some(9),
            stats: Stats::default(),
            errors: vec![],
            stopped: false,
        };
        assert_eq!(end.failure(), "rsync was killed by signal 9 (SIGKILL)");
        let end = RsyncEnd {
            code: 10,
            signal: None,
            errors: lines(&[
                "rsync: failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)",
                "rsync error: error in socket IO (code 10) at clientserver.c(139) [Receiver=3.5.0]",
            ]),
            ..end
        };
        assert_eq!(
            end.failure(),
            "rsync exited 10 (error in socket I/O): rsync: failed to connect to 127.0.0.1 (127.0.0.1): Connection refused (111)"
        );
    }
}
