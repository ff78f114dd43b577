//! A small RFC 3164 sender to the local syslog socket that never blocks for
//! long: a full or stalled receiver costs at most the caller's budget per
//! line, then the send fails and the caller falls back.
//!
//! The socket is a datagram socket (journald, rsyslog, syslog-ng's
//! `system()` source); a stream socket (`unix-stream("/dev/log")`) is used
//! when the path refuses datagrams, with each message ended by a NUL.
//! Messages are `<PRI>Mmm dd hh:mm:ss syncgate[PID]: MSG`, the timestamp
//! in UTC, as the `syslog` crate wrote them before.

use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use super::Level;

pub use crate::config::Facility;

fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warning => 4,
        Level::Notice => 5,
        Level::Info => 6,
    }
}

/// `Mmm dd hh:mm:ss` in UTC (day zero-padded).
pub fn timestamp(secs: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // "2026-11-21T09:58:20Z"
    let iso = crate::sys::timefmt::iso(secs);
    let month: usize = iso[5..7].parse().unwrap_or(1);
    format!("{} {} {}", MONTHS[month - 1], &iso[8..10], &iso[11..19])
}

/// One RFC 3164 message.
pub fn format(facility: Facility, level: Level, secs: u64, pid: u32, msg: &str) -> String {
    let pri = u32::from(facility.0) * 8 + u32::from(severity(level));
    format!("<{pri}>{} syncgate[{pid}]: {msg}", timestamp(secs))
}

enum Conn {
    Dgram(UnixDatagram),
    Stream(UnixStream),
}

/// A connection to the syslog socket, in non-blocking mode.
pub struct Syslog {
    path: PathBuf,
    facility: Facility,
    conn: Conn,
}

impl Syslog {
    /// Connects to `path` without blocking (a listener with a full backlog
    /// is an error, not a wait).
    pub fn connect(path: &Path, facility: Facility) -> io::Result<Syslog> {
        Ok(Syslog {
            path: path.to_path_buf(),
            facility,
            conn: Self::conn(path)?,
        })
    }

    fn conn(path: &Path) -> io::Result<Conn> {
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        match sock.connect(path) {
            Ok(()) => return Ok(Conn::Dgram(sock)),
            Err(e) if e.raw_os_error() != Some(Errno::EPROTOTYPE as i32) => return Err(e),
            Err(_) => {}
        }
        let fd = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(Conn::Stream(UnixStream::from(fd)))
    }

    /// Sends one line, waiting at most `budget` for room in the receiver's
    /// queue. A receiver that restarted (connection refused) is reconnected
    /// once.
    pub fn send(&mut self, level: Level, msg: &str, budget: Duration) -> io::Result<()> {
        let deadline = Instant::now() + budget;
        let line = format(self.facility, level, now(), std::process::id(), msg);
        match self.send_by(line.as_bytes(), deadline) {
            Err(e) if e.raw_os_error() == Some(Errno::ECONNREFUSED as i32) => {
                self.conn = Self::conn(&self.path)?;
                self.send_by(line.as_bytes(), deadline)
            }
            r => r,
        }
    }

    fn send_by(&mut self, line: &[u8], deadline: Instant) -> io::Result<()> {
        match &mut self.conn {
            Conn::Dgram(s) => loop {
                match s.send(line) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => wait_writable(&*s, deadline)?,
                    Err(e) => return Err(e),
                }
            },
            Conn::Stream(s) => {
                let mut framed = line.to_vec();
                framed.push(0);
                let mut rest = &framed[..];
                while !rest.is_empty() {
                    match s.write(rest) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            wait_writable(&*s, deadline)?
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Waits until `fd` can take more, or fails with `TimedOut` at `deadline`.
fn wait_writable(fd: impl AsFd, deadline: Instant) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            ErrorKind::TimedOut,
            "the receiver's queue stayed full",
        ));
    }
    let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facilities_parse_by_name_with_or_without_log_prefix() {
        assert_eq!(Facility::parse("authpriv"), Some(Facility::AUTHPRIV));
        assert_eq!(Facility::parse("LOG_LOCAL7"), Some(Facility(23)));
        assert_eq!(Facility::parse("daemon"), Some(Facility(3)));
        assert_eq!(Facility::parse("nope"), None);
    }

    #[test]
    fn a_message_is_rfc_3164_with_a_utc_timestamp() {
        assert_eq!(timestamp(1_795_255_100), "Nov 21 09:58:20");
        assert_eq!(timestamp(0), "Jan 01 00:00:00");
        assert_eq!(
            format(
                Facility::AUTHPRIV,
                Level::Notice,
                1_795_255_100,
                42,
                "event=x"
            ),
            "<85>Nov 21 09:58:20 syncgate[42]: event=x"
        );
        let f = Facility::parse("local0").unwrap();
        assert!(format(f, Level::Error, 0, 1, "m").starts_with("<131>"));
    }

    #[test]
    fn a_receiver_gets_one_datagram_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog::connect(&path, Facility::AUTHPRIV).unwrap();
        s.send(Level::Info, "event=x a=1", Duration::from_millis(200))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = rx.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]);
        assert!(got.starts_with("<86>"), "{got}");
        assert!(
            got.ends_with(&format!("syncgate[{}]: event=x a=1", std::process::id())),
            "{got}"
        );
    }

    #[test]
    fn a_stalled_receiver_costs_at_most_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let _rx = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog::connect(&path, Facility::AUTHPRIV).unwrap();
        let budget = Duration::from_millis(150);
        let mut sent = 0;
        let err = loop {
            match s.send(Level::Info, "event=filler", budget) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            assert!(sent < 100_000, "the queue never filled");
        };
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        let t = Instant::now();
        let err = s.send(Level::Info, "event=x", budget).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
        let took = t.elapsed();
        assert!(
            took >= budget && took < budget + Duration::from_secs(1),
            "{took:?}"
        );
    }

    #[test]
    fn no_socket_and_a_dead_receiver_are_errors_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        assert!(Syslog::connect(&path, Facility::AUTHPRIV).is_err());
        let rx = UnixDatagram::bind(&path).unwrap();
        let mut s = Syslog::connect(&path, Facility::AUTHPRIV).unwrap();
        drop(rx);
        let t = Instant::now();
        assert!(s
            .send(Level::Info, "event=x", Duration::from_secs(5))
            .is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_stream_socket_gets_nul_terminated_messages() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut s = Syslog::connect(&path, Facility::AUTHPRIV).unwrap();
        s.send(Level::Warning, "event=x", Duration::from_millis(200))
            .unwrap();
        drop(s);
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut conn, &mut got).unwrap();
        assert!(got.starts_with(b"<84>"), "{got:?}");
        assert!(got.ends_with(b": event=x\0"), "{got:?}");
    }
}
