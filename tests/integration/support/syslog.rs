//! A syslog receiver: a Unix datagram socket whose messages a background
//! thread collects, plus [`fields`] to parse syncgate's `key=value` lines.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::host::set_mode;
use super::ns;

/// Collects every datagram sent to its socket as one line (lossy UTF-8,
/// trailing newlines and NULs removed). Works inside and outside the
/// namespace; the socket is mode 0666 so any test user can log.
pub struct SyslogReceiver {
    path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: Option<TempDir>,
}

impl SyslogReceiver {
    /// A receiver at `log.sock` in a fresh temporary directory.
    pub fn new() -> SyslogReceiver {
        let dir = tempfile::Builder::new()
            .prefix(&ns::temp_prefix("syslog"))
            .tempdir()
            .expect("create syslog dir");
        set_mode(dir.path(), 0o755);
        let mut receiver = SyslogReceiver::bind(dir.path().join("log.sock"));
        receiver._dir = Some(dir);
        receiver
    }

    /// A receiver bound at `path` (a stale socket there is replaced).
    pub fn bind(path: impl Into<PathBuf>) -> SyslogReceiver {
        let path = path.into();
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("bind syslog socket {}: {e}", path.display()));
        set_mode(&path, 0o666);
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (lines, stop) = (lines.clone(), stop.clone());
            std::thread::spawn(move || collect(&socket, &lines, &stop))
        };
        SyslogReceiver {
            path,
            lines,
            stop,
            thread: Some(thread),
            _dir: None,
        }
    }

    /// The socket path to hand to the program under test.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All messages received so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("syslog lines").clone()
    }

    /// Waits until a received message satisfies `predicate` and returns the
    /// first such message, or `None` after `timeout`.
    /// The parsed audit lines of `event` (`event=EVENT`), oldest first.
    pub fn events(&self, event: &str) -> Vec<BTreeMap<String, String>> {
        self.lines()
            .iter()
            .map(|l| fields(l))
            .filter(|f| f.get("event").map(String::as_str) == Some(event))
            .collect()
    }

    /// Waits until at least `n` audit lines of `event` arrived; returns them
    /// all, or panics showing every line after `timeout`.
    #[track_caller]
    pub fn wait_events(
        &self,
        event: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<BTreeMap<String, String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.events(event);
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} event={event} audit lines within {timeout:?}, got {}:\n{}",
                found.len(),
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_for(&self, predicate: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| predicate(l)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Default for SyslogReceiver {
    fn default() -> Self {
        SyslogReceiver::new()
    }
}

impl Drop for SyslogReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn collect(socket: &UnixDatagram, lines: &Mutex<Vec<String>>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                let line = text.trim_end_matches(['\n', '\0']).to_string();
                lines.lock().expect("syslog lines").push(line);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("syslog receiver: {e}"),
        }
    }
}

/// Parses the `key=value` pairs of a syslog line's message: everything after
/// the first `]: ` (`tag[pid]: `), or after the first `: ` if there is no pid.
/// Values may be double-quoted with backslash escapes (`\"`, `\\`, `\xNN`
/// for one byte, `\n`, `\t`, `\r`; any other escaped character stands for
/// itself). Words without
/// `=` are ignored; a repeated key keeps its last value.
pub fn fields(line: &str) -> BTreeMap<String, String> {
    let message = line
        .split_once("]: ")
        .or_else(|| line.split_once(": "))
        .map_or(line, |(_, m)| m);
    let mut map = BTreeMap::new();
    let mut chars = message.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return map;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if chars.next_if_eq(&'=').is_none() {
            continue; // a bare word
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.push(match chars.next() {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('x') => hex_byte(&mut chars).unwrap_or('x'),
                        Some(other) => other,
                        None => '\\',
                    }),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        map.insert(key, value);
    }
}

/// The two hex digits after `\x`, as the byte they name; `None` (nothing
/// consumed) if they are not two hex digits.
fn hex_byte(chars: &mut std::iter::Peekable<std::str::Chars>) -> Option<char> {
    let mut ahead = chars.clone();
    let hex: String = ahead.by_ref().take(2).collect();
    let byte = u8::from_str_radix(&hex, 16)
        .ok()
        .filter(|_| hex.len() == 2)?;
    *chars = ahead;
    Some(char::from(byte))
}
