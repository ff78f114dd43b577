//! The syslog facilities `[syslog] facility` may name.

/// A syslog facility, by its code (`authpriv` is 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(pub(crate) u8);

const FACILITIES: &[(&str, u8)] = &[
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("ntp", 12),
    ("audit", 13),
    ("alert", 14),
    ("clock_daemon", 15),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl Facility {
    pub const AUTHPRIV: Facility = Facility(10);

    /// `authpriv`, `LOG_AUTHPRIV`, `local0` … (any case).
    pub fn parse(s: &str) -> Option<Facility> {
        let s = s.to_ascii_lowercase();
        let name = s.strip_prefix("log_").unwrap_or(&s);
        FACILITIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, code)| Facility(code))
    }
}
