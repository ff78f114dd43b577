//! What an admin watches: the Prometheus metrics file (parsed by
//! Prometheus's own `promtool`, values checked against the state file),
//! `status --check` as a Nagios/Icinga plugin, and the run history under a
//! soak of many runs. Real rsync and syncgate; local mirror (the
//! [`Fixture`]), and the metrics file written by the login account through
//! ssh and sudo ([`MirrorHost`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::fixture::{Fixture, M};
use crate::support::{bytes, opts, require_tool, stderr, stdout, Mirrors};

/// Every result a run can have (the `result` label).
const RESULTS: [&str; 6] = [
    "success",
    "failed",
    "timeout",
    "aborted",
    "died",
    "verify-failed",
];

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `promtool check metrics` on `text` (Prometheus's own parser and
/// linter): it must accept it without a single complaint.
#[track_caller]
fn promtool_accepts(text: &str) {
    let mut child = Command::new(require_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- the file ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of a metrics file: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// Reads `path`, has promtool check it, and returns its samples.
#[track_caller]
fn metrics(path: &Path) -> BTreeMap<String, f64> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("metrics file {}: {e}", path.display()));
    promtool_accepts(&text);
    samples(&text)
}

#[track_caller]
fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {m:#?}"))
}

/// The metrics of `mirror` say what its state file says: counters, the
/// last run, the last success.
#[track_caller]
fn agree(m: &BTreeMap<String, f64>, mirror: &str, state: &Value) {
    let l = format!("{{mirror=\"{mirror}\"}}");
    for r in RESULTS {
        let want = state["counts"]["runs"][r].as_u64().unwrap_or(0) as f64;
        let key = format!("syncgate_runs_total{{mirror=\"{mirror}\",result=\"{r}\"}}");
        assert_eq!(get(m, &key), want, "{key}; state: {state:#}");
    }
    let c = &state["counts"];
    assert_eq!(
        get(m, &format!("syncgate_requests_total{l}")),
        c["requests"].as_u64().unwrap() as f64
    );
    assert_eq!(
        get(m, &format!("syncgate_consecutive_failures{l}")),
        c["failures_in_row"].as_u64().unwrap() as f64
    );
    let last = state["runs"].as_array().unwrap().last().unwrap();
    for (metric, field) in [
        ("syncgate_last_run_start_timestamp_seconds", "started"),
        ("syncgate_last_run_end_timestamp_seconds", "ended"),
        ("syncgate_last_run_transferred_bytes", "bytes"),
        ("syncgate_last_run_transferred_files", "files"),
        ("syncgate_last_run_deleted_files", "deleted"),
    ] {
        assert_eq!(
            get(m, &format!("{metric}{l}")),
            last[field].as_u64().unwrap() as f64,
            "{metric} vs the state's {field}"
        );
    }
    for r in RESULTS {
        let key = format!("syncgate_last_run_result{{mirror=\"{mirror}\",result=\"{r}\"}}");
        let want = if last["result"] == r { 1.0 } else { 0.0 };
        assert_eq!(get(m, &key), want, "{key}");
    }
    match state["last_success"].as_u64() {
        Some(s) => assert_eq!(
            get(m, &format!("syncgate_last_success_timestamp_seconds{l}")),
            s as f64
        ),
        None => assert!(!m.contains_key(&format!("syncgate_last_success_timestamp_seconds{l}"))),
    }
    assert_eq!(get(m, &format!("syncgate_running{l}")), 0.0);
    assert_eq!(get(m, &format!("syncgate_waiting_requests{l}")), 0.0);
}

/// A fixture whose metrics file is `DIR/metrics/syncgate.prom`.
fn with_metrics(o: crate::support::Opts) -> (Fixture, PathBuf) {
    let mut f = Fixture::new(o);
    let dir = f.dir.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("syncgate.prom");
    f.reconfigure(|c| c.metrics_file = Some(path.clone()));
    (f, path)
}

#[test]
fn the_metrics_file_parses_with_promtool_and_agrees_with_the_state_after_each_kind_of_run() {
    let (mut f, prom) = with_metrics(opts().max_age("1h"));
    let l = "{mirror=\"m\"}";

    // A success.
    f.put(M, "a.iso", &bytes(50_000, 1));
    f.sync().status(0).run();
    let m = metrics(&prom);
    agree(&m, M, &f.state(M));
    assert_eq!(
        get(&m, "syncgate_runs_total{mirror=\"m\",result=\"success\"}"),
        1.0
    );
    assert_eq!(
        get(&m, &format!("syncgate_last_run_transferred_bytes{l}")),
        50_000.0
    );
    assert_eq!(get(&m, &format!("syncgate_max_age_seconds{l}")), 3600.0);
    assert_eq!(get(&m, &format!("syncgate_fresh{l}")), 1.0);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&prom).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(
        std::fs::read_dir(prom.parent().unwrap()).unwrap().count(),
        1,
        "no temporary file is left beside the metrics file"
    );

    // A failure: upstream is gone.
    let moved = f.dir.path().join("upstream.away");
    std::fs::rename(&f.upstream, &moved).unwrap();
    f.sync().status(1).run();
    let m = metrics(&prom);
    agree(&m, M, &f.state(M));
    assert_eq!(
        get(&m, "syncgate_runs_total{mirror=\"m\",result=\"failed\"}"),
        1.0
    );
    assert_eq!(get(&m, &format!("syncgate_consecutive_failures{l}")), 1.0);
    std::fs::rename(&moved, &f.upstream).unwrap();

    // A timeout.
    f.set_opts(M, opts().max_age("1h").bwlimit(200).timeout(2));
    f.put(M, "big.iso", &bytes(8 << 20, 4));
    f.sync().status(1).stderr_contains("timed out").run();
    let m = metrics(&prom);
    agree(&m, M, &f.state(M));
    assert_eq!(
        get(&m, "syncgate_runs_total{mirror=\"m\",result=\"timeout\"}"),
        1.0
    );
    assert_eq!(get(&m, &format!("syncgate_consecutive_failures{l}")), 2.0);
    assert_eq!(
        get(
            &m,
            "syncgate_last_run_result{mirror=\"m\",result=\"timeout\"}"
        ),
        1.0
    );

    // A burst of five behind a running sync: one more run serves them.
    f.set_opts(M, opts().max_age("1h").bwlimit(2000));
    f.put(M, "big.iso", &bytes(3 << 20, 5));
    let before = f.state(M)["counts"]["requests"].as_u64().unwrap();
    let first = f.spawn_sync();
    f.wait_running(M, Duration::from_secs(20));
    let burst: Vec<_> = (0..5).map(|_| f.sync().status(0).spawn()).collect();
    for b in burst {
        b.finish();
    }
    first.finish();
    let st = f.state(M);
    let m = metrics(&prom);
    agree(&m, M, &st);
    assert_eq!(st["last_started"], 5, "{st:#}");
    assert_eq!(
        get(&m, "syncgate_runs_total{mirror=\"m\",result=\"success\"}"),
        3.0
    );
    assert_eq!(
        get(&m, &format!("syncgate_requests_total{l}")),
        (before + 6) as f64
    );
    assert_eq!(get(&m, &format!("syncgate_consecutive_failures{l}")), 0.0);
    assert!(
        get(&m, "syncgate_metrics_timestamp_seconds")
            >= st["last_success"].as_u64().unwrap() as f64
    );
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_said_and_never_fails_the_sync() {
    let (mut f, _) = with_metrics(opts());
    let missing = f.dir.path().join("no-such-dir/syncgate.prom");
    f.reconfigure(|c| c.metrics_file = Some(missing.clone()));
    f.put(M, "a.iso", b"a");
    f.sync()
        .status(0)
        .stderr_contains("warning: metrics not written: metrics_file")
        .stderr_contains("must exist")
        .run();
    assert_eq!(f.last_run(M)["result"], "success");
    let audit = std::fs::read_to_string(f.state.join("audit.log")).unwrap();
    assert!(
        audit.contains("event=observe-failed what=metrics"),
        "{audit}"
    );
}

/// Rewrites `m`'s state file with `change`.
fn edit_state(f: &Fixture, change: impl FnOnce(&mut Value)) {
    let mut st = f.state(M);
    change(&mut st);
    std::fs::write(
        f.state.join(format!("{M}.state.json")),
        serde_json::to_vec_pretty(&st).unwrap(),
    )
    .unwrap();
}

#[test]
fn status_check_exits_as_a_monitoring_plugin_for_never_synced_fresh_failing_stale_and_dead_runs() {
    let f = Fixture::new(opts().max_age("1h"));
    let check = || f.syncgate().args(["status", "--check"]);

    check()
        .status(2)
        .stdout_contains("SYNCGATE CRITICAL - m: never synced (max_age 1h00m) | m_age=U;;3600;0 ")
        .run();

    f.put(M, "a.iso", b"a");
    f.sync().status(0).run();
    let out = check()
        .status(0)
        .stdout_contains("SYNCGATE OK - m: OK, last success")
        .run();
    let line = stdout(&out);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.contains(" | m_age=") && line.contains(";;3600;0 m_failures=0;0;;0 "),
        "{line}"
    );

    // Failing, but still fresh: a warning.
    let moved = f.dir.path().join("upstream.away");
    std::fs::rename(&f.upstream, &moved).unwrap();
    f.sync().status(1).run();
    f.sync().status(1).run();
    check()
        .status(1)
        .stdout_contains("SYNCGATE WARNING - m: last run #3 failed (2 in a row)")
        .stdout_contains("m_failures=2;0;;0")
        .run();
    std::fs::rename(&moved, &f.upstream).unwrap();
    f.sync().status(0).run();

    // Last success two hours ago: past max_age.
    edit_state(&f, |st| st["last_success"] = (now() - 7200).into());
    check()
        .status(2)
        .stdout_contains("SYNCGATE CRITICAL - m: last success 2h00m ago (max_age 1h00m)")
        .run();
    let json = stdout(&f.syncgate().args(["status", "--json"]).status(0).run());
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["mirrors"][0]["freshness"], "stale");
    assert_eq!(
        doc["mirrors"][0]["state"], "idle",
        "freshness is not the lock state"
    );
    assert_eq!(doc["mirrors"][0]["max_age"], 3600);
    f.syncgate()
        .args(["status"])
        .status(0)
        .stdout_contains("freshness: OUT OF DATE: last success 2h00m ago, more than max_age 1h00m")
        .run();

    // A run recorded as running whose process is gone (no lock held).
    edit_state(&f, |st| {
        st["last_success"] = now().into();
        st["last_started"] = 5.into();
        st["running"] = serde_json::json!({
            "run": 5, "pid": 999_999_999u32, "trigger": "cli", "request": "r5",
            "requester": "user=root uid=0", "started": now()
        });
    });
    check()
        .status(1)
        .stdout_contains("SYNCGATE WARNING - m: run #5 (pid 999999999) died without a result")
        .run();
    // The next request records it as died, in the history too.
    f.sync().status(0).run();
    check().status(0).run();
    let hist = stdout(&f.syncgate().args(["history", "-n", "2"]).status(0).run());
    let lines: Vec<&str> = hist.lines().collect();
    assert_eq!(lines.len(), 2, "{hist}");
    assert!(lines[0].contains("  m  #5  died  "), "{hist}");
    assert!(lines[1].contains("  m  #6  success  "), "{hist}");

    // What it cannot read is UNKNOWN.
    f.syncgate()
        .args(["status", "--check", "nosuch"])
        .status(3)
        .stdout_contains("SYNCGATE UNKNOWN - no mirror named \"nosuch\"")
        .run();
    let t = crate::support::cmd::Test::new({
        let mut c = Command::new(f.bin());
        c.args([
            "--config",
            "/nonexistent/syncgate.toml",
            "status",
            "--check",
        ]);
        c
    });
    t.status(3)
        .stdout_contains("SYNCGATE UNKNOWN - /nonexistent/syncgate.toml: cannot read")
        .run();
    f.syncgate()
        .args(["status", "--check", "--json"])
        .status(64)
        .run();
}

