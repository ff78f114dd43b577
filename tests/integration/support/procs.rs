//! Process hygiene: a guard that always stops what a test started, and
//! `/proc` scans so tests can assert that nothing was left behind.
//!
//! All scans skip zombies (they hold no resources and vanish once reaped) and
//! the calling process itself.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a process gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// Owns a spawned child. Dropping it sends SIGTERM to the child and all its
/// descendants, waits up to [`TERM_GRACE`], then SIGKILLs survivors and
/// reaps the child.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd`; `name` appears in panic messages.
    pub fn spawn(cmd: &mut Command, name: &str) -> ChildGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", super::describe(cmd)));
        ChildGuard {
            child: Some(child),
            name: name.to_string(),
        }
    }

    /// The child's pid (panics once the child was reaped).
    pub fn pid(&self) -> i32 {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} already reaped", self.name));
        i32::try_from(child.id()).expect("pid fits i32")
    }

    /// The exit status if the child has exited (reaps it), `None` if running.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child
            .try_wait()
            .unwrap_or_else(|e| panic!("waitpid({}): {e}", self.name))
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Mutable access to the `std::process::Child` (e.g. to take its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        self.child
            .as_mut()
            .unwrap_or_else(|| panic!("{} already reaped", self.name))
    }

    /// Waits up to `timeout` for the child to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM to the child and its descendants, [`TERM_GRACE`], then SIGKILL;
    /// reaps the child. Returns its exit status (`None` if already consumed).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.stop(Some(Signal::SIGTERM))
    }

    /// SIGKILL to the child and its descendants at once (fault injection);
    /// reaps the child.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.stop(None)
    }

    fn stop(&mut self, first: Option<Signal>) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let root = ProcId::of(i32::try_from(child.id()).expect("pid fits i32"));
        let mut tree: Vec<ProcId> = root.into_iter().collect();
        if let Some(root) = root {
            tree.extend(descendants(root.pid).into_iter().filter_map(ProcId::of));
        }
        if let Some(sig) = first {
            tree.iter().for_each(|p| p.signal(sig));
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline && tree.iter().any(ProcId::alive) {
                // Reap the root as soon as it exits (a zombie counts as gone).
                let _ = child.try_wait();
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        tree.iter().for_each(|p| p.signal(Signal::SIGKILL));
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("waitpid({}): {e}", self.name));
        Some(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A pid plus its start time, so a later signal never hits a recycled pid.
#[derive(Debug, Clone, Copy)]
struct ProcId {
    pid: i32,
    start: u64,
}

impl ProcId {
    fn of(pid: i32) -> Option<ProcId> {
        stat(pid).map(|s| ProcId {
            pid,
            start: s.start,
        })
    }

    fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.state != 'Z')
    }

    fn signal(&self, sig: Signal) {
        if self.alive() {
            let _ = kill(Pid::from_raw(self.pid), sig);
        }
    }
}

struct Stat {
    state: char,
    ppid: i32,
    start: u64,
}

/// Parses /proc/PID/stat (the command name may contain spaces and parens).
fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "pid (comm) ": state is field 3, ppid 4, starttime 22 (1-based).
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Pids of all live (non-zombie) processes except the caller.
pub fn all_pids() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| pid != me && stat(pid).is_some_and(|s| s.state != 'Z'))
        .collect();
    pids.sort_unstable();
    pids
}

/// All live descendants of `pid` (children, grandchildren, ...).
pub fn descendants(pid: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = all_pids()
        .into_iter()
        .filter_map(|p| Some((p, stat(p)?.ppid)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Live processes whose real or effective uid is `uid`.
pub fn pids_of_user(uid: u32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                return false;
            };
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|ids| {
                    ids.split_whitespace()
                        .take(2)
                        .any(|id| id == uid.to_string())
                })
                .unwrap_or(false)
        })
        .collect()
}

/// Live processes running program `exe_name` (matched against the kernel
/// `comm`, the basename of argv[0], and the basename of /proc/PID/exe).
pub fn pids_matching(exe_name: &str) -> Vec<i32> {
    let comm_name: String = exe_name.chars().take(15).collect();
    all_pids()
        .into_iter()
        .filter(|&pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let argv0 = cmdline_args(pid).into_iter().next().unwrap_or_default();
            let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            comm.trim_end() == comm_name
                || basename(&argv0) == exe_name
                || exe.file_name().is_some_and(|n| n == exe_name)
        })
        .collect()
}

/// Live processes whose command line (arguments joined by spaces) contains
/// `needle`, e.g. a workspace path.
pub fn pids_with_cmdline_containing(needle: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| cmdline(pid).contains(needle))
        .collect()
}

/// Live processes in the mount namespace `ns` (as read from
/// `/proc/PID/ns/mnt`, e.g. `mnt:[4026532301]`).
/// Only those of `pids` that live in this process's mount namespace (other
/// namespaces on the machine may run the same uids).
pub fn ours(pids: Vec<i32>) -> Vec<i32> {
    let ns = std::fs::read_link("/proc/self/ns/mnt").expect("read /proc/self/ns/mnt");
    let mine = pids_in_mount_namespace(&ns.to_string_lossy());
    pids.into_iter().filter(|p| mine.contains(p)).collect()
}

pub fn pids_in_mount_namespace(ns: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            fs::read_link(format!("/proc/{pid}/ns/mnt")).is_ok_and(|l| l == Path::new(ns))
        })
        .collect()
}

/// The command line of `pid` with arguments joined by spaces ("" if gone).
pub fn cmdline(pid: i32) -> String {
    cmdline_args(pid).join(" ")
}

fn cmdline_args(pid: i32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// "pid: cmdline" lines for messages.
pub fn describe_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(|&p| format!("  {p}: {}\n", cmdline(p)))
        .collect()
}

/// SIGKILLs each pid (start time checked) and waits up to [`TERM_GRACE`] for
/// them to disappear. Returns the ones still alive afterwards.
pub fn kill_all(pids: &[i32]) -> Vec<i32> {
    let ids: Vec<ProcId> = pids.iter().filter_map(|&p| ProcId::of(p)).collect();
    ids.iter().for_each(|p| p.signal(Signal::SIGKILL));
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline && ids.iter().any(ProcId::alive) {
        std::thread::sleep(Duration::from_millis(10));
    }
    ids.iter().filter(|p| p.alive()).map(|p| p.pid).collect()
}

/// Processes whose command line mentions `needle` (e.g. a test's dest path).
pub fn processes_mentioning(needle: &Path) -> Vec<(i32, String)> {
    let needle = needle.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        if let Ok(raw) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(&needle) {
                found.push((pid, cmd));
            }
        }
    }
    found
}

/// This namespace's rsync processes running as `uid`.
pub fn rsyncs_of(uid: u32) -> Vec<i32> {
    let of_uid = pids_of_user(uid);
    ours(
        pids_matching("rsync")
            .into_iter()
            .filter(|p| of_uid.contains(p))
            .collect(),
    )
}

/// The parent of `pid` (`None` once it is gone).
pub fn parent_of(pid: i32) -> Option<i32> {
    stat(pid).map(|s| s.ppid)
}
