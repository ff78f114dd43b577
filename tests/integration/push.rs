//! Debian's push protocol end to end: the real `runmirrors` from Debian's
//! `ftpsync` package pushes a syncgate receiver through the real sshd in the
//! namespace (issue 12). See `support::runmirrors` for how the upstream is
//! set up and what runmirrors sends.
//!
//! runmirrors ignores every exit status of a trigger but ssh's own 255: a
//! push syncgate refuses (exit 64) or whose sync fails is logged upstream
//! as "trigger succeeded" and runmirrors exits 0. Only syncgate's audit
//! trail (`event=decision`, `event=outcome`) and its state file tell,
//! unless the key says `runmirrors = true` (then syncgate exits 255).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::mirror_host::MirrorHost;
use crate::support::runmirrors::{Downstream, Mode, Push, Runmirrors};
use crate::support::{e2e_test, fields, opts, Key, Mirrors};

/// Bound for one whole runmirrors push (every trigger and sync).
const SLOW: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------- helpers

/// A host with one mirror `iso` (the `jenkins` key may sync it) whose
/// upstream has two files, and the pusher with the `jenkins` key.
fn iso_host() -> (MirrorHost, Runmirrors) {
    let mut mh = MirrorHost::new();
    mh.put("iso", "a.iso", b"image");
    mh.put("iso", "SHA256SUMS", b"x  a.iso\n");
    let key = mh.key.clone();
    let rm = Runmirrors::new(&mut mh, &key);
    (mh, rm)
}

/// Configures one downstream `NAME` of `mode` on `mh`'s sshd for `archive`
/// and runs runmirrors; prints its timing.
fn push(mh: &mut MirrorHost, rm: &Runmirrors, mode: Mode, archive: &str) -> Push {
    let port = mh.host.sshd().port();
    rm.configure(archive, &[Downstream::local(mode, "iso-mirror", port)], "");
    let p = rm.push(archive, SLOW);
    eprintln!("push ({}): {}", mode.word(), p.timing());
    p
}

/// Everything that tells what happened, for failure messages: runmirrors'
/// side, syncgate's audit lines, the state file, sshd's log.
fn story(mh: &MirrorHost, p: &Push) -> String {
    format!(
        "{}\n--- syncgate audit trail ---\n{}\n--- state iso ---\n{:#}\n--- sshd log ---\n{}",
        p.report(),
        mh.log.lines().join("\n"),
        mh.state("iso"),
        mh.host.sshd_log()
    )
}

/// The audit line index of the first line of `event` for `request`.
fn line_of(mh: &MirrorHost, event: &str, request: &str) -> Option<usize> {
    mh.log.lines().iter().position(|l| {
        let f = fields(l);
        f.get("event").map(String::as_str) == Some(event)
            && f.get("request").map(String::as_str) == Some(request)
    })
}

/// runmirrors exited 0 and logged every trigger as succeeded: what it says
/// whatever syncgate did.
#[track_caller]
fn assert_runmirrors_content(mh: &MirrorHost, p: &Push, triggers: usize) {
    assert_eq!(p.status.code(), Some(0), "{}", story(mh, p));
    let ok = p.log_lines("trigger succeeded: 127.0.0.1");
    assert_eq!(ok.len(), triggers, "{}", story(mh, p));
    assert!(p.log_lines("trigger failed").is_empty(), "{}", story(mh, p));
    assert_eq!(p.log_lines("Mirrorpush done").len(), 1, "{}", story(mh, p));
    assert!(p.mails.is_empty(), "no mail: {}", story(mh, p));
}

/// The decision lines syncgate wrote for this push: exactly `mode`'s
/// commands for `archive`, in order (waits for them).
#[track_caller]
fn push_decisions(
    mh: &MirrorHost,
    p: &Push,
    mode: Mode,
    archive: &str,
) -> Vec<BTreeMap<String, String>> {
    let want = mode.commands(archive);
    let decisions = mh.log.wait_events("decision", want.len(), SLOW);
    let got: Vec<&str> = decisions.iter().map(|d| d["command"].as_str()).collect();
    assert_eq!(got, want, "what runmirrors sent\n{}", story(mh, p));
    decisions
}