#[test]
fn the_history_stays_bounded_and_whole_under_a_soak_of_many_quick_runs() {
    const RUNS: u64 = 220;
    const LIMIT: u64 = 8192;
    let mut f = Fixture::new(opts());
    f.reconfigure(|c| c.history_size = Some(LIMIT));
    f.put(M, "a.iso", b"a");
    let current = f.state.join("m.history.jsonl");
    let older = f.state.join("m.history.jsonl.1");
    let mut rotated = false;
    for i in 1..=RUNS {
        f.sync().status(0).run();
        for p in [&current, &older] {
            if let Ok(md) = std::fs::metadata(p) {
                assert!(
                    md.len() <= LIMIT,
                    "after run {i}: {} is {} bytes",
                    p.display(),
                    md.len()
                );
            }
        }
        rotated |= older.exists();
    }
    assert!(rotated, "the history was never rotated");
    let mut ids = Vec::new();
    for p in [&older, &current] {
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e}: {line}", p.display()));
            assert_eq!(v["mirror"], M);
            assert_eq!(v["result"], "success");
            ids.push(v["run"].as_u64().unwrap());
        }
    }
    assert_eq!(*ids.last().unwrap(), RUNS);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "the kept runs are the newest, in order, none missing: {ids:?}"
    );
    assert!(ids.len() > 20 && ids[0] > 1, "{} runs kept", ids.len());

    // `history` shows the newest last, as text and as JSON lines.
    let text = stdout(&f.syncgate().args(["history", "-n", "3"]).status(0).run());
    let runs: Vec<&str> = text
        .lines()
        .map(|l| l.split("  ").nth(2).unwrap())
        .collect();
    assert_eq!(
        runs,
        [
            format!("#{}", RUNS - 2),
            format!("#{}", RUNS - 1),
            format!("#{RUNS}")
        ]
    );
    let json = stdout(
        &f.syncgate()
            .args(["history", "--json", "-n", "0"])
            .status(0)
            .run(),
    );
    assert_eq!(json.lines().count(), ids.len());

    // A line cut short by a crash: skipped with a warning, the next run's
    // line stays whole.
    let mut h = std::fs::OpenOptions::new()
        .append(true)
        .open(&current)
        .unwrap();
    h.write_all(b"{\"mirror\":\"m\",\"run\":99").unwrap();
    f.sync().status(0).run();
    let out = f
        .syncgate()
        .args(["history", "--json", "-n", "1"])
        .status(0)
        .run();
    assert!(
        stderr(&out).contains("skipped 1 line(s)"),
        "{}",
        stderr(&out)
    );
    let last: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(last["run"], RUNS + 1);
    f.syncgate()
        .args(["status"])
        .status(0)
        .stdout_contains("warning: history: ")
        .run();
}

