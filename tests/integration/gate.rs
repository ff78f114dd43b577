//! The SSH gate end to end: real ssh client, real sshd, real accounts, real
//! sudo. Each test reads as a statement of the gate's behaviour.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::cmd::Running;
use crate::support::mirror_host::MirrorHost;
use crate::support::{
    self, assert_contains, assert_eventually, bytes, e2e_test, fields, opts, procs, stderr, Key,
    Mirrors,
};

/// Long enough for any single ssh request or sync in these tests.
const SLOW: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

/// Nothing of the login account or the image owner is left running: no
/// gate, no sudo, no owner-side command, no rsync, no sshd session.
fn assert_nothing_left(mh: &MirrorHost) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = mh.user_pids();
        if pids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes of {} / {} are still running:\n{}",
            mh.login.name,
            mh.owner.name,
            procs::describe_pids(&pids)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A mirror whose first sync takes a few seconds (`bwlimit` on a
/// `mib` MiB image).
fn slow_host(mib: usize) -> MirrorHost {
    let mh = MirrorHost::with(&[("iso", opts().bwlimit(2000))], &[Key::jenkins()]);
    mh.put("iso", "big.iso", &bytes(mib << 20, 7));
    mh.put("iso", "SHA256SUMS", b"x  big.iso\n");
    mh
}

/// `ssh ... sync` in the background with stdin from /dev/null; it must
/// exit 0.
fn spawn_sync(mh: &MirrorHost) -> Running<'_> {
    mh.ssh(Some("sync")).status(0).spawn()
}

// ---------------------------------------------------------------- tests

