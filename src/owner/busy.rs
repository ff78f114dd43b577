//! Upstream's "update in progress" (Debian's `Archive-Update-in-Progress-*`
//! at the top of an archive, or the mirror's `busy_marker`): a transfer
//! waits, bounded by `busy_wait`, with a heartbeat, rather than copy a
//! half-updated archive; when the bound passes it fails and changes nothing.
//!
//! With a change marker, the same small rsync also fetches the marker
//! (src/owner/marker.rs): one real transfer of both into a private
//! directory, where the busy markers are the entries at its top besides
//! the marker's own path.

use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::owner::marker::{self, Seen};
use crate::owner::report::{Route, TransferReport};
use crate::owner::rsync::argv;
use crate::owner::transfer::Transfer;
use crate::sys::progress::{human_secs, say};

impl Transfer<'_> {
    /// Waits while upstream is being updated. `Err(report)` when the
    /// transfer must end (the wait timed out or was stopped); `Ok` to go
    /// on (also when the probe itself fails: the plan then says why), with
    /// what the last probe fetched of the change marker, if the mirror has one.
    pub fn wait_while_upstream_is_busy(
        &self,
    ) -> Result<std::result::Result<Option<Seen>, TransferReport>> {
        let m = self.mirror;
        if let Some(marker) = m.change_marker.as_deref() {
            return self.probe_with_marker(marker);
        }
        if m.busy_marker.is_empty() {
            return Ok(Ok(None));
        }
        let started = Instant::now();
        let probe = crate::owner::snapshot::layout::lock_dir(m)
            .join(crate::owner::dest::TEMP_DIR)
            .join("busy-probe");
        let mut waited = false;
        loop {
            let end = self.run_rsync(&argv::rsync_busy_probe(self.cfg, m, &probe))?;
            if end.stopped {
                return Ok(Err(stopped()));
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
                return Ok(Ok(None));
            }
            if let Some(end) = self.wait_a_while(started, &mut waited) {
                return Ok(Err(end));
            }
        }
    }

    /// The probe of a mirror with a change marker, and the wait while
    /// upstream is busy: each probe is one real transfer into `probe`.
    fn probe_with_marker(
        &self,
        marker: &str,
    ) -> Result<std::result::Result<Option<Seen>, TransferReport>> {
        let m = self.mirror;
        let started = Instant::now();
        let dir = crate::owner::snapshot::layout::lock_dir(m)
            .join(crate::owner::dest::TEMP_DIR)
            .join("probe");
        let top = marker.split('/').next().unwrap_or(marker);
        let mut waited = false;
        loop {
            crate::owner::snapshot::layout::remove_any(&dir)?;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| {
                    crate::error::Error::io(format!("cannot create {}", dir.display()), e)
                })?;
            let end = self.run_rsync(&argv::rsync_upstream_probe(self.cfg, m, marker, &dir))?;
            let seen = if end.signal.is_some() || !matches!(end.code, 0 | 24) {
                Seen::Unknown(end.failure())
            } else {
                marker::read_fetched(&dir, marker)
            };
            let busy = std::fs::read_dir(&dir)
                .map(|d| d.flatten().any(|e| e.file_name() != top))
                .unwrap_or(false);
            crate::owner::snapshot::layout::remove_any(&dir)?;
            if end.stopped {
                return Ok(Err(stopped()));
            }
            if !busy || matches!(seen, Seen::Unknown(_)) {
                if waited {
                    say("upstream's update has finished; syncing");
                }
                return Ok(Ok(Some(seen)));
            }
            if let Some(end) = self.wait_a_while(started, &mut waited) {
                return Ok(Err(end));
            }
        }
    }

    /// One wait while upstream is busy, with its heartbeat; `Some(report)`
    /// when the run must end (the bound passed, or it was stopped).
    fn wait_a_while(&self, started: Instant, waited: &mut bool) -> Option<TransferReport> {
        let m = self.mirror;
        let bound = Duration::from_secs(m.busy_wait);
        let every = Duration::from_secs((m.busy_wait / 20).clamp(1, 60));
        let so_far = started.elapsed();
        if so_far >= bound {
            return Some(ended(&format!(
                "upstream is being updated ({} at its top) and still was after {}s (busy_wait); nothing changed, the next sync tries again",
                m.busy_marker.join(" or "),
                m.busy_wait
            )));
        }
        say(&format!(
            "upstream is being updated ({} at its top); waiting ({} so far, at most {})",
            m.busy_marker.join(" or "),
            human_secs(so_far.as_secs()),
            human_secs(m.busy_wait)
        ));
        *waited = true;
        let until = Instant::now() + every.min(bound.saturating_sub(so_far));
        while Instant::now() < until {
            if self.is_cut() || crate::sys::signals::terminate_requested() {
                return Some(stopped());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }

    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

fn stopped() -> TransferReport {
    ended("stopped while waiting for upstream's update to finish; nothing changed")
}

fn ended(message: &str) -> TransferReport {
    TransferReport {
        route: Route::Unchanged,
        message: message.into(),
        ..Default::default()
    }
}
