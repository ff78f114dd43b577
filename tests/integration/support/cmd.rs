//! One way to run a command in a test and state what it must do, in the
//! style of just's `Test` and ripgrep's harness:
//!
//! ```ignore
//! f.syncgate().args(["sync", "m"]).status(0).stderr_contains("run #1 succeeded").run();
//! mh.ssh(Some("sync")).status(1).stderr_contains("run #2 FAILED").run();
//! ```
//!
//! [`Test::run`] always checks the exit status (a test must say which one
//! it expects) and every stated expectation. On failure it panics at the
//! caller's line with the command line, its stdout and stderr, the trees
//! the fixture named (the dest listing) and any context (e.g. sshd's log).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{describe, show};

/// The exit a command must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    /// Any non-success (an exit code other than 0, or a signal).
    Failure,
}

#[derive(Clone, Copy, Debug)]
enum Stream {
    Stdout,
    Stderr,
}

#[derive(Clone, Debug)]
enum Check {
    Contains(String),
    Lacks(String),
    Empty,
}

/// A command and what it must do; see the module docs.
pub struct Test<'a> {
    cmd: Command,
    status: Option<Status>,
    checks: Vec<(Stream, Check)>,
    trees: Vec<PathBuf>,
    context: Vec<Box<dyn Fn() -> String + 'a>>,
}

impl<'a> Test<'a> {
    pub fn new(cmd: Command) -> Test<'a> {
        Test {
            cmd,
            status: None,
            checks: Vec::new(),
            trees: Vec::new(),
            context: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn stdin(mut self, stdin: Stdio) -> Self {
        self.cmd.stdin(stdin);
        self
    }

    /// The exit code it must have.
    pub fn status(mut self, code: i32) -> Self {
        self.status = Some(Status::Code(code));
        self
    }

    /// It must fail (any non-zero exit or a signal).
    pub fn failure(mut self) -> Self {
        self.status = Some(Status::Failure);
        self
    }

    pub fn stdout_contains(mut self, s: impl Into<String>) -> Self {
        self.checks
            .push((Stream::Stdout, Check::Contains(s.into())));
        self
    }

    pub fn stdout_lacks(mut self, s: impl Into<String>) -> Self {
        self.checks.push((Stream::Stdout, Check::Lacks(s.into())));
        self
    }

    pub fn stdout_empty(mut self) -> Self {
        self.checks.push((Stream::Stdout, Check::Empty));
        self
    }

    pub fn stderr_contains(mut self, s: impl Into<String>) -> Self {
        self.checks
            .push((Stream::Stderr, Check::Contains(s.into())));
        self
    }

    pub fn stderr_lacks(mut self, s: impl Into<String>) -> Self {
        self.checks.push((Stream::Stderr, Check::Lacks(s.into())));
        self
    }

    pub fn stderr_empty(mut self) -> Self {
        self.checks.push((Stream::Stderr, Check::Empty));
        self
    }

    /// A directory to list in the failure report.
    pub fn tree(mut self, dir: impl Into<PathBuf>) -> Self {
        self.trees.push(dir.into());
        self
    }

    /// More to show in the failure report, computed when it fails.
    pub fn context(mut self, f: impl Fn() -> String + 'a) -> Self {
        self.context.push(Box::new(f));
        self
    }

    /// Runs the command to completion, checks it, returns its output.
    #[track_caller]
    pub fn run(mut self) -> Output {
        let out = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(&self.cmd)));
        self.check(&out);
        out
    }

    /// Runs the command and returns its output unjudged, for a caller that
    /// judges the exit itself (e.g. collecting every failing case before it
    /// panics). Prefer [`Test::run`].
    pub fn run_unchecked(mut self) -> Output {
        self.cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(&self.cmd)))
    }

    /// Starts the command with stdout and stderr collected in the
    /// background; [`Running::finish`] checks it.
    pub fn spawn(mut self) -> Running<'a> {
        let mut child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", describe(&self.cmd)));
        Running {
            stdin: child.stdin.take(),
            out: Some(collect(child.stdout.take().unwrap())),
            err: Some(collect(child.stderr.take().unwrap())),
            child: Some(child),
            test: self,
        }
    }

    #[track_caller]
    fn check(&self, out: &Output) {
        let Some(want) = self.status else {
            self.fail(
                out,
                "the test states no exit status (call .status(..) or .failure())",
            );
        };
        let ok = match want {
            Status::Code(c) => out.status.code() == Some(c),
            Status::Failure => !out.status.success(),
        };
        if !ok {
            self.fail(out, &format!("wanted exit {want:?}, got {}", out.status));
        }
        for (stream, check) in &self.checks {
            let bytes = match stream {
                Stream::Stdout => &out.stdout,
                Stream::Stderr => &out.stderr,
            };
            let text = String::from_utf8_lossy(bytes);
            let bad = match check {
                Check::Contains(s) => !text.contains(s.as_str()),
                Check::Lacks(s) => text.contains(s.as_str()),
                Check::Empty => !bytes.is_empty(),
            };
            if bad {
                self.fail(out, &format!("{stream:?} fails {check:?}"));
            }
        }
    }

    #[track_caller]
    fn fail(&self, out: &Output, why: &str) -> ! {
        let mut report = format!("{why}\ncommand: {}\n{}", describe(&self.cmd), show(out));
        for dir in &self.trees {
            report.push_str(&format!("\n--- tree {} ---\n{}", dir.display(), tree(dir)));
        }
        for c in &self.context {
            report.push_str(&format!("\n{}", c()));
        }
        panic!("{report}");
    }
}

