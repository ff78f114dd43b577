//! A real `rsync --daemon` serving read-only modules on 127.0.0.1.
//!
//! Needs neither root nor the namespace: core sync tests use it on the
//! real machine, where it runs as the invoking user and dies on drop.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::procs::ChildGuard;
use super::{free_port, ns, require_tool, wait_for_port};

/// How long the daemon gets to start; ports are retried this many times.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 5;

/// `rsync --daemon --no-detach` with config, log and lock file in its own
/// temporary directory. Stopped (with its transfer children) on drop.
pub struct RsyncDaemon {
    port: u16,
    guard: ChildGuard,
    dir: TempDir,
}

impl RsyncDaemon {
    /// Serves each (name, path) as a module: `use chroot = no`,
    /// `read only = yes`, `uid`/`gid` = the invoking user's.
    pub fn start(modules: &[(&str, &Path)]) -> RsyncDaemon {
        RsyncDaemon::start_with(modules, "")
    }

    /// Like [`RsyncDaemon::start`], with extra parameter lines added to every
    /// module (e.g. `"timeout = 5\nmax connections = 1"`).
    pub fn start_with(modules: &[(&str, &Path)], module_extra: &str) -> RsyncDaemon {
        let rsync = require_tool("rsync");
        let dir = tempfile::Builder::new()
            .prefix(&ns::temp_prefix("rsyncd"))
            .tempdir()
            .expect("create rsyncd dir");
        let config = dir.path().join("rsyncd.conf");
        fs::write(&config, config_text(dir.path(), modules, module_extra))
            .expect("write rsyncd.conf");
        let log = dir.path().join("rsyncd.log");

        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let _ = fs::remove_file(&log);
            let mut guard = ChildGuard::spawn(
                Command::new(&rsync)
                    .args(["--daemon", "--no-detach", "--address=127.0.0.1"])
                    .arg(format!("--port={port}"))
                    .arg(format!("--config={}", config.display()))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                "rsync daemon",
            );
            // The log line proves that *our* daemon bound the port, not a
            // parallel test that grabbed the same "free" port.
            let listening = format!("listening on port {port}");
            let deadline = Instant::now() + START_TIMEOUT;
            while guard.is_running() && Instant::now() < deadline {
                last_log = fs::read_to_string(&log).unwrap_or_default();
                if last_log.contains(&listening) && wait_for_port(port, Duration::from_millis(100))
                {
                    return RsyncDaemon { port, guard, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last_log = fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("rsync daemon did not start after {PORT_ATTEMPTS} attempts; log:\n{last_log}");
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.guard.pid()
    }

    /// `rsync://127.0.0.1:PORT/MODULE/`.
    pub fn url(&self, module: &str) -> String {
        format!("rsync://127.0.0.1:{}/{module}/", self.port)
    }

    /// The daemon's temporary directory (config, log, lock file).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log (connections, transfers, errors).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("rsyncd.log")).unwrap_or_default()
    }

    /// True until the daemon exits or is killed.
    pub fn is_running(&mut self) -> bool {
        self.guard.is_running()
    }

    /// SIGKILLs the daemon and any transfer it is serving, at once (fault
    /// injection: the mirror source vanishes mid-transfer).
    pub fn kill(&mut self) {
        self.guard.kill();
    }
}

fn config_text(dir: &Path, modules: &[(&str, &Path)], module_extra: &str) -> String {
    let mut text = format!(
        "use chroot = no\nread only = yes\nuid = {uid}\ngid = {gid}\n\
         log file = {log}\nlock file = {lock}\n",
        uid = nix::unistd::geteuid(),
        gid = nix::unistd::getegid(),
        log = dir.join("rsyncd.log").display(),
        lock = dir.join("rsyncd.lock").display(),
    );
    for (name, path) in modules {
        writeln!(text, "\n[{name}]\n    path = {}", path.display()).expect("fmt");
        for line in module_extra.lines().filter(|l| !l.trim().is_empty()) {
            writeln!(text, "    {}", line.trim()).expect("fmt");
        }
    }
    text
}
