//! `max_waiting`: how many SSH requests may wait, per mirror and per key,
//! counted from the kernel's lock table ([`crate::sys::proc_locks`]).
//!
//! Only a request that has to wait is counted and capped; one that finds
//! the mirror free runs at once. Local requests (`syncgate sync` by root or
//! the timer) are counted but never refused: whoever can start them can
//! start any process anyway.
//!
//! * **Per mirror**: the waiters on `MIRROR.lock` (what `status` shows as
//!   "N waiting"). A request counts them, and if fewer than `max_waiting`
//!   wait, blocks on the lock in the same thread a few microseconds later.
//!   Requests that count in that window all get in, so under a burst the
//!   queue can exceed `max_waiting` by the few that counted at the same
//!   moment; it never refuses while there is room.
//! * **Per key**: while it waits, each request of the key holds a shared
//!   lock on `state_dir/_key.NAME.lock`. It takes that lock *before* it
//!   counts the holders, so two requests that count at the same time see
//!   each other and the key never has more than its `max_waiting` waiting
//!   (in a burst at the limit, a request may be refused because another
//!   one that was refused too was still counted: never an overshoot, and
//!   the seat is free again at once). The lock is dropped as soon as the
//!   request holds the mirror lock or leaves the queue.

use std::fs::File;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::config::Mirror;
use crate::error::{Error, Result};
use crate::queue::lock::LockFile;
use crate::queue::statedir::StateDir;
use crate::sys::proc_locks;

/// The caps an SSH request waits under.
#[derive(Debug, Clone, Copy)]
pub struct Caps<'a> {
    pub key: &'a str,
    /// `[key.NAME] max_waiting`, if set.
    pub key_max: Option<u64>,
}

/// Which cap a refused request hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    /// `waiting` requests already wait for the mirror.
    Mirror { waiting: u64, max: u64 },
    /// `waiting` requests of this key already wait.
    Key { key: String, waiting: u64, max: u64 },
}

impl Full {
    pub fn limit(&self) -> &'static str {
        match self {
            Full::Mirror { .. } => "mirror",
            Full::Key { .. } => "key",
        }
    }

    pub fn waiting(&self) -> u64 {
        match self {
            Full::Mirror { waiting, .. } | Full::Key { waiting, .. } => *waiting,
        }
    }

    pub fn max(&self) -> u64 {
        match self {
            Full::Mirror { max, .. } | Full::Key { max, .. } => *max,
        }
    }

    /// For the requester: what is full.
    pub fn describe(&self, mirror: &str) -> String {
        match self {
            Full::Mirror { waiting, max } => format!(
                "{waiting} requests are already waiting (mirror.{mirror}.max_waiting = {max})"
            ),
            Full::Key { key, waiting, max } => format!(
                "key {key} already has {waiting} requests waiting (key.{key}.max_waiting = {max})"
            ),
        }
    }
}

/// A request's place in the queue: while it is held, the request counts
/// against its key's `max_waiting`.
pub struct Seat {
    _key: Option<Flock<File>>,
}

/// Lets a request that has to wait into the queue, or says which cap is
/// reached. `lock` is the mirror's lock file, not held by us.
pub fn admit(
    sd: &StateDir,
    mirror: &Mirror,
    lock: &File,
    caps: Option<Caps>,
) -> Result<std::result::Result<Seat, Full>> {
    let Some(caps) = caps else {
        return Ok(Ok(Seat { _key: None }));
    };
    let key_seat = match caps.key_max {
        Some(max) => {
            let file = LockFile::open_path(sd, &sd.key_lock_path(caps.key))?.into_file();
            let seat = match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Ok(s) => s,
                Err((_, e)) => {
                    return Err(Error::io(
                        format!("cannot take a seat in key {}'s queue", caps.key),
                        std::io::Error::from(e),
                    ))
                }
            };
            // Ourselves included.
            let holders = proc_locks::usage_of(&seat).holders.max(1);
            if holders > max {
                return Ok(Err(Full::Key {
                    key: caps.key.to_string(),
                    waiting: holders - 1,
                    max,
                }));
            }
            Some(seat)
        }
        None => None,
    };
    let waiting = proc_locks::usage_of(lock).waiting;
    if waiting >= mirror.max_waiting {
        return Ok(Err(Full::Mirror {
            waiting,
            max: mirror.max_waiting,
        }));
    }
    Ok(Ok(Seat { _key: key_seat }))
}

/// Whether `e` from a non-blocking flock means "held by someone else".
pub fn would_block(e: Errno) -> bool {
    e == Errno::EWOULDBLOCK || e == Errno::EAGAIN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::events::{Event, QueueFull};

    #[test]
    fn a_full_queue_says_which_cap_and_logs_a_refused_line() {
        let full = Full::Key {
            key: "jenkins".into(),
            waiting: 2,
            max: 2,
        };
        assert_eq!(
            full.describe("iso"),
            "key jenkins already has 2 requests waiting (key.jenkins.max_waiting = 2)"
        );
        let e = QueueFull {
            request: "r1-2",
            mirror: "iso",
            key: Some("jenkins"),
            limit: full.limit(),
            waiting: full.waiting(),
            max_waiting: full.max(),
        };
        assert_eq!(
            e.line().as_str(),
            "event=refused request=r1-2 mirror=iso key=jenkins reason=queue-full limit=key waiting=2 max_waiting=2"
        );
        let full = Full::Mirror {
            waiting: 64,
            max: 64,
        };
        assert_eq!(
            full.describe("iso"),
            "64 requests are already waiting (mirror.iso.max_waiting = 64)"
        );
        assert_eq!(full.limit(), "mirror");
    }
}
