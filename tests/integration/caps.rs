//! Limits a leaked builder key or a broken state directory cannot get past:
//! `max_waiting` per mirror and per key (answered at once with exit 75 and
//! an `event=refused reason=queue-full` line), the memory a waiting
//! request holds, and state files that are not regular files of a sane
//! size (a FIFO, a symlink to /dev/zero, a huge file): `status` and
//! `sync` finish promptly and treat them as corrupt state.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::cmd::Running;
use crate::support::fixture::{Fixture, M};
use crate::support::mirror_host::MirrorHost;
use crate::support::{
    assert_contains, assert_eventually, e2e_test, opts, procs, syncgate_bin, Key, Mirrors, Opts,
    Test,
};

/// Long enough for any single request here.
const SLOW: Duration = Duration::from_secs(60);
/// What "at once" and "promptly" mean here.
const PROMPT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------- helpers

/// Requests waiting for `lock`, from the kernel's lock table.
fn waiting(lock: &Path) -> u64 {
    syncgate::sys::proc_locks::usage(lock).waiting
}

/// The mirror's lock, held by the test (as root) like a long run would.
fn hold(lock: &Path) -> File {
    let f = File::open(lock).unwrap_or_else(|e| panic!("{}: {e}", lock.display()));
    f.lock().unwrap();
    f
}

/// A host whose `iso` (with `opts`) has synced once (so its lock file
/// exists), with `keys` as the key tables.
fn synced_host(opts: Opts, keys: &[Key]) -> MirrorHost {
    let mh = MirrorHost::with(&[("iso", opts)], keys);
    mh.put("iso", "a.iso", b"image");
    mh.ssh(Some("sync")).status(0).run();
    mh
}

/// `ssh … sync` in the background; it must exit 0.
fn spawn_sync(mh: &MirrorHost) -> Running<'_> {
    mh.ssh(Some("sync")).status(0).spawn()
}

/// The refusal a full queue gives: 75 at once, one clear line, and the
/// `refused` and `outcome` audit lines. Returns the `refused` line.
fn assert_queue_full(mh: &MirrorHost, key: &Path, limit: &str) -> BTreeMap<String, String> {
    let before = mh.log.events("refused").len();
    let t0 = Instant::now();
    mh.ssh_raw(key, Some(OsStr::new("sync")))
        .status(75)
        .stderr_contains("syncgate: iso: mirror iso: the queue is full: ")
        .stderr_contains("max_waiting = ")
        .stderr_lacks("queued behind")
        .spawn()
        .finish_within(PROMPT);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "answered at once: {:?}",
        t0.elapsed()
    );
    assert_eventually(Duration::from_secs(5), "a refused line", || {
        mh.log.events("refused").len() > before
    });
    let r = mh.log.events("refused").pop().unwrap();
    assert_eq!(
        (
            r["reason"].as_str(),
            r["limit"].as_str(),
            r["mirror"].as_str()
        ),
        ("queue-full", limit, "iso"),
        "{r:?}"
    );
    let request = r["request"].clone();
    assert_eventually(Duration::from_secs(5), "its outcome line", || {
        mh.log
            .events("outcome")
            .iter()
            .any(|o| o["request"] == request)
    });
    let o = mh
        .log
        .events("outcome")
        .into_iter()
        .find(|o| o["request"] == request)
        .unwrap();
    assert_eq!(
        (o["result"].as_str(), o["exit"].as_str()),
        ("queue-full", "75"),
        "{o:?}"
    );
    r
}

// ------------------------------------------------------- item 1: max_waiting

e2e_test! {
    /// With `max_waiting = 2` and two requests waiting behind a held lock,
    /// a third `ssh … sync` is answered at once with exit 75, a clear line,
    /// `event=refused reason=queue-full limit=mirror` and an outcome line
    /// `result=queue-full`; the two waiting ones are served as before.
    fn a_full_mirror_queue_answers_the_next_request_at_once_with_75() {
        let mh = synced_host(opts().max_waiting(2), &[Key::jenkins()]);
        let lock_path = mh.state_dir.join("iso.lock");
        let lock = hold(&lock_path);
        let queued: Vec<Running> = (0..2).map(|_| spawn_sync(&mh)).collect();
        assert_eventually(SLOW, "two requests waiting", || waiting(&lock_path) == 2);

        let r = assert_queue_full(&mh, &mh.key, "mirror");
        assert_eq!((r["waiting"].as_str(), r["max_waiting"].as_str(), r["key"].as_str()), ("2", "2", "jenkins"));
        assert_eq!(waiting(&lock_path), 2, "the refused request never queued");

        drop(lock);
        for q in queued {
            q.finish_within(SLOW);
        }
        assert_eq!(mh.state("iso")["last_started"], 2, "one run served both waiting requests");
    }
}

