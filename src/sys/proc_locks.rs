//! Who holds and who waits for a lock file, read from /proc/locks without
//! touching the lock (so `status` never disturbs the queue).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub held: bool,
    pub waiting: u64,
}

pub fn usage(lock: &Path) -> Usage {
    let Ok(md) = std::fs::metadata(lock) else {
        return Usage::default();
    };
    let dev = md.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let id = format!("{:02x}:{:02x}:{}", major, minor, md.ino());
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Usage::default();
    };
    parse(&text, &id)
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
                waiting: 2
            }
        );
        assert_eq!(parse(text, "fd:01:1"), Usage::default());
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
