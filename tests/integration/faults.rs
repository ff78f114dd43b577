//! The fault suite: each test injects one fault with real processes (an
//! upstream that is down, dies or hangs, a full disk, a killed gate or rsync,
//! a broken state file, an unwritable state dir, a broken config) and checks
//! the same four things every time:
//!
//! * every affected caller gets a clear non-zero result;
//! * the audit log has a line for it;
//! * the published tree stays consistent (the observer reads it throughout:
//!   no violations, and a non-trivial number of checks);
//! * once the fault is removed, the next request works normally.
//!
//! Observer figures are printed (`--nocapture` shows them) as
//! `observer <scenario>: passes=P checks=C violations=V`.
//!
//! Client disconnects while queued or running are covered in `gate.rs`.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::check::{audit, summary};
use crate::support::config::Opts;
use crate::support::fixture::{Fixture, M};
use crate::support::host::Tmpfs;
use crate::support::mirror_host::MirrorHost;
use crate::support::observer::{sums, Observations, Observer};
use crate::support::procs::{processes_mentioning, rsyncs_of};
use crate::support::{
    self, bytes, e2e_test, fields, opts, procs, stderr, syncgate_bin, wait_until, ChildGuard, Host,
    Mirrors, RsyncDaemon, SyslogReceiver, Test,
};

// ---------------------------------------------------------------------------
// Helpers

/// A [`Fixture`] whose audit lines go to a syslog receiver and whose
/// upstream can be switched to a URL.
struct Rig {
    f: Fixture,
    log: SyslogReceiver,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(Fixture::new(opts()), SyslogReceiver::new())
    }

    fn with(f: Fixture, log: SyslogReceiver) -> Rig {
        let mut r = Rig { f, log };
        r.configure(None, opts());
        r
    }

    /// Rewrites the config: audit lines to the receiver, `upstream` (None:
    /// the local upstream directory) and the mirror's optional settings.
    fn configure(&mut self, upstream: Option<&str>, opts: Opts) {
        let socket = self.log.path().to_path_buf();
        let upstream =
            upstream.map_or_else(|| self.f.upstream.display().to_string(), str::to_string);
        self.f.reconfigure(|c| {
            c.syslog_socket = socket;
            let m = c.mirror_mut(M);
            m.upstream = upstream;
            m.opts = opts;
        });
    }

    /// Publishes `files` plus a `SHA256SUMS` naming them all (real hashes).
    fn release(&self, files: &[(&str, &[u8])]) {
        for (name, b) in files {
            self.f.put(M, name, b);
        }
        self.f.put(M, "SHA256SUMS", sums(files).as_bytes());
    }

    #[track_caller]
    fn status(&self) -> serde_json::Value {
        let out = self
            .f
            .syncgate()
            .args(["status", M, "--json"])
            .status(0)
            .run();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["mirrors"][0].clone()
    }
}

/// Prints the observer's figures and asserts a consistent tree.
fn assert_consistent(scenario: &str, obs: &Observations) {
    let others = &obs.violations;
    eprintln!(
        "observer {scenario}: passes={} checks={} violations={} (transient .~tmp~ sightings during stage 2: {})",
        obs.passes,
        obs.checks,
        others.len(),
        obs.holding_sightings
    );
    assert!(
        others.is_empty(),
        "{scenario}: {} violations, first: {:#?}",
        others.len(),
        &others[..others.len().min(10)]
    );
    assert!(
        obs.passes >= 10 && obs.checks >= 10,
        "{scenario}: the observer did too little ({} passes, {} checks)",
        obs.passes,
        obs.checks
    );
}

/// No rsync holding directory and no rsync temporary anywhere in the
/// published tree (outside dest/.syncgate-tmp), right now.
fn assert_no_leftovers(what: &str, dest: &Path) {
    let mut found = Vec::new();
    let mut dirs = vec![dest.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ft = e.file_type().unwrap();
            if d == dest && name == ".syncgate-tmp" {
                continue;
            }
            if name == ".~tmp~" {
                found.push(e.path());
            } else if ft.is_dir() {
                dirs.push(e.path());
            } else if name.starts_with('.')
                && name.len() > 8
                && name.as_bytes()[name.len() - 7] == b'.'
            {
                found.push(e.path());
            }
        }
    }
    assert!(
        found.is_empty(),
        "{what}: rsync leftovers in the published tree: {found:?}"
    );
}

/// Waits up to `wait` until no process mentions `needle`; returns the rest.
fn survivors(needle: &Path, wait: Duration) -> Vec<(i32, String)> {
    let mut p = Vec::new();
    wait_until(wait, || {
        p = processes_mentioning(needle);
        p.is_empty()
    });
    p
}

fn ppid(pid: i32) -> Option<i32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    procs::all_pids().contains(&pid)
}

