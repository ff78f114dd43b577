//! The programs syncgate runs, and the paths that lead to them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::admin::check::Report;
use crate::config::Config;
use crate::config::Privilege;
use crate::runner::argv;
use crate::sys::child::SAFE_PATH;
use std::process::Command;

pub(super) fn check_programs(cfg: &Config, r: &mut Report) {
    let mut progs = vec![
        (cfg.rsync.as_path(), "rsync"),
        (cfg.binary.as_path(), "syncgate"),
    ];
    if cfg.privilege == Privilege::Sudo {
        progs.push((Path::new(argv::SUDO), "sudo"));
    }
    if cfg
        .mirrors
        .values()
        .any(|m| matches!(m.upstream, crate::config::Upstream::Ssh(_)))
    {
        progs.push((Path::new(crate::owner::rsync::argv::SSH), "ssh"));
    }
    for (p, what) in progs {
        match std::fs::metadata(p) {
            Ok(md) if md.is_file() && md.mode() & 0o111 != 0 => {
                let untrusted = match cfg.privilege {
                    Privilege::Sudo => {
                        crate::owner::untrusted_path(p, &format!("the {what} program"))
                    }
                    Privilege::Direct => None,
                };
                match untrusted {
                    Some((bad, why)) => r.fail(
                        format!(
                            "{what} {}: {} {why}: whoever can change it runs code as the mirror owner",
                            p.display(),
                            bad.display()
                        ),
                        format!("chown root:root {0} && chmod go-w {0}", bad.display()),
                    ),
                    None => r.ok(format!(
                        "{what} is present at {}, and it and every directory above it are root's",
                        p.display()
                    )),
                }
            }
            _ => r.fail(
                format!("{what} is missing at {}", p.display()),
                if what == "rsync" {
                    "apt-get install rsync".to_string()
                } else {
                    format!("install {what} at {}", p.display())
                },
            ),
        }
    }
    check_rsync_version(cfg, r);
}

/// The oldest rsync whose `--safe-links` also refuses chained symlinks
/// (a link that is safe alone but escapes through another one).
pub(super) const RSYNC_SAFE_LINKS: (u32, u32) = (3, 4);

/// `(major, minor)` from `rsync --version`'s first line.
pub fn rsync_version(text: &str) -> Option<(u32, u32)> {
    let first = text.lines().next()?;
    let v = first
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let minor = minor.parse().ok()?;
    Some((major, minor))
}

fn check_rsync_version(cfg: &Config, r: &mut Report) {
    let out = Command::new(&cfg.rsync)
        .arg("--version")
        .env_clear()
        .env("PATH", SAFE_PATH)
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    match rsync_version(&text) {
        Some(v) if v >= RSYNC_SAFE_LINKS => r.ok(format!("rsync is version {}.{}", v.0, v.1)),
        Some(v) => r.warn(
            format!(
                "rsync is version {}.{}, older than {}.{}: its --safe-links lets chained symlinks through stage 1 (fix-perms removes them before stage 2, but they are visible until then)",
                v.0, v.1, RSYNC_SAFE_LINKS.0, RSYNC_SAFE_LINKS.1
            ),
            "install rsync 3.4 or newer",
        ),
        None => r.warn(format!("cannot tell the version of {}", cfg.rsync.display()), "check `rsync --version`"),
    }
}
