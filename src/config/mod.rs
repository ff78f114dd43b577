//! The TOML configuration: parsed strictly, validated fully, and every error
//! names the file, the line and the key (exit 78).
//!
//! ```toml
//! state_dir = "/var/lib/syncgate"
//! privilege = "sudo"           # or "direct"
//! login_user = "syncgate"
//! audit_required = true        # refuse an SSH sync that cannot be audited
//!
//! [mirror.debian-cd]
//! upstream = "rsync://ftp.example.org/debian-cd/"
//! dest = "/srv/mirror/debian-cd"
//! owner = "mirror"
//! reader_group = "www-data"
//! ```
//!
//! The file goes through `raw.rs` (serde, straight from TOML: unknown keys
//! and wrong types) and is then validated key by key: the top level here,
//! `[mirror.NAME]` in `mirror.rs`, `[key.NAME]` in `key.rs`. The
//! vocabularies live once each: mirror names in `names.rs`
//! ([`MirrorName`]), key verbs in `verb.rs` ([`Verb`]), modes and the
//! permission policy in `perm.rs` ([`PermPolicy`]), networks in `cidr.rs`
//! ([`Cidr`]).

mod cidr;
mod duration;
mod facility;
mod hub;
mod key;
mod mirror;
mod names;
mod paths;
mod perm;
mod publish;
mod raw;
mod verb;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use paths::is_clean_absolute;
use raw::{RawSyslog, Source};

pub use cidr::{Cidr, CidrError};
pub use facility::Facility;
pub use hub::{Cascade, Downstream, DownstreamKind, Fanout, Hub, PushMode};
pub use names::{lookup_gid, lookup_uid, valid_host, valid_name, MirrorName, SUBCOMMANDS};
pub use paths::sudoers_safe;
pub use perm::{parse_mode, InvalidPolicy, PermPolicy};
pub use publish::{
    Publish, PublishMode, SignatureProgram, SignatureSpec, VerifyMode, DEFAULT_CHECKSUM_FILES,
    DEFAULT_KEEP,
};
pub use verb::{UnknownVerb, Verb};

pub const DEFAULT_PATH: &str = "/etc/syncgate/syncgate.toml";

/// Patterns published only after everything else (rsync filter syntax).
/// What says an upstream is being updated unless `busy_marker` says.
pub const DEFAULT_BUSY_MARKER: &[&str] = &["Archive-Update-in-Progress-*"];

/// `last` of `profile = "debian"`: what ftpsync holds back from its first
/// stage (the archive's indices), so a Debian archive mirror published in
/// place is consistent with three lines of config.
pub const DEBIAN_LAST: &[&str] = &[
    "Packages*",
    "Sources*",
    "Release*",
    "InRelease",
    "i18n/*",
    "ls-lR*",
    "*.diff/Index",
];

/// `change_marker` of `profile = "debian"`: the archive's master trace
/// file, rewritten by every update of a Debian archive.
pub const DEBIAN_CHANGE_MARKER: &str = "project/trace/master";

/// `full_every` when a change marker is set and it is not.
pub const DEFAULT_FULL_EVERY: u64 = 24 * 3600;

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
    /// Refuse an SSH sync when its decision line could be recorded neither
    /// in syslog nor in the fallback file (default true).
    pub audit_required: bool,
    /// `status_page`: the directory each served request writes
    /// `index.html` and `status.json` into ([`crate::observe::page`]).
    pub status_page: Option<PathBuf>,
    pub syslog: SyslogConfig,
    /// Bytes `MIRROR.history.jsonl` may reach before it is rotated.
    pub history_size: u64,
    /// Where the Prometheus metrics file is written after every request.
    pub metrics_file: Option<PathBuf>,
    pub mirrors: BTreeMap<String, Mirror>,
    pub keys: BTreeMap<String, KeyConfig>,
    /// How this host pushes downstream mirrors (`[hub]`); required when a
    /// mirror has downstreams.
    pub hub: Option<Hub>,
}

