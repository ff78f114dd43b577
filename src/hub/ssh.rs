//! One push: one `ssh` to one downstream with Debian's push words. The argv
//! is built here and nowhere else (execution, `check` and the tests read
//! it from [`argv`]); no shell is involved on this side.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::{Downstream, DownstreamKind, Hub, PushMode};
use crate::hub::state::PushResult;
use crate::sys::child::{self, Ending, Stream, Watcher};

/// What one push asks of the downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `sync:all`: everything, published.
    All,
    Stage1,
    Stage2,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::All => "all",
            Step::Stage1 => "stage1",
            Step::Stage2 => "stage2",
        }
    }
}

/// The command the downstream's forced command reads from
/// `SSH_ORIGINAL_COMMAND`: the words runmirrors sends, in its order.
pub fn words(ds: &Downstream, step: Step) -> String {
    let mut w = vec![format!("sync:archive:{}", ds.archive)];
    if ds.mode == PushMode::Mhop && step != Step::All {
        w.push("sync:mhop".into());
    }
    w.push(
        match step {
            Step::All => "sync:all",
            Step::Stage1 => "sync:stage1",
            Step::Stage2 => "sync:stage2",
        }
        .into(),
    );
    w.join(" ")
}

/// Seconds ssh may take to connect and exchange banners.
const CONNECT_TIMEOUT: u64 = 20;

/// The ssh argv of one push: batch mode (never a prompt), only the
/// configured known_hosts (never `StrictHostKeyChecking=no`), only the
/// push key, no user or system ssh config, and keepalives so a dead
/// connection is noticed while a long sync runs.
pub fn argv(hub: &Hub, ds: &Downstream, step: Step) -> Vec<String> {
    let o = |s: String| ["-o".to_string(), s];
    let mut a = vec![
        hub.ssh.display().to_string(),
        "-n".into(),
        "-F".into(),
        "/dev/null".into(),
    ];
    for opt in [
        "BatchMode=yes".to_string(),
        "StrictHostKeyChecking=yes".into(),
        format!("UserKnownHostsFile={}", hub.known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        "IdentitiesOnly=yes".into(),
        "IdentityAgent=none".into(),
        "ForwardAgent=no".into(),
        "ClearAllForwardings=yes".into(),
        "RequestTTY=no".into(),
        "LogLevel=ERROR".into(),
        format!("ConnectTimeout={}", CONNECT_TIMEOUT.min(ds.timeout)),
        "ServerAliveInterval=30".into(),
        "ServerAliveCountMax=4".into(),
    ] {
        a.extend(o(opt));
    }
    a.extend([
        "-i".into(),
        ds.key.display().to_string(),
        "-p".into(),
        ds.port.to_string(),
        "-l".into(),
        ds.user.clone(),
        "--".into(),
        ds.host.clone(),
        words(ds, step),
    ]);
    a
}

/// How one push ended.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub result: PushResult,
    pub exit: Option<i32>,
    pub message: String,
    pub took: Duration,
}

/// Keeps the last lines the downstream said (for the record and the log).
struct Tail {
    lines: VecDeque<String>,
}

