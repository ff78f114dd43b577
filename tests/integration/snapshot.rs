//! Snapshot publishing end to end (`publish = "snapshot"`), through ssh,
//! the forced command, sudo and the real accounts: dest is a symlink
//! `dest -> .NAME.snapshots/ID`, a changed run builds a new tree beside
//! the live one and makes it live with one rename, `keep` snapshots are
//! kept, `syncgate rollback` goes back one.
//!
//! Observer figures are printed (`--nocapture` shows them) as
//! `observer <scenario>: observations=N mismatches=M releases seen=R`.
//! See tests/RELIABILITY.md, "Snapshots".

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::stat::utimes;
use nix::sys::time::TimeVal;
use nix::unistd::Pid;

use crate::support::check::{audit, summary};
use crate::support::host::{set_mode, Tmpfs};
use crate::support::mirror_host::{
    gid_of, make_dest, MirrorHost, LOGIN, OWNER, READER, READER_GROUP,
};
use crate::support::observer::{sha256_hex, sums};
use crate::support::snapshots::{build_dir, ids, live_id, root_of, ReleaseReader, PRIVATE};
use crate::support::tree::{assert_published_tree, stamps, walk, write_attempts};
use crate::support::{
    self, bytes, e2e_test, fields, opts, procs, stderr, wait_until, ChildGuard, Mirrors, Opts, Test,
};

// ---------------------------------------------------------------------------
// Helpers

/// Writes `rel` into mirror `iso`'s upstream with mtime `mtime` (seconds):
/// a release replaced in place keeps its names, and a fixed mtime keeps
/// rsync's quick check honest however fast the test runs.
fn put_at(mh: &MirrorHost, rel: &str, body: &[u8], mtime: i64) {
    mh.put("iso", rel, body);
    let t = TimeVal::new(mtime, 0);
    utimes(&mh.upstream_dir("iso").join(rel), &t, &t).unwrap();
}

/// Release `n` of the scenario: `neon-current.iso` (`size` bytes,
/// content and length differ per release) and its `SHA256SUMS`, replaced
/// upstream in place under the same names.
fn neon_release(mh: &MirrorHost, n: u64, size: usize) -> Vec<u8> {
    let image = bytes(size + n as usize * 4096, 9000 + n);
    let t = 1_700_000_000 + n as i64 * 1000;
    put_at(mh, "neon-current.iso", &image, t);
    put_at(
        mh,
        "SHA256SUMS",
        sums(&[("neon-current.iso", &image)]).as_bytes(),
        t,
    );
    image
}

/// `count` small files beside the image, in 20 directories.
fn small_files(mh: &MirrorHost, count: usize) {
    for i in 0..count {
        mh.put(
            "iso",
            &format!("pool/{:02}/pkg-{i:05}.deb", i % 20),
            format!("package {i}\n").as_bytes(),
        );
    }
}

/// A small release `n`: `a.iso`, `sub/b.iso` and `SHA256SUMS` naming both
/// (and the `extra` files, which keep one mtime across releases).
fn small_release(mh: &MirrorHost, n: u64, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let a = bytes(50_000 + n as usize, 7000 + n);
    let b = format!("image b, release {n}\n").into_bytes();
    let t = 1_700_000_000 + n as i64 * 1000;
    put_at(mh, "a.iso", &a, t);
    put_at(mh, "sub/b.iso", &b, t);
    let mut files: Vec<(&str, &[u8])> = vec![("a.iso", &a), ("sub/b.iso", &b)];
    for (name, body) in extra {
        // The same mtime in every release: unchanged when the body is.
        put_at(mh, name, body, 1_600_000_000);
        files.push((name, body));
    }
    let s = sums(&files);
    put_at(mh, "SHA256SUMS", s.as_bytes(), t);
    s.into_bytes()
}

/// What the owner side says when a run has nothing to publish.
const UNCHANGED: &str = "unchanged: the mirror matches upstream; nothing to publish or delete";

/// `ssh … sync` that must succeed; its stderr.
#[track_caller]
fn sync_ok(mh: &MirrorHost) -> String {
    stderr(&mh.ssh(Some("sync")).status(0).run())
}

/// Status of mirror `iso` as JSON (root, local).
#[track_caller]
fn status_json(mh: &MirrorHost) -> serde_json::Value {
    let out = mh
        .syncgate()
        .args(["status", "iso", "--json"])
        .status(0)
        .run();
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["mirrors"][0].clone()
}

/// The size of the biggest file directly in `dir` (rsync's temporary of
/// the file it is writing), 0 if none.
fn biggest_file(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The owner's rsync building the snapshot (not the plan's dry run): the
/// one whose parent is not an rsync itself.
fn building_rsync(mh: &MirrorHost) -> Vec<i32> {
    let all = procs::rsyncs_of(mh.owner.uid);
    all.iter()
        .copied()
        .filter(|&p| {
            let c = procs::cmdline(p);
            c.contains("/.syncgate-tmp/build/")
                && !c.contains("--dry-run")
                && !procs::parent_of(p).is_some_and(|pp| all.contains(&pp))
        })
        .collect()
}

/// Waits until the build has written more than 100 kB of a big file.
#[track_caller]
fn wait_building(mh: &MirrorHost, dest: &Path) {
    let build = build_dir(dest);
    assert!(
        wait_until(Duration::from_secs(30), || biggest_file(&build) > 100_000
            && building_rsync(mh).len() == 1)
        .is_some(),
        "the build never got going: {}\n{}",
        support::cmd::tree(&build),
        procs::describe_pids(&procs::rsyncs_of(mh.owner.uid))
    );
}

/// dest names `id` and serves `sums` as its `SHA256SUMS`.
#[track_caller]
fn assert_serves(dest: &Path, id: &str, sums: &[u8]) {
    assert_eq!(live_id(dest), id, "the live snapshot");
    assert_eq!(
        fs::read(dest.join("SHA256SUMS")).unwrap(),
        sums,
        "SHA256SUMS through dest"
    );
}