/// Size of the biggest partial file rsync has in `dest/.syncgate-tmp`.
fn partial_bytes(dest: &Path) -> u64 {
    fs::read_dir(dest.join(".syncgate-tmp"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// A TCP server on 127.0.0.1 that accepts connections and never sends a
/// byte (a hung upstream). Connections are held until it is dropped.
struct HungUpstream {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HungUpstream {
    fn start() -> HungUpstream {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match l.accept() {
                        Ok((s, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            held.push(s);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        Err(e) => panic!("hung upstream: accept: {e}"),
                    }
                }
            })
        };
        HungUpstream {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("rsync://127.0.0.1:{}/iso/", self.port)
    }
}

impl Drop for HungUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Upstream down

#[test]
fn an_upstream_that_is_down_fails_with_rsyncs_code_10_and_an_audit_line() {
    let mut r = Rig::new();
    let iso = bytes(50_000, 101);
    r.release(&[("a.iso", &iso)]);
    // Nothing listens on this port.
    let port = support::free_port();
    r.configure(
        Some(&format!("rsync://127.0.0.1:{port}/iso/")),
        opts().io_timeout(5),
    );
    let t = Instant::now();
    let out = r.f.sync().status(1).run();
    assert!(t.elapsed() < Duration::from_secs(30));
    let err = stderr(&out);
    let line = summary(&err, "m");
    eprintln!("upstream down: {line}");
    assert!(
        line.contains("rsync exited 10 (error in socket I/O)"),
        "{err}"
    );
    assert!(line.contains("Connection refused"), "{err}");
    let o = audit(&r.log, "outcome", 1);
    assert_eq!(o["result"], "failed", "{o:?}");
    assert_eq!(o["rsync_exit"], "10", "{o:?}");
    assert_eq!(o["exit"], "1", "{o:?}");
    assert!(o["message"].contains("rsync exited 10"), "{o:?}");
    assert_eq!(r.f.last_run(M)["result"], "failed");
    assert!(!r.f.dest_path("a.iso").exists() && !r.f.dest_path("SHA256SUMS").exists());
    assert!(r.status()["last_success"].is_null());

    // The upstream comes up: the next request works.
    let daemon = RsyncDaemon::start(&[("iso", &r.f.upstream)]);
    r.configure(Some(&daemon.url("iso")), opts().io_timeout(5));
    r.f.sync().status(0).run();
    assert_eq!(fs::read(r.f.dest_path("a.iso")).unwrap(), iso);
    assert_eq!(audit(&r.log, "outcome", 2)["result"], "success");
}

// ---------------------------------------------------------------------------
// 2. Upstream gone mid-transfer

#[test]
fn an_upstream_killed_mid_transfer_publishes_nothing_half_done_and_the_next_sync_works() {
    let mut r = Rig::new();
    let v1 = bytes(100_000, 201);
    r.release(&[("a.iso", &v1)]);
    let mut daemon = RsyncDaemon::start(&[("iso", &r.f.upstream)]);
    r.configure(Some(&daemon.url("iso")), opts().io_timeout(20));
    r.f.sync().status(0).run();

    // Release 2: a big image, new checksums; the transfer is slowed down.
    let big = bytes(6 << 20, 202);
    r.release(&[("a.iso", &v1), ("big.iso", &big)]);
    let old_sums = fs::read(r.f.dest_path("SHA256SUMS")).unwrap();
    r.configure(
        Some(&daemon.url("iso")),
        opts().io_timeout(20).bwlimit(1000),
    );
    let obs = Observer::start(&r.f.dest);
    let child = r.f.sync().status(1).spawn();
    r.f.wait_running(M, Duration::from_secs(20));
    assert!(
        wait_until(Duration::from_secs(20), || partial_bytes(&r.f.dest)
            > 100_000)
        .is_some(),
        "the big file never started to arrive"
    );
    daemon.kill();
    let out = child.finish();
    let err = stderr(&out);
    let line = summary(&err, "m");
    eprintln!("upstream killed mid-transfer: {line}");
    assert!(line.contains("run #2 FAILED"), "{err}");
    assert!(line.contains("stage 1 failed: rsync exited"), "{err}");
    let rec = r.f.last_run(M);
    assert_eq!(rec["result"], "failed");
    let code = rec["rsync_exit"].as_i64().unwrap();
    assert!(matches!(code, 10 | 12 | 30), "rsync exit {code}: {err}");
    let o = audit(&r.log, "outcome", 2);
    assert_eq!((o["result"].as_str(), o["exit"].as_str()), ("failed", "1"));
    assert_eq!(o["rsync_exit"], code.to_string());
    // Nothing of release 2 is published.
    assert!(!r.f.dest_path("big.iso").exists());
    assert_eq!(fs::read(r.f.dest_path("SHA256SUMS")).unwrap(), old_sums);
    assert_eq!(survivors(&r.f.dest, Duration::from_secs(5)), vec![]);

    // A restarted daemon (another port): the next sync completes release 2.
    let daemon = RsyncDaemon::start(&[("iso", &r.f.upstream)]);
    r.configure(Some(&daemon.url("iso")), opts().io_timeout(20));
    r.f.sync().status(0).run();
    assert_eq!(fs::read(r.f.dest_path("big.iso")).unwrap(), big);
    assert!(!r.f.dest_path(".syncgate-tmp").exists());
    let obs = obs.finish();
    assert_consistent("upstream-killed-mid-transfer", &obs);
}

// ---------------------------------------------------------------------------
// 3. Hung upstream

#[test]
fn a_hung_upstream_is_cut_off_by_io_timeout_or_the_wall_clock_and_leaves_no_rsync() {
    let mut r = Rig::new();
    let v1 = bytes(80_000, 301);
    r.release(&[("a.iso", &v1)]);
    r.f.sync().status(0).run();
    let old_sums = fs::read(r.f.dest_path("SHA256SUMS")).unwrap();
    r.release(&[("a.iso", &v1), ("b.iso", b"release 2")]);

    let hung = HungUpstream::start();
    let obs = Observer::start(&r.f.dest);

    // io_timeout: rsync gives up on its own (code 30).
    r.configure(Some(&hung.url()), opts().io_timeout(3).timeout(60));
    let t = Instant::now();
    let out = r.f.sync().status(1).run();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let err = stderr(&out);
    eprintln!(
        "hung upstream, io_timeout: {} (after {took:?})",
        summary(&err, "m")
    );
    assert!(summary(&err, "m").contains("rsync exited 30"), "{err}");
    assert!(summary(&err, "m").contains("io timeout"), "{err}");
    assert_eq!(r.f.last_run(M)["result"], "failed");
    let o = audit(&r.log, "outcome", 2);
    assert_eq!(
        (o["result"].as_str(), o["rsync_exit"].as_str()),
        ("failed", "30")
    );
    assert_eq!(survivors(&r.f.dest, Duration::from_secs(3)), vec![]);
    assert!(
        hung.accepted.load(Ordering::SeqCst) >= 1,
        "rsync never connected"
    );

    // A long io_timeout: the wall-clock timeout stops rsync.
    r.configure(Some(&hung.url()), opts().io_timeout(600).timeout(3));
    let t = Instant::now();
    let out = r.f.sync().status(1).run();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!(
        "hung upstream, wall clock: {} (after {took:?})",
        summary(&stderr(&out), "m")
    );
    assert!(
        summary(&stderr(&out), "m").contains("timed out"),
        "{}",
        support::show(&out)
    );
    assert_eq!(r.f.last_run(M)["result"], "timeout");
    let o = audit(&r.log, "outcome", 3);
    assert_eq!((o["result"].as_str(), o["exit"].as_str()), ("timeout", "1"));
    assert_eq!(survivors(&r.f.dest, Duration::from_secs(3)), vec![]);
    assert!(hung.accepted.load(Ordering::SeqCst) >= 2);

    assert_eq!(fs::read(r.f.dest_path("SHA256SUMS")).unwrap(), old_sums);
    assert!(!r.f.dest_path("b.iso").exists());

    // Upstream answers again.
    r.configure(None, opts());
    r.f.sync().status(0).run();
    assert_eq!(fs::read(r.f.dest_path("b.iso")).unwrap(), b"release 2");
    let obs = obs.finish();
    assert_consistent("hung-upstream", &obs);
}

// ---------------------------------------------------------------------------
// 4. Full disk

/// Fills the filesystem of `dir` with `dir/FILLER`; returns its size.
fn fill(dir: &Path) -> u64 {
    let mut f = fs::File::create(dir.join("FILLER")).unwrap();
    let chunk = vec![0x5au8; 4096];
    let mut n = 0;
    while f.write_all(&chunk).is_ok() {
        n += chunk.len() as u64;
    }
    let _ = f.sync_all();
    n
}

e2e_test! {
    /// dest is a 2 MiB tmpfs and release 2 does not fit: the sync fails
    /// with rsync's "No space left on device" in its summary, release 1
    /// stays published and consistent, and with more space the next sync
    /// publishes release 2. Through ssh and sudo.
    fn a_full_dest_fails_with_a_clear_message_and_keeps_the_published_tree() {
        let mh = MirrorHost::new();
        let dest = mh.dest("iso");
        let gid = crate::support::mirror_host::gid_of(crate::support::mirror_host::READER_GROUP);
        let disk = Tmpfs::mount(&dest, &format!("size=2m,mode=2750,uid={},gid={gid}", mh.owner.uid));
        let a = bytes(300_000, 401);
        mh.put("iso", "a.iso", &a);
        mh.put("iso", "SHA256SUMS", sums(&[("a.iso", &a)]).as_bytes());
        mh.ssh(Some("sync")).status(0).run();
        let old_sums = fs::read(dest.join("SHA256SUMS")).unwrap();

        let big = bytes(3 << 20, 402);
        mh.put("iso", "big.iso", &big);
        mh.put("iso", "SHA256SUMS", sums(&[("a.iso", &a), ("big.iso", &big)]).as_bytes());
        let obs = Observer::start(&dest);
        let out = mh.ssh(Some("sync")).status(1).run();
        let err = stderr(&out);
        let line = summary(&err, "iso");
        eprintln!("full dest: {line}");
        assert!(line.contains("run #2 FAILED"), "{err}");
        assert!(line.contains("No space left on device"), "the summary must say why: {err}");
        let o = audit(&mh.log, "outcome", 2);
        assert_eq!((o["result"].as_str(), o["exit"].as_str()), ("failed", "1"), "{o:?}");
        assert!(o["message"].contains("No space left on device"), "{o:?}");
        assert_eq!(fs::read(dest.join("SHA256SUMS")).unwrap(), old_sums);
        assert!(!dest.join("big.iso").exists());

        // More space: the next sync publishes release 2.
        disk.remount("size=16m");
        mh.ssh(Some("sync")).status(0).run();
        assert_eq!(fs::read(dest.join("big.iso")).unwrap(), big);
        assert_eq!(audit(&mh.log, "outcome", 3)["result"], "success");
        let obs = obs.finish();
        assert_consistent("full-dest", &obs);
        drop(disk);
    }
}

e2e_test! {
    /// The state dir is a tiny tmpfs that fills up while a run is going:
    /// the run's result cannot be recorded, so the caller gets 70 (never a
    /// silent success); a request while it is still full gets 70 and runs
    /// nothing; with space back, the next request records the lost run as
    /// died and syncs.
    fn a_full_state_dir_is_an_internal_error_and_never_a_silent_success() {
        let host = Host::new();
        let dir = tempfile::Builder::new().prefix("faults-").tempdir_in(host.workspace()).unwrap();
        let f = Fixture::in_dir(dir, opts());
        fs::create_dir(&f.upstream).unwrap();
        fs::create_dir(&f.state).unwrap();
        let mut r = Rig::with(f, host.syslog());
        let disk = Tmpfs::mount(&r.f.state, "size=64k,mode=0750");
        let a = bytes(100_000, 411);
        r.release(&[("a.iso", &a)]);
        r.f.sync().status(0).run();

        let big = bytes(3 << 20, 412);
        r.release(&[("a.iso", &a), ("big.iso", &big)]);
        r.configure(None, opts().bwlimit(1000));
        let obs = Observer::start(&r.f.dest);
        let child = r
            .f
            .sync()
            .status(70)
            .stderr_contains("No space left on device")
            .stderr_contains("run #2 ended (success) but its result could not be recorded")
            .stderr_lacks("succeeded")
            .spawn();
        assert_eq!(r.f.wait_running(M, Duration::from_secs(20))["running"]["run"], 2);
        let filled = fill(&r.f.state);
        eprintln!("full state dir: filled {filled} bytes");
        let out = child.finish();
        let err = stderr(&out);
        eprintln!("full state dir: {}", err.lines().last().unwrap_or_default());
        let o = audit(&r.log, "outcome", 2);
        assert_eq!((o["result"].as_str(), o["exit"].as_str()), ("error", "70"), "{o:?}");
        let st = r.status();
        assert_eq!(st["state"], "stale", "{st:#}");
        assert_eq!(st["last_run"]["run"], 1, "run 2 must not be recorded as finished: {st:#}");

        // Still full: the next request cannot record the lost run and runs nothing.
        r.f.put(M, "late.iso", b"late");
        r.configure(None, opts());
        r.f.sync().status(70).stderr_contains("No space left on device").run();
        assert!(!r.f.dest_path("late.iso").exists());
        assert_eq!(audit(&r.log, "outcome", 3)["exit"], "70");
        assert_eq!(r.log.events("run-start").len(), 2, "no run may start while the state dir is full");

        // Space back.
        fs::remove_file(r.f.state.join("FILLER")).unwrap();
        let out = r.f.sync().status(0).run();
        let err = stderr(&out);
        assert!(err.contains("run #2") && err.contains("died"), "{err}");
        let s = r.f.state(M);
        let results: Vec<(u64, String)> = s["runs"].as_array().unwrap().iter()
            .map(|r| (r["run"].as_u64().unwrap(), r["result"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(results, vec![(1, "success".into()), (2, "died".into()), (3, "success".into())]);
        assert_eq!(fs::read(r.f.dest_path("late.iso")).unwrap(), b"late");
        assert_eq!(audit(&r.log, "run-died", 1)["run"], "2");
        let obs = obs.finish();
        assert_consistent("full-state-dir", &obs);
        drop(disk);
    }
}

// ---------------------------------------------------------------------------
// 5. Killed gate, killed rsync

/// This namespace's processes of `uid` whose command line contains `needle`.
fn owner_procs(uid: u32, needle: &str) -> Vec<i32> {
    procs::ours(procs::pids_of_user(uid))
        .into_iter()
        .filter(|&p| procs::cmdline(p).contains(needle))
        .collect()
}

/// How one killed-gate round goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GateKill {
    /// While stage 1 transfers a big image.
    Stage1,
    /// While stage 2 transfers a big marker (the new checksums are already
    /// in rsync's holding directory).
    Stage2,
    /// While stage 1 runs, with the old rsync processes stopped (SIGSTOP)
    /// first, so they cannot die quickly: the next transfer must wait for
    /// them (dest lock) and the owner side must fall back to SIGKILL.
    Stage1Stopped,
}

/// One round: a sync through ssh at 1000 KiB/s, kill -9 of its gate at
/// `when`, then at once the next request. Returns the killed run's id.
fn kill_gate_round(mh: &mut MirrorHost, when: GateKill, killed_run: u64) {
    let dest = mh.dest("iso");
    let tag = format!("{when:?}");
    mh.set_opts("iso", opts().bwlimit(1000));
    let err_path = mh.path(format!("killed-{tag}.stderr"));
    let mut cmd = mh.ssh_command(Some("sync"));
    cmd.stdout(Stdio::null())
        .stderr(fs::File::create(&err_path).unwrap());
    let mut client = ChildGuard::spawn(&mut cmd, "ssh sync");
    let client_err = || fs::read_to_string(&err_path).unwrap_or_default();
    let uid = mh.owner.uid;
    let started = wait_until(Duration::from_secs(30), || {
        partial_bytes(&dest) > 100_000
            && (when != GateKill::Stage2 || !owner_procs(uid, "--delay-updates").is_empty())
    })
    .is_some();
    assert!(
        started,
        "{tag}: the transfer never got going: {}",
        client_err()
    );
    if when == GateKill::Stage2 {
        assert!(
            dest.join(".~tmp~").is_dir(),
            "{tag}: stage 2 holds the new checksums in .~tmp~"
        );
    }
    let gates = mh.gate_programs();
    assert_eq!(gates.len(), 1, "{tag}: gate processes: {gates:?}");
    let old_owner = procs::ours(procs::pids_of_user(uid));
    let old_rsync = rsyncs_of(uid);
    assert!(
        !old_rsync.is_empty(),
        "{tag}: {}",
        procs::describe_pids(&old_owner)
    );
    if when == GateKill::Stage1Stopped {
        for &p in &old_rsync {
            let _ = kill(Pid::from_raw(p), Signal::SIGSTOP);
        }
    }
    kill(Pid::from_raw(gates[0]), Signal::SIGKILL).unwrap();
    let killed_at = Instant::now();
    let status = client
        .wait_timeout(Duration::from_secs(30))
        .expect("ssh client still running 30 s after its gate was killed");
    eprintln!("killed gate {tag}: ssh client {status}");
    assert!(
        !status.success(),
        "{tag}: the caller of a killed gate must fail"
    );

    if when == GateKill::Stage2 {
        // The owner side stops rsync (which keeps the interrupted marker in
        // .~tmp~) and removes the unpublished updates before it lets go.
        assert!(
            wait_until(Duration::from_secs(15), || old_owner
                .iter()
                .all(|&p| !alive(p)))
            .is_some(),
            "{tag}: the old run's processes survive:\n{}",
            procs::describe_pids(&old_owner)
        );
        assert_no_leftovers(&tag, &dest);
        assert!(!dest.join("release.json").exists());
    }

    // Watch for a new rsync running while an old one still does.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, old) = (stop.clone(), old_rsync.clone());
        std::thread::spawn(move || {
            let mut overlaps = Vec::new();
            let mut old_gone_after = None;
            while !stop.load(Ordering::SeqCst) {
                let now = rsyncs_of(uid);
                let old_alive: Vec<i32> = now.iter().copied().filter(|p| old.contains(p)).collect();
                let new: Vec<i32> = now.iter().copied().filter(|p| !old.contains(p)).collect();
                if !old_alive.is_empty() && !new.is_empty() {
                    overlaps.push(format!("old {old_alive:?} and new {new:?}"));
                }
                if old_alive.is_empty() && old_gone_after.is_none() {
                    old_gone_after = Some(killed_at.elapsed());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (overlaps, old_gone_after)
        })
    };

    // The next request, at once and without a bandwidth limit.
    mh.set_opts("iso", opts());
    let out = mh.ssh(Some("sync")).status(0).context(|| tag.clone()).run();
    stop.store(true, Ordering::SeqCst);
    let (overlaps, old_gone_after) = watcher.join().unwrap();
    let err = stderr(&out);
    assert!(
        !err.contains("queued"),
        "{tag}: the queue lock must be free at once: {err}"
    );
    assert!(
        err.contains(&format!("run #{killed_run} (pid {}", gates[0])) && err.contains("died"),
        "{tag}: {err}"
    );
    let line = summary(&err, "iso");
    assert!(
        line.contains(&format!("run #{} succeeded", killed_run + 1)),
        "{tag}: {err}"
    );
    assert_eq!(
        overlaps,
        Vec::<String>::new(),
        "{tag}: a new rsync overlapped an old one"
    );
    let old_gone_after = old_gone_after.expect("the old rsync never went away");
    eprintln!("killed gate {tag}: old rsync gone {old_gone_after:?} after the kill; next: {line}");
    if when == GateKill::Stage1Stopped {
        // Stopped, they ignored SIGTERM; the owner side killed them after
        // its grace period, and only then did the next transfer start.
        assert!(
            old_gone_after >= Duration::from_secs(3),
            "{tag}: {old_gone_after:?}"
        );
    }

    let rec = &mh.state("iso")["runs"];
    let rec = rec.as_array().unwrap();
    let killed = rec
        .iter()
        .find(|r| r["run"] == killed_run)
        .expect("killed run recorded");
    assert_eq!(killed["result"], "died", "{tag}: {killed:#}");
    assert_eq!(rec.last().unwrap()["result"], "success");
    let died = mh
        .log
        .wait_for(
            |l| {
                let f = fields(l);
                f.get("event").map(String::as_str) == Some("run-died")
                    && f.get("run") == Some(&killed_run.to_string())
            },
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| panic!("{tag}: no run-died line for run {killed_run}"));
    assert_eq!(fields(&died)["pid"], gates[0].to_string());

    // Nothing of the old run survives: not its transfer, not its rsync.
    let left: Vec<i32> = old_owner.iter().copied().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "{tag}: the old run's processes survive:\n{}",
        procs::describe_pids(&left)
    );
    let left = procs::ours(procs::pids_of_user(uid));
    assert!(
        left.is_empty(),
        "{tag}: owner processes left:\n{}",
        procs::describe_pids(&left)
    );
    assert_no_leftovers(&tag, &dest);
}

e2e_test! {
    /// kill -9 of the gate (the forced command, as the login account) while
    /// it holds the queue lock and rsync runs as the owner through sudo, in
    /// stage 1, in stage 2, and with the old rsync stopped so it cannot die
    /// quickly: each time the client fails, the owner side notices its
    /// lifeline is cut and stops rsync (removing unpublished updates), the
    /// next request proceeds at once (not queued), records the lost run as
    /// died and syncs, and no new rsync ever overlaps an old one.
    fn kill_9_of_the_gate_frees_the_queue_and_stops_the_owner_side() {
        let mut mh = MirrorHost::new();
        let dest = mh.dest("iso");
        let a = bytes(100_000, 501);
        mh.put("iso", "a.iso", &a);
        mh.put("iso", "SHA256SUMS", sums(&[("a.iso", &a)]).as_bytes());
        mh.ssh(Some("sync")).status(0).run();
        let obs = Observer::start(&dest);

        // Stage 1: a big image.
        let big1 = bytes(6 << 20, 502);
        mh.put("iso", "big1.iso", &big1);
        mh.put("iso", "SHA256SUMS", sums(&[("a.iso", &a), ("big1.iso", &big1)]).as_bytes());
        kill_gate_round(&mut mh, GateKill::Stage1, 2);
        assert_eq!(fs::read(dest.join("big1.iso")).unwrap(), big1);

        // Stage 2: new checksums (small, first) and a big marker.
        let c = bytes(50_000, 503);
        mh.put("iso", "c.iso", &c);
        mh.put("iso", "SHA256SUMS", sums(&[("a.iso", &a), ("big1.iso", &big1), ("c.iso", &c)]).as_bytes());
        let marker = bytes(3 << 20, 504);
        mh.put("iso", "release.json", &marker);
        kill_gate_round(&mut mh, GateKill::Stage2, 4);
        assert_eq!(fs::read(dest.join("release.json")).unwrap(), marker);

        // Stage 1 again, the old rsync unable to die quickly.
        let big3 = bytes(6 << 20, 505);
        mh.put("iso", "big3.iso", &big3);
        mh.put("iso", "SHA256SUMS", sums(&[("a.iso", &a), ("big3.iso", &big3)]).as_bytes());
        kill_gate_round(&mut mh, GateKill::Stage1Stopped, 6);
        assert_eq!(fs::read(dest.join("big3.iso")).unwrap(), big3);

        let obs = obs.finish();
        assert_consistent("killed-gate", &obs);
    }
}

/// Kills the rsync that `transfer` runs (its direct child; with
/// `stage2`, the one with `--delay-updates`) once the big file arrives.
fn kill_transfer_rsync(r: &Rig, stage2: bool) {
    let config = r.f.config.display().to_string();
    let rsync = || -> Vec<i32> {
        let transfer: Vec<i32> = processes_mentioning(&r.f.config)
            .into_iter()
            .filter(|(_, c)| c.contains(&format!("{config} transfer m")))
            .map(|(p, _)| p)
            .collect();
        processes_mentioning(&r.f.dest)
            .into_iter()
            .filter(|(p, c)| {
                transfer.contains(&ppid(*p).unwrap_or(0)) && c.contains("--delay-updates") == stage2
            })
            .map(|(p, _)| p)
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(20), || {
            partial_bytes(&r.f.dest) > 100_000 && rsync().len() == 1
        })
        .is_some(),
        "the transfer never got going: {:?}",
        processes_mentioning(&r.f.dest)
    );
    if stage2 {
        assert!(
            r.f.dest_path(".~tmp~").is_dir(),
            "stage 2 holds the new checksums in .~tmp~"
        );
    }
    kill(Pid::from_raw(rsync()[0]), Signal::SIGKILL).unwrap();
}

#[test]
fn kill_9_of_rsync_alone_fails_the_run_naming_rsyncs_death_and_the_next_sync_works() {
    let mut r = Rig::new();
    let a = bytes(100_000, 511);
    r.release(&[("a.iso", &a)]);
    r.f.sync().status(0).run();
    let obs = Observer::start(&r.f.dest);

    for (round, stage2) in [(2u64, false), (4, true)] {
        let old_sums = fs::read(r.f.dest_path("SHA256SUMS")).unwrap();
        let big = bytes(6 << 20, 512 + round);
        if stage2 {
            // New checksums (small, first), then a big marker.
            r.release(&[("a.iso", &a), ("c.iso", b"c")]);
            r.f.put(M, "release.json", &big);
        } else {
            r.release(&[("a.iso", &a), ("big.iso", &big)]);
        }
        r.configure(None, opts().bwlimit(1000));
        let child = r.f.sync().status(1).spawn();
        kill_transfer_rsync(&r, stage2);

        let out = child.finish();
        let err = stderr(&out);
        let line = summary(&err, "m");
        eprintln!("killed rsync (stage 2: {stage2}): {line}");
        let stage = if stage2 { "stage 2" } else { "stage 1" };
        assert!(
            line.contains(&format!("run #{round} FAILED"))
                && line.contains(&format!(
                    "{stage} failed: rsync was killed by signal 9 (SIGKILL)"
                )),
            "{err}"
        );
        assert_eq!(r.f.last_run(M)["result"], "failed");
        let o = audit(&r.log, "outcome", round as usize);
        assert_eq!((o["result"].as_str(), o["exit"].as_str()), ("failed", "1"));
        assert!(o["message"].contains("killed by signal 9"), "{o:?}");
        assert_eq!(survivors(&r.f.dest, Duration::from_secs(5)), vec![]);
        // Nothing of the new release is published, not even half-hidden.
        assert_eq!(fs::read(r.f.dest_path("SHA256SUMS")).unwrap(), old_sums);
        let name = if stage2 { "release.json" } else { "big.iso" };
        assert!(!r.f.dest_path(name).exists());
        assert_no_leftovers(stage, &r.f.dest);

        r.configure(None, opts());
        r.f.sync().status(0).run();
        assert_eq!(fs::read(r.f.dest_path(name)).unwrap(), big);
        fs::remove_file(r.f.upstream.join(name)).unwrap();
    }
    let obs = obs.finish();
    assert_consistent("killed-rsync", &obs);
}

// ---------------------------------------------------------------------------
// 6. Bad state file

#[test]
fn corrupt_truncated_and_garbage_state_files_warn_in_the_audit_and_never_claim_success() {
    let r = Rig::new();
    r.release(&[("a.iso", b"a")]);
    r.f.sync().status(0).run();
    let good = fs::read(r.f.state.join("m.state.json")).unwrap();
    assert!(r.status()["last_success"].is_u64());

    let mut garbage = bytes(2000, 601);
    garbage[0] = b'{';
    garbage[10] = 0;
    garbage[11] = 0xff;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("garbage", garbage),
        (
            "wrong-shape",
            b"{\"version\": 1, \"last_started\": \"many\", \"last_success\": 1}\n".to_vec(),
        ),
    ];
    for (n, (case, body)) in cases.iter().enumerate() {
        fs::write(r.f.state.join("m.state.json"), body).unwrap();
        let st = r.status();
        assert!(
            st["warning"]
                .as_str()
                .unwrap_or_default()
                .contains("corrupt"),
            "{case}: {st:#}"
        );
        assert!(
            st["last_success"].is_null(),
            "{case}: no success from a corrupt file: {st:#}"
        );
        assert!(st["last_run"].is_null(), "{case}: {st:#}");
        r.f.sync()
            .status(0)
            .stderr_contains("corrupt")
            .context(|| format!("case: {case}"))
            .run();
        let w = audit(&r.log, "state-corrupt", n + 1);
        eprintln!("state file {case}: audit detail={:?}", w["detail"]);
        assert_eq!(w["mirror"], "m", "{case}: {w:?}");
        assert!(w["detail"].contains("m.state.json"), "{case}: {w:?}");
        let st = r.status();
        assert!(
            st["warning"].is_null(),
            "{case}: the file was replaced: {st:#}"
        );
        assert_eq!(st["last_run"]["result"], "success", "{case}: {st:#}");
        assert_eq!(r.f.state(M)["runs"].as_array().unwrap().len(), 1, "{case}");
    }
}

// ---------------------------------------------------------------------------
// 7. Unwritable state dir, unreadable or missing config

const NOBODY: u32 = 65534;

/// `syncgate ARGS` as an unprivileged user: `nobody` via setpriv when we are
/// root (root ignores modes), else ourselves.
fn unprivileged(args: &[&OsArg]) -> Test<'static> {
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new(support::require_tool("setpriv"));
        c.arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg("--")
            .arg(syncgate_bin());
        c
    } else {
        Command::new(syncgate_bin())
    };
    cmd.args(args).stdin(Stdio::null());
    Test::new(cmd)
}

type OsArg = std::ffi::OsStr;

#[track_caller]
fn one_line(out: &std::process::Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "want exactly one line: {}",
        support::show(out)
    );
    lines[0].to_string()
}

