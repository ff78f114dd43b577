//! The audit trail: one `key=value` line per decision and per outcome, sent to
//! syslog with the ident `syncgate`.
//!
//! Sending never blocks for long: a line waits at most [`SEND_BUDGET`] for
//! room in syslog's queue. When the socket is gone, refuses or stays full,
//! that line and every later one of this process go to the fallback file
//! `STATE_DIR/audit.log` (`file.rs`); when that cannot be written either,
//! to stderr (prefixed `syncgate: audit:`). [`Audit::record`] says where a
//! line went, so the gate can refuse to sync when it went nowhere
//! (`audit_required`).
//!
//! This module is the sink and the line format; every line's content is an
//! event in [`events`]; `syslog.rs` is the RFC 3164 sender.

pub mod events;
mod file;
mod syslog;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::SyslogConfig;
use file::AuditFile;
use syslog::Syslog;

pub use syslog::Facility;

/// The fallback file's name in the state dir.
pub const FALLBACK_FILE: &str = file::NAME;

/// The longest one line waits for room in syslog's queue before it goes
/// to the fallback file instead.
pub const SEND_BUDGET: Duration = Duration::from_millis(500);

/// Severity of an audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Notice,
    Warning,
    Error,
}

impl Level {
    /// Syslog's name for it (`journalctl -p`, the fallback file).
    pub fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warning => "warning",
            Level::Error => "err",
        }
    }
}

/// A `key=value` line under construction. Values are quoted when they hold
/// anything but plain printable characters, so a line always parses back.
///
/// No value ever contains `=`: inside quotes it is written `\x3d`, like
/// every byte that is not printable ASCII. So the only `NAME=` in a line
/// are its fields, and ` NAME=VALUE ` matched at a space (or the start of
/// the message) cannot be forged by what a client sends or an upstream
/// answers (README "Reading the audit log").
#[derive(Debug, Default, Clone)]
pub struct Line {
    text: String,
}

impl Line {
    pub fn new(event: &str) -> Line {
        let mut l = Line::default();
        l.kv("event", event);
        l
    }

