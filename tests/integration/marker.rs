//! The upstream change marker (`change_marker`, src/owner/marker.rs): a
//! poll of an unchanged upstream is one small rsync and no walk; a changed
//! marker, a touched dest, `sync --full`, `full_every`, a missing marker and
//! a failed run all walk. Every claim about walking is read from rsync's own
//! invocations (a root-owned wrapper configured as `rsync` logs each argv
//! and execs the real rsync), never from timing.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::check::summary;
use crate::support::fixture::{Fixture, M};
use crate::support::mirror_host::{MirrorHost, LOGIN};
use crate::support::{self, e2e_test, opts, stderr, Mirrors, Opts};

/// What the probe of a mirror with `change_marker = "lastupdate"` has in
/// its argv, and no other rsync of a run has.
const PROBE: &str = "--include=/lastupdate";
/// What a run that ended on the marker says.
const SHORTCUT: &str = "nothing walked";

/// A fixture whose rsync is a wrapper that logs every argv to `rsync.log`
/// and, while `fail` exists, fails every rsync but the probe (exit 11).
struct Polled {
    f: Fixture,
    log: PathBuf,
    fail: PathBuf,
}

impl Polled {
    fn new(o: Opts) -> Polled {
        let mut f = Fixture::new(o.change_marker("lastupdate"));
        let log = f.dir.path().join("rsync.log");
        let fail = f.dir.path().join("fail");
        f.use_rsync_wrapper(&format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log}\ncase \" $* \" in *' {PROBE} '*) ;; *) if [ -e {fail} ]; then echo 'rsync: simulated failure' >&2; exit 11; fi;; esac\nexec /usr/bin/rsync \"$@\"\n",
            log = log.display(),
            fail = fail.display()
        ));
        Polled { f, log, fail }
    }

    /// The rsync argvs since the last call (the log is emptied).
    fn calls(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let _ = fs::remove_file(&self.log);
        text.lines().map(str::to_string).collect()
    }

    /// `syncgate sync m [--full]`, which must succeed; its stderr and the
    /// rsync argvs it ran.
    fn sync(&self, full: bool) -> (String, Vec<String>) {
        let mut t = self.f.sync();
        if full {
            t = t.arg("--full");
        }
        let err = stderr(&t.status(0).run());
        (err, self.calls())
    }

    /// A sync that ends on the marker: exactly one rsync, the probe.
    #[track_caller]
    fn assert_shortcut(&self) -> String {
        let (err, calls) = self.sync(false);
        assert_eq!(calls.len(), 1, "one rsync, the probe: {calls:#?}\n{err}");
        assert!(calls[0].contains(PROBE), "{calls:#?}");
        support::assert_contains(&err, SHORTCUT);
        assert_eq!(self.f.last_run(M)["shortcut"], true, "{err}");
        err
    }

    /// A sync (`full`: `--full`) that walks: the probe, then more rsyncs.
    #[track_caller]
    fn assert_walks(&self, full: bool, why: &str) -> String {
        let (err, calls) = self.sync(full);
        assert!(calls.len() >= 2, "the probe and a walk: {calls:#?}\n{err}");
        assert!(calls[0].contains(PROBE), "{calls:#?}");
        assert!(calls[1..].iter().all(|c| !c.contains(PROBE)), "{calls:#?}");
        support::assert_lacks(&err, SHORTCUT);
        support::assert_contains(&err, why);
        assert!(self.f.last_run(M).get("shortcut").is_none(), "{err}");
        err
    }

    /// Writes `rel` upstream with an mtime of its own (a minute after the
    /// last one written): rsync's quick check compares size and mtime, so
    /// two versions must never share both.
    fn put(&self, rel: &str, bytes: &[u8]) {
        static CLOCK: AtomicU64 = AtomicU64::new(1_700_000_000);
        self.f.put(M, rel, bytes);
        let t = CLOCK.fetch_add(60, Ordering::SeqCst);
        let f = fs::File::options()
            .write(true)
            .open(self.f.upstream.join(rel))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(t))
            .unwrap();
    }

    fn store(&self) -> PathBuf {
        let dest = &self.f.dest;
        dest.parent().unwrap().join(format!(
            ".{}.syncgate-marker",
            dest.file_name().unwrap().to_string_lossy()
        ))
    }

    fn published(&self, rel: &str) -> Vec<u8> {
        fs::read(self.f.dest_path(rel)).unwrap()
    }
}