/// The push was served: runmirrors is content, every command was allowed
/// and answered by a successful run, the stages came in order (stage 2
/// only after stage 1 had finished), and dest holds upstream's files.
#[track_caller]
fn assert_push_served(mh: &MirrorHost, p: &Push, mode: Mode, archive: &str) {
    let decisions = push_decisions(mh, p, mode, archive);
    assert_runmirrors_content(mh, p, decisions.len());
    for d in &decisions {
        assert_eq!(
            d["decision"],
            "allow",
            "syncgate refused {:?} (reason {}) while runmirrors exited {} and \
             logged \"trigger succeeded\": the silent failure of issue 12\n{}",
            d["command"],
            d["reason"],
            p.status,
            story(mh, p)
        );
        assert_eq!(d["key"], "jenkins");
    }
    let outcomes = mh.log.wait_events("outcome", decisions.len(), SLOW);
    for d in &decisions {
        let o = outcomes
            .iter()
            .find(|o| o["request"] == d["request"])
            .unwrap_or_else(|| panic!("no outcome for {d:?}\n{}", story(mh, p)));
        assert_eq!(o["result"], "success", "{o:?}\n{}", story(mh, p));
        assert_eq!(o["exit"], "0", "{o:?}\n{}", story(mh, p));
    }
    if decisions.len() == 2 {
        let stage1_done = line_of(mh, "outcome", &decisions[0]["request"]).unwrap();
        let stage2_asked = line_of(mh, "decision", &decisions[1]["request"]).unwrap();
        assert!(
            stage1_done < stage2_asked,
            "runmirrors sends stage 2 only once stage 1 has returned\n{}",
            story(mh, p)
        );
    }
    let s = mh.state("iso");
    let runs = s["runs"].as_array().cloned().unwrap_or_default();
    assert!(!runs.is_empty(), "{}", story(mh, p));
    assert!(
        runs.iter().all(|r| r["result"] == "success"),
        "{}",
        story(mh, p)
    );
    let dest = mh.dest("iso");
    assert_eq!(fs_read(&dest.join("a.iso")), b"image", "{}", story(mh, p));
    assert_eq!(
        fs_read(&dest.join("SHA256SUMS")),
        b"x  a.iso\n",
        "{}",
        story(mh, p)
    );
}

fn fs_read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

// ---------------------------------------------------------------- tests

e2e_test! {
    /// `runmirrors -a iso` with an `all` line sends ` sync:archive:iso
    /// sync:all` once; syncgate syncs `iso`.
    fn runmirrors_all_with_a_named_archive() {
        let (mut mh, rm) = iso_host();
        let p = push(&mut mh, &rm, Mode::All, "iso");
        assert_push_served(&mh, &p, Mode::All, "iso");
    }
}

e2e_test! {
    /// Plain `runmirrors` (the main archive) sends ` sync:archive: sync:all`:
    /// the empty archive is the key's default mirror, its only one, `iso`.
    fn runmirrors_all_with_the_empty_archive() {
        let (mut mh, rm) = iso_host();
        let p = push(&mut mh, &rm, Mode::All, "");
        assert_push_served(&mh, &p, Mode::All, "");
    }
}

e2e_test! {
    /// A `staged` line: ` sync:archive:iso sync:stage1`, and once that has
    /// returned (and every staged mirror of the list touched its stage-1
    /// lock) ` sync:archive:iso sync:stage2`.
    fn runmirrors_staged() {
        let (mut mh, rm) = iso_host();
        let p = push(&mut mh, &rm, Mode::Staged, "iso");
        assert_push_served(&mh, &p, Mode::Staged, "iso");
    }
}

e2e_test! {
    /// An `mhop` line: as staged, with `sync:mhop` before the stage word.
    fn runmirrors_mhop() {
        let (mut mh, rm) = iso_host();
        let p = push(&mut mh, &rm, Mode::Mhop, "iso");
        assert_push_served(&mh, &p, Mode::Mhop, "iso");
    }
}