fn collect(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// A [`Test`] running in the background. Killed and reaped on drop if still
/// running.
pub struct Running<'a> {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    test: Test<'a>,
}

impl Running<'_> {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("still running").id() as i32
    }

    /// Writes to its stdin (started with `.stdin(Stdio::piped())`),
    /// ignoring a closed pipe.
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let _ = self
            .stdin
            .as_mut()
            .expect("stdin is piped")
            .write_all(bytes);
    }

    /// Closes its stdin (EOF for the reader).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// SIGKILL, then reaped: the client vanishes without a goodbye.
    pub fn kill(&mut self) {
        let child = self.child.as_mut().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        self.stdin = None;
    }

    /// Whether it has exited (reaped; [`Running::finish`] still checks it).
    pub fn exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("not finished");
        child.try_wait().unwrap().is_some()
    }

    /// Waits for the exit, checks it, returns the output.
    #[track_caller]
    pub fn finish(self) -> Output {
        self.finish_within(Duration::MAX)
    }

    /// [`Running::finish`], panicking (after a kill) past `timeout`.
    #[track_caller]
    pub fn finish_within(mut self, timeout: Duration) -> Output {
        let out = self.wait_within(timeout);
        self.test.check(&out);
        out
    }

    /// [`Running::finish_within`] without checking the exit or the output,
    /// for a caller that judges them itself (as with [`Test::run_unchecked`]).
    #[track_caller]
    pub fn finish_unchecked_within(mut self, timeout: Duration) -> Output {
        self.wait_within(timeout)
    }

    #[track_caller]
    fn wait_within(&mut self, timeout: Duration) -> Output {
        let deadline = Instant::now().checked_add(timeout);
        let child = self.child.as_mut().unwrap();
        let status: ExitStatus = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not finish within {timeout:?}",
                    describe(&self.test.cmd)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.child = None;
        self.stdin = None;
        Output {
            status,
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.stdin = None;
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `mode uid:gid size path` of every entry below `dir` (not following
/// symlinks), for failure reports; at most 200 lines.
pub fn tree(dir: &Path) -> String {
    let mut lines = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            let rel = d.display().to_string();
            lines.push((rel.clone(), format!("  (cannot list {rel})")));
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                stack.push(p.clone());
            }
            let rel = p.strip_prefix(dir).unwrap_or(&p).display().to_string();
            let line = format!(
                "  {:o} {}:{} {:>9} {rel}",
                md.mode(),
                md.uid(),
                md.gid(),
                md.len()
            );
            lines.push((rel, line));
        }
    }
    lines.sort();
    let mut lines: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
    if lines.len() > 200 {
        let more = lines.len() - 200;
        lines.truncate(200);
        lines.push(format!("  … and {more} more"));
    }
    if lines.is_empty() {
        "  (empty)".into()
    } else {
        lines.join("\n")
    }
}
