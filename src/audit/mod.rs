//! The audit trail: one `key=value` line per decision and per outcome, sent to
//! syslog with the ident `syncgate`. When syslog cannot be reached the line
//! goes to stderr (prefixed `syncgate audit:`) and the request still proceeds.
//!
//! This module is the sink and the line format; every line's content is an
//! event in [`events`].

pub mod events;

use std::fmt::Write as _;
use std::path::Path;

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

use crate::config::SyslogConfig;

pub fn parse_facility(s: &str) -> Option<Facility> {
    s.parse().ok()
}

/// Severity of an audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Notice,
    Warning,
    Error,
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

/// Where audit lines go.
pub struct Audit {
    logger: Option<Logger<LoggerBackend, Formatter3164>>,
    fallback_said: bool,
}

impl Audit {
    /// Connects to the configured syslog socket. Never fails: without syslog,
    /// lines go to stderr.
    pub fn open(cfg: &SyslogConfig) -> Audit {
        Audit::open_at(&cfg.facility, &cfg.socket)
    }

    pub fn open_at(facility: &str, socket: &Path) -> Audit {
        let formatter = Formatter3164 {
            facility: parse_facility(facility).unwrap_or(Facility::LOG_AUTHPRIV),
            hostname: None,
            process: "syncgate".into(),
            pid: std::process::id(),
        };
        Audit {
            logger: syslog::unix_custom(formatter, socket).ok(),
            fallback_said: false,
        }
    }

    /// Writes one event.
    pub fn record(&mut self, event: &impl events::Event) {
        self.log(event.level(), &event.line());
    }

    fn log(&mut self, level: Level, line: &Line) {
        let msg = line.as_str();
        if let Some(logger) = self.logger.as_mut() {
            let sent = match level {
                Level::Info => logger.info(msg),
                Level::Notice => logger.notice(msg),
                Level::Warning => logger.warning(msg),
                Level::Error => logger.err(msg),
            };
            if sent.is_ok() {
                return;
            }
            self.logger = None;
        }
        if !self.fallback_said {
            self.fallback_said = true;
            crate::sys::progress::say("syslog unreachable; audit lines follow on stderr");
        }
        crate::sys::progress::say(&format!("audit: {msg}"));
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