e2e_test! {
    /// The same strings runmirrors sends, by plain `ssh`: each is allowed,
    /// exits 0 and ends in a successful run; parser regressions show here
    /// without runmirrors.
    fn runmirrors_strings_by_plain_ssh() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        let mut n = 0;
        for archive in ["iso", ""] {
            for mode in [Mode::All, Mode::Staged, Mode::Mhop] {
                for cmd in mode.commands(archive) {
                    n += 1;
                    mh.ssh(Some(&cmd)).status(0).stdout_empty().run();
                    let d = mh.log.wait_events("decision", n, SLOW)[n - 1].clone();
                    assert_eq!(d["command"], cmd, "{d:?}");
                    assert_eq!(d["decision"], "allow", "{cmd:?}: {d:?}");
                    let o = mh.log.wait_events("outcome", n, SLOW)[n - 1].clone();
                    assert_eq!(o["request"], d["request"], "{cmd:?}: {o:?}");
                    assert_eq!(o["result"], "success", "{cmd:?}: {o:?}");
                }
            }
        }
        assert_eq!(fs_read(&mh.dest("iso").join("a.iso")), b"image");
        let s = mh.state("iso");
        assert!(s["runs"].as_array().is_some_and(|r| !r.is_empty() && r.iter().all(|r| r["result"] == "success")), "{s:#}");
    }
}

e2e_test! {
    /// The trap the README documents: runmirrors cannot tell a refused push
    /// from a served one. `runmirrors -a secret` pushes a mirror the key
    /// may not sync: syncgate refuses it (its audit trail says
    /// `decision=refuse`, nothing is synced) while runmirrors exits 0 and
    /// logs "trigger succeeded", mailing nobody. Only an unreachable
    /// downstream (ssh's own exit 255) is noticed: "trigger failed" and a
    /// mail, and runmirrors still exits 0.
    fn runmirrors_failure_is_invisible_to_runmirrors_but_audited() {
        let mut mh = MirrorHost::with(&[("iso", opts()), ("secret", opts())], &[Key::jenkins()]);
        mh.put("secret", "plans.txt", b"secret");
        let key = mh.key.clone();
        let rm = Runmirrors::new(&mut mh, &key);
        let port = mh.host.sshd().port();
        let dead = crate::support::free_port();
        rm.configure(
            "secret",
            &[
                Downstream::local(Mode::All, "refused", port),
                Downstream::local(Mode::All, "unreachable", dead),
            ],
            "",
        );
        let p = rm.push("secret", SLOW);
        eprintln!("push (all, refused + unreachable): {}", p.timing());

        // runmirrors: exit 0, the refused trigger "succeeded".
        assert_eq!(p.status.code(), Some(0), "{}", story(&mh, &p));
        let ok = p.log_lines("trigger succeeded: 127.0.0.1");
        let failed = p.log_lines("trigger failed: 127.0.0.1");
        assert_eq!((ok.len(), failed.len()), (1, 1), "{}", story(&mh, &p));
        // The refusal reached runmirrors only as text in the downstream's log.
        crate::support::assert_contains(&p.mirror_logs["refused"], "syncgate: refused:");
        crate::support::assert_contains(&p.mirror_logs["unreachable"], "Connection refused");
        // The only mail is about the unreachable one.
        assert_eq!(p.mails.matches("=== sendmail").count(), 1, "{}", story(&mh, &p));
        crate::support::assert_contains(&p.mails, "normal trigger failed: 127.0.0.1");

        // syncgate: one decision, a refusal of exactly what runmirrors sent.
        let d = mh.log.wait_events("decision", 1, SLOW)[0].clone();
        assert_eq!(d["command"], " sync:archive:secret sync:all", "{}", story(&mh, &p));
        assert_eq!(d["decision"], "refuse", "{}", story(&mh, &p));
        assert_eq!(d["key"], "jenkins");
        eprintln!("syncgate's verdict: decision={} reason={} (runmirrors exit {})", d["decision"], d["reason"], p.status);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(mh.log.events("decision").len(), 1, "{}", story(&mh, &p));
        assert!(mh.log.events("outcome").is_empty(), "{}", story(&mh, &p));
        assert!(mh.log.events("run-start").is_empty(), "{}", story(&mh, &p));
        assert!(!mh.dest("secret").join("plans.txt").exists(), "{}", story(&mh, &p));
        assert_eq!(mh.state("secret")["runs"].as_array().map_or(0, Vec::len), 0, "{}", story(&mh, &p));
    }
}

