//! The TOML configuration: parsed strictly, validated fully, and every error
//! names the file, the line and the key (exit 78).
//!
//! ```toml
//! state_dir = "/var/lib/syncgate"
//! privilege = "sudo"           # or "direct"
//! login_user = "syncgate"
//!
//! [mirror.debian-cd]
//! upstream = "rsync://ftp.example.org/debian-cd/"
//! dest = "/srv/mirror/debian-cd"
//! owner = "mirror"
//! reader_group = "www-data"
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};

pub const DEFAULT_PATH: &str = "/etc/syncgate/syncgate.toml";

/// Patterns published only after everything else (rsync filter syntax).
pub const DEFAULT_LAST: &[&str] = &[
    "SHA256SUMS*",
    "SHA512SUMS*",
    "MD5SUMS*",
    "*.sign",
    "*.sig",
    "*.asc",
    "*.gpg",
    "*.json",
    "current",
];

/// How owner-side commands (transfer, fix-perms) are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// `sudo -n -u OWNER …` (production).
    Sudo,
    /// As the current user (the bundled example and unprivileged tests).
    Direct,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of the file this was read from.
    pub path: PathBuf,
    pub state_dir: PathBuf,
    pub privilege: Privilege,
    pub login_user: String,
    pub rsync: PathBuf,
    /// This program, as the sudoers rule names it.
    pub binary: PathBuf,
    pub heartbeat: u64,
    pub syslog: SyslogConfig,
    pub mirrors: BTreeMap<String, Mirror>,
    pub keys: BTreeMap<String, KeyConfig>,
}

#[derive(Debug, Clone)]
pub struct SyslogConfig {
    pub facility: String,
    pub socket: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Mirror {
    pub name: String,
    pub upstream: Upstream,
    pub dest: PathBuf,
    pub owner: String,
    pub owner_uid: u32,
    pub reader_group: String,
    pub reader_gid: u32,
    pub file_mode: u32,
    pub dir_mode: u32,
    pub exclude: Vec<String>,
    pub last: Vec<String>,
    /// KiB per second; 0 means unlimited.
    pub bwlimit: u64,
    pub io_timeout: u64,
    pub timeout: u64,
    pub max_delete: u64,
    pub queue_timeout: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `rsync://host[:port]/module/path`
    Daemon(String),
    /// An absolute local path.
    Local(PathBuf),
    /// `[user@]host:path`, over ssh.
    Ssh(String),
}

impl Upstream {
    /// The rsync source argument, always with a trailing slash (sync contents).
    pub fn source_arg(&self) -> String {
        let s = match self {
            Upstream::Daemon(s) | Upstream::Ssh(s) => s.clone(),
            Upstream::Local(p) => p.display().to_string(),
        };
        if s.ends_with('/') {
            s
        } else {
            format!("{s}/")
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyConfig {
    pub name: String,
    pub verbs: Vec<String>,
    pub mirrors: Vec<String>,
    pub from: Vec<crate::gate::policy::Cidr>,
}

// ---- raw, as written in the file -------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Spanned<String>,
    privilege: Option<Spanned<Privilege>>,
    login_user: Option<Spanned<String>>,
    rsync: Option<Spanned<String>>,
    binary: Option<Spanned<String>>,
    heartbeat: Option<Spanned<u64>>,
    syslog: Option<RawSyslog>,
    #[serde(default)]
    mirror: BTreeMap<Spanned<String>, RawMirror>,
    #[serde(default)]
    key: BTreeMap<Spanned<String>, RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    facility: Option<Spanned<String>>,
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    upstream: Spanned<String>,
    dest: Spanned<String>,
    owner: Spanned<String>,
    reader_group: Spanned<String>,
    file_mode: Option<Spanned<String>>,
    dir_mode: Option<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    last: Option<Vec<Spanned<String>>>,
    bwlimit: Option<u64>,
    io_timeout: Option<Spanned<u64>>,
    timeout: Option<Spanned<u64>>,
    max_delete: Option<u64>,
    queue_timeout: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    verbs: Vec<Spanned<String>>,
    #[serde(default)]
    mirrors: Vec<Spanned<String>>,
    #[serde(default)]
    from: Vec<Spanned<String>>,
}

/// Builds errors that point at a place in the file.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    fn err<T>(&self, span: Range<usize>, key: &str, msg: impl std::fmt::Display) -> Result<T> {
        Err(Error::Config(format!(
            "{}:{}: {}: {}",
            self.path.display(),
            self.line(span),
            key,
            msg
        )))
    }
}

/// A name for a mirror or key: `[a-z0-9][a-z0-9._-]{0,63}`, no `..`.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
        && !s.contains("..")
}

