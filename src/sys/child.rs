//! Running and supervising child processes: clean environment, absolute
//! program paths, line-by-line output, a wall-clock deadline, and
//! TERM-then-KILL termination that always reaps.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// PATH given to every child.
pub const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub struct Spec<'a> {
    pub argv: &'a [String],
    /// Extra environment on top of a cleared one (PATH and LC_ALL=C are set).
    pub env: Vec<(String, String)>,
    /// Put the child in its own process group, so its whole tree can be signalled.
    pub own_group: bool,
    /// Ask the kernel to SIGKILL the child if we die (not across setuid exec).
    pub die_with_parent: bool,
    /// Give the child a pipe on stdin that we hold: when we die it sees EOF.
    pub lifeline: bool,
}

pub struct Supervised {
    child: Child,
    own_group: bool,
    lifeline: Option<ChildStdin>,
    lines: Receiver<(Stream, String)>,
}

/// Sends `r`'s lines. A line ends at `\n` or at `\r` (rsync's progress
/// output rewrites one terminal line with `\r`; `\r\n` is one break).
fn reader<R: Read + Send + 'static>(r: R, which: Stream, tx: mpsc::Sender<(Stream, String)>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut splitter = Lines::default();
        loop {
            let n = match r.fill_buf() {
                Ok([]) | Err(_) => break,
                Ok(buf) => {
                    for line in splitter.feed(buf) {
                        if tx.send((which, line)).is_err() {
                            return;
                        }
                    }
                    buf.len()
                }
            };
            r.consume(n);
        }
        if let Some(rest) = splitter.finish() {
            let _ = tx.send((which, rest));
        }
    });
}

/// Splits a byte stream into lines at `\n`, `\r` and `\r\n`.
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    after_cr: bool,
}

impl Lines {
    fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            match b {
                // The `\n` of a `\r\n`: the `\r` ended the line.
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' => out.push(self.take()),
                b'\r' => {
                    // A `\r` at the start of a line (rsync's progress) ends nothing.
                    if !self.line.is_empty() {
                        out.push(self.take());
                        self.after_cr = true;
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        out
    }

    fn take(&mut self) -> String {
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        line
    }

    /// What is left after the last break (output that did not end with one).
    fn finish(mut self) -> Option<String> {
        (!self.line.is_empty()).then(|| self.take())
    }
}

#[allow(unsafe_code)]
fn set_die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn spawn(spec: Spec) -> std::io::Result<Supervised> {
    use std::os::unix::process::CommandExt;
    let (program, args) = spec.argv.split_first().expect("argv is never empty");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("LC_ALL", "C")
        .stdin(if spec.lifeline {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    if spec.own_group {
        cmd.process_group(0);
    }
    if spec.die_with_parent {
        set_die_with_parent(&mut cmd);
    }
    let mut child = cmd.spawn()?;
    let (tx, rx) = mpsc::channel();
    reader(
        child.stdout.take().expect("piped"),
        Stream::Stdout,
        tx.clone(),
    );
    reader(child.stderr.take().expect("piped"), Stream::Stderr, tx);
    Ok(Supervised {
        lifeline: child.stdin.take(),
        child,
        own_group: spec.own_group,
        lines: rx,
    })
}

/// Why supervision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Exited,
    TimedOut,
    Aborted,
}

pub struct Finished {
    pub status: ExitStatus,
    pub ending: Ending,
}

/// Callbacks from [`Supervised::wait`].
pub trait Watcher {
    fn line(&mut self, stream: Stream, line: &str);
    /// Called about once a second.
    fn tick(&mut self) {}
    /// Return true to stop the child (signal received, caller asked).
    fn abort(&mut self) -> bool {
        false
    }
}

impl Supervised {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: Signal) {
        let pid = self.child.id() as i32;
        let target = if self.own_group {
            Pid::from_raw(-pid)
        } else {
            Pid::from_raw(pid)
        };
        let _ = kill(target, sig);
    }

    /// Waits for the child, relaying its lines, until it exits, the
    /// deadline passes, or the watcher asks to abort. In the last two cases
    /// the child gets SIGTERM, then after `grace` its lifeline is cut and it
    /// gets SIGKILL. The child is always reaped.
    pub fn wait(
        &mut self,
        deadline: Option<Instant>,
        grace: Duration,
        w: &mut dyn Watcher,
    ) -> std::io::Result<Finished> {
        let mut ending = Ending::Exited;
        let mut last_tick = Instant::now();
        let mut stop_at: Option<Instant> = None;
        let status = loop {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok((s, l)) => w.line(s, &l),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {}
            }
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            let now = Instant::now();
            if now.duration_since(last_tick) >= Duration::from_secs(1) {
                last_tick = now;
                w.tick();
            }
            match stop_at {
                None => {
                    if deadline.is_some_and(|d| now >= d) {
                        ending = Ending::TimedOut;
                    } else if w.abort() {
                        ending = Ending::Aborted;
                    } else {
                        continue;
                    }
                    self.signal(Signal::SIGTERM);
                    stop_at = Some(now + grace);
                }
                Some(t) if now >= t => {
                    self.lifeline = None;
                    self.signal(Signal::SIGKILL);
                    let _ = self.child.kill();
                    break self.child.wait()?;
                }
                Some(_) => {}
            }
        };
        // Drain what is left of the output (bounded: a grandchild could
        // hold the pipe open).
        let drain_until = Instant::now() + Duration::from_secs(2);
        while let Ok((s, l)) = self
            .lines
            .recv_timeout(drain_until.saturating_duration_since(Instant::now()))
        {
            w.line(s, &l);
        }
        Ok(Finished { status, ending })
    }
}

impl Drop for Supervised {
    /// A child is never left running unsupervised: if we get here without
    /// having waited for it (an error path), it is killed and reaped.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.lifeline = None;
            self.signal(Signal::SIGKILL);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Exit code of a status, or 128+signal when killed by a signal.
pub fn code_of(status: &ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut l = Lines::default();
        let mut out: Vec<String> = chunks.iter().flat_map(|c| l.feed(c)).collect();
        out.extend(l.finish());
        out
    }

    #[test]
    fn lines_end_at_newline_carriage_return_or_both() {
        assert_eq!(split(&[b"a\nb\r\nc\n\nd"]), ["a", "b", "c", "", "d"]);
        // rsync --info=progress2: "\r" before each update, "\n" at the end.
        assert_eq!(
            split(&[
                b"\r   1  0%\r   2 50%",
                b"\r   3 100% (xfr#1)\n\nNumber of files: 1\n"
            ]),
            [
                "   1  0%",
                "   2 50%",
                "   3 100% (xfr#1)",
                "",
                "Number of files: 1"
            ]
        );
        // A "\r\n" split across two reads is still one break.
        assert_eq!(split(&[b"x\r", b"\ny\n"]), ["x", "y"]);
        assert_eq!(split(&[b"caf\xc3", b"\xa9\n"]), ["caf\u{e9}"]);
    }
}