/// The scenario: a few MiB image and its SHA256SUMS replaced in
/// place upstream, a few thousand small files beside them, three changed
/// runs through ssh while a reader (the web server's account) checks one
/// whole release per observation. Returns what the reader saw.
fn neon_scenario(mh: &MirrorHost, scenario: &str) -> crate::support::snapshots::Reads {
    let dest = mh.dest("iso");
    small_files(mh, 2000);
    neon_release(mh, 0, 4 << 20);
    sync_ok(mh);
    let reader = ReleaseReader::start(&mh.host, READER, &dest, "SHA256SUMS");
    let t0 = Instant::now();
    for n in 1..=3 {
        let image = neon_release(mh, n, 4 << 20);
        sync_ok(mh);
        assert_eq!(fs::read(dest.join("neon-current.iso")).unwrap(), image);
    }
    // A last stretch on the final release.
    std::thread::sleep(Duration::from_millis(300));
    let reads = reader.finish();
    eprintln!(
        "observer {scenario}: three changed runs took {:?}",
        t0.elapsed()
    );
    reads.print(scenario);
    reads
}

// ---------------------------------------------------------------------------
// Consistency

e2e_test! {
    /// The scenario: `neon-current.iso` and its `SHA256SUMS`
    /// replaced upstream in place, 2,000 small files beside them, three
    /// changed runs. A reader as `webreader` resolves dest once per
    /// observation and checks the image against the checksum file through
    /// that directory: with snapshots it never sees a mismatch. The same
    /// scenario published in place (two-stage) is run too, and its
    /// mismatches printed: the window snapshots close.
    fn a_snapshot_mirror_serves_one_whole_release_at_every_instant() {
        let mh = MirrorHost::with_snapshots(&[("iso", opts().bwlimit(4096))], &[support::Key::jenkins()]);
        let reads = neon_scenario(&mh, "snapshot");
        assert!(
            reads.mismatches.is_empty(),
            "snapshot: {} of {} observations saw a mismatch, first: {:#?}",
            reads.mismatches.len(),
            reads.observations,
            &reads.mismatches[..reads.mismatches.len().min(5)]
        );
        assert!(reads.observations >= 30, "snapshot: the reader did too little: {reads:?}");
        assert!(
            reads.releases.len() >= 3,
            "snapshot: the reader saw {} releases: {:?}",
            reads.releases.len(),
            reads.releases
        );
        let root = root_of(&mh.dest("iso"));
        assert!(
            reads.releases.iter().all(|d| Path::new(d).starts_with(&root)),
            "the reader resolved dest outside the snapshots: {:?}",
            reads.releases
        );

        // The same scenario published in place: documented, not asserted.
        // (One host at a time: the accounts are made anew.)
        drop(mh);
        let mh = MirrorHost::with(
            &[("iso", opts().bwlimit(4096).publish("two-stage"))],
            &[support::Key::jenkins()],
        );
        let two = neon_scenario(&mh, "two-stage");
        eprintln!(
            "observer snapshot vs two-stage: {} vs {} mismatches ({} vs {} observations)",
            reads.mismatches.len(),
            two.mismatches.len(),
            reads.observations,
            two.observations
        );
    }
}

// ---------------------------------------------------------------------------
// Layout, no-change runs, keep, status, ownership