e2e_test! {
    /// `ssh syncgate@host sync` runs a real sync as the image owner, and the
    /// audit trail has a decision line and an outcome line.
    fn a_good_sync_through_ssh() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        mh.put("iso", "SHA256SUMS", b"x  a.iso\n");
        // stdout is for machine output only.
        mh.ssh(Some("sync")).status(0).stderr_contains("run #1 succeeded").stdout_empty().run();
        assert_eq!(std::fs::read(mh.dest("iso").join("a.iso")).unwrap(), b"image");
        let decision = mh.log.wait_for(|l| l.contains("event=decision"), Duration::from_secs(5)).unwrap();
        let d = fields(&decision);
        assert_eq!(d["key"], "jenkins");
        assert_eq!(d["client"], "127.0.0.1");
        assert_eq!(d["decision"], "allow");
        let outcome = mh.log.wait_for(|l| l.contains("event=outcome"), Duration::from_secs(5)).unwrap();
        let o = fields(&outcome);
        assert_eq!(o["result"], "success");
        assert_eq!(o["request"], d["request"]);
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// What Debian's runmirrors sends (one string, a leading space, the
    /// archive word first, the name possibly empty) is accepted through the
    /// real ssh client and sshd: each push is served by a run, and the
    /// decision line shows the push in canonical form.
    fn runmirrors_pushes_through_ssh_are_served() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        mh.put("iso", "SHA256SUMS", b"x  a.iso\n");
        let pushes = [
            (" sync:archive:iso sync:all", "sync:archive:iso"),
            (" sync:archive: sync:all", "sync:archive:"),
            (" sync:archive:iso sync:stage1", "sync:archive:iso sync:stage1"),
            (" sync:archive: sync:mhop sync:stage2", "sync:archive: sync:mhop sync:stage2"),
            (" sync:archive:iso sync:callback sync:mhop sync:stage1", "sync:archive:iso sync:mhop sync:stage1 sync:callback"),
        ];
        for (i, (cmd, canonical)) in pushes.iter().enumerate() {
            mh.ssh(Some(cmd)).status(0).stderr_contains("succeeded").stdout_empty().context(|| cmd.to_string()).run();
            let decisions = mh.log.wait_events("decision", i + 1, Duration::from_secs(5));
            let d = &decisions[i];
            assert_eq!(d["decision"], "allow", "{cmd}: {d:?}");
            assert_eq!(d["command"], *cmd, "{d:?}");
            assert_eq!(d["action"], *canonical, "{d:?}");
        }
        assert_eq!(std::fs::read(mh.dest("iso").join("a.iso")).unwrap(), b"image");
        assert_eq!(mh.log.events("outcome").len(), pushes.len());
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// Twenty ssh clients that ask for a sync while one runs all succeed,
    /// and are served by exactly one further run: two runs in all, 21
    /// decision lines, 21 outcome lines, two of them `coalesced=no`.
    fn a_burst_of_twenty_ssh_clients_behind_a_running_sync_is_served_by_one_more_run() {
        let mh = slow_host(10);
        let first = spawn_sync(&mh);
        mh.wait_running("iso", SLOW);

        let burst: Vec<Running> = (0..20)
            .map(|_| mh.ssh(Some("sync")).status(0).stdout_empty().stderr_contains("queued behind run #1").spawn())
            .collect();
        mh.log.wait_events("decision", 21, SLOW);
        // Every request of the burst has arrived while run #1 is still going
        // (the decision line comes right before the request notes its
        // arrival; give the last one a moment).
        std::thread::sleep(Duration::from_millis(300));
        let s = mh.state("iso");
        assert_eq!(s["running"]["run"], 1, "run #1 ended before the whole burst arrived; make it slower: {s:#}");

        let first = first.finish_within(SLOW);
        assert_contains(&first.stderr, "run #1 succeeded");
        let outs: Vec<Output> = burst.into_iter().map(|c| c.finish_within(SLOW)).collect();
        let ran = outs.iter().filter(|o| stderr(o).contains("run #2 succeeded")).count();
        let coalesced = outs.iter().filter(|o| stderr(o).contains("served by run #2")).count();
        assert_eq!((ran, coalesced), (1, 19));

        let s = mh.state("iso");
        assert_eq!(s["last_started"], 2, "{s:#}");
        let runs = s["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2, "{s:#}");
        assert_eq!((runs[0]["run"].as_u64(), runs[0]["served"].as_u64()), (Some(1), Some(1)));
        assert_eq!((runs[1]["run"].as_u64(), runs[1]["served"].as_u64()), (Some(2), Some(20)));
        assert!(runs.iter().all(|r| r["result"] == "success"), "{s:#}");

        let decisions = mh.log.events("decision");
        let outcomes = mh.log.wait_events("outcome", 21, SLOW);
        assert_eq!(decisions.len(), 21);
        assert_eq!(outcomes.len(), 21);
        assert!(decisions.iter().all(|d| d["decision"] == "allow" && d["key"] == "jenkins"));
        let mut asked: Vec<&str> = decisions.iter().map(|d| d["request"].as_str()).collect();
        let mut answered: Vec<&str> = outcomes.iter().map(|o| o["request"].as_str()).collect();
        asked.sort_unstable();
        answered.sort_unstable();
        asked.dedup();
        assert_eq!(asked.len(), 21, "request ids are unique");
        assert_eq!(asked, answered, "every decision has exactly one outcome");
        let by = |run: &str, coalesced: &str| {
            outcomes
                .iter()
                .filter(|o| o["run"] == run && o["coalesced"] == coalesced)
                .count()
        };
        assert_eq!(by("1", "no"), 1);
        assert_eq!(by("2", "no"), 1);
        assert_eq!(by("2", "yes"), 19);
        assert!(outcomes.iter().all(|o| o["result"] == "success" && o["exit"] == "0"));
        assert_eq!(mh.log.events("run-start").len(), 2);
        assert_nothing_left(&mh);
    }
}

/// One hostile request: the bytes the ssh client sends, and how the gate
/// must refuse them.
struct Hostile {
    what: &'static str,
    cmd: Vec<u8>,
    code: i32,
    reason: &'static str,
}

fn hostile(what: &'static str, cmd: impl AsRef<[u8]>, code: i32, reason: &'static str) -> Hostile {
    Hostile {
        what,
        cmd: cmd.as_ref().to_vec(),
        code,
        reason,
    }
}

/// Sends `h` through the real ssh client and checks the refusal: exit
/// status, one `syncgate: refused:` line, one decision line with the
/// reason. Returns the decision line's fields.
fn assert_refused(mh: &MirrorHost, key: &std::path::Path, h: &Hostile) -> BTreeMap<String, String> {
    let before = mh.log.events("decision").len();
    let what = format!(
        "{} ({:?})",
        h.what,
        String::from_utf8_lossy(&h.cmd[..h.cmd.len().min(80)])
    );
    let out = mh
        .ssh_raw(key, Some(OsStr::from_bytes(&h.cmd)))
        .status(h.code)
        .stdout_empty()
        .context(|| what.clone())
        .run();
    let ctx = format!("{what}: {}", support::show(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {ctx}");
    assert!(lines[0].starts_with("syncgate: refused: "), "{ctx}");
    assert!(
        out.stderr
            .iter()
            .all(|&b| b == b'\n' || (0x20..0x7f).contains(&b)),
        "the refusal echoes no raw client bytes: {ctx}"
    );
    let decisions = mh
        .log
        .wait_events("decision", before + 1, Duration::from_secs(5));
    assert_eq!(
        decisions.len(),
        before + 1,
        "one decision line per request: {ctx}"
    );
    let d = decisions.last().unwrap().clone();
    assert_eq!(d["decision"], "refuse", "{ctx}");
    assert_eq!(d["reason"], h.reason, "{ctx}\n{d:?}");
    assert_eq!(d["client"], "127.0.0.1", "{ctx}");
    assert_eq!(
        d["command"],
        syncgate::gate::request::escape_for_log(&h.cmd, 160),
        "the audit line keeps what the client sent, escaped and capped: {ctx}"
    );
    d
}

e2e_test! {
    /// Hostile commands sent through the real ssh client are refused before
    /// anything runs: exit 64 (not understood) or 77 (not permitted), one
    /// `syncgate: refused:` line, a `decision=refuse` audit line with the
    /// reason, and no run, no state, no file written.
    fn hostile_commands_are_refused_before_anything_runs() {
        let mh = MirrorHost::with(&[("iso", opts()), ("other", opts())], &[Key::jenkins()]);
        mh.put("iso", "a.iso", b"image");
        let marker = mh.path("pwned");
        let redirect = format!("sync > {}", marker.display());
        let touch = format!("sync; touch {}", marker.display());
        let (usage, noperm) = (64, 77);
        let cases = vec![
            // Shell metacharacters: no shell ever sees them; they are words.
            hostile("semicolon", "sync; id", usage, "unknown-verb"),
            hostile("semicolon touching a file", &touch, usage, "unknown-verb"),
            hostile("and-and", "sync && id", usage, "bad-argument"),
            hostile("or-or", "sync || id", usage, "bad-argument"),
            hostile("pipe", "sync | sh", usage, "bad-argument"),
            hostile("command substitution", "sync $(id)", usage, "bad-argument"),
            hostile("backticks", "sync `id`", usage, "bad-argument"),
            hostile("redirect", &redirect, usage, "bad-argument"),
            hostile("background", "sync &", usage, "bad-argument"),
            hostile("glob", "sync *", usage, "bad-argument"),
            hostile("variable", "sync $HOME", usage, "bad-argument"),
            // Bytes that must never reach a log or a terminal raw.
            hostile("embedded newline", "sync\nid", usage, "control-byte"),
            hostile("carriage return", "sync\rid", usage, "control-byte"),
            hostile("tab as separator", "sync\tiso", usage, "control-byte"),
            hostile("ESC sequence", "sync\x1b[2J", usage, "control-byte"),
            hostile("DEL", "sync\x7f", usage, "control-byte"),
            hostile("SOH", "sync\x01iso", usage, "control-byte"),
            hostile("non-UTF-8 byte", b"sync \xff", usage, "not-utf8"),
            hostile("overlong UTF-8 encoding of '/'", b"sync a\xc0\xafb", usage, "not-utf8"),
            hostile("comment", "sync iso #", usage, "comment"),
            hostile("comment hiding a command", "sync#;id", usage, "comment"),
            // Length.
            hostile("300 bytes", format!("sync {}", "a".repeat(295)), usage, "too-long"),
            hostile("100 KiB", format!("sync {}", "a".repeat(100 * 1024 - 5)), usage, "too-long"),
            // Option injection.
            hostile("long option", "sync --all", usage, "bad-argument"),
            hostile("rsync -e", "sync -e sh", usage, "bad-argument"),
            hostile("option with value", "sync --config=/tmp/x", usage, "bad-argument"),
            hostile("status option with value", "status --json=1", usage, "bad-argument"),
            hostile("json twice", "status --json --json", usage, "bad-argument"),
            hostile("rsync server", "rsync --server --sender -vlogDtpre.iLsfxC . /", usage, "unknown-verb"),
            // Paths and names.
            hostile("traversal", "sync ../etc", usage, "bad-argument"),
            hostile("slash", "sync a/b", usage, "bad-argument"),
            hostile("absolute path", "sync /srv", usage, "bad-argument"),
            hostile("push word traversal", "sync:archive:../x", usage, "bad-argument"),
            hostile("extra word", "sync iso iso", usage, "bad-argument"),
            hostile("help with an argument", "help me", usage, "bad-argument"),
            // Verbs.
            hostile("unknown verb", "shell", usage, "unknown-verb"),
            hostile("a program path", "/bin/sh", usage, "unknown-verb"),
            hostile("uppercase verb", "SYNC", usage, "unknown-verb"),
            hostile("capitalised verb", "Sync iso", usage, "unknown-verb"),
            hostile("uppercase mirror", "sync ISO", usage, "bad-argument"),
            // Look-alike unicode (valid UTF-8, refused by the grammar).
            hostile("Cyrillic dze for s", "\u{0455}ync", usage, "unknown-verb"),
            hostile("Cyrillic i in the mirror", "sync \u{0456}so", usage, "bad-argument"),
            hostile("no-break space", "sync\u{00a0}iso", usage, "unknown-verb"),
            hostile("right-to-left override", "sync \u{202e}osi", usage, "bad-argument"),
            hostile("fullwidth letters", "\u{ff53}\u{ff59}\u{ff4e}\u{ff43}", usage, "unknown-verb"),
            // Quoting.
            hostile("unbalanced single quote", "sync 'iso", usage, "shell-syntax"),
            hostile("unbalanced double quote", "sync \"iso", usage, "shell-syntax"),
            hostile("backslash escape", "sync\\ iso", usage, "shell-syntax"),
            hostile("only spaces", "   ", usage, "empty"),
            hostile("empty quotes", "''", usage, "unknown-verb"),
            // Not permitted for this key.
            hostile("a mirror the key may not sync", "sync other", noperm, "mirror-not-allowed"),
            hostile("status of another mirror", "status other", noperm, "mirror-not-allowed"),
            hostile("status --json of another mirror", "status other --json", noperm, "mirror-not-allowed"),
            hostile("push word for another mirror", "sync:archive:other", noperm, "mirror-not-allowed"),
            hostile("staged push for another mirror", " sync:archive:other sync:stage1", noperm, "mirror-not-allowed"),
            // runmirrors-style pushes that break the push-word rules.
            hostile("two stage words", " sync:archive:iso sync:stage1 sync:stage2", usage, "bad-argument"),
            hostile("a push word twice", " sync:archive:iso sync:all sync:all", usage, "bad-argument"),
            hostile("an unknown push word", " sync:archive:iso sync:stage3", usage, "bad-argument"),
            hostile("a shell word after push words", " sync:archive:iso sync:all; id", usage, "bad-argument"),
            hostile("a mirror that does not exist", "sync nosuch", noperm, "mirror-not-allowed"),
        ];
        assert!(cases.len() >= 30);
        for h in &cases {
            assert_refused(&mh, &mh.key, h);
        }

        // Nothing ran: no run started, no state written, nothing published,
        // no shell wrote the marker, and no outcome (nothing reached a queue).
        assert_eq!(mh.log.events("decision").len(), cases.len());
        assert!(mh.log.events("run-start").is_empty());
        assert!(mh.log.events("outcome").is_empty());
        assert!(mh.state("iso").is_null() && mh.state("other").is_null());
        assert!(!mh.state_dir.join("iso.state.json").exists());
        assert_eq!(std::fs::read_dir(mh.dest("iso")).unwrap().count(), 0);
        assert!(!marker.exists());
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// What sshd does with commands longer than it or the kernel can pass on:
    /// 200 KiB fits an SSH packet, but sshd cannot exec the login shell with
    /// a `SSH_ORIGINAL_COMMAND` over the kernel's 128 KiB per-string limit
    /// (ssh exits 1, "/bin/sh: Argument list too long"); 1 MiB exceeds the
    /// packet limit and sshd drops the connection (ssh exits 255). Either
    /// way the gate never starts: no decision line, no run. (Up to ~128 KiB
    /// reaches the gate and is refused as too-long; see the hostile test.)
    fn commands_too_long_for_sshd_never_reach_the_gate() {
        let mh = MirrorHost::new();
        let chunk = "a".repeat(100 * 1024);
        let send = |chunks: usize| mh.ssh(Some("sync")).args(std::iter::repeat_n(&chunk, chunks));
        send(2).status(1).stderr_contains("Argument list too long").run();
        send(10).status(255).run();
        // A normal request still works afterwards, and is the only one logged.
        mh.ssh(Some("help")).status(0).run();
        let decisions = mh.log.wait_events("decision", 1, Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(mh.log.events("decision").len(), 1, "{decisions:?}");
        assert_eq!(decisions[0]["command"], "help");
        assert!(mh.state("iso").is_null());
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// `ssh -T host` with no command (an interactive login) and `ssh host ''`
    /// get this key's help on stderr and exit 64; whatever the client types
    /// is never run by a shell, and `ssh -tt` gets no terminal either.
    fn an_interactive_login_gets_help_and_never_a_shell() {
        let mh = MirrorHost::new();
        let marker = mh.path("shell-ran");
        let typed = format!("touch {}\nid\nexit 0\n", marker.display());
        let sessions = vec![
            ("ssh -T, no command", mh.ssh(None).arg("-T")),
            ("ssh with an empty command", mh.ssh(Some(""))),
        ];
        for (i, (what, test)) in sessions.into_iter().enumerate() {
            let mut c = test
                .stdin(Stdio::piped())
                .status(64)
                .stderr_contains("syncgate: commands for key 'jenkins':")
                .stderr_contains("sync iso")
                .stderr_lacks("uid=")
                .stdout_lacks("uid=")
                .context(move || what.to_string())
                .spawn();
            c.write_stdin(typed.as_bytes());
            c.close_stdin();
            let out = c.finish_within(SLOW);
            let ctx = format!("{what}: {}", support::show(&out));
            let d = mh.log.wait_events("decision", i + 1, Duration::from_secs(5));
            let d = &d[i];
            assert_eq!((d["decision"].as_str(), d["reason"].as_str()), ("refuse", "no-command"), "{ctx}");
            assert_eq!(d["command"], "(none)", "{ctx}");
        }

        // `ssh -tt` asks for a terminal: `restrict` denies it and the client
        // gives up (255) — still no shell, and at most a refusal was logged.
        let mut c = mh
            .ssh(None)
            .arg("-tt")
            .stdin(Stdio::piped())
            .status(255)
            .stderr_contains("PTY allocation request failed")
            .spawn();
        c.write_stdin(typed.as_bytes());
        c.close_stdin();
        c.finish_within(SLOW);
        std::thread::sleep(Duration::from_millis(500));
        for d in &mh.log.events("decision")[2..] {
            assert_eq!((d["decision"].as_str(), d["reason"].as_str()), ("refuse", "no-command"));
        }

        assert!(!marker.exists(), "a shell ran what the client typed");
        assert!(mh.state("iso").is_null());
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// A key whose `from` list excludes the client address is refused by the
    /// gate itself (77, reason=network-not-allowed) even when
    /// authorized_keys has no `from=`: defence in depth. Only `help` works.
    fn a_key_used_from_outside_its_networks_is_refused_by_the_gate() {
        let remote = Key { name: "remote", from: vec!["10.0.0.0/8"], ..Key::jenkins() };
        let mh = MirrorHost::with(&[("iso", opts())], &[Key::jenkins(), remote]);
        mh.put("iso", "a.iso", b"image");
        let remote = mh.add_key("remote", &[]);
        for (cmd, code) in [("sync", 77), ("status --json", 77), ("sync:all", 77)] {
            let h = hostile("outside from", cmd, code, "network-not-allowed");
            let d = assert_refused(&mh, &remote, &h);
            assert_eq!(d["key"], "remote");
        }
        mh.ssh_raw(&remote, Some(OsStr::new("sync")))
            .status(77)
            .stderr_contains("key 'remote' may not be used from 127.0.0.1")
            .run();
        mh.ssh_raw(&remote, Some(OsStr::new("help"))).status(0).run();
        assert!(mh.state("iso").is_null(), "nothing ran");
        assert!(mh.log.events("run-start").is_empty());
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// A sync that fails reaches the ssh client as exit 1 with rsync's own
    /// code in the message (upstream gone: rsync exits 23), and the
    /// outcome line says so.
    fn a_failed_sync_reaches_the_ssh_client_as_exit_1_naming_rsyncs_code() {
        let mh = MirrorHost::new();
        std::fs::remove_dir_all(mh.upstream.join("iso")).unwrap();
        mh.ssh(Some("sync"))
            .status(1)
            .stderr_contains("run #1 FAILED")
            .stderr_contains("rsync exit 23")
            .stdout_empty()
            .run();
        let o = &mh.log.wait_events("outcome", 1, Duration::from_secs(5))[0];
        assert_eq!(
            (o["result"].as_str(), o["rsync_exit"].as_str(), o["exit"].as_str()),
            ("failed", "23", "1")
        );
        assert_eq!(mh.state("iso")["runs"][0]["rsync_exit"], 23);
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// `ssh host status --json` prints only JSON on stdout (a document that
    /// parses as a whole) and exits 0; `status` prints text on stderr only.
    fn status_json_over_ssh_prints_only_json_on_stdout() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        mh.ssh(Some("sync")).status(0).run();

        let out = mh.ssh(Some("status --json")).status(0).stderr_empty().run();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {}", support::show(&out)));
        assert_eq!(doc["version"], 1);
        let mirrors = doc["mirrors"].as_array().unwrap();
        assert_eq!(mirrors.len(), 1);
        assert_eq!(mirrors[0]["name"], "iso");
        assert_eq!(mirrors[0]["state"], "idle");
        assert_eq!(mirrors[0]["last_run"]["result"], "success");
        assert_eq!(mirrors[0]["last_run"]["run"], 1);

        mh.ssh(Some("status")).status(0).stdout_empty().stderr_contains("iso").run();
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// A client that disconnects while queued (its `ssh` killed) leaves the
    /// queue within 5 s: its gate process exits, `event=abandoned
    /// reason=client-disconnected` is logged, and no sync runs for it.
    fn a_client_that_disconnects_while_queued_leaves_the_queue_and_causes_no_sync() {
        let mh = slow_host(6);
        let first = spawn_sync(&mh);
        mh.wait_running("iso", SLOW);
        // The running request's gate (and the `sh -c` sshd runs it through).
        let running_gates = mh.gate_pids();
        assert!(!running_gates.is_empty());

        // Stdin stays open (a pipe held by the test), as for a CI job.
        let mut queued = mh.ssh(Some("sync")).stdin(Stdio::piped()).failure().spawn();
        let decisions = mh.log.wait_events("decision", 2, SLOW);
        let request = decisions[1]["request"].clone();
        let mut gate = Vec::new();
        assert_eventually(SLOW, "the queued request's gate process appears", || {
            gate = mh.gate_pids().into_iter().filter(|p| !running_gates.contains(p)).collect();
            !gate.is_empty()
        });
        std::thread::sleep(Duration::from_millis(500));
        assert!(mh.state("iso")["running"]["run"] == 1, "still queued behind run #1");

        let killed = Instant::now();
        queued.kill();
        assert_eventually(Duration::from_secs(5), "the queued gate exits after its client vanished", || {
            gate.iter().all(|p| !mh.gate_pids().contains(p))
        });
        let abandoned = mh
            .log
            .wait_for(|l| l.contains("event=abandoned"), Duration::from_secs(5).saturating_sub(killed.elapsed()))
            .unwrap_or_else(|| panic!("no abandoned line within 5 s:\n{}", mh.log.lines().join("\n")));
        let a = fields(&abandoned);
        assert_eq!((a["request"].as_str(), a["reason"].as_str()), (request.as_str(), "client-disconnected"));
        let outcome = mh.log.events("outcome").into_iter().find(|o| o["request"] == request).unwrap();
        assert_eq!(outcome["result"], "abandoned");

        first.finish_within(SLOW);
        std::thread::sleep(Duration::from_secs(2));
        let s = mh.state("iso");
        assert_eq!(s["last_started"], 1, "the client that left caused no run: {s:#}");
        assert!(s["running"].is_null());
        assert_eq!(s["runs"][0]["served"], 1);
        assert_eq!(mh.log.events("run-start").len(), 1);
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// `ssh -n` (stdin at EOF from the start) is not a disconnect: a queued
    /// `ssh -n ... sync` waits its turn, gets run #2 and exits 0.
    fn a_queued_client_with_stdin_at_eof_is_not_taken_for_gone() {
        let mh = slow_host(4);
        let first = spawn_sync(&mh);
        mh.wait_running("iso", SLOW);
        let queued = mh
            .ssh(None)
            .arg("-n")
            .arg("sync")
            .status(0)
            .stderr_contains("queued behind run #1")
            .stderr_contains("run #2 succeeded")
            .spawn();
        first.finish_within(SLOW);
        queued.finish_within(SLOW);
        assert!(mh.log.events("abandoned").is_empty(), "{}", mh.log.lines().join("\n"));
        assert_eq!(mh.state("iso")["last_started"], 2);
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// A client that disconnects during its own run does not abort it: the
    /// run finishes, the state records success and an outcome is logged.
    fn a_client_that_disconnects_during_its_run_does_not_abort_it() {
        let mh = slow_host(4);
        let mut client = mh.ssh(Some("sync")).stdin(Stdio::piped()).failure().spawn();
        mh.wait_running("iso", SLOW);
        std::thread::sleep(Duration::from_millis(500));
        client.kill();
        let s = mh.wait_state("iso", SLOW, "run #1 finishing", |s| s["runs"][0]["run"] == 1);
        assert_eq!(s["runs"][0]["result"], "success", "{s:#}");
        assert!(s["running"].is_null());
        assert_eq!(
            std::fs::read(mh.dest("iso").join("big.iso")).unwrap(),
            bytes(4 << 20, 7),
            "the whole image was published"
        );
        let o = &mh.log.wait_events("outcome", 1, Duration::from_secs(5))[0];
        assert_eq!((o["result"].as_str(), o["run"].as_str(), o["coalesced"].as_str()), ("success", "1", "no"));
        assert!(mh.log.events("abandoned").is_empty());
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// While a request waits it hears a heartbeat every `heartbeat` seconds
    /// ("still queued behind run #1"), and the running one hears how long
    /// its run has been going.
    fn a_queued_client_hears_a_heartbeat() {
        let mh = slow_host(4);
        let first = spawn_sync(&mh);
        mh.wait_running("iso", SLOW);
        let queued = mh
            .ssh(Some("sync"))
            .status(0)
            .stderr_contains("syncgate: iso: queued behind run #1 (ssh, running for")
            .stderr_contains("syncgate: iso: still queued behind run #1")
            .spawn();
        let first = first.finish_within(SLOW);
        queued.finish_within(SLOW);
        assert_contains(&first.stderr, "syncgate: iso: run #1 running for");
        assert_nothing_left(&mh);
    }
}

e2e_test! {
    /// A client that vanishes just before its turn comes (the lock is freed
    /// within moments of the disconnect, before the next queue poll) still
    /// causes no sync: the gate looks at its caller again once it holds the
    /// lock, and leaves instead of running.
    fn a_client_that_disconnects_just_before_its_turn_causes_no_sync() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        mh.ssh(Some("sync")).status(0).run();
        assert_eq!(mh.state("iso")["last_started"], 1);

        // Someone else (here: the test, as root) holds the mirror's lock.
        let lock = std::fs::File::open(mh.state_dir.join("iso.lock")).unwrap();
        lock.lock().unwrap();
        let mut queued = mh.ssh(Some("sync")).stdin(Stdio::piped()).failure().spawn();
        let decisions = mh.log.wait_events("decision", 2, SLOW);
        let request = decisions[1]["request"].clone();
        let mut gate = Vec::new();
        assert_eventually(SLOW, "the queued request's gate process appears", || {
            gate = mh.gate_pids();
            !gate.is_empty()
        });
        std::thread::sleep(Duration::from_millis(700));
        let sessions = || {
            procs::pids_of_user(mh.login.uid)
                .into_iter()
                .filter(|&p| procs::cmdline(p).starts_with("sshd: "))
                .count()
        };
        assert!(sessions() > 0);

        // The client vanishes; the moment its sshd session is gone (so the
        // gate's output pipes are closed) the lock is freed.
        queued.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sessions() > 0 {
            assert!(Instant::now() < deadline, "sshd session did not end");
            std::thread::sleep(Duration::from_millis(1));
        }
        lock.unlock().unwrap();

        assert_eventually(Duration::from_secs(5), "the queued gate exits after its client vanished", || {
            gate.iter().all(|p| !mh.gate_pids().contains(p))
        });
        let a = mh.log.wait_events("abandoned", 1, Duration::from_secs(5));
        assert_eq!((a[0]["request"].as_str(), a[0]["reason"].as_str()), (request.as_str(), "client-disconnected"));
        std::thread::sleep(Duration::from_secs(1));
        let s = mh.state("iso");
        assert_eq!(s["last_started"], 1, "the client that left caused no run: {s:#}");
        assert_eq!(mh.log.events("run-start").len(), 1);
        drop(lock);
        assert_nothing_left(&mh);
    }
}