fn is_clean_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn no_control(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok()
}

pub fn lookup_uid(user: &str) -> Option<u32> {
    nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

pub fn lookup_gid(group: &str) -> Option<u32> {
    nix::unistd::Group::from_name(group)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

impl Config {
    /// Reads and validates the file. Relative `path`s are made absolute.
    pub fn load(path: &Path) -> Result<Config> {
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::Config(format!("cannot resolve {}: {e}", path.display())))?
                .join(path)
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse(&path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        let src = Source { path, text };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let line = e.span().map(|s| src.line(s)).unwrap_or(1);
                return Err(Error::Config(format!(
                    "{}:{}: {}",
                    path.display(),
                    line,
                    e.message().trim()
                )));
            }
        };

        let state_dir = PathBuf::from(raw.state_dir.get_ref());
        if !is_clean_absolute(&state_dir) {
            return src.err(
                raw.state_dir.span(),
                "state_dir",
                format!(
                    "must be an absolute path without '..': {:?}",
                    raw.state_dir.get_ref()
                ),
            );
        }
        let privilege = raw
            .privilege
            .map(|p| *p.get_ref())
            .unwrap_or(Privilege::Sudo);
        let login_user = match raw.login_user {
            Some(u) => {
                if !valid_user_name(u.get_ref()) {
                    return src.err(
                        u.span(),
                        "login_user",
                        format!("not a valid user name: {:?}", u.get_ref()),
                    );
                }
                u.into_inner()
            }
            None => "syncgate".to_string(),
        };
        let rsync = match raw.rsync {
            Some(r) => {
                let p = PathBuf::from(r.get_ref());
                if !is_clean_absolute(&p) {
                    return src.err(r.span(), "rsync", "must be an absolute path");
                }
                p
            }
            None => PathBuf::from("/usr/bin/rsync"),
        };
        let binary = match raw.binary {
            Some(b) => {
                let p = PathBuf::from(b.get_ref());
                if !is_clean_absolute(&p) || !sudoers_safe(b.get_ref()) {
                    return src.err(
                        b.span(),
                        "binary",
                        "must be an absolute path of letters, digits, '/', '.', '_' and '-'",
                    );
                }
                p
            }
            None if privilege == Privilege::Sudo => PathBuf::from("/usr/bin/syncgate"),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/syncgate")),
        };
        if privilege == Privilege::Sudo && !sudoers_safe(&path.display().to_string()) {
            return Err(Error::Config(format!(
                "{}: with privilege = \"sudo\" the config path may only hold letters, digits, '/', '.', '_' and '-' (it appears in the sudoers rule)",
                path.display()
            )));
        }
        let heartbeat = match raw.heartbeat {
            Some(h) if *h.get_ref() == 0 || *h.get_ref() > 3600 => {
                return src.err(h.span(), "heartbeat", "must be between 1 and 3600 seconds")
            }
            Some(h) => h.into_inner(),
            None => 30,
        };
        let syslog = {
            let (facility, socket) = match raw.syslog {
                Some(s) => (s.facility, s.socket),
                None => (None, None),
            };
            let facility = match facility {
                Some(f) => {
                    if crate::audit::parse_facility(f.get_ref()).is_none() {
                        return src.err(
                            f.span(),
                            "syslog.facility",
                            format!("unknown facility {:?} (use e.g. auth, authpriv, daemon, user, local0..local7)", f.get_ref()),
                        );
                    }
                    f.into_inner()
                }
                None => "authpriv".to_string(),
            };
            let socket = match socket {
                Some(s) => {
                    let p = PathBuf::from(s.get_ref());
                    if !is_clean_absolute(&p) {
                        return src.err(s.span(), "syslog.socket", "must be an absolute path");
                    }
                    p
                }
                None => PathBuf::from("/dev/log"),
            };
            SyslogConfig { facility, socket }
        };

        let mut mirrors = BTreeMap::new();
        for (name, m) in raw.mirror {
            let mirror = validate_mirror(&src, &name, m, privilege)?;
            mirrors.insert(mirror.name.clone(), mirror);
        }

        let mut keys = BTreeMap::new();
        for (name, k) in raw.key {
            let key = validate_key(&src, &name, k, &mirrors)?;
            keys.insert(key.name.clone(), key);
        }

        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            privilege,
            login_user,
            rsync,
            binary,
            heartbeat,
            syslog,
            mirrors,
            keys,
        })
    }

    pub fn mirror(&self, name: &str) -> Result<&Mirror> {
        self.mirrors.get(name).ok_or_else(|| {
            Error::Usage(format!(
                "no mirror named {name:?} in {} (known: {})",
                self.path.display(),
                self.mirror_names().join(", ")
            ))
        })
    }

    pub fn mirror_names(&self) -> Vec<String> {
        self.mirrors.keys().cloned().collect()
    }
}