e2e_test! {
    /// `[key.jenkins] max_waiting = 1`: a second waiting request of the
    /// key is refused (`limit=key`), while another key still queues; once
    /// the queue drains the key's seat is free again.
    fn a_keys_max_waiting_caps_its_own_requests_only() {
        let jenkins = Key { max_waiting: Some(1), ..Key::jenkins() };
        let other = Key { name: "other", verbs: vec!["sync"], mirrors: vec!["iso"], from: vec![], max_waiting: None, runmirrors: false };
        let mh = synced_host(opts(), &[jenkins, other]);
        let other = mh.add_key("other", &[]);
        let lock_path = mh.state_dir.join("iso.lock");
        let lock = hold(&lock_path);
        let first = spawn_sync(&mh);
        assert_eventually(SLOW, "jenkins's request waiting", || waiting(&lock_path) == 1);

        let r = assert_queue_full(&mh, &mh.key, "key");
        assert_eq!((r["waiting"].as_str(), r["max_waiting"].as_str(), r["key"].as_str()), ("1", "1", "jenkins"));

        let second = mh.ssh_raw(&other, Some(OsStr::new("sync"))).status(0).spawn();
        assert_eventually(SLOW, "the other key's request waiting too", || waiting(&lock_path) == 2);
        drop(lock);
        for q in [first, second] {
            q.finish_within(SLOW);
        }
        // The seat is free again: jenkins may wait once more.
        let lock = hold(&lock_path);
        let again = spawn_sync(&mh);
        assert_eventually(SLOW, "jenkins waiting again", || waiting(&lock_path) == 1);
        drop(lock);
        again.finish_within(SLOW);
    }
}

e2e_test! {
    /// Eight requests of a key with `max_waiting = 3` at once, behind a held
    /// lock: never more than 3 wait, the others are answered 75 at once,
    /// and every one that waited is served once the lock is free.
    fn a_burst_never_puts_more_than_the_keys_max_waiting_in_the_queue() {
        let mh = synced_host(opts(), &[Key { max_waiting: Some(3), ..Key::jenkins() }]);
        let lock_path = mh.state_dir.join("iso.lock");
        let lock = hold(&lock_path);
        // Each exits 0 or 75; the test counts which below.
        let mut burst: Vec<Running> = (0..8).map(|_| mh.ssh(Some("sync")).spawn()).collect();
        let mut most = 0;
        let deadline = Instant::now() + SLOW;
        loop {
            let w = waiting(&lock_path);
            most = most.max(w);
            let ended = burst.iter_mut().map(Running::exited).filter(|d| *d).count() as u64;
            if ended + w == 8 && mh.log.events("decision").len() >= 9 {
                break;
            }
            assert!(Instant::now() < deadline, "burst not settled: {ended} ended, {w} waiting");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!((1..=3).contains(&most), "{most} waited at once");
        drop(lock);
        let outs: Vec<Output> = burst.into_iter().map(|b| b.finish_unchecked_within(SLOW)).collect();
        let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
        let served = codes.iter().filter(|c| **c == Some(0)).count();
        let refused = codes.iter().filter(|c| **c == Some(75)).count();
        assert_eq!(served + refused, 8, "{codes:?}");
        assert_eq!(served as u64, most, "every request that waited was served: {codes:?}");
        assert_eq!(mh.log.events("refused").len(), refused);
    }
}

/// Local requests (root, the timer) are counted but never refused: with
/// `max_waiting = 1`, two local `syncgate sync` wait and both succeed.
#[test]
fn local_syncs_are_counted_but_never_refused() {
    let f = Fixture::new(opts().max_waiting(1));
    f.put(M, "a.iso", b"image");
    f.sync().status(0).run();
    let lock_path = f.state.join("m.lock");
    let lock = hold(&lock_path);
    let queued: Vec<Running> = (0..2).map(|_| f.spawn_sync()).collect();
    assert_eventually(SLOW, "two local requests waiting", || {
        waiting(&lock_path) == 2
    });
    drop(lock);
    for q in queued {
        q.finish_within(SLOW);
    }
}

// --------------------------------------------------- item 2: memory

/// VmRSS and Threads from /proc/PID/status, Pss and Private_Dirty from
/// smaps_rollup, all KiB.
fn memory(pid: i32) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    for (file, keys) in [
        (&status, &["VmRSS:", "RssAnon:", "VmPTE:", "Threads:"][..]),
        (&rollup, &["Pss:", "Private_Dirty:"][..]),
    ] {
        for line in file.lines() {
            for k in keys {
                if line.starts_with(k) {
                    let v = line.split_whitespace().nth(1).and_then(|v| v.parse().ok());
                    m.insert(k.trim_end_matches(':'), v.unwrap_or(0));
                }
            }
        }
    }
    m
}

