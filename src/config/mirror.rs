//! One `[mirror.NAME]` table: raw → validated [`Mirror`].

use std::path::PathBuf;

use toml::Spanned;

use super::duration::RawDuration;
use super::names;
use super::names::{lookup_gid, lookup_uid, MirrorName};
use super::paths::{is_clean_absolute, no_control};
use super::perm::{parse_mode, PermPolicy};
use super::raw::{RawMirror, Source};
use super::{
    Mirror, Privilege, Upstream, DEBIAN_CHANGE_MARKER, DEBIAN_LAST, DEFAULT_BUSY_MARKER,
    DEFAULT_FULL_EVERY, DEFAULT_LAST,
};
use crate::error::Result;

/// Checks one mirror table; every error names `mirror.NAME.KEY`.
pub(super) fn validate_mirror(
    src: &Source,
    name: &Spanned<String>,
    m: RawMirror,
    privilege: Privilege,
    login_user: &str,
) -> Result<Mirror> {
    let n = name.get_ref().clone();
    let key = |k: &str| format!("mirror.{n}.{k}");
    if !MirrorName::is_valid(&n) {
        return src.err(
            name.span(),
            &format!("mirror.{n}"),
            "mirror names use lowercase letters, digits, '.', '_' and '-', start with a letter or digit, and have at most 64 characters",
        );
    }
    let upstream = upstream(src, &m.upstream, &key("upstream"))?;
    let dest = dest(src, &m.dest, &upstream, &key("dest"))?;

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

    let perm = perm_policy(src, &m, owner_uid, reader_gid, &key)?;
    let publish = super::publish::publish(src, &m, &key)?;

    let pattern = |p: &Spanned<String>, k: &str| pattern(src, p, &key(k));
    let exclude = m
        .exclude
        .iter()
        .map(|p| pattern(p, "exclude"))
        .collect::<Result<Vec<_>>>()?;
    let debian = match &m.profile {
        Some(p) if p.get_ref() == "debian" => true,
        Some(p) => {
            return src.err(
                p.span(),
                &key("profile"),
                format!("{:?} is not a profile (known: \"debian\")", p.get_ref()),
            )
        }
        None => false,
    };
    let last = match &m.last {
        Some(v) => v
            .iter()
            .map(|p| pattern(p, "last"))
            .collect::<Result<Vec<_>>>()?,
        None if debian => DEBIAN_LAST.iter().map(|s| s.to_string()).collect(),
        None => DEFAULT_LAST.iter().map(|s| s.to_string()).collect(),
    };
    let trace_host = match &m.trace_host {
        Some(h) if names::valid_host(h.get_ref()) => Some(h.get_ref().clone()),
        Some(h) => {
            return src.err(
                h.span(),
                &key("trace_host"),
                format!("{:?} is not a host name", h.get_ref()),
            )
        }
        None => None,
    };
    let busy_marker = match &m.busy_marker {
        Some(v) => v
            .iter()
            .map(|p| {
                let v = pattern(p, "busy_marker")?;
                if v.contains('/') {
                    return src.err(
                        p.span(),
                        &key("busy_marker"),
                        format!("{v:?}: a name at upstream's top, without '/'"),
                    );
                }
                Ok(v)
            })
            .collect::<Result<Vec<_>>>()?,
        None => DEFAULT_BUSY_MARKER.iter().map(|s| s.to_string()).collect(),
    };

    let secs = |v: &Option<Spanned<RawDuration>>, k: &str, default: u64| -> Result<u64> {
        Ok(super::duration::secs(src, v, &key(k), 1, Some(default))?.unwrap_or(default))
    };
    let change_marker = match &m.change_marker {
        Some(p) if p.get_ref().is_empty() => None,
        Some(p) => Some(change_marker(src, p, &key("change_marker"))?),
        None => debian.then(|| DEBIAN_CHANGE_MARKER.to_string()),
    };
    if let (Some(f), None) = (&m.full_every, &change_marker) {
        return src.err(
            f.span(),
            &key("full_every"),
            "only means something with a change_marker (every run walks the tree without one)",
        );
    }

    let fanout = super::hub::fanout(
        src,
        &n,
        super::hub::RawFanout {
            cascade: &m.cascade,
            require: &m.require,
            push_delay: &m.push_delay,
            downstream: m.downstream,
        },
        login_user,
    )?;

    Ok(Mirror {
        name: n.clone(),
        upstream,
        dest,
        owner,
        owner_uid,
        reader_group,
        reader_gid,
        file_mode: perm.file_mode,
        dir_mode: perm.dir_mode,
        exclude,
        last,
        bwlimit: m.bwlimit.unwrap_or(0),
        io_timeout: secs(&m.io_timeout, "io_timeout", 600)?,
        timeout: secs(&m.timeout, "timeout", 6 * 3600)?,
        max_delete: m.max_delete.unwrap_or(1000),
        queue_timeout: secs(&m.queue_timeout, "queue_timeout", 3 * 3600)?,
        max_waiting: match &m.max_waiting {
            Some(v) => max_waiting(src, v, &key("max_waiting"))?,
            None => DEFAULT_MAX_WAITING,
        },
        trace: m.trace.unwrap_or(debian),
        trace_host,
        busy_marker,
        busy_wait: secs(&m.busy_wait, "busy_wait", 3600)?,
        publish,
        full_every: secs(&m.full_every, "full_every", DEFAULT_FULL_EVERY)?,
        change_marker,
        max_age: super::duration::secs(src, &m.max_age, &key("max_age"), 60, None)?,
        fanout,
    })
}