    pub fn kv(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Line {
        if !self.text.is_empty() {
            self.text.push(' ');
        }
        self.text.push_str(key);
        self.text.push('=');
        push_value(&mut self.text, &value.to_string());
        self
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn push_value(out: &mut String, v: &str) {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='));
    if plain {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\x3d"),
            c if c == ' ' || c.is_ascii_graphic() => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
    }
    out.push('"');
}

/// Where a line was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Syslog,
    /// The fallback file in the state directory.
    File,
    /// Nowhere but stderr, which an SSH client reads, not the admin.
    Nowhere,
}

/// Where audit lines go.
pub struct Audit {
    socket: PathBuf,
    /// The connection, or why there is none (it is not retried).
    syslog: Result<Syslog, String>,
    /// The state directory, when known (not with a broken config).
    fallback_dir: Option<PathBuf>,
    file: Option<AuditFile>,
    /// Why the fallback file could not take the last line.
    file_trouble: Option<String>,
    stderr_said: bool,
}

impl Audit {
    /// Connects to the configured syslog socket, with the fallback file in
    /// the state directory. Never fails and never blocks.
    pub fn open(cfg: &SyslogConfig) -> Audit {
        let mut a = Audit::open_at(&cfg.facility, &cfg.socket);
        a.fallback_dir = Some(cfg.fallback_dir.clone());
        a
    }

    /// Syslog only (then stderr): for when the config could not be read.
    pub fn open_at(facility: &str, socket: &Path) -> Audit {
        let facility = Facility::parse(facility).unwrap_or(Facility::AUTHPRIV);
        Audit {
            socket: socket.to_path_buf(),
            syslog: Syslog::connect(socket, facility).map_err(|e| e.to_string()),
            fallback_dir: None,
            file: None,
            file_trouble: None,
            stderr_said: false,
        }
    }

    /// Writes one event; says where it went.
    pub fn record(&mut self, event: &impl events::Event) -> Recorded {
        self.log(event.level(), &event.line())
    }

    /// Why lines are not going to syslog and the fallback file, for a
    /// refusal message: `syslog /dev/log: …; /var/lib/syncgate/audit.log: …`.
    pub fn trouble(&self) -> String {
        let mut parts = Vec::new();
        if let Err(e) = &self.syslog {
            parts.push(format!("syslog {}: {e}", self.socket.display()));
        }
        match (&self.fallback_dir, &self.file_trouble) {
            (None, _) => parts.push("no state directory for the fallback file".into()),
            (Some(_), Some(t)) => parts.push(t.clone()),
            (Some(_), None) => {}
        }
        parts.join("; ")
    }

    fn log(&mut self, level: Level, line: &Line) -> Recorded {
        let msg = line.as_str();
        if let Ok(s) = &mut self.syslog {
            match s.send(level, msg, SEND_BUDGET) {
                Ok(()) => return Recorded::Syslog,
                Err(e) => self.syslog = Err(e.to_string()),
            }
        }
        if self.append(level, msg) {
            return Recorded::File;
        }
        if !self.stderr_said {
            self.stderr_said = true;
            crate::sys::progress::say(&format!(
                "audit trail unavailable ({}); audit lines follow on stderr",
                self.trouble()
            ));
        }
        crate::sys::progress::say(&format!("audit: {msg}"));
        Recorded::Nowhere
    }

    /// Appends to the fallback file, opening it first if needed (a state
    /// directory that appears later is used then).
    fn append(&mut self, level: Level, msg: &str) -> bool {
        let Some(dir) = &self.fallback_dir else {
            return false;
        };
        if self.file.is_none() {
            match AuditFile::open(dir) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.file_trouble = Some(format!("{}: {e}", file::path_in(dir).display()));
                    return false;
                }
            }
        }
        let written = self
            .file
            .as_mut()
            .map(|f| f.append(syslog::now(), level.name(), msg));
        match written {
            Some(Ok(())) => {
                self.file_trouble = None;
                true
            }
            Some(Err(e)) => {
                self.file_trouble = Some(format!("{}: {e}", file::path_in(dir).display()));
                self.file = None;
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_stay_bare_and_others_are_quoted() {
        let mut l = Line::new("decision");
        l.kv("key", "jenkins")
            .kv("cmd", "sync; rm -rf /")
            .kv("empty", "")
            .kv("ctl", "a\nb\"c\\");
        assert_eq!(
            l.as_str(),
            r#"event=decision key=jenkins cmd="sync; rm -rf /" empty="" ctl="a\x0ab\"c\\""#
        );
    }

    #[test]
    fn equals_sign_in_a_value_is_quoted_and_escaped() {
        let mut l = Line::new("x");
        l.kv("v", "a=b");
        assert_eq!(l.as_str(), r#"event=x v="a\x3db""#);
    }

    struct Ev;
    impl events::Event for Ev {
        fn level(&self) -> Level {
            Level::Warning
        }
        fn line(&self) -> Line {
            Line::new("x")
        }
    }

    fn cfg(dir: &Path, socket: &str) -> SyslogConfig {
        SyslogConfig {
            facility: "authpriv".into(),
            socket: dir.join(socket),
            fallback_dir: dir.join("state"),
        }
    }

    #[test]
    fn lines_go_to_syslog_then_the_state_dir_file_then_nowhere() {
        let d = tempfile::tempdir().unwrap();
        let rx = std::os::unix::net::UnixDatagram::bind(d.path().join("log.sock")).unwrap();
        let mut a = Audit::open(&cfg(d.path(), "log.sock"));
        assert_eq!(a.record(&Ev), Recorded::Syslog);
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).ends_with("]: event=x"));

        // Gone: the state dir does not exist yet, then it does.
        let mut a = Audit::open(&cfg(d.path(), "gone.sock"));
        assert_eq!(a.record(&Ev), Recorded::Nowhere);
        let t = a.trouble();
        assert!(t.contains("gone.sock") && t.contains("audit.log"), "{t}");
        std::fs::create_dir(d.path().join("state")).unwrap();
        assert_eq!(a.record(&Ev), Recorded::File);
        let text = std::fs::read_to_string(d.path().join("state/audit.log")).unwrap();
        assert!(text.contains("Z warning syncgate["), "{text}");
        assert!(text.ends_with("]: event=x\n"), "{text}");

        // Full: one wait of at most the budget, then the file at once.
        let _tx = (0..100_000)
            .map(|_| {
                let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
                s.set_nonblocking(true).unwrap();
                s.connect(d.path().join("log.sock")).unwrap();
                s
            })
            .find(|s| s.send(b"fill").is_err());
        let mut a = Audit::open(&cfg(d.path(), "log.sock"));
        let t = std::time::Instant::now();
        assert_eq!(a.record(&Ev), Recorded::File);
        assert_eq!(a.record(&Ev), Recorded::File);
        assert!(t.elapsed() < SEND_BUDGET + Duration::from_secs(1));
    }

    #[test]
    fn no_value_can_read_as_a_field() {
        let hostile = [
            "sync key=jenkins decision=allow reason=ok",
            "x\" key=jenkins",
            "x\\\" decision=allow",
            "@ERROR: down result=success exit=0",
            "a\nevent=outcome result=success",
        ];
        for v in hostile {
            let mut l = Line::new("decision");
            l.kv("key", "intruder")
                .kv("command", v)
                .kv("decision", "refuse");
            let text = l.as_str();
            assert_eq!(text.matches('=').count(), 4, "{text}");
            for field in ["event=decision", "key=intruder", "decision=refuse"] {
                assert_eq!(
                    text.matches(&format!(" {field}")).count()
                        + usize::from(text.starts_with(field)),
                    1,
                    "{text}"
                );
            }
        }
    }
}
