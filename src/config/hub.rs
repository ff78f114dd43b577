//! A hub's downstream mirrors: `[hub]` (how this host pushes) and
//! `[mirror.NAME.downstream.LABEL]` (whom it pushes, and how), validated
//! into [`Hub`] and [`Fanout`].

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::duration::{self, RawDuration};
use super::names::{lookup_uid, valid_host, MirrorName};
use super::paths::is_clean_absolute;
use super::raw::Source;
use crate::error::Result;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHub {
    pub known_hosts: Spanned<String>,
    pub max_parallel: Option<Spanned<u64>>,
    pub ssh: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDownstream {
    pub host: Spanned<String>,
    pub port: Option<Spanned<u64>>,
    pub user: Spanned<String>,
    pub archive: Option<Spanned<String>>,
    pub key: Spanned<String>,
    pub kind: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub timeout: Option<Spanned<RawDuration>>,
}

/// How this host pushes its downstreams.
#[derive(Debug, Clone)]
pub struct Hub {
    /// ssh's `UserKnownHostsFile`: the downstreams' host keys. Nothing else
    /// is trusted (`StrictHostKeyChecking=yes`, no global file).
    pub known_hosts: PathBuf,
    /// Pushes at once, per fan-out.
    pub max_parallel: usize,
    pub ssh: PathBuf,
}

pub const DEFAULT_MAX_PARALLEL: u64 = 8;
/// runmirrors' `PUSHDELAY`.
pub const DEFAULT_PUSH_DELAY: u64 = 600;
pub const DEFAULT_PUSH_TIMEOUT: u64 = 3600;

/// Whether the builder's request waits for the downstream pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cascade {
    /// The request returns when its pushes have ended (`require` counts).
    Wait,
    /// The request returns after the local publish; a detached
    /// `syncgate push` does the pushes.
    Detach,
}

/// What answers on the downstream's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownstreamKind {
    /// syncgate: answers when its sync is done; its exit status is its result.
    Syncgate,
    /// Debian's ftpsync: answers at once and syncs in the background; only
    /// ssh's 255 is a failure (runmirrors' rule).
    Ftpsync,
}

/// runmirrors' push types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushMode {
    /// `sync:all`.
    All,
    /// `sync:stage1` to every staged downstream, wait, then `sync:stage2`.
    Staged,
    /// As staged, with `sync:mhop`: the downstream pushes its own stage 1
    /// down before it answers.
    Mhop,
}