fn each_publish_mode(test: impl Fn(&'static str)) {
    for mode in ["two-stage", "snapshot"] {
        eprintln!("--- publish = {mode:?}");
        test(mode);
    }
}

/// Unchanged marker: one rsync (the probe), nothing walked, `shortcut` in
/// the state; a change upstream that leaves the marker alone is not seen
/// (the marker is trusted); a changed marker walks and publishes; the
/// store is private and outside the served tree.
#[test]
fn an_unchanged_marker_ends_the_run_after_one_small_rsync() {
    each_publish_mode(|mode| {
        let p = Polled::new(opts().publish(mode));
        p.put("r/a.iso", b"a1");
        p.put("lastupdate", b"1700000000\n");
        p.assert_walks(false, "no marker is stored from a verified sync");
        assert_eq!(p.published("r/a.iso"), b"a1");
        let md = fs::symlink_metadata(p.store()).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::mode(&md) & 0o777, 0o600);
        assert!(
            !p.f.dest_path(".syncgate-tmp").exists(),
            "the private dir stays only during a run"
        );

        let err = p.assert_shortcut();
        support::assert_contains(&err, "next full walk in");
        p.assert_shortcut();
        assert!(
            !p.f.dest_path(".syncgate-tmp").exists(),
            "the shortcut left the private dir"
        );
        assert!(!p.f.dest_path("lastupdate.syncgate-marker").exists());

        // Upstream changes a file but not its marker: not seen (documented).
        p.put("r/a.iso", b"a2, longer");
        p.assert_shortcut();
        assert_eq!(p.published("r/a.iso"), b"a1");

        // The marker changes: a walk, and the new content is published.
        p.put("lastupdate", b"1700003600\n");
        p.assert_walks(false, "upstream's lastupdate changed");
        assert_eq!(p.published("r/a.iso"), b"a2, longer");
        assert_eq!(p.published("lastupdate"), b"1700003600\n");
        p.assert_shortcut();

        // Same length, other bytes.
        p.put("lastupdate", b"1700003601\n");
        p.assert_walks(false, "changed");
        p.assert_shortcut();
    });
}

/// dest changed behind syncgate's back: a file deep inside is not noticed
/// by a plain sync (the documented limit), `sync --full` repairs it, and so
/// does `full_every` once due; an entry added at dest's top is noticed (its
/// mtime changed) and removed by the walk.
#[test]
fn a_tree_changed_behind_syncgates_back_is_repaired_by_full_and_full_every() {
    each_publish_mode(|mode| {
        let mut p = Polled::new(opts().publish(mode));
        p.put("r/a.iso", b"good");
        p.put("lastupdate", b"1\n");
        p.assert_walks(false, "no marker is stored");
        p.assert_shortcut();

        fs::write(p.f.dest_path("r/a.iso"), b"EVIL!").unwrap();
        p.assert_shortcut();
        assert_eq!(
            p.published("r/a.iso"),
            b"EVIL!",
            "a plain sync trusts the marker"
        );
        p.assert_walks(true, "a full walk was asked for (sync --full)");
        assert_eq!(p.published("r/a.iso"), b"good");
        p.assert_shortcut();

        // An entry at dest's top changes its mtime: walked and removed.
        fs::write(p.f.dest_path("planted"), b"x").unwrap();
        let err = p.assert_walks(false, "walking the whole tree");
        assert!(
            err.contains("dest changed since the last verified sync")
                || err.contains("live snapshot"),
            "{err}"
        );
        assert!(!p.f.dest_path("planted").exists());
        p.assert_shortcut();

        // full_every: a walk once it is due.
        p.f.set_opts(
            M,
            opts()
                .publish(mode)
                .change_marker("lastupdate")
                .full_every("1s"),
        );
        fs::write(p.f.dest_path("r/a.iso"), b"EVIL!").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        p.assert_walks(false, "a full walk is due (full_every = 1s)");
        assert_eq!(p.published("r/a.iso"), b"good");
    });
}

/// A marker upstream does not have: a clear warning naming it, and every
/// run walks; nothing is stored.
#[test]
fn a_marker_missing_upstream_warns_and_walks_every_time() {
    each_publish_mode(|mode| {
        let p = Polled::new(opts().publish(mode));
        p.put("r/a.iso", b"a");
        for _ in 0..2 {
            let err = p.assert_walks(false, "upstream has no file lastupdate");
            support::assert_contains(
                &err,
                &format!(
                    "warning: upstream ({}/) has no file lastupdate (change_marker of mirror m)",
                    p.f.upstream.display()
                ),
            );
            assert!(!p.store().exists());
        }
        // It appears (even as a directory first): then the fast path works.
        fs::create_dir(p.f.upstream.join("lastupdate")).unwrap();
        p.assert_walks(false, "upstream has no file lastupdate");
        fs::remove_dir(p.f.upstream.join("lastupdate")).unwrap();
        p.put("lastupdate", b"1\n");
        p.assert_walks(false, "no marker is stored");
        p.assert_shortcut();
    });
}