#[derive(Debug, Clone)]
pub struct SyslogConfig {
    pub facility: String,
    pub socket: PathBuf,
    /// The state directory: its `audit.log` takes the lines syslog cannot.
    pub fallback_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Mirror {
    /// A valid [`MirrorName`] (checked at load).
    pub name: String,
    pub upstream: Upstream,
    pub dest: PathBuf,
    pub owner: String,
    pub owner_uid: u32,
    pub reader_group: String,
    pub reader_gid: u32,
    /// Checked by [`PermPolicy::check_file_mode`] at load.
    pub file_mode: u32,
    /// Checked by [`PermPolicy::check_dir_mode`] at load.
    pub dir_mode: u32,
    pub exclude: Vec<String>,
    pub last: Vec<String>,
    /// KiB per second; 0 means unlimited.
    pub bwlimit: u64,
    pub io_timeout: u64,
    pub timeout: u64,
    pub max_delete: u64,
    pub queue_timeout: u64,
    /// At most this many SSH requests wait for the mirror's lock; one more
    /// is refused at once (exit 75).
    pub max_waiting: u64,
    /// Write Debian's trace file `project/trace/HOST` with each publish.
    pub trace: bool,
    /// The HOST of the trace file (default: this machine's hostname).
    pub trace_host: Option<String>,
    /// Name patterns (rsync wildcards) of entries at upstream's top that say
    /// it is being updated (Debian's `Archive-Update-in-Progress-*`): a run
    /// waits while one is there, and never copies them.
    pub busy_marker: Vec<String>,
    /// Seconds a run waits for upstream's update to finish before it fails.
    pub busy_wait: u64,
    /// How changes go live (`publish`, `keep`, `verify`, …).
    pub publish: Publish,
    /// Upstream's change marker (`change_marker`): a file, relative to
    /// upstream's root, that changes whenever the tree does. A run whose
    /// marker is as at the last verified publish ends without walking the
    /// tree (src/owner/marker.rs).
    pub change_marker: Option<String>,
    /// Seconds between full walks when a change marker is set (`full_every`).
    pub full_every: u64,
    /// Seconds after the last success at which the mirror is stale
    /// (`status`, `status --check`, metrics); `None`: no freshness rule.
    pub max_age: Option<u64>,
    /// The downstream mirrors pushed after a publish (`[mirror.NAME.downstream.*]`).
    pub fanout: Fanout,
}

impl Mirror {
    /// Where a snapshot-published mirror keeps its snapshots: beside dest,
    /// `PARENT/.NAME.snapshots` (dest's last component), so a snapshot and
    /// the `dest` symlink that names it are on one filesystem.
    pub fn snapshot_root(&self) -> PathBuf {
        let name = self
            .dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.dest
            .parent()
            .unwrap_or(Path::new("/"))
            .join(format!(".{name}.snapshots"))
    }

    /// The `dest` symlink's target for snapshot `id` (relative to dest's
    /// parent, so the layout survives a bind mount or a chroot).
    pub fn snapshot_link_target(&self, id: &str) -> PathBuf {
        let root = self.snapshot_root();
        PathBuf::from(root.file_name().unwrap_or_default()).join(id)
    }

    /// The owner, reader group and modes fix-perms enforces on the tree
    /// (validated when the config was loaded).
    pub fn perm_policy(&self) -> PermPolicy {
        PermPolicy {
            uid: self.owner_uid,
            gid: self.reader_gid,
            file_mode: self.file_mode,
            dir_mode: self.dir_mode,
        }
    }
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
    pub verbs: Vec<Verb>,
    /// Names of mirrors of the same file (checked at load).
    pub mirrors: Vec<String>,
    pub from: Vec<Cidr>,
    /// At most this many of the key's requests wait (for any mirror);
    /// `None`: only the mirror's `max_waiting` applies.
    pub max_waiting: Option<u64>,
    /// Debian's runmirrors pushes with this key: a request that does not
    /// succeed exits 255, the one status runmirrors notices.
    pub runmirrors: bool,
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
        let raw = src.raw()?;

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
        let login_user = login_user(&src, raw.login_user)?;
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
        let binary = binary(&src, raw.binary, privilege)?;
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
        let audit_required = raw.audit_required.unwrap_or(true);
        let status_page = status_page(&src, raw.status_page)?;
        let syslog = syslog(&src, raw.syslog, &state_dir)?;
        let history_size = history_size(&src, raw.history_size)?;
        let metrics_file = match raw.metrics_file {
            Some(m) => {
                let p = PathBuf::from(m.get_ref());
                if !is_clean_absolute(&p) || p.parent().is_none() || !paths::no_control(m.get_ref())
                {
                    return src.err(
                        m.span(),
                        "metrics_file",
                        format!(
                            "must be an absolute file path without '..': {:?}",
                            m.get_ref()
                        ),
                    );
                }
                Some(p)
            }
            None => None,
        };

