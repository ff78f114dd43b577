//! The audit trail end to end: what a client or an upstream can put into
//! it, and where its lines go when syslog misbehaves.
//!
//! * No value can read as another field: a client's command and an
//!   upstream's error text are escaped so that `key=value`, matched at a
//!   space or the start of a line (the README's recipes), only ever finds a
//!   real field.
//! * A stalled or missing syslog neither holds a request nor loses its
//!   lines: they go to `STATE_DIR/audit.log`, and with `audit_required`
//!   (the default) the gate refuses to sync when no line can be recorded.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::fixture::{Fixture, M};
use crate::support::mirror_host::MirrorHost;
use crate::support::{e2e_test, fields, opts, Key, Mirrors, SyslogReceiver};

// ---------------------------------------------------------------- helpers

/// The README's recipes, as shell pipelines over a file of audit lines
/// (what `journalctl -t syncgate` or `/var/log/auth.log` would show).
/// `{}` is replaced by the file.
const ONE_KEY_ALLOWED: &str =
    "grep -E '(^| )key=jenkins( |$)' {} | grep -E '(^| )decision=allow( |$)'";
const FAILURES: &str = "grep -E '(^| )event=outcome( |$)' {} | grep -vE '(^| )result=success( |$)'";
/// The recipes the README gave before values were escaped.
const OLD_ONE_KEY_ALLOWED: &str = "grep key=jenkins {} | grep decision=allow";
const OLD_FAILURES: &str = "grep event=outcome {} | grep -v result=success";

/// Runs `recipe` over `lines` and returns the lines it printed.
fn grep(recipe: &str, lines: &[String], scratch: &Path) -> Vec<String> {
    let file = scratch.join("audit-lines.txt");
    fs::write(&file, lines.join("\n") + "\n").unwrap();
    let sh = recipe.replace("{}", &file.display().to_string());
    let out = Command::new("sh").arg("-c").arg(&sh).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn audit_log(mh: &MirrorHost) -> PathBuf {
    mh.state_dir.join("audit.log")
}

/// The lines of the fallback file (empty if it does not exist).
fn fallback_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn of_event<'a>(lines: &'a [String], event: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| fields(l).get("event").map(String::as_str) == Some(event))
        .collect()
}

/// A syslog socket that nobody reads, its queue filled: every further
/// datagram would wait (or fail with EAGAIN when sent without blocking).
struct StalledSyslog {
    path: PathBuf,
    _rx: UnixDatagram,
    _tx: UnixDatagram,
}