#[test]
fn an_unwritable_state_dir_exits_70_and_a_broken_config_exits_78_each_with_one_line() {
    let r = Rig::new();
    r.release(&[("a.iso", b"a")]);
    let root = nix::unistd::geteuid().is_root();
    // nobody must reach the config, the state dir and the syslog socket.
    fs::set_permissions(r.f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(&r.f.state).unwrap();
    if root {
        nix::unistd::chown(&r.f.state, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    }
    let cfg = r.f.config.as_os_str();
    let sync: [&OsArg; 4] = ["--config".as_ref(), cfg, "sync".as_ref(), "m".as_ref()];

    // Read-only state dir, no lock file yet.
    fs::set_permissions(&r.f.state, fs::Permissions::from_mode(0o500)).unwrap();
    let out = unprivileged(&sync).status(70).run();
    let line = one_line(&out);
    eprintln!("read-only state dir, no lock file: exit 70: {line}");
    assert!(
        line.contains("lock file") && line.contains("Permission denied"),
        "{line}"
    );
    let o = audit(&r.log, "outcome", 1);
    assert_eq!(
        (o["result"].as_str(), o["exit"].as_str()),
        ("error", "70"),
        "{o:?}"
    );

    // Read-only state dir with a lock file: the state cannot be saved, so
    // no run starts.
    fs::set_permissions(&r.f.state, fs::Permissions::from_mode(0o700)).unwrap();
    let lock = r.f.state.join("m.lock");
    fs::write(&lock, b"").unwrap();
    fs::set_permissions(&lock, fs::Permissions::from_mode(0o640)).unwrap();
    if root {
        nix::unistd::chown(&lock, Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    }
    fs::set_permissions(&r.f.state, fs::Permissions::from_mode(0o500)).unwrap();
    let out = unprivileged(&sync).status(70).run();
    let line = one_line(&out);
    eprintln!("read-only state dir: exit 70: {line}");
    assert!(
        line.contains(&r.f.state.display().to_string()) && line.contains("Permission denied"),
        "{line}"
    );
    assert_eq!(audit(&r.log, "outcome", 2)["exit"], "70");
    assert!(!r.f.dest_path("a.iso").exists());
    assert!(r.log.lines().iter().all(|l| !l.contains("event=run-start")));

    // state_dir is a file.
    fs::set_permissions(&r.f.state, fs::Permissions::from_mode(0o700)).unwrap();
    fs::remove_dir_all(&r.f.state).unwrap();
    fs::write(&r.f.state, b"not a directory").unwrap();
    let out = r.f.sync().status(70).run();
    eprintln!("state_dir is a file: exit 70: {}", one_line(&out));
    assert!(
        one_line(&out).contains("is not a directory"),
        "{}",
        support::show(&out)
    );

    // Writable again: the next request works.
    fs::remove_file(&r.f.state).unwrap();
    r.f.sync().status(0).run();

    // Unreadable config (only matters when not root: root reads anything).
    fs::set_permissions(&r.f.config, fs::Permissions::from_mode(0o600)).unwrap();
    if root {
        let out = unprivileged(&sync).status(78).run();
        let line = one_line(&out);
        eprintln!("unreadable config: exit 78: {line}");
        assert!(
            line.contains(&config_str(&r.f.config)) && line.contains("Permission denied"),
            "{line}"
        );
    }
    // Missing config.
    let missing = r.f.dir.path().join("missing.toml");
    let mut cmd = Command::new(syncgate_bin());
    cmd.arg("--config")
        .arg(&missing)
        .args(["sync", "m"])
        .stdin(Stdio::null());
    let out = Test::new(cmd).status(78).run();
    let line = one_line(&out);
    eprintln!("missing config: exit 78: {line}");
    assert!(
        line.contains(&config_str(&missing)) && line.contains("No such file"),
        "{line}"
    );
    r.f.syncgate().args(["status", "--json"]).status(0).run();
}

fn config_str(p: &Path) -> String {
    p.display().to_string()
}
