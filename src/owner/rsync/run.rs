//! Running one rsync: its process group, the dest lock it inherits, its
//! output fed to [`Stats`], and how it ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result};
use crate::owner::dest::DestLock;
use crate::owner::rsync::{argv, describe, Stats};
use crate::sys::child::{self, Stream, Watcher};

/// Time rsync gets between SIGTERM and SIGKILL.
const RSYNC_GRACE: Duration = Duration::from_secs(5);

struct RsyncWatch<'a> {
    pub stats: Stats,
    pub errors: Vec<String>,
    cut: &'a AtomicBool,
    /// This rsync is the counting pass ([`argv::counts_deletions`]): the
    /// lines it prints about the deletions it held back on purpose are
    /// not relayed (they still count, in `stats`).
    counting: bool,
}

impl Watcher for RsyncWatch<'_> {
    fn line(&mut self, stream: Stream, line: &str) {
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
    let mut w = RsyncWatch {
        stats: Stats::default(),
        errors: Vec::new(),
        cut,
        counting: argv::counts_deletions(argv),
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