/// A run that fails stores no marker and removes the one stored: the next
/// run walks even though upstream's marker is as before. A push's stage 1
/// (`prepare`) removes it too, and stores none.
#[test]
fn a_failed_run_or_a_stage_1_leaves_no_marker_and_the_next_run_walks() {
    each_publish_mode(|mode| {
        let p = Polled::new(opts().publish(mode));
        p.put("r/a.iso", b"a");
        p.put("lastupdate", b"1\n");
        p.assert_walks(false, "no marker is stored");
        p.assert_shortcut();

        fs::write(&p.fail, b"").unwrap();
        let out = p.f.sync().arg("--full").status(1).run();
        support::assert_contains(stderr(&out), "simulated failure");
        assert!(!p.store().exists(), "a failed run left a marker");
        assert!(p.calls().len() >= 2, "the failed run walked");
        fs::remove_file(&p.fail).unwrap();
        p.assert_walks(false, "no marker is stored from a verified sync");
        p.assert_shortcut();

        p.put("r/b.iso", b"b");
        p.f.syncgate().args(["prepare", M]).status(0).run();
        assert!(!p.store().exists(), "stage 1 stored a marker");
        p.calls();
        p.assert_walks(false, "no marker is stored");
        assert_eq!(p.published("r/b.iso"), b"b");
        p.assert_shortcut();
    });
}

/// The one small rsync also looks for upstream's busy markers: while one
/// is at upstream's top (even a directory), a run waits and then fails
/// without walking or storing anything; once it is gone the run walks, and
/// the busy marker is never copied.
#[test]
fn the_probe_still_waits_while_upstream_is_being_updated() {
    let p = Polled::new(opts().busy_wait(2));
    p.put("r/a.iso", b"a");
    p.put("lastupdate", b"1\n");
    p.put("Archive-Update-in-Progress-up.example.org", b"");
    let out = p.f.sync().status(1).run();
    let err = stderr(&out);
    support::assert_contains(&err, "upstream is being updated");
    support::assert_contains(&err, "still was after 2s (busy_wait); nothing changed");
    let calls = p.calls();
    assert!(
        calls.len() >= 2 && calls.iter().all(|c| c.contains(PROBE)),
        "only probes: {calls:#?}"
    );
    assert!(!p.store().exists());
    fs::remove_file(
        p.f.upstream
            .join("Archive-Update-in-Progress-up.example.org"),
    )
    .unwrap();
    fs::create_dir(p.f.upstream.join("Archive-Update-in-Progress-dir")).unwrap();
    p.f.sync()
        .status(1)
        .stderr_contains("upstream is being updated")
        .run();
    p.calls();
    fs::remove_dir(p.f.upstream.join("Archive-Update-in-Progress-dir")).unwrap();
    p.assert_walks(false, "no marker is stored");
    assert_eq!(p.published("r/a.iso"), b"a");
    assert!(!p
        .f
        .dest_path("Archive-Update-in-Progress-up.example.org")
        .exists());
    p.assert_shortcut();
}

