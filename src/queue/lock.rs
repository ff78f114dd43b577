//! The mirror's queue lock: a kernel lock (flock) on `state_dir/MIRROR.lock`.
//!
//! Lock files are never unlinked (unlinking a lock file lets two processes
//! lock two different inodes). They are opened without following symlinks,
//! and one that is not a plain file owned by the state directory's owner is
//! refused. Who holds and who waits is read, without touching the lock, by
//! [`crate::sys::proc_locks`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::events::{Abandoned, Leave};
use crate::audit::Audit;
use crate::config::{Config, Mirror};
use crate::error::{Error, IoContext, Result};
use crate::queue::state::{now, MirrorState, Requester};
use crate::queue::statedir::StateDir;
use crate::sys::progress::{human_secs, say};

/// The mirror's lock, held: dropping it lets the next request in.
pub struct MirrorLock {
    _file: File,
}

/// The mirror's lock file, opened (and created if needed) but not locked.
pub struct LockFile {
    file: File,
}

impl LockFile {
    /// Opens `state_dir/MIRROR.lock`, refusing anything but a plain file
    /// with one link, owned by the state directory's owner.
    pub fn open(sd: &StateDir, mirror: &str) -> Result<LockFile> {
        let path = sd.lock_path(mirror);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(nix::libc::ELOOP) {
                    Error::UnsafeLock {
                        path: path.clone(),
                        why: "is a symlink; refusing to follow it".into(),
                    }
                } else {
                    Error::io(format!("cannot open lock file {}", path.display()), e)
                }
            })?;
        let md = file
            .metadata()
            .context(|| format!("lock file {}", path.display()))?;
        if !md.file_type().is_file() {
            return Err(Error::UnsafeLock {
                path,
                why: "is not a regular file".into(),
            });
        }
        sd.adopt(&file, &path)?;
        let md = file
            .metadata()
            .context(|| format!("lock file {}", path.display()))?;
        if md.uid() != sd.owner_uid() {
            return Err(Error::UnsafeLock {
                path,
                why: format!(
                    "is owned by uid {}, expected uid {} (the owner of the state directory)",
                    md.uid(),
                    sd.owner_uid()
                ),
            });
        }
        if md.nlink() != 1 {
            return Err(Error::UnsafeLock {
                path,
                why: format!("has {} hard links, expected 1", md.nlink()),
            });
        }
        Ok(LockFile { file })
    }

    /// Waits for the lock: heartbeat, queue timeout, and leaving the queue
    /// when the caller disconnects or a signal arrives. `st` is the state
    /// as the request found it, for the "queued behind" line.
    pub fn acquire(
        self,
        cfg: &Config,
        mirror: &Mirror,
        st: &MirrorState,
        audit: &mut Audit,
        req: &Requester,
    ) -> Result<MirrorLock> {
        let file = match self.file.try_lock() {
            Ok(()) => return Ok(MirrorLock { _file: self.file }),
            Err(std::fs::TryLockError::WouldBlock) => self.file,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io("cannot lock the mirror", e))
            }
        };
        say(&format!("{}: queued behind {}", mirror.name, behind(st)));
        Queued::wait(file, cfg, mirror).watch(audit, req)
    }
}

/// What a queued request is behind, for humans.
fn behind(st: &MirrorState) -> String {
    match &st.running {
        Some(r) => format!(
            "run #{} ({}, running for {})",
            r.run,
            r.trigger,
            human_secs(now().saturating_sub(r.started))
        ),
        None => "another request".to_string(),
    }
}

/// A request in the queue: a thread blocks on the lock while this one
/// watches the clock, the caller and signals.
struct Queued<'a> {
    cfg: &'a Config,
    mirror: &'a Mirror,
    cancelled: Arc<AtomicBool>,
    rx: mpsc::Receiver<std::io::Result<File>>,
    start: Instant,
}

impl<'a> Queued<'a> {
    fn wait(file: File, cfg: &'a Config, mirror: &'a Mirror) -> Queued<'a> {
        let cancelled = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        {
            let cancelled = cancelled.clone();
            std::thread::spawn(move || {
                let r = file.lock().map(|()| file);
                if let Ok(f) = &r {
                    if cancelled.load(Ordering::SeqCst) {
                        let _ = f.unlock();
                        return;
                    }
                }
                let _ = tx.send(r);
            });
        }
        Queued {
            cfg,
            mirror,
            cancelled,
            rx,
            start: Instant::now(),
        }
    }

    /// Leaves the queue: a lock that arrives later is released at once.
    fn leave(&self, why: Leave, audit: &mut Audit, req: &Requester) {
        self.cancelled.store(true, Ordering::SeqCst);
        audit.record(&Abandoned {
            request: &req.request,
            mirror: &self.mirror.name,
            queue_wait: self.start.elapsed().as_secs(),
            reason: why,
        });
    }

    fn watch(self, audit: &mut Audit, req: &Requester) -> Result<MirrorLock> {
        let mirror = self.mirror;
        let limit = Duration::from_secs(mirror.queue_timeout);
        let beat = Duration::from_secs(self.cfg.heartbeat);
        let mut next_beat = self.start + beat;
        loop {
            let got = match self.rx.recv_timeout(Duration::from_millis(250)) {
                Ok(Ok(f)) => Some(f),
                Ok(Err(e)) => return Err(Error::io("cannot lock the mirror", e)),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Internal("lock waiter vanished".into()))
                }
                Err(RecvTimeoutError::Timeout) => None,
            };
            // Also checked when the lock has just arrived: a caller that left
            // while queued must not start a run (or be coalesced) just because
            // its turn came before the next poll. Dropping the lock releases it.
            if crate::sys::progress::caller_gone() {
                self.leave(Leave::ClientDisconnected, audit, req);
                return Err(Error::Abandoned("client disconnected while queued".into()));
            }
            if crate::sys::signals::terminate_requested() || crate::sys::signals::hangup_received()
            {
                self.leave(Leave::Signal, audit, req);
                return Err(Error::Abandoned("stopped by a signal while queued".into()));
            }
            if let Some(f) = got {
                return Ok(MirrorLock { _file: f });
            }
            let waited = self.start.elapsed();
            if waited >= limit {
                self.leave(Leave::QueueTimeout, audit, req);
                return Err(Error::QueueTimeout {
                    mirror: mirror.name.clone(),
                    waited: waited.as_secs(),
                    limit: mirror.queue_timeout,
                });
            }
            if Instant::now() >= next_beat {
                next_beat += beat;
                let st = MirrorState::load_quiet(&mirror.name, self.cfg);
                say(&format!(
                    "{}: still queued behind {}; waited {}",
                    mirror.name,
                    behind(&st),
                    human_secs(waited.as_secs())
                ));
            }
        }
    }
}

impl MirrorState {
    /// Best-effort read for progress messages.
    fn load_quiet(name: &str, cfg: &Config) -> MirrorState {
        StateDir::open(&cfg.state_dir)
            .and_then(|sd| MirrorState::load(&sd, name))
            .map(|l| l.state)
            .unwrap_or_default()
    }
}