fn parent(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Adds `m` into `sum`.
fn add(sum: &mut BTreeMap<&'static str, u64>, m: &BTreeMap<&'static str, u64>) {
    for (k, v) in m {
        *sum.entry(*k).or_insert(0) += v;
    }
}

/// How many requests wait while memory is measured (Pss shares the pages
/// the gates have in common among them, as on a busy host).
const MEASURED: usize = 10;

e2e_test! {
    /// Ten `ssh … sync` waiting behind a held lock: each gate runs a single
    /// thread (no lock-waiting thread). The memory per request, of the
    /// gate and of its shell and sshd session processes, is printed as
    /// `memory-figures:` lines (averages over the ten, KiB).
    fn a_waiting_request_holds_one_thread_and_little_memory() {
        let mh = synced_host(opts(), &[Key::jenkins()]);
        let lock_path = mh.state_dir.join("iso.lock");
        let lock = hold(&lock_path);
        let queued: Vec<Running> = (0..MEASURED).map(|_| spawn_sync(&mh)).collect();
        assert_eventually(SLOW, "the requests waiting", || waiting(&lock_path) == MEASURED as u64);
        std::thread::sleep(Duration::from_secs(2));
        let gates = mh.gate_programs();
        assert_eq!(gates.len(), MEASURED, "{}", procs::describe_pids(&gates));
        let (mut gate_sum, mut shell_sum, mut sshd_sum, mut all_sum) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut processes = 0;
        for &g in &gates {
            let m = memory(g);
            add(&mut gate_sum, &m);
            add(&mut all_sum, &m);
            processes += 1;
            let mut p = g;
            while let Some(up) = parent(p) {
                let cmd = procs::cmdline(up);
                let sum = if cmd.starts_with("sshd: ") && !cmd.contains("[listener]") {
                    &mut sshd_sum
                } else if cmd.contains("ssh --key") {
                    &mut shell_sum
                } else {
                    break;
                };
                let m = memory(up);
                add(sum, &m);
                add(&mut all_sum, &m);
                processes += 1;
                p = up;
            }
        }
        let per = |sum: &BTreeMap<&str, u64>| -> BTreeMap<String, u64> {
            sum.iter().map(|(k, v)| (k.to_string(), v / MEASURED as u64)).collect()
        };
        println!("memory-figures: per waiting request (KiB), {MEASURED} waiting, {} processes each", processes / MEASURED);
        println!("memory-figures: gate  {:?}", per(&gate_sum));
        println!("memory-figures: shell {:?}", per(&shell_sum));
        println!("memory-figures: sshd  {:?}", per(&sshd_sum));
        println!("memory-figures: all   {:?}", per(&all_sum));
        assert_eq!(gate_sum["Threads"], MEASURED as u64, "a waiting gate needs no second thread");
        drop(lock);
        for q in queued {
            q.finish_within(SLOW);
        }
    }
}

// ---------------------------------------------------- item 3: state files

/// `syncgate ARGS` under a 1 GiB address-space limit, so that reading
/// without a bound fails fast instead of eating the machine's memory.
fn limited(f: &Fixture, args: &[&str]) -> Test<'static> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
        .arg(syncgate_bin())
        .arg("--config")
        .arg(&f.config)
        .args(args)
        .stdin(Stdio::null());
    Test::new(c).tree(&f.dest)
}