impl Watcher for Tail {
    fn line(&mut self, _: Stream, line: &str) {
        let line: String = line.chars().filter(|c| !c.is_control()).take(300).collect();
        if line.trim().is_empty() {
            return;
        }
        if self.lines.len() == 4 {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn abort(&mut self) -> bool {
        crate::sys::signals::terminate_requested()
    }
}

/// Runs one push and waits for it, at most the downstream's `timeout`;
/// then ssh's whole process group is killed and reaped.
pub fn push(hub: &Hub, ds: &Downstream, step: Step) -> Pushed {
    let start = Instant::now();
    let argv = argv(hub, ds, step);
    let spawned = child::spawn(child::Spec {
        argv: &argv,
        env: Vec::new(),
        own_group: true,
        die_with_parent: true,
        lifeline: false,
    });
    let mut sup = match spawned {
        Ok(s) => s,
        Err(e) => {
            return Pushed {
                result: PushResult::Failed,
                exit: None,
                message: format!("cannot run {}: {e}", hub.ssh.display()),
                took: start.elapsed(),
            }
        }
    };
    let mut tail = Tail {
        lines: VecDeque::new(),
    };
    let deadline = start + Duration::from_secs(ds.timeout);
    let finished = sup.wait(Some(deadline), Duration::from_secs(5), &mut tail);
    let lines: Vec<String> = tail.lines.into();
    let took = start.elapsed();
    let f = match finished {
        Ok(f) => f,
        Err(e) => {
            return Pushed {
                result: PushResult::Failed,
                exit: None,
                message: format!("waiting for ssh: {e}"),
                took,
            }
        }
    };
    let code = child::code_of(&f.status);
    let (result, what) = match (f.ending, ds.kind, code) {
        (Ending::TimedOut, ..) => (
            PushResult::Timeout,
            format!("killed after the downstream's timeout ({} s)", ds.timeout),
        ),
        (Ending::Aborted, ..) => (PushResult::Aborted, "stopped by a signal".to_string()),
        (_, _, 255) => (
            PushResult::Failed,
            "ssh failed (exit 255: no connection, host key or key refused)".to_string(),
        ),
        (_, DownstreamKind::Syncgate, 0) => (PushResult::Success, "synced".to_string()),
        (_, DownstreamKind::Syncgate, c) => (
            PushResult::Failed,
            format!("the downstream answered exit {c}"),
        ),
        // ftpsync answers at once and syncs in the background: runmirrors
        // counts everything but ssh's 255 as a trigger that went through.
        (_, DownstreamKind::Ftpsync, _) => (PushResult::Triggered, "triggered".to_string()),
    };
    // What the downstream said last: its summary line when it went
    // through; a few lines (the error) when not.
    let said = if result.ok() {
        lines.last().cloned().unwrap_or_default()
    } else {
        lines.join(" / ")
    };
    Pushed {
        result,
        exit: (f.ending == Ending::Exited).then_some(code),
        message: if said.is_empty() {
            what
        } else {
            format!("{what}: {said}")
        },
        took,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ds(mode: PushMode) -> Downstream {
        Downstream {
            name: "cache1".into(),
            host: "mirror.example.org".into(),
            port: 2201,
            user: "archvsync".into(),
            archive: "debian".into(),
            key: PathBuf::from("/etc/syncgate/push/cache1"),
            kind: DownstreamKind::Syncgate,
            mode,
            timeout: 3600,
        }
    }

    fn hub() -> Hub {
        Hub {
            known_hosts: PathBuf::from("/etc/syncgate/known_hosts"),
            max_parallel: 8,
            ssh: PathBuf::from("/usr/bin/ssh"),
        }
    }

    #[test]
    fn the_words_are_runmirrors_words() {
        assert_eq!(
            words(&ds(PushMode::All), Step::All),
            "sync:archive:debian sync:all"
        );
        assert_eq!(
            words(&ds(PushMode::Staged), Step::Stage1),
            "sync:archive:debian sync:stage1"
        );
        assert_eq!(
            words(&ds(PushMode::Staged), Step::Stage2),
            "sync:archive:debian sync:stage2"
        );
        assert_eq!(
            words(&ds(PushMode::Mhop), Step::Stage1),
            "sync:archive:debian sync:mhop sync:stage1"
        );
        assert_eq!(
            words(&ds(PushMode::Mhop), Step::Stage2),
            "sync:archive:debian sync:mhop sync:stage2"
        );
    }

    #[test]
    fn the_argv_trusts_only_the_configured_host_keys_and_key() {
        let a = argv(&hub(), &ds(PushMode::All), Step::All);
        let joined = a.join(" ");
        for want in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/etc/syncgate/known_hosts",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "-i /etc/syncgate/push/cache1",
            "-p 2201 -l archvsync -- mirror.example.org",
        ] {
            assert!(joined.contains(want), "{want:?} in {joined}");
        }
        assert!(!joined.contains("StrictHostKeyChecking=no"));
        // The host and the words are the last two arguments, after `--`:
        // a host can never be read as an option, the words are one argument.
        assert_eq!(a[a.len() - 3], "--");
        assert_eq!(a.last().unwrap(), "sync:archive:debian sync:all");
    }
}
