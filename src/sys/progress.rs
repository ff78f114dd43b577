//! Human progress on stderr, and noticing that the caller has gone.
//!
//! Writes to stderr never fail the program: a client that disconnected must
//! not kill a sync (SIGPIPE is ignored by the Rust runtime, and every write
//! error here is swallowed).
//!
//! Without a pty sshd sends no signal when the client leaves, and `ssh -n`
//! gives us EOF on stdin at once, so stdin tells nothing. What does tell is
//! the *output* side: once sshd closes its end of our stdout/stderr pipe or
//! socket, `poll` reports POLLERR or POLLHUP on it.

use std::io::Write;
use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, SFlag};

/// Writes one line `syncgate: MSG` to stderr. Returns false if it could not.
pub fn say(msg: &str) -> bool {
    let mut err = std::io::stderr().lock();
    err.write_all(format!("syncgate: {msg}\n").as_bytes())
        .is_ok()
}

/// Passes a line from a child's stderr through unchanged.
pub fn relay(line: &str) -> bool {
    let mut err = std::io::stderr().lock();
    err.write_all(format!("{line}\n").as_bytes()).is_ok()
}

/// Whether a pipe or socket we write to has lost its reader.
fn broken<F: AsFd>(f: F) -> bool {
    let fd = f.as_fd();
    let Ok(st) = fstat(fd) else { return false };
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFIFO && kind != SFlag::S_IFSOCK {
        return false;
    }
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) if n > 0 => fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP)),
        _ => false,
    }
}

/// True when whoever reads our stdout or stderr is gone (ssh client
/// disconnected). Safe to call often: two `poll`s with a zero timeout.
pub fn caller_gone() -> bool {
    broken(std::io::stderr()) || broken(std::io::stdout())
}

/// "2m10s"-style durations for humans.
pub fn human_secs(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// "1.2 GiB"-style sizes for humans (binary units, one decimal from KiB on).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1_288_490_189), "1.2 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human_secs(5), "5s");
        assert_eq!(human_secs(130), "2m10s");
        assert_eq!(human_secs(7322), "2h02m");
    }

    #[test]
    fn a_pipe_whose_reader_closed_is_broken() {
        let (r, w) = std::io::pipe().unwrap();
        assert!(!broken(&w));
        drop(r);
        assert!(broken(&w));
    }

    #[test]
    fn a_socket_half_closed_for_reading_is_not_broken() {
        // `ssh -n`: the peer shuts down its write side (our stdin EOF) but
        // still reads what we write.
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(!broken(&a));
        drop(b);
        assert!(broken(&a));
    }
}