impl StalledSyslog {
    fn at(path: PathBuf) -> StalledSyslog {
        let rx = UnixDatagram::bind(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        tx.connect(&path).unwrap();
        tx.set_nonblocking(true).unwrap();
        let mut sent = 0;
        loop {
            match tx.send(b"<13>Jan 01 00:00:00 filler[1]: filling the queue") {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
            assert!(sent < 100_000, "the syslog queue never filled");
        }
        StalledSyslog {
            path,
            _rx: rx,
            _tx: tx,
        }
    }
}

/// A hostile rsync daemon: it greets, reads the client's greeting and
/// module line, and answers every connection with `@ERROR: {message}`.
struct HostileDaemon {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostileDaemon {
    fn start(message: &'static str) -> HostileDaemon {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let _ = s.write_all(b"@RSYNCD: 31.0\n");
                        let (mut seen, mut b) = (0, [0u8; 1]);
                        while seen < 2 && matches!(s.read(&mut b), Ok(1)) {
                            seen += usize::from(b[0] == b'\n');
                        }
                        let _ = s.write_all(format!("@ERROR: {message}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HostileDaemon {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HostileDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------ values are not fields

e2e_test! {
    /// A key that may only see status sends `sync key=jenkins
    /// decision=allow`: the README's recipe for "what jenkins was allowed"
    /// finds jenkins' own request and nothing of the other key's.
    fn a_client_command_cannot_pose_as_another_keys_allowed_request() {
        // No `from` in the config (`from = []` is the same: any client).
        let intruder = Key { name: "intruder", verbs: vec!["status"], mirrors: vec!["iso"], from: vec![], max_waiting: None, runmirrors: false };
        let mh = MirrorHost::with(&[("iso", opts())], &[Key::jenkins(), intruder]);
        let intruder = mh.add_key("intruder", &["127.0.0.1/32"]);
        mh.put("iso", "a.iso", b"image");
        let forged = "sync key=jenkins decision=allow reason=ok";
        // Refused as not understood.
        mh.ssh_raw(&intruder, Some(forged.as_ref())).status(64).run();
        mh.ssh(Some("sync")).status(0).run();
        mh.log.wait_for(|l| l.contains("event=outcome"), Duration::from_secs(5)).unwrap();

        let lines = mh.log.lines();
        let refused = lines
            .iter()
            .map(|l| fields(l))
            .find(|f| f.get("key").map(String::as_str) == Some("intruder"))
            .unwrap_or_else(|| panic!("no line of the intruder key:\n{}", lines.join("\n")));
        assert_eq!(refused["command"], forged, "the command still reads back as sent");
        assert_eq!(refused["decision"], "refuse");
        let scratch = mh.path("");
        for recipe in [ONE_KEY_ALLOWED, OLD_ONE_KEY_ALLOWED] {
            let found = grep(recipe, &lines, &scratch);
            assert_eq!(found.len(), 1, "{recipe} found:\n{}", found.join("\n"));
            let f = fields(&found[0]);
            assert_eq!((f["key"].as_str(), f["command"].as_str()), ("jenkins", "sync"));
        }
    }
}

/// An upstream answers `@ERROR: … result=success`: the failed run's
/// outcome line is still found by the README's recipe for failures.
#[test]
fn an_upstreams_error_text_cannot_hide_a_failed_run() {
    let daemon = HostileDaemon::start("module is being updated result=success exit=0");
    let mut f = Fixture::new(opts());
    let log = SyslogReceiver::bind(f.cfg.syslog_socket.clone());
    f.reconfigure(|c| c.mirror_mut(M).upstream = format!("rsync://127.0.0.1:{}/mod/", daemon.port));
    f.sync().status(1).run();
    let outcome = log
        .wait_for(|l| l.contains("event=outcome"), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no outcome line:\n{}", log.lines().join("\n")));
    let o = fields(&outcome);
    assert_eq!(o["result"], "failed", "{outcome}");
    assert!(
        o["message"].contains("@ERROR: module is being updated result=success"),
        "{outcome}"
    );
    for recipe in [FAILURES, OLD_FAILURES] {
        let found = grep(recipe, &log.lines(), f.dir.path());
        assert_eq!(found, vec![outcome.clone()], "{recipe}");
    }
}

// ------------------------------------------------ when syslog misbehaves

e2e_test! {
    /// Nobody reads the syslog socket and its queue is full: two requests
    /// at once still complete within a few seconds, and their lines are in
    /// `STATE_DIR/audit.log` (login account's, mode 0640).
    fn a_stalled_syslog_holds_no_request_and_lines_go_to_the_state_dir_file() {
        let mut mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        let stalled = StalledSyslog::at(mh.path("stalled.sock"));
        mh.reconfigure(|c| c.syslog_socket = stalled.path.clone());
        let started = Instant::now();
        let clients = [mh.ssh(Some("sync")).status(0).spawn(), mh.ssh(Some("sync")).status(0).spawn()];
        for c in clients {
            // Killed and failed if still running after 15 s with syslog stalled.
            c.finish_within(Duration::from_secs(15));
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "two requests took {took:?}");
        let lines = fallback_lines(&audit_log(&mh));
        assert_eq!(of_event(&lines, "decision").len(), 2, "{}", lines.join("\n"));
        let outcomes = of_event(&lines, "outcome");
        assert_eq!(outcomes.len(), 2, "{}", lines.join("\n"));
        assert!(outcomes.iter().all(|l| fields(l)["result"] == "success"));
        let ran = outcomes.iter().filter(|l| fields(l)["coalesced"] == "no").count();
        assert_eq!(of_event(&lines, "run-start").len(), ran, "{}", lines.join("\n"));
        let md = fs::symlink_metadata(audit_log(&mh)).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o7777), (mh.login.uid, 0o640));
    }
}

e2e_test! {
    /// No syslog socket at all: root's local sync and the gate's request
    /// both append to `STATE_DIR/audit.log`, which stays the login
    /// account's even when root created it.
    fn a_missing_syslog_socket_sends_lines_to_the_state_dir_file() {
        let mut mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        let no_socket = mh.path("no-such.sock");
        mh.reconfigure(|c| c.syslog_socket = no_socket);
        mh.syncgate().args(["sync", "iso"]).status(0).run();
        let md = fs::symlink_metadata(audit_log(&mh)).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (mh.login.uid, mh.login.gid, 0o640));
        mh.put("iso", "b.iso", b"image");
        mh.ssh(Some("sync")).status(0).stderr_lacks("audit:").run();
        let lines = fallback_lines(&audit_log(&mh));
        assert_eq!(of_event(&lines, "request").len(), 1, "{}", lines.join("\n"));
        let decision = of_event(&lines, "decision");
        assert_eq!(decision.len(), 1, "{}", lines.join("\n"));
        assert!(decision[0].contains(" notice syncgate["), "{}", decision[0]);
        assert_eq!(fields(decision[0])["key"], "jenkins");
        let outcomes = of_event(&lines, "outcome");
        assert_eq!(outcomes.len(), 2, "{}", lines.join("\n"));
        assert!(outcomes.iter().all(|l| fields(l)["result"] == "success"));
    }
}

e2e_test! {
    /// Neither syslog nor the state dir file can take a line (the file's
    /// name is a symlink, which is never followed): by default the gate
    /// refuses to sync, exit 70, nothing synced, nothing written through
    /// the symlink. With `audit_required = false` it syncs, lines on stderr.
    fn with_nowhere_to_record_the_gate_refuses_to_sync() {
        let mut mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        let elsewhere = mh.path("elsewhere.log");
        fs::write(&elsewhere, b"").unwrap();
        std::os::unix::fs::symlink(&elsewhere, audit_log(&mh)).unwrap();
        let no_socket = mh.path("no-such.sock");
        mh.reconfigure(|c| c.syslog_socket = no_socket);
        mh.ssh(Some("sync")).status(70).stderr_contains("audit_required").run();
        assert!(!mh.dest("iso").join("a.iso").exists(), "synced without an audit trail");
        assert!(mh.state("iso")["runs"].as_array().is_none_or(|r| r.is_empty()), "{}", mh.state("iso"));
        assert_eq!(fs::read(&elsewhere).unwrap(), b"", "written through the symlink");

        mh.reconfigure(|c| c.audit_required = Some(false));
        mh.ssh(Some("sync")).status(0).stderr_contains("event=decision").run();
        assert!(mh.dest("iso").join("a.iso").exists());
    }
}