e2e_test! {
    /// A first sync makes dest a symlink to snapshot 1; a sync with no
    /// change says unchanged and builds nothing; each changed sync makes
    /// exactly one new snapshot and `keep = 2` leaves two; status shows the
    /// live and kept ids (text and JSON). Published entries are
    /// mirror:www-data 0640/2750 through the symlink, dest is the owner's
    /// symlink, `.iso.snapshots` is 2750 mirror:www-data; webreader reads
    /// through dest; the login account can change nothing there.
    fn snapshots_are_made_only_for_changes_kept_owned_and_shown() {
        let mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        let root = root_of(&dest);
        let s1 = small_release(&mh, 1, &[]);
        let err = sync_ok(&mh);
        support::assert_lacks(&err, "publishing in place");
        let id1 = live_id(&dest);
        assert_eq!(ids(&dest), vec![id1.clone()]);
        assert_serves(&dest, &id1, &s1);

        // No change: nothing is built, nothing switched.
        let err = sync_ok(&mh);
        support::assert_contains(&err, UNCHANGED);
        support::assert_lacks(&err, "snapshot: building");
        assert_eq!(ids(&dest), vec![id1.clone()], "a no-change run made a snapshot");
        assert!(!build_dir(&dest).exists(), "a no-change run left a build");
        assert_serves(&dest, &id1, &s1);

        // Changes: one new snapshot each; keep = 2.
        let s2 = small_release(&mh, 2, &[]);
        let err = sync_ok(&mh);
        let id2 = live_id(&dest);
        support::assert_contains(&err, &format!("snapshot {id2} is live"));
        assert_ne!(id1, id2);
        assert_eq!(ids(&dest), vec![id1.clone(), id2.clone()]);
        assert_serves(&dest, &id2, &s2);
        let s3 = small_release(&mh, 3, &[("c.iso", b"c")]);
        sync_ok(&mh);
        let id3 = live_id(&dest);
        assert_eq!(ids(&dest), vec![id2.clone(), id3.clone()], "keep = 2");
        assert_serves(&dest, &id3, &s3);
        // Unchanged files are hard links of the previous snapshot's.
        let ino = |id: &str| fs::metadata(root.join(id).join("c.iso")).map(|m| m.ino()).ok();
        let s4 = small_release(&mh, 4, &[("c.iso", b"c")]);
        sync_ok(&mh);
        let id4 = live_id(&dest);
        assert_serves(&dest, &id4, &s4);
        assert_eq!(ino(&id3), ino(&id4), "c.iso was not hard-linked from the live snapshot");

        // Status, text and JSON.
        let out = mh.syncgate().args(["status", "iso"]).status(0).run();
        support::assert_contains(&out.stdout, &format!("snapshot: {id4} live; kept: {id3} {id4}"));
        let st = status_json(&mh);
        assert_eq!(st["last_run"]["snapshot"]["live"], id4.as_str(), "{st:#}");
        assert_eq!(st["last_run"]["snapshot"]["kept"], serde_json::json!([id3, id4]), "{st:#}");
        // Status through ssh (the jenkins key may ask) says the same.
        let out = mh.ssh(Some("status iso")).status(0).run();
        let text = [out.stdout, out.stderr].concat();
        support::assert_contains(&text, &format!("snapshot: {id4} live"));

        // Ownership and modes.
        let www = gid_of(READER_GROUP);
        let link = fs::symlink_metadata(&dest).unwrap();
        assert!(link.file_type().is_symlink());
        assert_eq!((link.uid(), link.gid()), (mh.owner.uid, www), "dest symlink");
        let rmd = fs::metadata(&root).unwrap();
        assert_eq!((rmd.uid(), rmd.gid(), rmd.mode() & 0o7777), (mh.owner.uid, www, 0o2750), "{}", root.display());
        let live = fs::canonicalize(&dest).unwrap();
        assert_eq!(live, root.join(&id4));
        assert_published_tree(&mh, &live);
        assert_published_tree(&mh, &root.join(&id3));
        let private = fs::symlink_metadata(root.join(PRIVATE));
        if let Ok(p) = private {
            assert_eq!((p.uid(), p.mode() & 0o7777), (mh.owner.uid, 0o700), "the private dir");
        }

        // webreader reads through dest.
        for f in ["a.iso", "sub/b.iso", "SHA256SUMS"] {
            let out = mh.host.run_as(READER, &["cat", dest.join(f).to_str().unwrap()]);
            assert!(out.status.success(), "{READER} cannot read {f}: {}", support::show(&out));
            assert_eq!(out.stdout, fs::read(dest.join(f)).unwrap());
        }

        // The login account changes nothing: not the files, not the
        // symlink, not the snapshots.
        let before = (stamps(&mh.srv()), fs::read_link(&dest).unwrap());
        let a = dest.join("a.iso");
        let sub = dest.join("sub");
        let (d, r) = (dest.to_str().unwrap(), root.to_str().unwrap());
        let mut attempts = write_attempts(a.to_str().unwrap(), d, sub.to_str().unwrap());
        attempts.extend([
            ("repoint the dest symlink", format!("ln -sfn .iso.snapshots/{id3} {d}")),
            ("remove the dest symlink", format!("rm -f {d} && test ! -L {d}")),
            ("remove an old snapshot", format!("rm -rf {r}/{id3} && test ! -e {r}/{id3}")),
            ("create a snapshot", format!("mkdir {r}/20300101T000000Z")),
            ("create in the private dir", format!("mkdir {r}/{PRIVATE}/build")),
        ]);
        for (what, script) in attempts {
            let out = mh.host.run_as(LOGIN, &["sh", "-c", &script]);
            assert!(!out.status.success(), "{LOGIN} could {what}: `{script}`: {}", support::show(&out));
        }
        assert_eq!((stamps(&mh.srv()), fs::read_link(&dest).unwrap()), before, "srv changed");
    }
}

// ---------------------------------------------------------------------------
// Conversion from two-stage