crate::support::e2e_test! {
    /// On a production-like host the login account writes the metrics file
    /// after an SSH sync (mode 0644, in a directory it owns), with the live
    /// snapshot as a label; the login account can read `history` and run
    /// `status --check`; a reader outside the state dir gets UNKNOWN.
    fn the_login_account_writes_the_metrics_file_after_an_ssh_sync() {
        use crate::support::mirror_host::{MirrorHost, LOGIN, READER};
        use std::os::unix::fs::MetadataExt;
        let mut mh = MirrorHost::snapshots();
        let dir = mh.path("node-exporter");
        std::fs::create_dir(&dir).unwrap();
        nix::unistd::chown(&dir, Some(mh.login.uid.into()), Some(mh.login.gid.into())).unwrap();
        let prom = dir.join("syncgate.prom");
        mh.reconfigure(|c| c.metrics_file = Some(prom.clone()));
        mh.put("iso", "a.iso", b"image");
        mh.ssh(Some("sync")).status(0).run();

        let md = std::fs::metadata(&prom).unwrap();
        assert_eq!((md.uid(), md.mode() & 0o777), (mh.login.uid, 0o644));
        let st = mh.state("iso");
        let m = metrics(&prom);
        agree(&m, "iso", &st);
        let live = st["runs"][0]["snapshot"]["live"].as_str().unwrap();
        assert_eq!(
            get(&m, &format!("syncgate_live_snapshot_info{{mirror=\"iso\",snapshot=\"{live}\"}}")),
            1.0
        );

        let conf = mh.config.display().to_string();
        let out = mh.host.run_as(LOGIN, &[&mh.bin.display().to_string(), "--config", &conf, "status", "--check"]);
        assert_eq!(out.status.code(), Some(0), "{}", crate::support::show(&out));
        assert!(stdout(&out).starts_with("SYNCGATE OK - iso: OK, last success "), "{}", stdout(&out));
        let out = mh.host.run_as(LOGIN, &[&mh.bin.display().to_string(), "--config", &conf, "history"]);
        assert!(out.status.success(), "{}", crate::support::show(&out));
        assert!(stdout(&out).contains("  iso  #1  success  "), "{}", stdout(&out));
        let out = mh.host.run_as(READER, &[&mh.bin.display().to_string(), "--config", &conf, "status", "--check"]);
        assert_eq!(out.status.code(), Some(3), "{}", crate::support::show(&out));
        assert!(stdout(&out).starts_with("SYNCGATE UNKNOWN - "), "{}", stdout(&out));
    }
}
