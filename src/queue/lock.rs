//! The mirror's queue lock: a kernel lock (flock) on `state_dir/MIRROR.lock`.
//!
//! Lock files are never unlinked (unlinking a lock file lets two processes
//! lock two different inodes). They are opened without following symlinks,
//! and one that is not a plain file owned by the state directory's owner is
//! refused. Who holds and who waits is read, without touching the lock, by
//! [`crate::sys::proc_locks`].
//!
//! A queued request blocks in `flock` on its own thread (no second thread
//! per waiting request); a [`Tick`] interrupts it every 250 ms to look at
//! the clock, the caller and the signal flags.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::audit::events::{Abandoned, Leave, QueueFull};
use crate::audit::Audit;
use crate::config::{Config, Mirror};
use crate::error::{Error, IoContext, Result};
use crate::queue::admit::{self, Caps};
use crate::queue::state::{now, MirrorState, Requester};
use crate::queue::statedir::StateDir;
use crate::sys::progress::{human_secs, say};
use crate::sys::tick::Tick;

/// How often a queued request looks at its caller, the clock and signals.
const POLL: Duration = Duration::from_millis(250);

/// The mirror's lock, held: dropping it lets the next request in.
pub struct MirrorLock {
    _lock: Flock<File>,
}

/// The mirror's lock file, opened (and created if needed) but not locked.
pub struct LockFile {
    file: File,
}

impl LockFile {
    /// Opens `state_dir/MIRROR.lock`, refusing anything but a plain file
    /// with one link, owned by the state directory's owner.
    pub fn open(sd: &StateDir, mirror: &str) -> Result<LockFile> {
        LockFile::open_path(sd, &sd.lock_path(mirror))
    }

    /// Opens the lock file `path` in the state directory, as [`LockFile::open`].
    pub fn open_path(sd: &StateDir, path: &Path) -> Result<LockFile> {
        let path = path.to_path_buf();
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

    pub fn into_file(self) -> File {
        self.file
    }

    /// Waits for the lock: heartbeat, queue timeout, and leaving the queue
    /// when the caller disconnects or a signal arrives. `st` is the state
    /// as the request found it, for the "queued behind" line. `caps`: an
    /// SSH request's `max_waiting` caps ([`admit`]); a request that would
    /// exceed one is refused at once.
    pub fn acquire(
        self,
        q: &Queue,
        st: &MirrorState,
        audit: &mut Audit,
        req: &Requester,
        caps: Option<Caps>,
    ) -> Result<MirrorLock> {
        let file = match Flock::lock(self.file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(MirrorLock { _lock: l }),
            Err((file, e)) if admit::would_block(e) => file,
            Err((_, e)) => return Err(Error::io("cannot lock the mirror", e.into())),
        };
        let name = &q.mirror.name;
        // Before counting, so that little happens between counting the
        // waiters and joining them.
        give_back_free_memory();
        let seat = match admit::admit(q.sd, q.mirror, &file, caps)? {
            Ok(seat) => seat,
            Err(full) => {
                audit.record(&QueueFull {
                    request: &req.request,
                    mirror: name,
                    key: caps.map(|c| c.key),
                    limit: full.limit(),
                    waiting: full.waiting(),
                    max_waiting: full.max(),
                });
                return Err(Error::QueueFull {
                    mirror: name.clone(),
                    detail: full.describe(name),
                });
            }
        };
        say(&format!("{name}: queued behind {}", behind(st)));
        let start = Instant::now();
        let got = Queued {
            q,
            start,
            next_beat: start + Duration::from_secs(q.cfg.heartbeat),
        }
        .wait(file, audit, req);
        drop(seat);
        got
    }
}

/// Locks a lock file of the state directory (opened as [`LockFile::open_path`]
/// does) with `arg`; `None` when a non-blocking lock is held elsewhere.
pub fn flock_at(sd: &StateDir, path: &Path, arg: FlockArg) -> Result<Option<Flock<File>>> {
    let file = LockFile::open_path(sd, path)?.into_file();
    match Flock::lock(file, arg) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(Error::io(
            format!("cannot lock {}", path.display()),
            e.into(),
        )),
    }
}

/// Returns the heap pages freed so far (mostly the config parser's) to
/// the kernel before a wait that may last hours.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn give_back_free_memory() {
    // SAFETY: malloc_trim only releases free memory; it touches no live
    // allocation.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_free_memory() {}

/// What a waiting request needs to know about its queue.
pub struct Queue<'a> {
    pub cfg: &'a Config,
    pub sd: &'a StateDir,
    pub mirror: &'a Mirror,
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

/// A request in the queue: blocked on the lock, woken by the tick.
struct Queued<'a> {
    q: &'a Queue<'a>,
    start: Instant,
    next_beat: Instant,
}

impl Queued<'_> {
    /// Leaves the queue (the caller drops the lock if it came).
    fn leave(&self, why: Leave, audit: &mut Audit, req: &Requester) {
        audit.record(&Abandoned {
            request: &req.request,
            mirror: &self.q.mirror.name,
            queue_wait: self.start.elapsed().as_secs(),
            reason: why,
        });
    }

    fn wait(mut self, file: File, audit: &mut Audit, req: &Requester) -> Result<MirrorLock> {
        let tick = Tick::start(POLL).map_err(|e| Error::io("cannot start the queue's timer", e))?;
        let mut file = Some(file);
        loop {
            let f = file.take().expect("the lock file is back after each try");
            let got = match Flock::lock(f, FlockArg::LockExclusive) {
                Ok(l) => Some(l),
                Err((f, Errno::EINTR)) => {
                    file = Some(f);
                    None
                }
                Err((_, e)) => return Err(Error::io("cannot lock the mirror", e.into())),
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
            if let Some(l) = got {
                drop(tick);
                return Ok(MirrorLock { _lock: l });
            }
            self.timeout_or_beat(audit, req)?;
        }
    }

    /// Gives up after `queue_timeout`; says "still queued" every heartbeat.
    fn timeout_or_beat(&mut self, audit: &mut Audit, req: &Requester) -> Result<()> {
        let mirror = self.q.mirror;
        let waited = self.start.elapsed();
        if waited >= Duration::from_secs(mirror.queue_timeout) {
            self.leave(Leave::QueueTimeout, audit, req);
            return Err(Error::QueueTimeout {
                mirror: mirror.name.clone(),
                waited: waited.as_secs(),
                limit: mirror.queue_timeout,
            });
        }
        if Instant::now() >= self.next_beat {
            self.next_beat += Duration::from_secs(self.q.cfg.heartbeat);
            let st = MirrorState::load_quiet(self.q.sd, &mirror.name);
            say(&format!(
                "{}: still queued behind {}; waited {}",
                mirror.name,
                behind(&st),
                human_secs(waited.as_secs())
            ));
        }
        Ok(())
    }
}

impl MirrorState {
    /// Best-effort read for progress messages.
    fn load_quiet(sd: &StateDir, name: &str) -> MirrorState {
        MirrorState::load(sd, name)
            .map(|l| l.state)
            .unwrap_or_default()
    }
}