macro_rules! words {
    ($t:ty { $($v:ident = $s:literal),* $(,)? }) => {
        impl $t {
            pub const WORDS: &'static [&'static str] = &[$($s),*];
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
            fn parse(s: &str) -> Option<$t> {
                match s { $($s => Some(<$t>::$v),)* _ => None }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
words!(Cascade { Wait = "wait", Detach = "detach" });
words!(DownstreamKind { Syncgate = "syncgate", Ftpsync = "ftpsync" });
words!(PushMode { All = "all", Staged = "staged", Mhop = "mhop" });

impl PushMode {
    /// Whether this downstream gets two stages.
    pub fn staged(self) -> bool {
        self != PushMode::All
    }
}

/// One downstream mirror.
#[derive(Debug, Clone)]
pub struct Downstream {
    /// The table's label: `[mirror.NAME.downstream.LABEL]`.
    pub name: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The archive name on the downstream (`sync:archive:ARCHIVE`).
    pub archive: String,
    /// The push key (a private key file).
    pub key: PathBuf,
    pub kind: DownstreamKind,
    pub mode: PushMode,
    /// Seconds one ssh push may take before it is killed.
    pub timeout: u64,
}

/// A mirror's downstreams and how it pushes them.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub downstreams: Vec<Downstream>,
    pub cascade: Cascade,
    /// With `cascade = "wait"`: downstreams that must get the release for
    /// the request to succeed.
    pub require: u64,
    /// Seconds a staged push waits for every stage 1 before stage 2.
    pub push_delay: u64,
}

impl Default for Fanout {
    fn default() -> Fanout {
        Fanout {
            downstreams: Vec::new(),
            cascade: Cascade::Detach,
            require: 0,
            push_delay: DEFAULT_PUSH_DELAY,
        }
    }
}

fn word<T>(
    src: &Source,
    v: &Option<Spanned<String>>,
    key: &str,
    parse: fn(&str) -> Option<T>,
    words: &[&str],
    default: T,
) -> Result<T> {
    match v {
        None => Ok(default),
        Some(s) => match parse(s.get_ref()) {
            Some(t) => Ok(t),
            None => src.err(
                s.span(),
                key,
                format!("{:?} is not one of: {}", s.get_ref(), words.join(", ")),
            ),
        },
    }
}

pub(super) fn hub(src: &Source, raw: RawHub) -> Result<Hub> {
    let path = |s: &Spanned<String>, k: &str| -> Result<PathBuf> {
        let p = PathBuf::from(s.get_ref());
        if !is_clean_absolute(&p) {
            return src.err(s.span(), k, "must be an absolute path without '..'");
        }
        Ok(p)
    };
    let known_hosts = path(&raw.known_hosts, "hub.known_hosts")?;
    let ssh = match &raw.ssh {
        Some(s) => path(s, "hub.ssh")?,
        None => PathBuf::from("/usr/bin/ssh"),
    };
    let max_parallel = match &raw.max_parallel {
        Some(v) if !(1..=256).contains(v.get_ref()) => {
            return src.err(v.span(), "hub.max_parallel", "must be between 1 and 256")
        }
        Some(v) => *v.get_ref(),
        None => DEFAULT_MAX_PARALLEL,
    };
    Ok(Hub {
        known_hosts,
        max_parallel: max_parallel as usize,
        ssh,
    })
}

/// The fan-out keys of `[mirror.NAME]`.
pub(super) struct RawFanout<'a> {
    pub cascade: &'a Option<Spanned<String>>,
    pub require: &'a Option<Spanned<u64>>,
    pub push_delay: &'a Option<Spanned<RawDuration>>,
    pub downstream: std::collections::BTreeMap<Spanned<String>, RawDownstream>,
}

pub(super) fn fanout(
    src: &Source,
    mirror: &str,
    raw: RawFanout,
    login_user: &str,
) -> Result<Fanout> {
    let key = |k: &str| format!("mirror.{mirror}.{k}");
    let cascade = word(
        src,
        raw.cascade,
        &key("cascade"),
        Cascade::parse,
        Cascade::WORDS,
        Cascade::Detach,
    )?;
    let push_delay = duration::secs(
        src,
        raw.push_delay,
        &key("push_delay"),
        1,
        Some(DEFAULT_PUSH_DELAY),
    )?
    .unwrap_or(DEFAULT_PUSH_DELAY);
    let mut downstreams = Vec::new();
    for (label, d) in raw.downstream {
        downstreams.push(downstream(src, mirror, &label, d, login_user)?);
    }
    let require = match raw.require {
        None => 0,
        Some(r) if cascade == Cascade::Detach && *r.get_ref() > 0 => {
            return src.err(
                r.span(),
                &key("require"),
                "needs cascade = \"wait\" (a detached push cannot change the request's result)",
            )
        }
        Some(r) if *r.get_ref() > downstreams.len() as u64 => {
            return src.err(
                r.span(),
                &key("require"),
                format!(
                    "{} is more than the {} downstreams configured",
                    r.get_ref(),
                    downstreams.len()
                ),
            )
        }
        Some(r) => *r.get_ref(),
    };
    Ok(Fanout {
        downstreams,
        cascade,
        require,
        push_delay,
    })
}

fn downstream(
    src: &Source,
    mirror: &str,
    label: &Spanned<String>,
    d: RawDownstream,
    login_user: &str,
) -> Result<Downstream> {
    let name = label.get_ref().clone();
    let key = |k: &str| format!("mirror.{mirror}.downstream.{name}.{k}");
    if !MirrorName::is_valid(&name) {
        return src.err(
            label.span(),
            &format!("mirror.{mirror}.downstream.{name}"),
            "downstream labels use lowercase letters, digits, '.', '_' and '-', and start with a letter or digit",
        );
    }
    let host = d.host.get_ref().clone();
    if !(valid_host(&host) || host.parse::<IpAddr>().is_ok()) {
        return src.err(
            d.host.span(),
            &key("host"),
            format!("{host:?} is not a host name or an IP address"),
        );
    }
    let port = match &d.port {
        Some(p) if !(1..=65535).contains(p.get_ref()) => {
            return src.err(p.span(), &key("port"), "must be between 1 and 65535")
        }
        Some(p) => *p.get_ref() as u16,
        None => 22,
    };
    let user = d.user.get_ref().clone();
    if !super::names::valid_user_name(&user) {
        return src.err(
            d.user.span(),
            &key("user"),
            format!("{user:?} is not a valid user name"),
        );
    }
    let archive = match &d.archive {
        Some(a) if !MirrorName::is_valid(a.get_ref()) => {
            return src.err(
                a.span(),
                &key("archive"),
                format!(
                    "{:?} is not an archive name (the mirror-name grammar)",
                    a.get_ref()
                ),
            )
        }
        Some(a) => a.get_ref().clone(),
        None => mirror.to_string(),
    };
    let key_path = PathBuf::from(d.key.get_ref());
    if !is_clean_absolute(&key_path) {
        return src.err(
            d.key.span(),
            &key("key"),
            "must be an absolute path without '..'",
        );
    }
    if let Err(why) = key_file_problem(&key_path, login_user) {
        return src.err(d.key.span(), &key("key"), why);
    }
    let kind = word(
        src,
        &d.kind,
        &key("kind"),
        DownstreamKind::parse,
        DownstreamKind::WORDS,
        DownstreamKind::Syncgate,
    )?;
    let mode = word(
        src,
        &d.mode,
        &key("mode"),
        PushMode::parse,
        PushMode::WORDS,
        PushMode::All,
    )?;
    let timeout = duration::secs(
        src,
        &d.timeout,
        &key("timeout"),
        1,
        Some(DEFAULT_PUSH_TIMEOUT),
    )?
    .unwrap_or(DEFAULT_PUSH_TIMEOUT);
    Ok(Downstream {
        name,
        host,
        port,
        user,
        archive,
        key: key_path,
        kind,
        mode,
        timeout,
    })
}

/// A push key must be a regular file that only root and the account that
/// pushes can read. Checked fully by root and by the login account (the
/// accounts that push); the image owner's side loads the same file but
/// never pushes, and may not even be able to see the key.
fn key_file_problem(path: &Path, login_user: &str) -> std::result::Result<(), String> {
    let me = nix::unistd::geteuid().as_raw();
    let login = lookup_uid(login_user);
    if me != 0 && Some(me) != login {
        return Ok(());
    }
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) => return Err(format!("cannot use the push key {}: {e}", path.display())),
    };
    if !md.file_type().is_file() {
        return Err(format!(
            "{} is not a regular file (symlinks are refused)",
            path.display()
        ));
    }
    if md.uid() != 0 && Some(md.uid()) != login {
        return Err(format!(
            "{} is owned by uid {}; a push key belongs to root or to {login_user}",
            path.display(),
            md.uid()
        ));
    }
    if md.mode() & 0o077 != 0 {
        return Err(format!(
            "{} has mode {:04o}: a push key must not be readable by group or others; fix: chmod 0600 {}",
            path.display(),
            md.mode() & 0o7777,
            path.display()
        ));
    }
    if let Err(e) = std::fs::File::open(path) {
        return Err(format!("cannot read the push key {}: {e}", path.display()));
    }
    Ok(())
}
