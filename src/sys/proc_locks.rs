//! Who holds and who waits for a lock file, read from /proc/locks without
//! touching the lock (so `status` never disturbs the queue, and the queue
//! can count itself: `max_waiting`).
//!
//! The kernel lists every flock once per open file description: a holder
//! as `N: FLOCK ADVISORY WRITE|READ PID MAJ:MIN:INODE 0 EOF`, a waiter as
//! `N: -> FLOCK …` under what blocks it. Only processes visible in our pid
//! namespace are listed.

use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub held: bool,
    pub waiting: u64,
    /// Locks granted on the file: 1 for an exclusive lock, one per holder
    /// of a shared lock.
    pub holders: u64,
}

pub fn usage(lock: &Path) -> Usage {
    match std::fs::metadata(lock) {
        Ok(md) => usage_by_id(&md),
        Err(_) => Usage::default(),
    }
}

/// [`usage`] of a file we have open (no path lookup, so no race with a
/// rename).
pub fn usage_of(file: &File) -> Usage {
    match file.metadata() {
        Ok(md) => usage_by_id(&md),
        Err(_) => Usage::default(),
    }
}

/// How /proc/locks names a file: `MAJ:MIN:INODE`.
fn lock_id(md: &Metadata) -> String {
    let dev = md.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    format!("{:02x}:{:02x}:{}", major, minor, md.ino())
}

fn usage_by_id(md: &Metadata) -> Usage {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Usage::default();
    };
    parse(&text, &lock_id(md))
}

/// The kernel's lock table read once, to look up several lock files: a
/// read of /proc/locks can wait for an RCU grace period (milliseconds on a
/// busy machine), so a reader of many mirrors reads it once.
pub struct Table(String);

impl Table {
    pub fn read() -> Table {
        Table(std::fs::read_to_string("/proc/locks").unwrap_or_default())
    }

    /// [`usage`] of `lock` in this table.
    pub fn usage(&self, lock: &Path) -> Usage {
        match std::fs::metadata(lock) {
            Ok(md) => parse(&self.0, &lock_id(&md)),
            Err(_) => Usage::default(),
        }
    }
}

fn parse(text: &str, id: &str) -> Usage {
    let mut u = Usage::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (waiter, rest) = match fields.get(1) {
            Some(&"->") => (true, &fields[2..]),
            Some(_) => (false, &fields[1..]),
            None => continue,
        };
        // FLOCK ADVISORY WRITE PID DEV:INO START END
        if rest.first() != Some(&"FLOCK") || rest.get(4) != Some(&id) {
            continue;
        }
        if waiter {
            u.waiting += 1;
        } else {
            u.held = true;
            u.holders += 1;
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_and_waiters_are_told_apart() {
        let text = "\
1: FLOCK  ADVISORY  WRITE 100 fd:01:4242 0 EOF
1: -> FLOCK  ADVISORY  WRITE 101 fd:01:4242 0 EOF
1: -> FLOCK  ADVISORY  WRITE 102 fd:01:4242 0 EOF
2: POSIX  ADVISORY  WRITE 7 fd:01:4242 0 EOF
3: FLOCK  ADVISORY  WRITE 9 fd:01:999 0 EOF
";
        assert_eq!(
            parse(text, "fd:01:4242"),
            Usage {
                held: true,
                waiting: 2,
                holders: 1,
            }
        );
        assert_eq!(parse(text, "fd:01:1"), Usage::default());
    }

    #[test]
    fn shared_holders_are_counted_and_nested_waiters_too() {
        // Newer kernels nest a waiter under another waiter (more spaces).
        let text = "\
4: FLOCK  ADVISORY  READ  200 00:2a:77 0 EOF
5: FLOCK  ADVISORY  READ  201 00:2a:77 0 EOF
6: FLOCK  ADVISORY  WRITE 300 00:2a:78 0 EOF
6: -> FLOCK  ADVISORY  WRITE 301 00:2a:78 0 EOF
6:  -> FLOCK  ADVISORY  WRITE 302 00:2a:78 0 EOF
";
        assert_eq!(parse(text, "00:2a:77").holders, 2);
        assert_eq!(parse(text, "00:2a:77").waiting, 0);
        assert_eq!(parse(text, "00:2a:78").waiting, 2);
    }

    #[test]
    fn shared_locks_on_an_open_file_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.lock");
        let a = std::fs::File::create(&p).unwrap();
        let b = std::fs::File::open(&p).unwrap();
        assert_eq!(usage_of(&a).holders, 0);
        a.lock_shared().unwrap();
        b.lock_shared().unwrap();
        assert_eq!(usage_of(&a).holders, 2);
        drop(b);
        assert_eq!(usage_of(&a).holders, 1);
    }

    #[test]
    fn a_lock_we_hold_shows_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.lock");
        let f = std::fs::File::create(&p).unwrap();
        assert!(!usage(&p).held);
        f.lock().unwrap();
        assert!(usage(&p).held);
    }
}