/// Characters that mean nothing special in a sudoers command line.
pub fn sudoers_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
}

fn valid_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn validate_mirror(
    src: &Source,
    name: &Spanned<String>,
    m: RawMirror,
    privilege: Privilege,
) -> Result<Mirror> {
    let n = name.get_ref().clone();
    let key = |k: &str| format!("mirror.{n}.{k}");
    if !valid_name(&n) {
        return src.err(
            name.span(),
            &format!("mirror.{n}"),
            "mirror names use lowercase letters, digits, '.', '_' and '-', start with a letter or digit, and have at most 64 characters",
        );
    }

    let up = m.upstream.get_ref();
    let upstream = if up.is_empty()
        || !no_control(up)
        || up.contains(char::is_whitespace)
        || up.starts_with('-')
    {
        return src.err(
            m.upstream.span(),
            &key("upstream"),
            "must be an rsync:// URL, an absolute path or host:path, without spaces",
        );
    } else if let Some(rest) = up.strip_prefix("rsync://") {
        if rest.is_empty() || rest.starts_with('/') {
            return src.err(
                m.upstream.span(),
                &key("upstream"),
                "rsync:// URL needs a host and a module",
            );
        }
        Upstream::Daemon(up.clone())
    } else if up.starts_with('/') {
        let p = PathBuf::from(up);
        if !is_clean_absolute(&p) {
            return src.err(
                m.upstream.span(),
                &key("upstream"),
                "local path must be absolute, without '..'",
            );
        }
        Upstream::Local(p)
    } else if let Some((host, path)) = up.split_once(':') {
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_@".contains(&b));
        if !host_ok || path.is_empty() || path.starts_with(':') {
            return src.err(
                m.upstream.span(),
                &key("upstream"),
                "expected [user@]host:path",
            );
        }
        Upstream::Ssh(up.clone())
    } else {
        return src.err(
            m.upstream.span(),
            &key("upstream"),
            format!(
                "{up:?} is a relative path; use an rsync:// URL, an absolute path or host:path"
            ),
        );
    };

    let dest = PathBuf::from(m.dest.get_ref());
    if !is_clean_absolute(&dest) || dest.parent().is_none() || !no_control(m.dest.get_ref()) {
        return src.err(
            m.dest.span(),
            &key("dest"),
            format!(
                "must be an absolute path below / without '..': {:?}",
                m.dest.get_ref()
            ),
        );
    }
    if let Upstream::Local(p) = &upstream {
        if p.starts_with(&dest) || dest.starts_with(p) {
            return src.err(
                m.dest.span(),
                &key("dest"),
                "dest and upstream must not contain each other",
            );
        }
    }

    let owner = m.owner.get_ref().clone();
    let Some(owner_uid) = lookup_uid(&owner) else {
        return src.err(
            m.owner.span(),
            &key("owner"),
            format!("no such user {owner:?}"),
        );
    };
    if owner_uid == 0 && privilege == Privilege::Sudo {
        return src.err(
            m.owner.span(),
            &key("owner"),
            "the image owner must not be root (with privilege = \"sudo\")",
        );
    }
    let reader_group = m.reader_group.get_ref().clone();
    let Some(reader_gid) = lookup_gid(&reader_group) else {
        return src.err(
            m.reader_group.span(),
            &key("reader_group"),
            format!("no such group {reader_group:?}"),
        );
    };

    let file_mode = match &m.file_mode {
        Some(s) => match parse_mode(s.get_ref()) {
            Some(v) if v & 0o7022 == 0 && v & 0o400 != 0 => v,
            _ => {
                return src.err(
                    s.span(),
                    &key("file_mode"),
                    format!("{:?}: want an octal mode like \"0640\"; owner must read, group and other must not write, no setuid/setgid/sticky", s.get_ref()),
                )
            }
        },
        None => 0o640,
    };
    let dir_mode = match &m.dir_mode {
        Some(s) => match parse_mode(s.get_ref()) {
            Some(v) if v & 0o5022 == 0 && v & 0o700 == 0o700 => v,
            _ => {
                return src.err(
                    s.span(),
                    &key("dir_mode"),
                    format!("{:?}: want an octal mode like \"0750\" or \"2750\"; owner rwx, group and other must not write, no setuid/sticky", s.get_ref()),
                )
            }
        },
        None => 0o2750,
    };

    let pattern = |p: &Spanned<String>, k: &str| -> Result<String> {
        let v = p.get_ref();
        if v.is_empty()
            || !no_control(v)
            || v.starts_with(['+', '-', '!', ':']) && v.get(1..2) == Some(" ")
        {
            return src.err(
                p.span(),
                &key(k),
                format!("{v:?} is not a plain rsync pattern"),
            );
        }
        Ok(v.clone())
    };
    let exclude = m
        .exclude
        .iter()
        .map(|p| pattern(p, "exclude"))
        .collect::<Result<Vec<_>>>()?;
    let last = match &m.last {
        Some(v) => v
            .iter()
            .map(|p| pattern(p, "last"))
            .collect::<Result<Vec<_>>>()?,
        None => DEFAULT_LAST.iter().map(|s| s.to_string()).collect(),
    };

    let secs = |v: &Option<Spanned<u64>>, k: &str, default: u64| -> Result<u64> {
        match v {
            Some(s) if *s.get_ref() == 0 => src.err(s.span(), &key(k), "must be at least 1 second"),
            Some(s) => Ok(*s.get_ref()),
            None => Ok(default),
        }
    };

    Ok(Mirror {
        name: n.clone(),
        upstream,
        dest,
        owner,
        owner_uid,
        reader_group,
        reader_gid,
        file_mode,
        dir_mode,
        exclude,
        last,
        bwlimit: m.bwlimit.unwrap_or(0),
        io_timeout: secs(&m.io_timeout, "io_timeout", 600)?,
        timeout: secs(&m.timeout, "timeout", 6 * 3600)?,
        max_delete: m.max_delete.unwrap_or(1000),
        queue_timeout: secs(&m.queue_timeout, "queue_timeout", 3 * 3600)?,
    })
}

