//! What syncgate leaves behind for the outside world after every served
//! request: the Prometheus metrics file ([`metrics`]) and the status page
//! ([`page`]). No daemon: the runs write them.
//!
//! [`after_request`] reads every mirror once ([`status::collect`], the same
//! reading `status` shows) and hands it to each writer; a writer that fails
//! is said and audited (`event=observe-failed`) and never fails the
//! request. Writers run one at a time (a lock in the state directory), so
//! a file never goes back to an older reading than one already written.
//! To add a writer: a module here with a `write(cfg, &doc) -> Result<()>`,
//! called from [`after_request`] when its config key is set.

mod file;
pub mod metrics;
pub mod page;

use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::admin::status::{self, StatusDoc};
use crate::audit::events::ObserveFailed;
use crate::audit::Audit;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::queue::lock::flock_at;
use crate::queue::statedir::StateDir;
use crate::sys::progress::say;

/// The longest a request waits for another one's writers to finish.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Whether anything is configured that [`after_request`] writes.
pub fn wanted(cfg: &Config) -> bool {
    cfg.metrics_file.is_some() || cfg.status_page.is_some()
}

/// Holds `STATE_DIR/_observe.lock` (waiting at most [`LOCK_WAIT`]).
fn lock(sd: &StateDir) -> Result<Flock<std::fs::File>> {
    let path = sd.file("_observe.lock");
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match flock_at(sd, &path, FlockArg::LockExclusiveNonblock)? {
            Some(l) => return Ok(l),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => {
                return Err(Error::Internal(format!(
                    "another syncgate held {} for {}s; the next request writes them",
                    path.display(),
                    LOCK_WAIT.as_secs()
                )))
            }
        }
    }
}

/// Reads every mirror once and writes what is configured. Best effort:
/// call it after a request was served and reported, outside the mirror's
/// lock.
pub fn after_request(cfg: &Config, audit: &mut Audit) {
    if !wanted(cfg) {
        return;
    }
    let fail = |audit: &mut Audit, what: &str, e: &Error| {
        let detail = e.to_string();
        say(&format!("warning: {what} not written: {detail}"));
        audit.record(&ObserveFailed {
            mirror: None,
            what,
            detail: &detail,
        });
    };
    let read = || -> Result<(Flock<std::fs::File>, StatusDoc)> {
        let sd = StateDir::open(&cfg.state_dir)?;
        let held = lock(&sd)?;
        let doc = status::collect(cfg, &sd, &cfg.mirror_names(), status::Depth::Quick)?;
        Ok((held, doc))
    };
    let (_held, doc) = match read() {
        Ok(r) => r,
        Err(e) => return fail(audit, "metrics and status page", &e),
    };
    if let Some(path) = &cfg.metrics_file {
        if let Err(e) = metrics::write(path, &doc) {
            fail(audit, "metrics", &e);
        }
    }
    if let Some(dir) = &cfg.status_page {
        if let Err(e) = page::write(dir, &doc) {
            fail(audit, "status page", &e);
        }
    }
}