e2e_test! {
    /// A mirror published in place (a real dest directory) is switched to
    /// `publish = "snapshot"` in the config and synced while a reader
    /// checks that dest always resolves to a whole release: afterwards dest
    /// is a symlink to the new snapshot and the old tree is kept as the
    /// snapshot before it.
    fn a_two_stage_mirror_converts_to_snapshots_without_a_gap() {
        let mut mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        make_dest(&dest, &mh.owner);
        mh.set_opts("iso", opts().publish("two-stage"));
        let s1 = small_release(&mh, 1, &[]);
        sync_ok(&mh);
        assert!(fs::symlink_metadata(&dest).unwrap().is_dir(), "two-stage: dest is a directory");
        assert!(!root_of(&dest).exists(), "two-stage made a snapshot root");

        mh.set_opts("iso", opts().publish("snapshot").bwlimit(2000));
        let big = bytes(4 << 20, 7100);
        let s2 = small_release(&mh, 2, &[("big.iso", &big)]);
        let reader = ReleaseReader::start(&mh.host, READER, &dest, "SHA256SUMS");
        // And a tight loop as root: dest must resolve at every instant.
        let stop = Arc::new(AtomicBool::new(false));
        let (checks, misses) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let watcher = {
            let (stop, checks, misses, dest) = (stop.clone(), checks.clone(), misses.clone(), dest.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    checks.fetch_add(1, Ordering::Relaxed);
                    if fs::metadata(dest.join("SHA256SUMS")).is_err() {
                        misses.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let err = sync_ok(&mh);
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        watcher.join().unwrap();
        let reads = reader.finish();
        reads.print("conversion");
        eprintln!(
            "observer conversion: dest resolved {} times, missing {}",
            checks.load(Ordering::Relaxed),
            misses.load(Ordering::Relaxed)
        );
        assert_eq!(misses.load(Ordering::Relaxed), 0, "dest was missing during the conversion");
        assert!(checks.load(Ordering::Relaxed) >= 1000, "the watcher did too little");
        assert!(reads.mismatches.is_empty(), "{:#?}", reads.mismatches);
        assert!(reads.observations >= 10 && reads.releases.len() == 2, "{reads:?}");
        support::assert_contains(&err, "dest was a directory: it is now snapshot");

        let id = live_id(&dest);
        assert_serves(&dest, &id, &s2);
        assert_eq!(fs::read(dest.join("big.iso")).unwrap(), big);
        let all = ids(&dest);
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all[1], id);
        let old = root_of(&dest).join(&all[0]);
        assert_eq!(fs::read(old.join("SHA256SUMS")).unwrap(), s1, "the old tree is kept");
        assert!(!old.join(PRIVATE).exists(), "the old tree kept its private dir");
        assert_published_tree(&mh, &old);
        assert_published_tree(&mh, &fs::canonicalize(&dest).unwrap());
        // And it goes on as a snapshot mirror.
        let err = sync_ok(&mh);
        support::assert_contains(&err, UNCHANGED);
    }
}

// ---------------------------------------------------------------------------
// Rollback

e2e_test! {
    /// After two changed runs, `syncgate rollback iso` (root) makes the
    /// previous snapshot live through the queue, recorded as a run with a
    /// run-start and an outcome in the audit trail; `--to` goes forward
    /// again; with nothing older it is refused; the login account can run
    /// neither `rollback` nor, through sudo, `owner-rollback`.
    fn rollback_makes_the_previous_snapshot_live_and_only_root_may() {
        let mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        let s1 = small_release(&mh, 1, &[]);
        sync_ok(&mh);
        let id1 = live_id(&dest);
        let s2 = small_release(&mh, 2, &[]);
        sync_ok(&mh);
        let id2 = live_id(&dest);
        assert_eq!(ids(&dest), vec![id1.clone(), id2.clone()]);

        let out = mh.syncgate().args(["rollback", "iso"]).status(0).run();
        let err = stderr(&out);
        eprintln!("rollback: {}", summary(&err, "iso"));
        support::assert_contains(&err, &format!("rolled back: snapshot {id1} is live (was {id2})"));
        assert_serves(&dest, &id1, &s1);
        assert_eq!(ids(&dest), vec![id1.clone(), id2.clone()], "a rollback removes nothing");
        assert_eq!(mh.last_run("iso")["run"], 3);
        assert_eq!(mh.last_run("iso")["result"], "success");
        let start = audit(&mh.log, "run-start", 3);
        assert_eq!((start["mirror"].as_str(), start["run"].as_str()), ("iso", "3"), "{start:?}");
        let o = audit(&mh.log, "outcome", 3);
        assert_eq!((o["run"].as_str(), o["result"].as_str(), o["exit"].as_str()), ("3", "success", "0"), "{o:?}");
        assert_eq!(o["trigger"], "cli", "{o:?}");
        let rec = mh.last_run("iso");
        assert!(rec["message"].as_str().unwrap_or_default().contains(&format!("rolled back to snapshot {id1}")), "{rec:#}");
        let st = status_json(&mh);
        assert_eq!(st["last_run"]["snapshot"]["live"], id1.as_str(), "{st:#}");

        // Nothing older than the live one: refused, nothing changes.
        let out = mh.syncgate().args(["rollback", "iso"]).status(1).run();
        let err = stderr(&out);
        eprintln!("rollback with nothing older: {}", summary(&err, "iso"));
        support::assert_contains(&err, &format!("no snapshot older than the live one ({id1})"));
        assert_serves(&dest, &id1, &s1);
        assert_eq!(audit(&mh.log, "outcome", 4)["result"], "failed");

        // --to: forward again.
        mh.syncgate().args(["rollback", "iso", "--to", &id2]).status(0).run();
        assert_serves(&dest, &id2, &s2);


        // The login account: not `rollback`, not `owner-rollback` as the owner.
        let bin = mh.bin.to_str().unwrap();
        let conf = mh.config.to_str().unwrap();
        let out = mh.host.run_as(LOGIN, &[bin, "--config", conf, "rollback", "iso"]);
        assert!(!out.status.success(), "{}", support::show(&out));
        support::assert_contains(&out.stderr, "rollback is for root");
        let mut cmd = mh.host.command_as(
            LOGIN,
            &["/usr/bin/sudo", "-n", "-u", OWNER, bin, "--config", conf, "owner-rollback", "iso"],
        );
        cmd.stdin(Stdio::null());
        let out = Test::new(cmd).failure().stdout_empty().run();
        support::assert_contains(&out.stderr, "sudo: ");
        assert_serves(&dest, &id2, &s2);
        assert_eq!(mh.last_run("iso")["run"], 5, "{}", mh.state("iso"));

        // Back to release 1, then a sync that finds upstream (release 2)
        // different: the new snapshot goes live, and the one rolled back to
        // is the one kept (not the one rolled back from).
        mh.syncgate().args(["rollback", "iso", "--to", &id1]).status(0).run();
        sync_ok(&mh);
        let id3 = live_id(&dest);
        assert_serves(&dest, &id3, &s2);
        assert_eq!(ids(&dest), vec![id1.clone(), id3.clone()], "the release rolled back to was pruned");
    }
}

// ---------------------------------------------------------------------------
// Faults

e2e_test! {
    /// kill -9 of the owner's rsync while it builds a snapshot of a big
    /// image: the request fails naming rsync's death, dest still names the
    /// old snapshot with the old content; the next sync continues the build
    /// ("continuing an unfinished build") and makes it live.
    fn kill_9_of_the_building_rsync_keeps_the_old_snapshot_and_the_next_sync_resumes() {
        let mut mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        let s1 = small_release(&mh, 1, &[]);
        sync_ok(&mh);
        let id1 = live_id(&dest);

        let big = bytes(6 << 20, 7200);
        let s2 = small_release(&mh, 2, &[("big.iso", &big)]);
        mh.set_opts("iso", opts().bwlimit(1000));
        let reader = ReleaseReader::start(&mh.host, READER, &dest, "SHA256SUMS");
        let child = mh.ssh(Some("sync")).status(1).spawn();
        wait_building(&mh, &dest);
        let rsync = building_rsync(&mh);
        kill(Pid::from_raw(rsync[0]), Signal::SIGKILL).unwrap();
        let out = child.finish_within(Duration::from_secs(60));
        let err = stderr(&out);
        let line = summary(&err, "iso");
        eprintln!("killed building rsync: {line}");
        assert!(line.contains("run #2 FAILED"), "{err}");
        assert!(line.contains("building the snapshot failed: rsync was killed by signal 9"), "{err}");
        assert_eq!(audit(&mh.log, "outcome", 2)["result"], "failed");
        assert_serves(&dest, &id1, &s1);
        assert!(!dest.join("big.iso").exists());
        assert_eq!(ids(&dest), vec![id1.clone()]);
        assert!(build_dir(&dest).is_dir(), "the unfinished build is kept for the next run");

        mh.set_opts("iso", opts());
        let err = sync_ok(&mh);
        support::assert_contains(&err, "continuing an unfinished build");
        let id2 = live_id(&dest);
        assert_ne!(id1, id2);
        assert_serves(&dest, &id2, &s2);
        assert_eq!(fs::read(dest.join("big.iso")).unwrap(), big);
        assert!(!build_dir(&dest).exists(), "the build went live");
        let reads = reader.finish();
        reads.print("killed-building-rsync");
        assert!(reads.mismatches.is_empty() && reads.observations >= 10, "{reads:?}");
    }
}

e2e_test! {
    /// kill -9 of the gate (the forced command) while the owner side
    /// builds: the caller fails, the old snapshot stays live, and the next
    /// request records the lost run as died and completes the release.
    fn kill_9_of_the_gate_while_building_keeps_the_old_snapshot_and_the_next_run_completes() {
        let mut mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        let s1 = small_release(&mh, 1, &[]);
        sync_ok(&mh);
        let id1 = live_id(&dest);

        let big = bytes(6 << 20, 7300);
        let s2 = small_release(&mh, 2, &[("big.iso", &big)]);
        mh.set_opts("iso", opts().bwlimit(1000));
        let err_path = mh.path("killed-gate.stderr");
        let mut cmd = mh.ssh_command(Some("sync"));
        cmd.stdout(Stdio::null()).stderr(fs::File::create(&err_path).unwrap());
        let mut client = ChildGuard::spawn(&mut cmd, "ssh sync");
        wait_building(&mh, &dest);
        let gates = mh.gate_programs();
        assert_eq!(gates.len(), 1, "gate processes: {gates:?}");
        kill(Pid::from_raw(gates[0]), Signal::SIGKILL).unwrap();
        let status = client
            .wait_timeout(Duration::from_secs(30))
            .expect("ssh client still running 30 s after its gate was killed");
        assert!(!status.success(), "the caller of a killed gate must fail");
        // The owner side notices and stops its rsync; nothing went live.
        assert!(
            wait_until(Duration::from_secs(15), || procs::rsyncs_of(mh.owner.uid).is_empty()).is_some(),
            "the owner's rsync survives the gate:\n{}",
            procs::describe_pids(&procs::rsyncs_of(mh.owner.uid))
        );
        assert_serves(&dest, &id1, &s1);
        assert!(!dest.join("big.iso").exists());

        mh.set_opts("iso", opts());
        let out = mh.ssh(Some("sync")).status(0).run();
        let err = stderr(&out);
        assert!(err.contains(&format!("run #2 (pid {}", gates[0])) && err.contains("died"), "{err}");
        assert!(summary(&err, "iso").contains("run #3 succeeded"), "{err}");
        let runs = mh.state("iso")["runs"].clone();
        let results: Vec<(u64, String)> = runs
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["run"].as_u64().unwrap(), r["result"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(results, vec![(1, "success".into()), (2, "died".into()), (3, "success".into())]);
        let died = mh
            .log
            .wait_for(
                |l| {
                    let f = fields(l);
                    f.get("event").map(String::as_str) == Some("run-died")
                        && f.get("run").map(String::as_str) == Some("2")
                },
                Duration::from_secs(5),
            )
            .expect("no run-died line for run 2");
        eprintln!("killed gate while building: {died}");
        let id2 = live_id(&dest);
        assert_ne!(id1, id2);
        assert_serves(&dest, &id2, &s2);
        assert_eq!(fs::read(dest.join("big.iso")).unwrap(), big);
    }
}

e2e_test! {
    /// dest's parent is an 8 MiB tmpfs and release 2 does not fit: the
    /// build fails with rsync's "No space left on device" in the summary
    /// and the audit, dest still names release 1; once the big file is gone
    /// upstream the next sync succeeds, and a later change goes live.
    fn a_full_disk_while_building_keeps_the_old_snapshot() {
        let mh = MirrorHost::snapshots();
        let srv = mh.srv();
        let www = gid_of(READER_GROUP);
        let disk = Tmpfs::mount(&srv, &format!("size=8m,mode=2750,uid={},gid={www}", mh.owner.uid));
        let dest = mh.dest("iso");
        let s1 = small_release(&mh, 1, &[]);
        sync_ok(&mh);
        let id1 = live_id(&dest);

        let big = bytes(10 << 20, 7400);
        small_release(&mh, 2, &[("big.iso", &big)]);
        let out = mh.ssh(Some("sync")).status(1).run();
        let err = stderr(&out);
        let line = summary(&err, "iso");
        eprintln!("full disk while building: {line}");
        assert!(line.contains("run #2 FAILED"), "{err}");
        assert!(line.contains("building the snapshot failed"), "{err}");
        assert!(line.contains("No space left on device"), "the summary must say why: {err}");
        let o = audit(&mh.log, "outcome", 2);
        assert_eq!((o["result"].as_str(), o["exit"].as_str()), ("failed", "1"), "{o:?}");
        assert!(o["message"].contains("No space left on device"), "{o:?}");
        assert_serves(&dest, &id1, &s1);
        assert!(!dest.join("big.iso").exists());
        assert_eq!(ids(&dest), vec![id1.clone()]);

        // The big file goes away upstream: release 1 again (its top
        // directory's mtime changed, so a snapshot of it is made, all hard
        // links).
        fs::remove_file(mh.upstream_dir("iso").join("big.iso")).unwrap();
        let s1 = small_release(&mh, 1, &[]);
        let err = sync_ok(&mh);
        eprintln!("full disk, big file gone: {}", summary(&err, "iso"));
        assert_eq!(fs::read(dest.join("SHA256SUMS")).unwrap(), s1);
        assert!(!dest.join("big.iso").exists());
        assert!(!build_dir(&dest).exists(), "the build is gone");
        // A change that fits goes live.
        let c = bytes(500_000, 7401);
        let s3 = small_release(&mh, 3, &[("c.iso", &c)]);
        sync_ok(&mh);
        let id3 = live_id(&dest);
        assert_ne!(id1, id3);
        assert_serves(&dest, &id3, &s3);
        assert_eq!(fs::read(dest.join("c.iso")).unwrap(), c);
        drop(disk);
    }
}

// ---------------------------------------------------------------------------
// Hostile upstream names

/// Every path below `dir` whose name is `.syncgate-tmp` or `.~tmp~`.
fn private_names_in(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.file_name().is_some_and(|n| n == PRIVATE || n == ".~tmp~"))
        .collect()
}

e2e_test! {
    /// An upstream top-level `.syncgate-tmp` (a directory, then a file,
    /// then a symlink out of the tree) and a `.~tmp~` directory neither
    /// break a snapshot run nor appear in a published snapshot, and
    /// syncgate's own private directory stays its own.
    fn upstream_entries_named_like_syncgates_private_dirs_are_never_published() {
        let mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        let up = mh.upstream_dir("iso");
        small_release(&mh, 1, &[]);
        sync_ok(&mh);
        fs::create_dir_all(up.join(".~tmp~")).unwrap();
        fs::write(up.join(".~tmp~/a.iso"), b"hostile").unwrap();
        fs::create_dir_all(up.join("sub/.~tmp~")).unwrap();
        fs::write(up.join("sub/.~tmp~/b.iso"), b"hostile").unwrap();

        type Make = fn(&Path);
        let kinds: [(&str, Make); 3] = [
            ("directory", |p| {
                fs::create_dir_all(p.join("build")).unwrap();
                fs::write(p.join("build/a.iso"), b"hostile").unwrap();
                fs::write(p.join("lock"), b"hostile").unwrap();
            }),
            ("file", |p| fs::write(p, b"hostile").unwrap()),
            ("symlink", |p| std::os::unix::fs::symlink("/etc", p).unwrap()),
        ];
        for (n, (kind, make)) in kinds.iter().enumerate() {
            let p = up.join(PRIVATE);
            let _ = fs::remove_dir_all(&p);
            let _ = fs::remove_file(&p);
            make(&p);
            let s = small_release(&mh, n as u64 + 2, &[]);
            let err = sync_ok(&mh);
            let id = live_id(&dest);
            assert_serves(&dest, &id, &s);
            let live = fs::canonicalize(&dest).unwrap();
            let found = private_names_in(&live);
            assert!(found.is_empty(), "upstream {kind} {PRIVATE}: published {found:?}\n{err}");
            let private = fs::symlink_metadata(root_of(&dest).join(PRIVATE));
            if let Ok(md) = private {
                assert!(md.is_dir() && md.mode() & 0o7777 == 0o700, "{kind}: the private dir is {md:?}");
            }
            assert_published_tree(&mh, &live);
            eprintln!("hostile {PRIVATE} ({kind}): {}", summary(&err, "iso"));
        }
        // Every kept snapshot is clean too.
        for id in ids(&dest) {
            let found = private_names_in(&root_of(&dest).join(&id));
            assert!(found.is_empty(), "snapshot {id}: {found:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Verification (src/owner/verify, being written in wt-verify)

/// `SHA256SUMS` that names `a.iso` with `hash` (64 hex digits).
fn sums_naming(hash: &str) -> String {
    format!("{hash}  a.iso\n")
}

e2e_test! {
    /// A new image whose SHA256SUMS does not match it: the run fails with
    /// exit 1, the audit outcome is `verify-failed`, dest still names the
    /// old snapshot, and the message names the file and both hashes; the
    /// failed build is removed, so the next run checks again.
    fn a_release_whose_checksums_do_not_match_never_goes_live() {
        let mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        let s1 = small_release(&mh, 1, &[]);
        sync_ok(&mh);
        let id1 = live_id(&dest);

        let good = bytes(300_000, 7500);
        let mut bad = good.clone();
        bad[1000] ^= 0xff;
        let (good_hash, bad_hash) = (sha256_hex(&good), sha256_hex(&bad));
        put_at(&mh, "a.iso", &bad, 1_700_100_000);
        put_at(&mh, "SHA256SUMS", sums_naming(&good_hash).as_bytes(), 1_700_100_000);
        let out = mh.ssh(Some("sync")).status(1).run();
        let err = stderr(&out);
        let line = summary(&err, "iso");
        eprintln!("checksum mismatch: {line}");
        assert!(line.contains("run #2 FAILED"), "{err}");
        for needle in ["a.iso", good_hash.as_str(), bad_hash.as_str()] {
            assert!(err.contains(needle), "the message must name {needle}: {err}");
        }
        let o = audit(&mh.log, "outcome", 2);
        assert_eq!((o["result"].as_str(), o["exit"].as_str()), ("verify-failed", "1"), "{o:?}");
        assert_eq!(mh.last_run("iso")["result"], "verify-failed");
        assert_serves(&dest, &id1, &s1);
        assert_eq!(ids(&dest), vec![id1.clone()]);
        assert!(!build_dir(&dest).exists(), "a build that failed verification is removed");

        // Fixed upstream: the next run verifies and goes live.
        put_at(&mh, "a.iso", &good, 1_700_100_001);
        sync_ok(&mh);
        assert_ne!(live_id(&dest), id1);
        assert_eq!(fs::read(dest.join("a.iso")).unwrap(), good);
    }
}

/// A throwaway OpenPGP key in `home` (gpg --homedir) and its public
/// keyring exported to `keyring` (root-owned, 0644): what gpgv checks
/// against.
fn make_signing_key(home: &Path, keyring: &Path) {
    fs::create_dir_all(home).unwrap();
    set_mode(home, 0o700);
    let gpg = support::require_tool("gpg");
    support::run_ok(
        std::process::Command::new(&gpg)
            .arg("--homedir")
            .arg(home)
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args([
                "--quick-generate-key",
                "Mirror Signing <sign@example.org>",
                "ed25519",
                "sign",
                "never",
            ]),
    );
    let export = std::process::Command::new(&gpg)
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--export"])
        .output()
        .unwrap();
    assert!(export.status.success() && !export.stdout.is_empty());
    fs::write(keyring, &export.stdout).unwrap();
    set_mode(keyring, 0o644);
}

/// A detached signature of `file` by the key in `home`, written to `sig`.
fn sign(home: &Path, file: &Path, sig: &Path) {
    let _ = fs::remove_file(sig);
    support::run_ok(
        std::process::Command::new(support::require_tool("gpg"))
            .arg("--homedir")
            .arg(home)
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .arg("--output")
            .arg(sig)
            .arg("--detach-sign")
            .arg(file),
    );
}

e2e_test! {
    /// `verify_signature` with the real gpgv: a release whose SHA256SUMS
    /// carries a good detached signature (`SHA256SUMS.gpg`) goes live; one
    /// whose SHA256SUMS was changed after signing fails as
    /// `verify-failed` and dest keeps the signed release.
    fn a_release_with_a_bad_signature_never_goes_live() {
        let mut mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        let gnupg = mh.path("gnupg");
        let keyring = mh.path("etc-syncgate/mirror-keyring.gpg");
        make_signing_key(&gnupg, &keyring);
        mh.set_opts("iso", Opts::default().verify_signature(&keyring, Some("gpgv")));
        let up = mh.upstream_dir("iso");

        let s1 = small_release(&mh, 1, &[]);
        sign(&gnupg, &up.join("SHA256SUMS"), &up.join("SHA256SUMS.gpg"));
        sync_ok(&mh);
        let id1 = live_id(&dest);
        assert_serves(&dest, &id1, &s1);

        // Release 2 signed, then release 3 published with release 2's
        // signature: its checksums match its files, its signature does not.
        small_release(&mh, 2, &[]);
        sign(&gnupg, &up.join("SHA256SUMS"), &up.join("SHA256SUMS.gpg"));
        small_release(&mh, 3, &[]);
        let out = mh.ssh(Some("sync")).status(1).run();
        let err = stderr(&out);
        eprintln!("bad signature: {}", summary(&err, "iso"));
        support::assert_contains(&err, "SHA256SUMS");
        let o = audit(&mh.log, "outcome", 2);
        assert_eq!((o["result"].as_str(), o["exit"].as_str()), ("verify-failed", "1"), "{o:?}");
        assert_serves(&dest, &id1, &s1);
        assert_eq!(ids(&dest), vec![id1]);
        stop_gpg_agent(&gnupg);
    }
}

/// gpg starts an agent that would outlive the test: stop it.
fn stop_gpg_agent(home: &Path) {
    support::run_ok(
        std::process::Command::new(support::require_tool("gpgconf"))
            .arg("--homedir")
            .arg(home)
            .args(["--kill", "all"]),
    );
}

// ---------------------------------------------------------------------------
// Debian's push stages (`sync:stage1`, then `sync:stage2`)

e2e_test! {
    /// With snapshots, `sync:stage1` builds and verifies the new release
    /// but does not make it live; `sync:stage2` does, in its own run (a
    /// stage-1 run never serves a request for everything).
    fn a_stage_1_push_builds_the_snapshot_and_stage_2_makes_it_live() {
        let mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        let s1 = small_release(&mh, 1, &[]);
        sync_ok(&mh);
        let id1 = live_id(&dest);

        let s2 = small_release(&mh, 2, &[]);
        let err = stderr(&mh.ssh(Some("sync:stage1")).status(0).run());
        support::assert_contains(&err, "stage 2 makes it live");
        assert_eq!(live_id(&dest), id1, "stage 1 switched: {err}");
        assert_eq!(fs::read(dest.join("SHA256SUMS")).unwrap(), s1);
        assert!(build_dir(&dest).is_dir(), "stage 1 left no built snapshot");
        let run = mh.last_run("iso");
        assert_eq!((run["run"].as_u64(), run["stage"].as_str()), (Some(2), Some("stage1")), "{run}");

        let err = stderr(&mh.ssh(Some("sync:stage2")).status(0).run());
        let id2 = live_id(&dest);
        assert_ne!(id2, id1, "stage 2 did not switch: {err}");
        assert_eq!(fs::read(dest.join("SHA256SUMS")).unwrap(), s2);
        let run = mh.last_run("iso");
        assert_eq!(run["run"].as_u64(), Some(3), "stage 2 was served by the stage-1 run: {run}");
        assert!(run.get("stage").is_none(), "{run}");
        assert!(!build_dir(&dest).exists());
    }
}

e2e_test! {
    /// Published in place, `sync:stage1` brings everything but the last
    /// files and deletes nothing; `sync:stage2` publishes the checksum
    /// files and the deletions.
    fn a_stage_1_push_in_place_holds_back_the_last_files_and_deletions() {
        let mh = MirrorHost::new();
        let dest = mh.dest("iso");
        let s1 = small_release(&mh, 1, &[("old.iso", b"old")]);
        sync_ok(&mh);
        assert!(dest.join("old.iso").exists());

        fs::remove_file(mh.upstream_dir("iso").join("old.iso")).unwrap();
        let s2 = small_release(&mh, 2, &[]);
        let err = stderr(&mh.ssh(Some("sync:stage1")).status(0).run());
        support::assert_contains(&err, "stage 1 done");
        assert_eq!(fs::read(dest.join("SHA256SUMS")).unwrap(), s1, "a last file arrived in stage 1");
        assert!(dest.join("old.iso").exists(), "stage 1 deleted");
        assert_eq!(fs::read(dest.join("sub/b.iso")).unwrap(), b"image b, release 2\n");

        mh.ssh(Some("sync:stage2")).status(0).run();
        assert_eq!(fs::read(dest.join("SHA256SUMS")).unwrap(), s2);
        assert!(!dest.join("old.iso").exists(), "stage 2 did not delete");
    }
}

e2e_test! {
    /// Debian's `Archive-Update-in-Progress-*` at upstream's top: a sync
    /// waits (saying so) while it is there and syncs once it is gone; one
    /// that stays past `busy_wait` fails clearly and changes nothing.
    fn a_sync_waits_while_upstream_is_being_updated() {
        let mut mh = MirrorHost::snapshots();
        mh.set_opts("iso", Opts::default().busy_wait(4));
        let dest = mh.dest("iso");
        let s1 = small_release(&mh, 1, &[]);
        let marker = mh.upstream_dir("iso").join("Archive-Update-in-Progress-mirror.example.org");
        fs::write(&marker, b"").unwrap();
        let out = mh.ssh(Some("sync")).status(1).run();
        let err = stderr(&out);
        support::assert_contains(&err, "upstream is being updated");
        support::assert_contains(&err, "still was after 4s (busy_wait); nothing changed");
        assert!(fs::symlink_metadata(&dest).is_err(), "a half-updated upstream was published");

        let remover = {
            let marker = marker.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                fs::remove_file(marker).unwrap();
            })
        };
        let err = sync_ok(&mh);
        remover.join().unwrap();
        support::assert_contains(&err, "waiting (");
        support::assert_contains(&err, "upstream's update has finished; syncing");
        assert_eq!(fs::read(dest.join("SHA256SUMS")).unwrap(), s1);
    }
}

e2e_test! {
    /// `publish = "snapshot"` set explicitly where the owner cannot write
    /// dest's parent: every run fails, saying what to change (no silent
    /// fallback to publishing in place), and `check` fails too.
    fn an_explicit_snapshot_mirror_without_its_layout_fails_clearly() {
        let mut mh = MirrorHost::new();
        mh.set_opts("iso", Opts::default().publish("snapshot"));
        small_release(&mh, 1, &[]);
        let err = stderr(&mh.ssh(Some("sync")).status(1).run());
        support::assert_contains(&err, "needs dest's parent");
        support::assert_contains(&err, "chown mirror:www-data");
        let out = mh.syncgate().arg("check").status(1).run();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        support::assert_contains(&report, "FAIL mirror iso: publishing snapshots needs dest's parent");
    }
}

e2e_test! {
    /// Coalescing with stages: while a `sync:stage1` run builds, a burst of
    /// `sync` requests and a `sync:stage2` queue behind it. None of them is
    /// answered by the stage-1 run (it did not publish); one further run
    /// serves them all and makes the release live. Asserted from the state
    /// file: who was served by which run.
    fn requests_queued_behind_a_stage_1_run_are_served_by_a_run_that_publishes() {
        let mut mh = MirrorHost::snapshots();
        let dest = mh.dest("iso");
        small_release(&mh, 1, &[]);
        sync_ok(&mh);
        let id1 = live_id(&dest);

        let big = bytes(3 << 20, 7300);
        let s2 = small_release(&mh, 2, &[("big.iso", &big)]);
        mh.set_opts("iso", opts().bwlimit(1000));
        let stage1 = mh.ssh(Some("sync:stage1")).status(0).spawn();
        wait_building(&mh, &dest);
        let mut waiting: Vec<_> = (0..4).map(|_| mh.ssh(Some("sync")).status(0).spawn()).collect();
        waiting.push(mh.ssh(Some("sync:archive:iso sync:stage2")).status(0).spawn());
        let queued = wait_until(Duration::from_secs(30), || {
            mh.host.sshd_log().matches("Starting session").count() >= 2 + 5
        });
        assert!(queued.is_some(), "the burst did not arrive:\n{}", mh.host.sshd_log());
        std::thread::sleep(Duration::from_millis(500));
        stage1.finish_within(Duration::from_secs(60));
        for w in waiting {
            w.finish_within(Duration::from_secs(60));
        }

        let st = mh.state("iso");
        let runs = st["runs"].as_array().unwrap();
        let brief: Vec<_> = runs
            .iter()
            .map(|r| (r["run"].as_u64(), r["stage"].as_str(), r["served"].as_u64()))
            .collect();
        assert_eq!(
            brief,
            vec![(Some(1), None, Some(1)), (Some(2), Some("stage1"), Some(1)), (Some(3), None, Some(5))],
            "{st}"
        );
        assert_ne!(live_id(&dest), id1);
        assert_eq!(fs::read(dest.join("SHA256SUMS")).unwrap(), s2);
    }
}

e2e_test! {
    /// `profile = "debian"` writes Debian's trace file
    /// `project/trace/HOST` with each publish, as the owner, in the fields
    /// ftpsync writes (the archive serial from upstream's master trace
    /// included); it never makes a no-change sync look changed.
    fn a_debian_profile_mirror_writes_its_trace_file() {
        let mut mh = MirrorHost::snapshots();
        // The profile's change marker is off: this is about the plan never
        // counting our own trace file (tests/integration/marker.rs: the marker).
        mh.set_opts("iso", Opts::default().profile("debian").change_marker(""));
        let dest = mh.dest("iso");
        small_release(&mh, 1, &[]);
        put_at(&mh, "project/trace/master", b"Thu Dec  3 00:00:00 UTC 2026\nArchive serial: 2026120301\n", 1_700_000_000);
        sync_ok(&mh);
        let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string();
        let trace = dest.join("project/trace").join(&host);
        let text = fs::read_to_string(&trace).unwrap();
        for field in ["Date: ", "Date-Started: ", "Archive serial: 2026120301", "Creator: syncgate ", &format!("Running on host: {host}"), "Upstream-mirror: localhost", "Total bytes received in rsync: "] {
            support::assert_contains(&text, field);
        }
        let md = fs::metadata(&trace).unwrap();
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (mh.owner.uid, gid_of(READER_GROUP), 0o640));
        support::assert_contains(sync_ok(&mh), UNCHANGED);
        small_release(&mh, 2, &[]);
        sync_ok(&mh);
        assert_ne!(fs::read_to_string(&trace).unwrap(), "", "the trace file vanished");
        support::assert_contains(sync_ok(&mh), UNCHANGED);
    }
}