/// `change_marker`: a file's path relative to upstream's root, as rsync
/// filter rules name it: clean (no leading '/', no '.', '..' or empty
/// component), and without rsync's wildcards or control characters.
fn change_marker(src: &Source, p: &Spanned<String>, key: &str) -> Result<String> {
    let v = p.get_ref();
    let clean = !v.starts_with('/')
        && v.split('/').all(|c| !matches!(c, "" | "." | ".."))
        && no_control(v)
        && !v.contains(['*', '?', '[', '\\']);
    if !clean {
        return src.err(
            p.span(),
            key,
            format!("{v:?}: want a file's path relative to upstream's root, like \"project/trace/master\" (no leading '/', no '..', no wildcards)"),
        );
    }
    Ok(v.clone())
}

/// How many SSH requests may wait for one mirror unless `max_waiting` says.
pub const DEFAULT_MAX_WAITING: u64 = 64;

/// `max_waiting` (of a mirror or a key): at least 1.
pub(super) fn max_waiting(src: &Source, v: &Spanned<u64>, key: &str) -> Result<u64> {
    if *v.get_ref() == 0 {
        return src.err(
            v.span(),
            key,
            "must be at least 1 (the number of requests that may wait for the lock)",
        );
    }
    Ok(*v.get_ref())
}

/// `rsync://host/module…`, an absolute local path, or `[user@]host:path`.
fn upstream(src: &Source, up: &Spanned<String>, key: &str) -> Result<Upstream> {
    let span = up.span();
    let up = up.get_ref();
    if up.is_empty() || !no_control(up) || up.contains(char::is_whitespace) || up.starts_with('-') {
        return src.err(
            span,
            key,
            "must be an rsync:// URL, an absolute path or host:path, without spaces",
        );
    }
    if let Some(rest) = up.strip_prefix("rsync://") {
        if rest.is_empty() || rest.starts_with('/') {
            return src.err(span, key, "rsync:// URL needs a host and a module");
        }
        return Ok(Upstream::Daemon(up.clone()));
    }
    if up.starts_with('/') {
        let p = PathBuf::from(up);
        if !is_clean_absolute(&p) {
            return src.err(span, key, "local path must be absolute, without '..'");
        }
        return Ok(Upstream::Local(p));
    }
    if let Some((host, path)) = up.split_once(':') {
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_@".contains(&b));
        if !host_ok || path.is_empty() || path.starts_with(':') {
            return src.err(span, key, "expected [user@]host:path");
        }
        return Ok(Upstream::Ssh(up.clone()));
    }
    src.err(
        span,
        key,
        format!("{up:?} is a relative path; use an rsync:// URL, an absolute path or host:path"),
    )
}

/// An absolute path below `/`, not overlapping a local upstream.
fn dest(src: &Source, raw: &Spanned<String>, upstream: &Upstream, key: &str) -> Result<PathBuf> {
    let dest = PathBuf::from(raw.get_ref());
    if !is_clean_absolute(&dest) || dest.parent().is_none() || !no_control(raw.get_ref()) {
        return src.err(
            raw.span(),
            key,
            format!(
                "must be an absolute path below / without '..': {:?}",
                raw.get_ref()
            ),
        );
    }
    if let Upstream::Local(p) = upstream {
        if p.starts_with(&dest) || dest.starts_with(p) {
            return src.err(
                raw.span(),
                key,
                "dest and upstream must not contain each other",
            );
        }
    }
    Ok(dest)
}

/// `file_mode` and `dir_mode` (defaults 0640 and 2750) checked by the
/// [`PermPolicy`] rules, and the whole policy validated.
fn perm_policy(
    src: &Source,
    m: &RawMirror,
    uid: u32,
    gid: u32,
    key: &dyn Fn(&str) -> String,
) -> Result<PermPolicy> {
    let file_mode = match &m.file_mode {
        Some(s) => match parse_mode(s.get_ref()) {
            Some(v) if PermPolicy::check_file_mode(v).is_ok() => v,
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
            Some(v) if PermPolicy::check_dir_mode(v).is_ok() => v,
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
    let policy = PermPolicy {
        uid,
        gid,
        file_mode,
        dir_mode,
    };
    match policy.validate() {
        Ok(()) => Ok(policy),
        Err(why) => src.err(m.owner.span(), &key("owner"), why),
    }
}

/// An rsync filter pattern without a rule prefix (`+ `, `- `, `! `, `: `).
fn pattern(src: &Source, p: &Spanned<String>, key: &str) -> Result<String> {
    let v = p.get_ref();
    if v.is_empty()
        || !no_control(v)
        || v.starts_with(['+', '-', '!', ':']) && v.get(1..2) == Some(" ")
    {
        return src.err(p.span(), key, format!("{v:?} is not a plain rsync pattern"));
    }
    Ok(v.clone())
}