e2e_test! {
    /// How runmirrors paces a staged push, whatever syncgate answers: with
    /// two `staged` lines, neither downstream gets `sync:stage2` before
    /// both have returned from `sync:stage1` (each trigger touches its
    /// stage-1 lock, then polls every 5 s, at most `PUSHDELAY` seconds, for
    /// every staged line's lock). Seen from syncgate: both stage-1
    /// decisions come before either stage-2 decision.
    fn runmirrors_staged_sends_stage2_only_after_every_staged_mirror_finished_stage1() {
        let (mut mh, rm) = iso_host();
        let port = mh.host.sshd().port();
        rm.configure(
            "iso",
            &[
                Downstream::local(Mode::Staged, "iso-a", port),
                Downstream::local(Mode::Staged, "iso-b", port),
            ],
            "",
        );
        let p = rm.push("iso", SLOW);
        eprintln!("push (two staged lines): {}", p.timing());
        assert_eq!(p.status.code(), Some(0), "{}", story(&mh, &p));
        assert_eq!(p.log_lines("first stage trigger succeeded").len(), 2, "{}", story(&mh, &p));
        assert_eq!(p.log_lines("second stage trigger succeeded").len(), 2, "{}", story(&mh, &p));
        assert!(p.log_lines("Missing Pushlockfile").is_empty(), "{}", story(&mh, &p));
        let decisions = mh.log.wait_events("decision", 4, SLOW);
        let got: Vec<&str> = decisions.iter().map(|d| d["command"].as_str()).collect();
        let stages = Mode::Staged.commands("iso");
        assert_eq!(
            got,
            [&stages[0], &stages[0], &stages[1], &stages[1]],
            "{}",
            story(&mh, &p)
        );
        // runmirrors exits at once; the triggers run on in the background.
        assert!(p.exited_after < p.done_after, "{}", story(&mh, &p));
        assert_eq!(p.log_lines("Mirrorpush done").len(), 1, "{}", story(&mh, &p));
    }
}

e2e_test! {
    /// A key used by runmirrors: once it has pushed, `check` warns that
    /// runmirrors cannot see its failures; with `runmirrors = true` a
    /// refused push exits 255, which the real runmirrors logs as
    /// "trigger failed" and mails, and `check` is content.
    fn a_runmirrors_key_makes_failed_pushes_visible_to_runmirrors() {
        let mut mh = MirrorHost::with(&[("iso", opts()), ("secret", opts())], &[Key::jenkins()]);
        let key = mh.key.clone();
        let rm = Runmirrors::new(&mut mh, &key);
        let port = mh.host.sshd().port();
        rm.configure("secret", &[Downstream::local(Mode::All, "refused", port)], "");
        let p = rm.push("secret", SLOW);
        assert_eq!(p.log_lines("trigger succeeded: 127.0.0.1").len(), 1, "{}", story(&mh, &p));
        let out = mh.syncgate().arg("check").status(0).run();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        crate::support::assert_contains(&report, "WARN key jenkins has received Debian push words");

        mh.reconfigure(|c| c.keys[0].runmirrors = true);
        let p = rm.push("secret", SLOW);
        assert_eq!(p.status.code(), Some(0), "{}", story(&mh, &p));
        assert_eq!(p.log_lines("trigger failed: 127.0.0.1").len(), 1, "{}", story(&mh, &p));
        crate::support::assert_contains(&p.mails, "trigger failed: 127.0.0.1");
        crate::support::assert_contains(&p.mirror_logs["refused"], "exit 255: this key is runmirrors'");
        let out = mh.syncgate().arg("check").status(0).run();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        crate::support::assert_contains(&report, "key jenkins: runmirrors = true: a push that does not succeed exits 255");
        assert!(!report.contains("WARN key jenkins"), "{report}");
    }
}