        let hub = raw.hub.map(|h| hub::hub(&src, h)).transpose()?;
        let mut mirrors = BTreeMap::new();
        for (name, m) in raw.mirror {
            let span = name.span();
            let mirror = mirror::validate_mirror(&src, &name, m, privilege, &login_user)?;
            if hub.is_none() && !mirror.fanout.downstreams.is_empty() {
                return src.err(
                    span,
                    &format!("mirror.{}.downstream", mirror.name),
                    "downstreams need a [hub] table with known_hosts (the downstreams' host keys)",
                );
            }
            mirrors.insert(mirror.name.clone(), mirror);
        }

        let mut keys = BTreeMap::new();
        for (name, k) in raw.key {
            let key = key::validate_key(&src, &name, k, &mirrors)?;
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
            audit_required,
            status_page,
            syslog,
            history_size,
            metrics_file,
            mirrors,
            keys,
            hub,
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

/// `history_size` unless set: 1 MiB, some 2,500 runs.
pub const DEFAULT_HISTORY_SIZE: u64 = 1 << 20;
/// The smallest `history_size`: room for a few runs.
pub const MIN_HISTORY_SIZE: u64 = 4096;

/// `history_size`: bytes, at least [`MIN_HISTORY_SIZE`].
fn history_size(src: &Source, raw: Option<Spanned<i64>>) -> Result<u64> {
    match raw {
        None => Ok(DEFAULT_HISTORY_SIZE),
        Some(v) => match u64::try_from(*v.get_ref()) {
            Ok(n) if n >= MIN_HISTORY_SIZE => Ok(n),
            _ => src.err(
                v.span(),
                "history_size",
                format!("must be a number of bytes, at least {MIN_HISTORY_SIZE} (default {DEFAULT_HISTORY_SIZE})"),
            ),
        },
    }
}

/// `login_user`, default `syncgate`.
fn login_user(src: &Source, raw: Option<Spanned<String>>) -> Result<String> {
    match raw {
        Some(u) => {
            if !names::valid_user_name(u.get_ref()) {
                return src.err(
                    u.span(),
                    "login_user",
                    format!("not a valid user name: {:?}", u.get_ref()),
                );
            }
            Ok(u.into_inner())
        }
        None => Ok("syncgate".to_string()),
    }
}

/// `binary`: sudoers-safe; default `/usr/bin/syncgate` with sudo, this
/// executable with `privilege = "direct"`.
fn binary(src: &Source, raw: Option<Spanned<String>>, privilege: Privilege) -> Result<PathBuf> {
    match raw {
        Some(b) => {
            let p = PathBuf::from(b.get_ref());
            if !is_clean_absolute(&p) || !sudoers_safe(b.get_ref()) {
                return src.err(
                    b.span(),
                    "binary",
                    "must be an absolute path of letters, digits, '/', '.', '_' and '-'",
                );
            }
            Ok(p)
        }
        None if privilege == Privilege::Sudo => Ok(PathBuf::from("/usr/bin/syncgate")),
        None => Ok(std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/syncgate"))),
    }
}

/// `status_page`: an absolute path (the directory must exist when a
/// request writes the page; it is not created).
fn status_page(src: &Source, raw: Option<Spanned<String>>) -> Result<Option<PathBuf>> {
    let Some(d) = raw else { return Ok(None) };
    let p = PathBuf::from(d.get_ref());
    if !is_clean_absolute(&p) || !paths::no_control(d.get_ref()) || p == Path::new("/") {
        return src.err(
            d.span(),
            "status_page",
            format!(
                "must be the absolute path of a directory, without '..': {:?}",
                d.get_ref()
            ),
        );
    }
    Ok(Some(p))
}

/// `[syslog]`: facility (default `authpriv`) and socket (default `/dev/log`);
/// the fallback file lives in `state_dir`.
fn syslog(src: &Source, raw: Option<RawSyslog>, state_dir: &Path) -> Result<SyslogConfig> {
    let (facility, socket) = match raw {
        Some(s) => (s.facility, s.socket),
        None => (None, None),
    };
    let facility = match facility {
        Some(f) => {
            if Facility::parse(f.get_ref()).is_none() {
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
    Ok(SyslogConfig {
        facility,
        socket,
        fallback_dir: state_dir.to_path_buf(),
    })
}