/// Coalescing: requests that queue behind a run are served by one further
/// run, but a `sync --full` request only by a run that walked: whichever of
/// a plain and a `--full` request gets the lock first, the run that serves
/// the `--full` one walked.
#[test]
fn a_full_request_is_served_only_by_a_run_that_walked() {
    let mut p = Polled::new(opts());
    p.put("r/a.iso", b"a");
    p.put("lastupdate", b"1\n");
    p.assert_walks(false, "no marker is stored");
    // Slow probes, so that both requests queue behind the first run.
    let log = p.log.clone();
    p.f.use_rsync_wrapper(&format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {log}\ncase \" $* \" in *' {PROBE} '*) sleep 1;; esac\nexec /usr/bin/rsync \"$@\"\n",
        log = log.display()
    ));
    let first = p.f.spawn_sync();
    p.f.wait_running(M, Duration::from_secs(20));
    let plain = p.f.sync().status(0).spawn();
    std::thread::sleep(Duration::from_millis(100));
    let full = p.f.sync().arg("--full").status(0).spawn();
    first.finish();
    let plain = stderr(&plain.finish());
    let full = stderr(&full.finish());
    // `syncgate: m: run #N …` or `syncgate: m: served by run #N …`.
    let served = |err: &str| -> u64 {
        let line = summary(err, M);
        let at = line.find("run #").unwrap() + 5;
        line[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let runs = p.f.state(M)["runs"].as_array().unwrap().clone();
    let record = |n: u64| runs.iter().find(|r| r["run"] == n).unwrap().clone();
    assert_eq!(
        record(2)["shortcut"],
        true,
        "run #2 took the shortcut: {runs:#?}"
    );
    let full_run = record(served(&full));
    assert!(
        full_run.get("shortcut").is_none(),
        "a --full request was served by a run that did not walk: {full_run}\n{full}"
    );
    assert!(served(&full) > 2 && served(&plain) > 2, "{plain}\n{full}");
    // The plain one may share the --full one's walk, never the reverse.
    if served(&plain) != served(&full) {
        assert_eq!(runs.len(), 4, "{runs:#?}");
    }
}

e2e_test! {
    /// Through sudo and the real accounts: the generated rule holds one
    /// more exact line per mirror, `transfer --full MIRROR`, which `check`
    /// verifies; the login account's `sync --full` walks through it, its
    /// plain `sync` and an SSH request end on the marker, with snapshots
    /// and `profile = "debian"` (whose marker is `project/trace/master`;
    /// our own trace file beside it changes nothing).
    fn sync_full_goes_through_the_exact_sudoers_line() {
        let mut mh = MirrorHost::snapshots();
        mh.set_opts("iso", opts().profile("debian"));
        mh.put("iso", "r/a.iso", b"a");
        mh.put("iso", "project/trace/master", b"Archive serial: 1\n");
        let rule = fs::read_to_string("/etc/sudoers.d/syncgate").unwrap();
        support::assert_contains(&rule, "transfer --full iso");
        let check = mh.syncgate().arg("check").status(0).run();
        support::assert_contains(support::stdout(&check), "transfer --full iso` as mirror");

        // sudo allows the line exactly; no other order or split of it runs.
        let bin = mh.bin().display().to_string();
        let conf = mh.config_path().display().to_string();
        let sudo = |args: &[&str]| {
            let mut argv = vec!["/usr/bin/sudo", "-n", "-u", "mirror", bin.as_str(), "--config", conf.as_str()];
            argv.extend(args);
            mh.host.run_as(LOGIN, &argv)
        };
        let listed = mh.host.run_as(LOGIN, &["/usr/bin/sudo", "-n", "-l", "-u", "mirror", &bin, "--config", &conf, "transfer", "--full", "iso"]);
        assert!(listed.status.success(), "{}", support::show(&listed));
        for refused in [
            &["transfer", "iso", "--full"][..],
            &["transfer", "--full"],
            &["transfer", "--full", "--full", "iso"],
            &["transfer", "--full", "iso", "iso"],
            &["prepare", "--full", "iso"],
            &["fix-perms", "--full", "iso"],
        ] {
            let out = sudo(refused);
            assert!(!out.status.success(), "{refused:?}: {}", support::show(&out));
            support::assert_contains(stderr(&out), "a password is required");
        }
        // sudo compares the words joined by spaces: these match the line's
        // string, and syncgate itself refuses them.
        for split in [&["transfer", "--full iso"][..], &["transfer --full", "iso"]] {
            let out = sudo(split);
            assert_eq!(out.status.code(), Some(64), "{split:?}: {}", support::show(&out));
        }
        assert!(fs::symlink_metadata(mh.dest("iso")).is_err(), "something ran");

        let err = stderr(&mh.ssh(Some("sync")).status(0).run());
        support::assert_lacks(&err, SHORTCUT);
        let err = stderr(&mh.ssh(Some("sync")).status(0).run());
        support::assert_contains(&err, SHORTCUT);

        let sync_as_login = |full: bool| {
            let bin = mh.bin().display().to_string();
            let conf = mh.config_path().display().to_string();
            let mut argv = vec![bin.as_str(), "--config", conf.as_str(), "sync"];
            if full {
                argv.push("--full");
            }
            argv.push("iso");
            mh.host.run_as(LOGIN, &argv)
        };
        let out = sync_as_login(false);
        assert!(out.status.success(), "{}", stderr(&out));
        support::assert_contains(stderr(&out), SHORTCUT);
        let out = sync_as_login(true);
        assert!(out.status.success(), "{}", stderr(&out));
        support::assert_contains(stderr(&out), "a full walk was asked for (sync --full)");
        support::assert_contains(stderr(&out), "unchanged: the mirror matches upstream");
        assert!(mh.last_run("iso").get("shortcut").is_none());
    }
}

e2e_test! {
    /// Published in place where the owner cannot write dest's parent (the
    /// layout of a mirror set up before snapshots): the marker cannot be
    /// kept beside dest, so every run walks and says what to change.
    fn an_in_place_mirror_whose_parent_is_roots_walks_and_says_why() {
        let mut mh = MirrorHost::new();
        mh.set_opts("iso", opts().publish("two-stage").change_marker("lastupdate"));
        mh.put("iso", "r/a.iso", b"a");
        mh.put("iso", "lastupdate", b"1\n");
        for _ in 0..2 {
            let err = stderr(&mh.ssh(Some("sync")).status(0).run());
            support::assert_lacks(&err, SHORTCUT);
            support::assert_contains(&err, "warning: the change marker cannot be kept");
            support::assert_contains(&err, "chown mirror:www-data");
        }
        assert_eq!(fs::read(mh.dest("iso").join("r/a.iso")).unwrap(), b"a");
    }
}