pub const VERBS: &[&str] = &["sync", "status", "help"];

fn validate_key(
    src: &Source,
    name: &Spanned<String>,
    k: RawKey,
    mirrors: &BTreeMap<String, Mirror>,
) -> Result<KeyConfig> {
    let n = name.get_ref().clone();
    if !valid_name(&n) {
        return src.err(
            name.span(),
            &format!("key.{n}"),
            "key names follow the mirror name rules",
        );
    }
    let mut verbs = Vec::new();
    for v in &k.verbs {
        if !VERBS.contains(&v.get_ref().as_str()) {
            return src.err(
                v.span(),
                &format!("key.{n}.verbs"),
                format!(
                    "unknown verb {:?} (known: {})",
                    v.get_ref(),
                    VERBS.join(", ")
                ),
            );
        }
        verbs.push(v.get_ref().clone());
    }
    let mut ms = Vec::new();
    for m in &k.mirrors {
        if !mirrors.contains_key(m.get_ref()) {
            return src.err(
                m.span(),
                &format!("key.{n}.mirrors"),
                format!("no mirror named {:?} in this file", m.get_ref()),
            );
        }
        ms.push(m.get_ref().clone());
    }
    let mut from = Vec::new();
    for f in &k.from {
        match f.get_ref().parse::<crate::gate::policy::Cidr>() {
            Ok(c) => from.push(c),
            Err(why) => return src.err(f.span(), &format!("key.{n}.from"), why),
        }
    }
    Ok(KeyConfig {
        name: n,
        verbs,
        mirrors: ms,
        from,
    })
}