/// `status`, `status --json` and `sync` over a state file that is not a
/// regular file of a sane size: each finishes promptly; status warns that
/// the state is corrupt (`why` names what it is) and exits 0; sync
/// reports and audits it, replaces it with a regular file and succeeds.
fn assert_survives_bad_state(f: &Fixture, why: &str) {
    let state = f.state.join("m.state.json");
    limited(f, &["status"])
        .status(0)
        .stdout_contains("warning: state file ")
        .stdout_contains("is corrupt (it is ")
        .stdout_contains(why)
        .spawn()
        .finish_within(PROMPT);

    let out = limited(f, &["status", "--json"])
        .status(0)
        .spawn()
        .finish_within(PROMPT);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["mirrors"][0]["warning"].as_str().unwrap().contains(why),
        "{doc:#}"
    );

    limited(f, &["sync", M])
        .status(0)
        .stderr_contains("warning: state file ")
        .stderr_contains(why)
        .stderr_contains("run #1 succeeded")
        .spawn()
        .finish_within(PROMPT);
    // Audited: with no syslog socket here the audit lines go to the
    // fallback file in the state dir.
    let audit =
        fs::read_to_string(f.state.join(syncgate::audit::FALLBACK_FILE)).unwrap_or_default();
    assert_contains(&audit, "event=state-corrupt mirror=m ");
    let md = fs::symlink_metadata(&state).unwrap();
    assert!(
        md.file_type().is_file() && md.len() < 1 << 20,
        "replaced by a regular file"
    );
    assert_eq!(f.state(M)["runs"][0]["result"], "success");
}

fn bad_state_fixture() -> (Fixture, PathBuf) {
    let f = Fixture::new(opts());
    f.put(M, "a.iso", b"image");
    fs::create_dir_all(&f.state).unwrap();
    fs::set_permissions(
        &f.state,
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    let state = f.state.join("m.state.json");
    (f, state)
}

/// Opens a FIFO for writing on drop, so that a reader blocked on it (the
/// code before the fix) is released and nothing is left hanging.
struct FifoRelease(PathBuf);

impl Drop for FifoRelease {
    fn drop(&mut self) {
        use std::os::unix::fs::OpenOptionsExt;
        for _ in 0..50 {
            let _ = fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&self.0);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn mkfifo(p: &Path) -> FifoRelease {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    FifoRelease(p.to_path_buf())
}

#[test]
fn a_fifo_as_state_file_hangs_neither_status_nor_sync() {
    let (f, state) = bad_state_fixture();
    let _release = mkfifo(&state);
    assert_survives_bad_state(&f, "a FIFO, not a regular file");
}

#[test]
fn a_state_file_symlinked_to_dev_zero_is_not_read() {
    let (f, state) = bad_state_fixture();
    std::os::unix::fs::symlink("/dev/zero", &state).unwrap();
    assert_survives_bad_state(&f, "a symlink, which is not followed");
}

#[test]
fn a_huge_state_file_is_not_read() {
    let (f, state) = bad_state_fixture();
    File::create(&state).unwrap().set_len(8 << 30).unwrap();
    assert_survives_bad_state(&f, "8589934592 bytes, more than a state file may have");
}

e2e_test! {
    /// The builder's `status` and `sync` over ssh with a FIFO as the
    /// state file: both finish promptly; sync is audited (state-corrupt)
    /// and replaces the FIFO.
    fn a_fifo_as_state_file_hangs_neither_the_builders_status_nor_sync() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        let state = mh.state_dir.join("iso.state.json");
        let _release = mkfifo(&state);
        mh.ssh(Some("status"))
            .status(0)
            .stderr_contains("is corrupt (it is a FIFO, not a regular file)")
            .spawn()
            .finish_within(PROMPT);
        mh.ssh(Some("sync")).status(0).stderr_contains("warning: state file").spawn().finish_within(PROMPT);
        assert_eventually(Duration::from_secs(5), "a state-corrupt line", || !mh.log.events("state-corrupt").is_empty());
        assert!(fs::symlink_metadata(&state).unwrap().file_type().is_file());
        assert_eq!(mh.state("iso")["runs"][0]["result"], "success");
    }
}
