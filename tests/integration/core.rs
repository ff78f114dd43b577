//! The core: queue, coalescing, two-stage publish, limits, crash recovery,
//! config errors. Real rsync, local paths, no root needed.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::fixture::{group_name, user_name, Fixture, M};
use crate::support::procs::processes_mentioning;
use crate::support::{bytes, opts, show, stderr, syncgate_bin, Mirrors, Test};

#[test]
fn a_first_sync_publishes_the_tree_with_the_configured_modes() {
    let f = Fixture::new(opts().file_mode("0644").dir_mode("0755"));
    f.put(M, "r1/a.iso", &bytes(10_000, 1));
    f.put(M, "r1/SHA256SUMS", b"x  a.iso\n");
    std::os::unix::fs::symlink("r1", f.upstream.join("current")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", f.upstream.join("evil")).unwrap();

    f.sync().status(0).stderr_contains("run #1 succeeded").run();
    assert_eq!(
        std::fs::read(f.dest_path("r1/a.iso")).unwrap(),
        bytes(10_000, 1)
    );
    assert_eq!(
        std::fs::metadata(f.dest_path("r1/a.iso")).unwrap().mode() & 0o7777,
        0o644
    );
    assert_eq!(
        std::fs::metadata(f.dest_path("r1")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(f.dest_path("current")).unwrap().to_str(),
        Some("r1")
    );
    assert!(
        std::fs::symlink_metadata(f.dest_path("evil")).is_err(),
        "a symlink pointing outside the tree must never be created"
    );
    let s = f.state(M);
    assert_eq!(s["runs"][0]["result"], "success");
    assert_eq!(s["runs"][0]["files"], 2);
}

#[test]
fn a_burst_of_twenty_requests_behind_a_running_sync_is_served_by_one_more_run() {
    let f = Fixture::new(opts().bwlimit(2000));
    f.put(M, "big.iso", &bytes(3 << 20, 2));
    let first = f.spawn_sync();
    f.wait_running(M, Duration::from_secs(20));

    let burst: Vec<_> = (0..20)
        .map(|_| {
            f.sync()
                .status(0)
                .stderr_contains("queued behind run #1")
                .spawn()
        })
        .collect();
    let outs: Vec<_> = burst.into_iter().map(|c| c.finish()).collect();
    first.finish();

    let s = f.state(M);
    assert_eq!(
        s["last_started"], 2,
        "the burst must be served by exactly one further run: {s:#}"
    );
    assert_eq!(s["runs"].as_array().unwrap().len(), 2);
    assert_eq!(s["runs"][0]["served"], 1);
    assert_eq!(s["runs"][1]["served"], 20);
    let ran = outs
        .iter()
        .filter(|o| stderr(o).contains("run #2 succeeded"))
        .count();
    let coalesced = outs
        .iter()
        .filter(|o| stderr(o).contains("served by run #2"))
        .count();
    assert_eq!((ran, coalesced), (1, 19), "{}", show(&outs[0]));
}

#[test]
fn a_request_is_never_served_by_a_run_that_started_before_it_arrived() {
    let f = Fixture::new(opts().bwlimit(2000));
    f.put(M, "big.iso", &bytes(2 << 20, 3));
    let first = f.spawn_sync();
    f.wait_running(M, Duration::from_secs(20));
    // Upstream changes while run #1 is running; the new request must see it.
    f.put(M, "late.iso", b"arrived late");
    f.sync().status(0).stderr_contains("run #2").run();
    first.finish();
    assert_eq!(
        std::fs::read(f.dest_path("late.iso")).unwrap(),
        b"arrived late"
    );
}

/// Reads the published tree over and over: every file a published
/// SHA256SUMS names must exist with exactly the content it had upstream.
fn observe(
    dest: std::path::PathBuf,
    expected: BTreeMap<String, Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> (u64, Vec<String>) {
    let mut observations = 0;
    let mut violations = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(sums) = std::fs::read_to_string(dest.join("SHA256SUMS")) {
            observations += 1;
            for line in sums.lines() {
                let name = line.split_whitespace().nth(1).unwrap().to_string();
                match std::fs::read(dest.join(&name)) {
                    Ok(b) if Some(&b) == expected.get(&name) => {}
                    Ok(b) => violations.push(format!(
                        "{name}: {} bytes, not the published content",
                        b.len()
                    )),
                    Err(e) => violations.push(format!("{name}: {e}")),
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (observations, violations)
}

#[test]
fn a_reader_never_sees_a_checksum_file_naming_a_missing_or_incomplete_file() {
    let f = Fixture::new(opts().bwlimit(4000));
    let mut expected = BTreeMap::new();
    let v1 = bytes(200_000, 10);
    f.put(M, "release-1.iso", &v1);
    f.put(M, "SHA256SUMS", b"0  release-1.iso\n");
    expected.insert("release-1.iso".to_string(), v1);
    f.sync().status(0).run();

    // Release 2: two large new images, release 1 removed, checksums replaced.
    for (i, name) in ["release-2-amd64.iso", "release-2-arm64.iso"]
        .iter()
        .enumerate()
    {
        let b = bytes(3 << 20, 20 + i as u64);
        f.put(M, name, &b);
        expected.insert(name.to_string(), b);
    }
    std::fs::remove_file(f.upstream.join("release-1.iso")).unwrap();
    f.put(
        M,
        "SHA256SUMS",
        b"0  release-2-amd64.iso\n0  release-2-arm64.iso\n",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dest, stop) = (f.dest.clone(), stop.clone());
        std::thread::spawn(move || observe(dest, expected, stop))
    };
    f.sync().status(0).run();
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let (observations, violations) = reader.join().unwrap();
    assert!(
        observations > 50,
        "the reader observed only {observations} times"
    );
    assert_eq!(
        violations,
        Vec::<String>::new(),
        "after {observations} observations"
    );
    assert!(
        !f.dest_path("release-1.iso").exists(),
        "stage 2 deletes what upstream removed"
    );
}

#[test]
fn the_wall_clock_timeout_stops_rsync_and_its_children() {
    let f = Fixture::new(opts().bwlimit(200).timeout(2));
    f.put(M, "big.iso", &bytes(8 << 20, 4));
    let t = Instant::now();
    f.sync().status(1).stderr_contains("timed out").run();
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(f.state(M)["runs"][0]["result"], "timeout");
    assert_eq!(
        processes_mentioning(&f.dest),
        vec![],
        "no rsync may be left running"
    );
    assert!(!f.dest_path("big.iso").exists());
}

#[test]
fn after_kill_9_of_a_running_sync_the_next_request_proceeds_and_records_the_death() {
    let mut f = Fixture::new(opts().bwlimit(1000));
    f.put(M, "big.iso", &bytes(4 << 20, 5));
    let mut first = f.spawn_sync();
    f.wait_running(M, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    // SIGKILL, then reaped.
    first.kill();

    f.set_opts(M, opts());
    let out = f.sync().status(0).run();
    let err = stderr(&out);
    assert!(err.contains("run #1") && err.contains("died"), "{err}");
    assert!(
        !err.contains("queued"),
        "the lock must be free at once: {err}"
    );
    let s = f.state(M);
    assert_eq!(s["runs"][0]["run"], 1);
    assert_eq!(s["runs"][0]["result"], "died");
    assert_eq!(s["runs"][1]["result"], "success");
    assert_eq!(
        std::fs::read(f.dest_path("big.iso")).unwrap(),
        bytes(4 << 20, 5)
    );
    assert_eq!(processes_mentioning(&f.dest), vec![]);
}

#[test]
fn max_delete_stops_a_wiped_upstream_before_anything_is_deleted_or_published() {
    let mut f = Fixture::new(opts().max_delete(2));
    for i in 0..5 {
        f.put(M, &format!("f{i}.iso"), &bytes(1000, i));
    }
    f.put(M, "SHA256SUMS", b"old\n");
    f.sync().status(0).run();
    for i in 0..4 {
        std::fs::remove_file(f.upstream.join(format!("f{i}.iso"))).unwrap();
    }
    f.put(M, "SHA256SUMS", b"new checksums\n");
    f.sync().status(1).stderr_contains("max_delete").run();
    for i in 0..5 {
        assert!(f.dest_path(&format!("f{i}.iso")).exists());
    }
    assert_eq!(std::fs::read(f.dest_path("SHA256SUMS")).unwrap(), b"old\n");
    assert_eq!(f.state(M)["runs"][1]["rsync_exit"], 25);

    f.set_opts(M, opts().max_delete(4));
    f.sync().status(0).run();
    assert!(!f.dest_path("f0.iso").exists());
    assert_eq!(
        std::fs::read(f.dest_path("SHA256SUMS")).unwrap(),
        b"new checksums\n"
    );
    assert_eq!(f.state(M)["runs"][2]["deleted"], 4);
}

#[test]
fn a_request_that_waits_longer_than_queue_timeout_exits_75() {
    let f = Fixture::new(opts().bwlimit(1000).queue_timeout(1));
    f.put(M, "big.iso", &bytes(4 << 20, 6));
    let first = f.spawn_sync();
    f.wait_running(M, Duration::from_secs(20));
    f.sync().status(75).stderr_contains("queue_timeout").run();
    first.finish();
    assert_eq!(
        f.state(M)["last_started"],
        1,
        "a request that gave up causes no run"
    );
}

#[test]
fn leftovers_of_an_aborted_run_are_cleaned() {
    let f = Fixture::new(opts());
    f.put(M, "sub/a.iso", b"a");
    f.sync().status(0).run();
    // An aborted run leaves the (otherwise removed) temp dir with a partial file.
    std::fs::create_dir_all(f.dest_path(".syncgate-tmp")).unwrap();
    std::fs::write(f.dest_path(".syncgate-tmp/.a.iso.XXXXXX"), b"partial").unwrap();
    std::fs::create_dir_all(f.dest_path("sub/.~tmp~")).unwrap();
    std::fs::write(f.dest_path("sub/.~tmp~/a.iso"), b"delayed").unwrap();
    f.sync().status(0).run();
    assert!(!f.dest_path(".syncgate-tmp/.a.iso.XXXXXX").exists());
    assert!(!f.dest_path("sub/.~tmp~").exists());
}

#[test]
fn a_corrupt_state_file_is_replaced_with_a_warning_and_no_false_success() {
    let f = Fixture::new(opts());
    f.put(M, "a.iso", b"a");
    f.sync().status(0).run();
    std::fs::write(
        f.state.join("m.state.json"),
        b"{\"version\": 1, \"runs\": [tru",
    )
    .unwrap();
    let st = f.syncgate().args(["status", "--json"]).status(0).run();
    let doc: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert!(doc["mirrors"][0]["warning"]
        .as_str()
        .unwrap()
        .contains("corrupt"));
    assert!(
        doc["mirrors"][0]["last_success"].is_null(),
        "no success may be claimed from a corrupt file"
    );
    f.sync().status(0).stderr_contains("corrupt").run();
}

#[test]
fn status_json_reports_idle_running_waiting_and_the_last_run() {
    let f = Fixture::new(opts().bwlimit(1000));
    f.put(M, "big.iso", &bytes(3 << 20, 7));
    let first = f.spawn_sync();
    f.wait_running(M, Duration::from_secs(20));
    let second = f.spawn_sync();
    let until = Instant::now() + Duration::from_secs(10);
    let doc = loop {
        let out = f.syncgate().args(["status", M, "--json"]).status(0).run();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if doc["mirrors"][0]["waiting"] == 1 || Instant::now() > until {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let m = &doc["mirrors"][0];
    assert_eq!(m["state"], "running");
    assert_eq!(m["running"]["run"], 1);
    assert_eq!(m["waiting"], 1);
    first.finish();
    second.finish();
    let out = f.syncgate().args(["status", "--json"]).status(0).run();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &doc["mirrors"][0];
    assert_eq!(m["state"], "idle");
    assert_eq!(m["last_run"]["run"], 2);
    assert_eq!(m["last_run"]["result"], "success");
    assert!(m["last_success_age"].as_u64().unwrap() < 60);
}

fn config_error(body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("syncgate.toml");
    std::fs::write(&p, body).unwrap();
    let mut cmd = std::process::Command::new(syncgate_bin());
    cmd.arg("--config").arg(&p).args(["status"]);
    let out = Test::new(cmd).status(78).run();
    stderr(&out).replace(&p.display().to_string(), "CFG")
}

#[test]
fn config_errors_name_the_file_the_line_and_the_key_and_exit_78() {
    let user = user_name();
    let group = group_name();
    let m = |extra: &str| {
        format!("state_dir = \"/tmp/s\"\nprivilege = \"direct\"\n[mirror.m]\nupstream = \"/srv/up\"\ndest = \"/srv/m\"\nowner = \"{user}\"\nreader_group = \"{group}\"\n{extra}")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            "state_dir = \"/tmp/s\"\nbogus = 1\n".into(),
            "CFG:2: unknown field `bogus`",
        ),
        ("state_dir = 5\n".into(), "CFG:1: invalid type"),
        (
            "state_dir = \"relative/dir\"\n".into(),
            "CFG:1: state_dir: must be an absolute path",
        ),
        (m("bwlimit = \"fast\"\n"), "CFG:8: invalid type"),
        (m("colour = \"blue\"\n"), "CFG:8: unknown field `colour`"),
        (m("file_mode = \"0666\"\n"), "CFG:8: mirror.m.file_mode"),
        (
            m("").replace("/srv/m", "srv/m"),
            "CFG:5: mirror.m.dest: must be an absolute path",
        ),
        (
            m("").replace("/srv/up", "srv/up"),
            "CFG:4: mirror.m.upstream",
        ),
        (
            m("").replace(&format!("owner = \"{user}\""), "owner = \"no-such-user-x\""),
            "CFG:6: mirror.m.owner: no such user \"no-such-user-x\"",
        ),
        (
            m("").replace(
                &format!("reader_group = \"{group}\""),
                "reader_group = \"no-such-group-x\"",
            ),
            "CFG:7: mirror.m.reader_group: no such group",
        ),
        (
            m("[key.ci]\nverbs = [\"sync\"]\nmirrors = [\"nope\"]\n"),
            "CFG:10: key.ci.mirrors: no mirror named \"nope\"",
        ),
        (
            m("[key.ci]\nverbs = [\"shell\"]\n"),
            "CFG:9: key.ci.verbs: unknown verb \"shell\"",
        ),
        (
            m("[key.ci]\nverbs = [\"sync\"]\nfrom = [\"10.1.2.3/8\"]\n"),
            "CFG:10: key.ci.from",
        ),
        (
            m("").replace("[mirror.m]", "[mirror.\"Bad Name\"]"),
            "CFG:3: mirror.Bad Name",
        ),
    ];
    for (body, want) in cases {
        let err = config_error(&body);
        assert!(
            err.contains(want),
            "want {want:?} in:\n{err}\nfor config:\n{body}"
        );
    }
}

#[test]
fn usage_errors_exit_64_and_unknown_mirrors_are_named() {
    let f = Fixture::new(opts());
    f.syncgate()
        .args(["sync", "nope"])
        .status(64)
        .stderr_contains("no mirror named \"nope\"")
        .run();
    f.syncgate().args(["frobnicate"]).status(64).run();
}

#[test]
fn a_sync_from_an_rsync_daemon_on_loopback_publishes_and_resyncs() {
    let mut f = Fixture::new(opts());
    f.put(M, "r1/a.iso", &bytes(300_000, 8));
    f.put(M, "r1/SHA256SUMS", b"0  a.iso\n");
    f.put(M, "release.json", b"{\"current\": \"r1\"}\n");
    let daemon = crate::support::RsyncDaemon::start(&[("iso", &f.upstream)]);
    f.reconfigure(|c| c.mirror_mut(M).upstream = daemon.url("iso"));

    f.sync().status(0).run();
    assert_eq!(
        std::fs::read(f.dest_path("r1/a.iso")).unwrap(),
        bytes(300_000, 8)
    );
    assert_eq!(f.state(M)["runs"][0]["files"], 3);

    f.sync().status(0).run();
    assert_eq!(
        f.state(M)["runs"][1]["files"],
        0,
        "a no-change resync transfers nothing"
    );
    assert_eq!(f.state(M)["runs"][1]["bytes"], 0);
}

#[test]
fn an_unreachable_upstream_fails_with_rsyncs_own_code_and_publishes_nothing() {
    let mut f = Fixture::new(opts().io_timeout(5));
    let port = crate::support::free_port();
    f.reconfigure(|c| c.mirror_mut(M).upstream = format!("rsync://127.0.0.1:{port}/iso/"));
    let out = f.sync().status(1).run();
    let err = stderr(&out);
    assert!(
        err.contains("rsync exit 10") || err.contains("rsync exited 10"),
        "{err}"
    );
    assert_eq!(f.state(M)["runs"][0]["result"], "failed");
    assert_eq!(f.state(M)["runs"][0]["rsync_exit"], 10);
}

#[test]
fn a_lock_file_that_is_a_symlink_or_owned_by_someone_else_is_refused() {
    let f = Fixture::new(opts());
    f.put(M, "a.iso", b"a");
    f.sync().status(0).run();
    let lock = f.state.join("m.lock");
    let ino = std::fs::metadata(&lock).unwrap().ino();
    f.sync().status(0).run();
    assert_eq!(
        std::fs::metadata(&lock).unwrap().ino(),
        ino,
        "the lock file is never replaced"
    );

    std::fs::remove_file(&lock).unwrap();
    let target = f.dir.path().join("elsewhere");
    std::fs::write(&target, b"").unwrap();
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    f.sync().status(70).stderr_contains("symlink").run();

    if nix::unistd::geteuid().is_root() {
        std::fs::remove_file(&lock).unwrap();
        std::fs::write(&lock, b"").unwrap();
        std::os::unix::fs::chown(&lock, Some(12345), None).unwrap();
        f.sync()
            .status(70)
            .stderr_contains("owned by uid 12345")
            .run();
    }
}

/// The race the two stages must survive: upstream publishes a new image
/// and its checksums after stage 1 has looked. The checksums may only be
/// published together with the image they name.
#[test]
fn files_that_appear_upstream_between_the_stages_are_published_with_their_checksums() {
    let mut f = Fixture::new(opts());
    f.put(M, "a.iso", b"a");
    f.put(M, "SHA256SUMS", b"0  a.iso\n");
    f.sync().status(0).run();
    // Upstream re-signs its checksums, so the plan sees a change in a last
    // file only and stage 1 finds nothing to copy.
    f.put(M, "SHA256SUMS", b"0  a.iso\n# signed again\n");
    // A wrapper around rsync that, after stage 1 (the run with
    // --max-delete=0), adds a new image and new checksums upstream.
    let marker = f.dir.path().join("stage1-done");
    f.use_rsync_wrapper(&format!(
            "#!/bin/sh\n/usr/bin/rsync \"$@\"\nrc=$?\ncase \" $* \" in *' --max-delete=0 '*) if [ ! -e {m} ]; then touch {m}; printf new > {up}/b.iso; printf '0  a.iso\\n0  b.iso\\n' > {up}/SHA256SUMS; touch -d '2001-01-01' {up}/SHA256SUMS; fi;; esac\nexit $rc\n",
            m = marker.display(),
            up = f.upstream.display()
        ));

    f.sync().status(0).run();
    assert!(
        marker.exists(),
        "the wrapper changed upstream after stage 1"
    );
    assert_eq!(
        std::fs::read(f.dest_path("SHA256SUMS")).unwrap(),
        b"0  a.iso\n0  b.iso\n"
    );
    assert_eq!(
        std::fs::read(f.dest_path("b.iso")).unwrap(),
        b"new",
        "the checksums name b.iso, so it must be there"
    );
}

/// Nothing from the caller's environment reaches rsync: children get a
/// cleared environment with a fixed PATH (and HOME, LC_ALL=C).
#[test]
fn rsync_never_inherits_the_callers_environment() {
    let mut f = Fixture::new(opts());
    f.put(M, "a.iso", b"a");
    let dump = f.dir.path().join("rsync-env");
    f.use_rsync_wrapper(&format!(
        "#!/bin/sh\n/usr/bin/env >> {}\nexec /usr/bin/rsync \"$@\"\n",
        dump.display()
    ));

    f.sync()
        .env("LD_PRELOAD", "/nonexistent/evil.so")
        .env("RSYNC_RSH", "/bin/false")
        .env("RSYNC_CONNECT_PROG", "/bin/false")
        .env("LC_CTYPE", "xx_XX.UTF-8")
        .env("SSH_ORIGINAL_COMMAND", "sync; id")
        .env("PATH", "/tmp/evil:/usr/bin:/bin")
        .status(0)
        .run();
    let env = std::fs::read_to_string(&dump).unwrap();
    let names: std::collections::BTreeSet<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    // /bin/sh itself adds PWD (and may add SHLVL, _); nothing else may appear.
    for name in &names {
        assert!(
            ["PATH", "LC_ALL", "HOME", "PWD", "SHLVL", "_"].contains(name),
            "{name} reached rsync:\n{env}"
        );
    }
    assert!(
        env.lines()
            .any(|l| l == "PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
        "{env}"
    );
    assert!(env.lines().any(|l| l == "LC_ALL=C"), "{env}");
}

/// A first sync goes through a private staging copy: readers see nothing
/// of it until it is complete, then every top-level entry appears whole and
/// the checksum files last. One that is stopped publishes nothing, and the
/// next one resumes its copy instead of starting over.
#[test]
fn a_first_sync_publishes_only_a_complete_copy_and_an_interrupted_one_is_resumed() {
    let mut f = Fixture::new(opts().bwlimit(1000).timeout(3));
    let mut expected = BTreeMap::new();
    let mut sums = String::new();
    for i in 0..6 {
        let name = format!("d/img-{i}.iso");
        let b = bytes(1 << 20, 300 + i);
        f.put(M, &name, &b);
        sums.push_str(&format!("0  {name}\n"));
        expected.insert(name, b);
    }
    f.put(M, "SHA256SUMS", sums.as_bytes());
    f.put(M, "d/SHA256SUMS", b"inner checksums\n");

    // 6 MiB at 1 MB/s against a 3 s timeout: stopped part-way.
    f.sync().status(1).stderr_contains("timed out").run();
    let visible: Vec<_> = std::fs::read_dir(&f.dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != ".syncgate-tmp")
        .collect();
    assert_eq!(
        visible,
        Vec::<std::ffi::OsString>::new(),
        "a stopped first sync published something"
    );
    let staged = f.dest_path(".syncgate-tmp/fresh/d");
    let kept = std::fs::read_dir(&staged)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".iso")
            })
            .count()
        })
        .unwrap_or(0);
    assert!(kept >= 1, "no complete image was kept in the staging copy");
    let mode = std::fs::metadata(f.dest_path(".syncgate-tmp"))
        .unwrap()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the staging copy must be private");

    // The resumed first sync, watched by a reader.
    f.set_opts(M, opts().bwlimit(2000));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dest, expected, stop) = (f.dest.clone(), expected.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen_dir = 0u64;
            let mut violations = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if dest.join("d").is_dir() {
                    seen_dir += 1;
                    for (name, want) in &expected {
                        match std::fs::read(dest.join(name)) {
                            Ok(b) if &b == want => {}
                            Ok(b) => violations.push(format!("{name}: {} bytes", b.len())),
                            Err(e) => violations.push(format!("{name}: {e}")),
                        }
                    }
                }
                if dest.join("SHA256SUMS").exists() && !dest.join("d").is_dir() {
                    violations.push("SHA256SUMS before d/".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (seen_dir, violations)
        })
    };
    // Renames are too quick for a reader to catch the order; syncgate
    // says what it held back for last: both checksum files.
    f.sync()
        .status(0)
        .stderr_contains("published 1 top-level entries, then 2 last files")
        .run();
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::SeqCst);
    let (seen, violations) = reader.join().unwrap();
    assert_eq!(
        violations,
        Vec::<String>::new(),
        "after {seen} observations of d/"
    );
    assert!(seen > 0);
    for (name, want) in &expected {
        assert_eq!(&std::fs::read(f.dest_path(name)).unwrap(), want, "{name}");
    }
    assert_eq!(
        std::fs::read(f.dest_path("d/SHA256SUMS")).unwrap(),
        b"inner checksums\n"
    );
    assert!(!f.dest_path(".syncgate-tmp").exists());
    let s = f.state(M);
    let resumed = s["runs"][1]["bytes"].as_u64().unwrap();
    assert!(
        resumed < 6 << 20,
        "the second first sync copied {resumed} bytes: it did not resume the kept copy"
    );
}

/// A resync with nothing changed upstream is one dry run; anything the
/// dry run alone cannot see (an extra entry in dest) or that it itemizes
/// (a mode changed in dest) still takes the two-stage path and is fixed.
#[test]
fn a_resync_finds_nothing_changed_in_one_pass_and_still_notices_every_difference() {
    let f = Fixture::new(opts());
    f.put(M, "r1/a.iso", b"a");
    f.put(M, "r1/SHA256SUMS", b"0  a.iso\n");
    std::os::unix::fs::symlink("/etc/passwd", f.upstream.join("r1/evil")).unwrap();
    std::os::unix::fs::symlink("r1", f.upstream.join("current")).unwrap();
    nix::unistd::mkfifo(&f.upstream.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    f.sync().status(0).run();

    // rsync compares mtimes to the second: anything that touched a
    // directory in dest after rsync set it (syncgate's own temp dir, the
    // first sync's renames) would show from now on.
    std::thread::sleep(Duration::from_millis(1100));
    f.sync()
        .status(0)
        .stderr_contains("unchanged: the mirror matches upstream")
        .stderr_lacks("stage 1")
        .run();

    // An entry only dest has: the dry run itemizes nothing (the directory's
    // mtime is put back), but dest holds one entry too many.
    std::fs::write(f.dest_path("r1/stray.iso"), b"stray").unwrap();
    let st = std::process::Command::new("touch")
        .arg("-r")
        .arg(f.upstream.join("r1"))
        .arg(f.dest_path("r1"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = f
        .sync()
        .status(0)
        .stderr_contains("dest holds entries upstream does not have")
        .run();
    assert!(!f.dest_path("r1/stray.iso").exists(), "{}", show(&out));

    // A mode changed in dest is itemized and put back.
    std::fs::set_permissions(
        f.dest_path("r1/a.iso"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    f.sync()
        .status(0)
        .stderr_contains("entries differ from upstream")
        .run();
    assert_eq!(
        std::fs::metadata(f.dest_path("r1/a.iso")).unwrap().mode() & 0o7777,
        0o640
    );
    // And afterwards it is unchanged again.
    f.sync().status(0).stderr_contains("unchanged").run();
}
