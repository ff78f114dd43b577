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
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
