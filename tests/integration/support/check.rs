//! Assertions and waits shared by every test file. Each assertion panics
//! at the caller's line and shows the whole text it looked at.

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `text` (bytes or a string) contains `needle`; shows all of `text` if not.
#[track_caller]
pub fn assert_contains(text: impl AsRef<[u8]>, needle: &str) {
    let text = String::from_utf8_lossy(text.as_ref());
    assert!(
        text.contains(needle),
        "wanted {needle:?} in:\n{text}\n--- (end) ---"
    );
}

/// `text` does not contain `needle`; shows all of `text` if it does.
#[track_caller]
pub fn assert_lacks(text: impl AsRef<[u8]>, needle: &str) {
    let text = String::from_utf8_lossy(text.as_ref());
    assert!(
        !text.contains(needle),
        "did not want {needle:?} in:\n{text}\n--- (end) ---"
    );
}

/// Polls `cond` every 20 ms until it holds: the time that took, or `None`
/// once `limit` has passed (`cond` is asked one last time at the limit).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if cond() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`], panicking with `what` if `cond` never held.
#[track_caller]
pub fn assert_eventually(limit: Duration, what: &str, cond: impl FnMut() -> bool) -> Duration {
    let took = wait_until(limit, cond);
    assert!(took.is_some(), "{what} within {limit:?}");
    took.unwrap()
}

/// The `n`-th (1-based) audit line of `event`, waiting up to 5 s for it.
#[track_caller]
pub fn audit(log: &super::SyslogReceiver, event: &str, n: usize) -> BTreeMap<String, String> {
    log.wait_events(event, n, Duration::from_secs(5))[n - 1].clone()
}

/// The summary line syncgate prints last for a request (`m: run #N ...`
/// or `m: served by run #N ...`).
#[track_caller]
pub fn summary<'a>(err: &'a str, mirror: &str) -> &'a str {
    let head = format!("syncgate: {mirror}: ");
    err.lines()
        .rfind(|l| {
            l.strip_prefix(&head)
                .is_some_and(|r| r.starts_with("run #") || r.starts_with("served by run #"))
        })
        .unwrap_or_else(|| panic!("no summary line for {mirror} in:\n{err}"))
}
