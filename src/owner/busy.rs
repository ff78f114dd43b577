//! Upstream's "update in progress" (Debian's `Archive-Update-in-Progress-*`
//! at the top of an archive, or the mirror's `busy_marker`): a transfer
//! waits, bounded by `busy_wait`, with a heartbeat, rather than copy a
//! half-updated archive; when the bound passes it fails and changes nothing.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::owner::report::{Route, TransferReport};
use crate::owner::rsync::argv;
use crate::owner::transfer::Transfer;
use crate::sys::progress::{human_secs, say};

impl Transfer<'_> {
    /// Waits while upstream is being updated. `Some(report)` when the
    /// transfer must end (the wait timed out or was stopped); `None` to go
    /// on (also when the probe itself fails: the plan then says why).
    pub fn wait_while_upstream_is_busy(&self) -> Result<Option<TransferReport>> {
        let m = self.mirror;
        if m.busy_marker.is_empty() {
            return Ok(None);
        }
        let started = Instant::now();
        let bound = Duration::from_secs(m.busy_wait);
        let every = Duration::from_secs((m.busy_wait / 20).clamp(1, 60));
        let probe = crate::owner::snapshot::layout::lock_dir(m)
            .join(crate::owner::dest::TEMP_DIR)
            .join("busy-probe");
        let mut waited = false;
        loop {
            let end = self.run_rsync(&argv::rsync_busy_probe(self.cfg, m, &probe))?;
            if end.stopped {
                return Ok(Some(ended(
                    "stopped while waiting for upstream's update to finish; nothing changed",
                )));
            }
            let markers = end
                .stats
                .listed
                .map(|k| (k.reg + k.link + k.other + k.dir).saturating_sub(1))
                .unwrap_or(0);
            if end.signal.is_some() || !matches!(end.code, 0 | 24) || markers == 0 {
                if waited {
                    say("upstream's update has finished; syncing");
                }
                return Ok(None);
            }
            let so_far = started.elapsed();
            if so_far >= bound {
                return Ok(Some(ended(&format!(
                    "upstream is being updated ({} at its top) and still was after {}s (busy_wait); nothing changed, the next sync tries again",
                    m.busy_marker.join(" or "),
                    m.busy_wait
                ))));
            }
            say(&format!(
                "upstream is being updated ({} at its top); waiting ({} so far, at most {})",
                m.busy_marker.join(" or "),
                human_secs(so_far.as_secs()),
                human_secs(m.busy_wait)
            ));
            waited = true;
            let until = Instant::now() + every.min(bound.saturating_sub(so_far));
            while Instant::now() < until {
                if self.is_cut() || crate::sys::signals::terminate_requested() {
                    return Ok(Some(ended(
                        "stopped while waiting for upstream's update to finish; nothing changed",
                    )));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

fn ended(message: &str) -> TransferReport {
    TransferReport {
        route: Route::Unchanged,
        message: message.into(),
        ..Default::default()
    }
}
