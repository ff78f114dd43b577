//! Debian's trace file, `project/trace/HOST`: written by the owner with
//! each publish when the mirror has `trace = true` (`profile = "debian"`),
//! in the format Debian's ftpsync writes and its mirror checker reads. It
//! goes in atomically (a temporary file renamed into place); every rsync
//! excludes and protects it, and the plan does not count it as an entry
//! upstream lacks.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::{Mirror, Upstream};
use crate::owner::rsync::Kinds;

/// The directory of trace files, relative to the tree's root.
pub const TRACE_DIR: &str = "project/trace";

/// This mirror's trace file name: `trace_host`, or this machine's name.
pub fn host(m: &Mirror) -> String {
    if let Some(h) = &m.trace_host {
        return h.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| crate::config::valid_host(h))
        .unwrap_or_else(|| "localhost".into())
}

/// The trace file's path relative to the root, when the mirror writes one.
pub fn rel_path(m: &Mirror) -> Option<PathBuf> {
    m.trace.then(|| Path::new(TRACE_DIR).join(host(m)))
}

/// `counted` (the plan's count of `root`) without the trace file, which
/// upstream never has.
pub fn discount(m: &Mirror, root: &Path, counted: Option<Kinds>) -> Option<Kinds> {
    let mut k = counted?;
    if let Some(rel) = rel_path(m) {
        if std::fs::symlink_metadata(root.join(rel)).is_ok_and(|md| md.is_file()) {
            k.reg = k.reg.saturating_sub(1);
        }
    }
    Some(k)
}

/// What a trace file says about one publish.
pub struct Publish {
    /// Seconds since the epoch.
    pub started: u64,
    pub bytes_received: u64,
}

/// Writes the trace file into the tree at `root` (no-op unless `trace`).
pub fn write(m: &Mirror, root: &Path, p: &Publish) -> Result<(), String> {
    let Some(rel) = rel_path(m) else {
        return Ok(());
    };
    let dir = root.join(TRACE_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(m.dir_mode & 0o7777)
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let now = crate::run::now();
    let serial = std::fs::read_to_string(dir.join("master"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Archive serial: ").map(str::to_owned))
        });
    let mut text = format!("{}\n", date_cmd(now));
    text.push_str(&format!("Date: {}\n", rfc2822(now)));
    text.push_str(&format!("Date-Started: {}\n", rfc2822(p.started)));
    if let Some(s) = serial {
        text.push_str(&format!("Archive serial: {s}\n"));
    }
    text.push_str(&format!(
        "Creator: syncgate {}\nRunning on host: {}\nArchitectures-Configuration: ALL\nUpstream-mirror: {}\n",
        env!("CARGO_PKG_VERSION"),
        host(m),
        upstream_host(&m.upstream)
    ));
    let secs = now.saturating_sub(p.started);
    text.push_str(&format!(
        "Total bytes received in rsync: {}\nTotal time spent in rsync: {secs}\n",
        p.bytes_received
    ));
    if let Some(rate) = p.bytes_received.checked_div(secs) {
        text.push_str(&format!("Average rate: {rate} B/s\n"));
    }
    let target = root.join(&rel);
    let tmp = dir.join(format!(".{}.syncgate-new", host(m)));
    // rsync compares directory mtimes too: the trace directory keeps
    // upstream's, or the next plan would see a change that is not one.
    let mtime = std::fs::metadata(&dir).ok().map(|md| {
        use std::os::unix::fs::MetadataExt;
        nix::sys::time::TimeSpec::new(md.mtime(), md.mtime_nsec())
    });
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(m.file_mode & 0o777)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, &target)
        .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    if let Some(t) = mtime {
        let _ = nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &dir,
            &nix::sys::time::TimeSpec::UTIME_OMIT,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
    }
    Ok(())
}

/// The host part of an upstream, as ftpsync's `Upstream-mirror:` says it.
fn upstream_host(u: &Upstream) -> String {
    match u {
        Upstream::Daemon(s) => s
            .trim_start_matches("rsync://")
            .split(['/', ':'])
            .next()
            .unwrap_or("unknown")
            .to_string(),
        Upstream::Ssh(s) => s
            .split(':')
            .next()
            .map(|h| h.rsplit('@').next().unwrap_or(h).to_string())
            .unwrap_or_else(|| "unknown".into()),
        Upstream::Local(_) => "localhost".into(),
    }
}

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// (weekday, day, month name, year, "HH:MM:SS") of `secs` (UTC).
fn parts(secs: u64) -> (&'static str, u64, &'static str, String, String) {
    let iso = crate::sys::timefmt::iso(secs); // 2026-12-03T02:15:30Z
    let month: usize = iso[5..7].parse().unwrap_or(1);
    let day: u64 = iso[8..10].parse().unwrap_or(1);
    (
        DAYS[((secs / 86_400) % 7) as usize],
        day,
        MONTHS[month.clamp(1, 12) - 1],
        iso[..4].to_string(),
        iso[11..19].to_string(),
    )
}

/// `Thu, 03 Dec 2026 02:15:30 +0000` (`date -u -R`).
fn rfc2822(secs: u64) -> String {
    let (wd, d, mo, y, t) = parts(secs);
    format!("{wd}, {d:02} {mo} {y} {t} +0000")
}

/// `Thu Dec  3 02:15:30 UTC 2026` (`date -u`, the first line ftpsync writes).
fn date_cmd(secs: u64) -> String {
    let (wd, d, mo, y, t) = parts(secs);
    format!("{wd} {mo} {d:>2} {t} UTC {y}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_date_prints_them() {
        // 2026-12-03T02:15:30Z was a Thursday.
        let t = 1_796_264_130;
        assert_eq!(crate::sys::timefmt::iso(t), "2026-12-03T02:15:30Z");
        assert_eq!(rfc2822(t), "Thu, 03 Dec 2026 02:15:30 +0000");
        assert_eq!(date_cmd(t), "Thu Dec  3 02:15:30 UTC 2026");
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn the_upstream_host_is_named_as_ftpsync_names_it() {
        assert_eq!(
            upstream_host(&Upstream::Daemon(
                "rsync://ftp.de.debian.org/debian/".into()
            )),
            "ftp.de.debian.org"
        );
        assert_eq!(
            upstream_host(&Upstream::Daemon("rsync://h:8873/m".into())),
            "h"
        );
        assert_eq!(
            upstream_host(&Upstream::Ssh("sync@push.example.org:/srv/debian".into())),
            "push.example.org"
        );
        assert_eq!(
            upstream_host(&Upstream::Local("/srv/up".into())),
            "localhost"
        );
    }
}
