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
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fixture::{text, Fixture};
use crate::support::mirror_host::{MirrorHost, JENKINS};
use crate::support::{self, e2e_test, fields, SyslogReceiver};

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

/// Writes `text` as the host's config (root:root 0644).
fn write_config(mh: &MirrorHost, text: &str) {
    fs::write(&mh.config, text).unwrap();
    fs::set_permissions(&mh.config, fs::Permissions::from_mode(0o644)).unwrap();
}

/// The host's config with its syslog socket replaced by `socket` and
/// `top` added to the top level.
fn config_with(mh: &MirrorHost, socket: &Path, top: &str) -> String {
    let t = mh.config_text().replace(
        &mh.log.path().display().to_string(),
        &socket.display().to_string(),
    );
    format!("{top}{t}")
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

/// Waits for `child` up to `limit`; kills it and returns `None` if it is
/// still running then.
fn finish_within(mut child: Child, limit: Duration) -> Option<Output> {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_ssh(mh: &MirrorHost, cmd: &str) -> Child {
    mh.ssh(Some(cmd))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
        let keys = format!("{JENKINS}[key.intruder]\nverbs = [\"status\"]\nmirrors = [\"iso\"]\n");
        let mh = MirrorHost::with(&[("iso", "")], &keys);
        let intruder = mh.add_key("intruder", &["127.0.0.1/32"]);
        mh.put("iso", "a.iso", b"image");
        let forged = "sync key=jenkins decision=allow reason=ok";
        let out = mh.ssh_raw(&intruder, Some(forged.as_ref())).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "refused as not understood: {}", support::show(&out));
        let out = mh.ssh(Some("sync")).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", support::show(&out));
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
    let f = Fixture::new("");
    let log = SyslogReceiver::bind(f.dir.path().join("no-syslog"));
    let t = f.config_text("").replace(
        &format!("upstream = \"{}\"", f.upstream.display()),
        &format!("upstream = \"rsync://127.0.0.1:{}/mod/\"", daemon.port),
    );
    fs::write(&f.config, t).unwrap();
    let out = f.sync();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
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
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        let stalled = StalledSyslog::at(mh.path("stalled.sock"));
        write_config(&mh, &config_with(&mh, &stalled.path, ""));
        let started = Instant::now();
        let clients = [spawn_ssh(&mh, "sync"), spawn_ssh(&mh, "sync")];
        for c in clients {
            let out = finish_within(c, Duration::from_secs(15)).unwrap_or_else(|| {
                panic!("a request was still running after 15 s with syslog stalled")
            });
            assert_eq!(out.status.code(), Some(0), "{}", support::show(&out));
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
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        write_config(&mh, &config_with(&mh, &mh.path("no-such.sock"), ""));
        let out = mh.syncgate(&["sync", "iso"]);
        assert_eq!(out.status.code(), Some(0), "{}", support::show(&out));
        let md = fs::symlink_metadata(audit_log(&mh)).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (mh.login.uid, mh.login.gid, 0o640));
        mh.put("iso", "b.iso", b"image");
        let out = mh.ssh(Some("sync")).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", support::show(&out));
        let lines = fallback_lines(&audit_log(&mh));
        assert_eq!(of_event(&lines, "request").len(), 1, "{}", lines.join("\n"));
        let decision = of_event(&lines, "decision");
        assert_eq!(decision.len(), 1, "{}", lines.join("\n"));
        assert!(decision[0].contains(" notice syncgate["), "{}", decision[0]);
        assert_eq!(fields(decision[0])["key"], "jenkins");
        let outcomes = of_event(&lines, "outcome");
        assert_eq!(outcomes.len(), 2, "{}", lines.join("\n"));
        assert!(outcomes.iter().all(|l| fields(l)["result"] == "success"));
        assert!(!String::from_utf8_lossy(&out.stderr).contains("audit:"), "{}", support::show(&out));
    }
}

e2e_test! {
    /// Neither syslog nor the state dir file can take a line (the file's
    /// name is a symlink, which is never followed): by default the gate
    /// refuses to sync, exit 70, nothing synced, nothing written through
    /// the symlink. With `audit_required = false` it syncs, lines on stderr.
    fn with_nowhere_to_record_the_gate_refuses_to_sync() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        let elsewhere = mh.path("elsewhere.log");
        fs::write(&elsewhere, b"").unwrap();
        std::os::unix::fs::symlink(&elsewhere, audit_log(&mh)).unwrap();
        let no_socket = mh.path("no-such.sock");
        write_config(&mh, &config_with(&mh, &no_socket, ""));
        let out = mh.ssh(Some("sync")).output().unwrap();
        assert_eq!(out.status.code(), Some(70), "{}", support::show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("audit_required"), "{}", support::show(&out));
        assert!(!mh.dest("iso").join("a.iso").exists(), "synced without an audit trail");
        assert!(mh.state("iso")["runs"].as_array().is_none_or(|r| r.is_empty()), "{}", mh.state("iso"));
        assert_eq!(fs::read(&elsewhere).unwrap(), b"", "written through the symlink");

        write_config(&mh, &config_with(&mh, &no_socket, "audit_required = false\n"));
        let out = mh.ssh(Some("sync")).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", support::show(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("event=decision"), "{}", support::show(&out));
        assert!(mh.dest("iso").join("a.iso").exists());
    }
}
