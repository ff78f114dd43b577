//! The progress line a blocked caller sees: while rsync moves data, each
//! heartbeat says how much it has transferred, how fast, and its estimate,
//! from rsync's `--info=progress2` (relayed by the owner side to the gate,
//! never shown raw).

use crate::support::fixture::{Fixture, M};
use crate::support::mirror_host::MirrorHost;
use crate::support::{bytes, e2e_test, opts, stderr, Key, Mirrors};

/// The heartbeat lines of `mirror`'s run `run` that carry progress.
fn progress_lines(err: &str, mirror: &str, run: u64) -> Vec<String> {
    let head = format!("syncgate: {mirror}: run #{run} running for ");
    err.lines()
        .filter(|l| l.starts_with(&head) && l.contains(" transferred"))
        .map(str::to_string)
        .collect()
}

/// The caller never sees the owner side's progress lines themselves, nor
/// rsync's carriage returns.
fn assert_no_raw_progress(err: &str) {
    assert!(!err.contains("syncgate-progress"), "{err}");
    assert!(!err.contains('\r'), "{err:?}");
    assert!(!err.contains("to-chk="), "{err}");
}

e2e_test! {
    /// Through ssh and sudo, as Jenkins would see it: a throttled first
    /// sync of a 4 MiB image (no plan yet: rsync's own estimate).
    fn an_ssh_caller_sees_bytes_rate_and_eta_at_the_heartbeat() {
        let mh = MirrorHost::with(&[("iso", opts().bwlimit(1000))], &[Key::jenkins()]);
        mh.put("iso", "big.iso", &bytes(4 << 20, 7));
        let out = mh.ssh(Some("sync iso")).status(0).run();
        let err = stderr(&out);
        let lines = progress_lines(&err, "iso", 1);
        assert!(!lines.is_empty(), "no progress line at any heartbeat:\n{err}");
        let rated = lines
            .iter()
            .find(|l| l.contains("iB transferred, ") && l.contains("iB/s, ETA "));
        assert!(rated.is_some(), "no line with bytes, a rate and an ETA:\n{err}");
        assert_no_raw_progress(&err);
        eprintln!("{}", lines.join("\n"));
    }
}

/// A later sync: the plan counted what the transfer moves, so the line
/// says how much of it is done.
#[test]
fn a_sync_after_a_plan_says_how_much_of_the_planned_bytes_are_done() {
    let f = Fixture::new(opts().bwlimit(1000));
    f.put(M, "small.txt", b"first");
    f.sync().status(0).run();
    f.put(M, "big.iso", &bytes(3 << 20, 8));
    let out = f.sync().status(0).run();
    let err = stderr(&out);
    let lines = progress_lines(&err, M, 2);
    let planned = lines
        .iter()
        .find(|l| l.contains(" of 3.0 MiB transferred (") && l.contains("/s, ETA "));
    assert!(
        planned.is_some(),
        "no line against the plan's count:\n{err}"
    );
    assert_no_raw_progress(&err);
}
