//! Whether the owner side may trust its config and the programs it runs:
//! it runs as the image owner with only a mirror name from the caller, so
//! in production the config and every program it starts (rsync, and ssh
//! for `ssh://` upstreams), and every directory above them, must be root's.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::{Config, Mirror, Privilege, Upstream};
use crate::error::{Error, Result};

/// Why someone other than root could change what `path` holds, if anyone
/// could. `what` names it in the answer ("the config file", "the rsync
/// program"). The file and every directory above it, both along the path as
/// given and along the path its symlinks resolve to, must be owned by root
/// and not writable by group or others; a write-protected parent is not
/// enough when a directory further up can be renamed away. A root-owned
/// sticky directory (`/tmp`) is fine above the file: nobody else may rename
/// or remove root's entries in it. Returns the offending path and why.
pub fn untrusted_path(path: &Path, what: &str) -> Option<(std::path::PathBuf, String)> {
    let real = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) => return Some((path.to_path_buf(), format!("cannot resolve it: {e}"))),
    };
    for (top, given) in [(path, true), (real.as_path(), false)] {
        for (i, p) in top.ancestors().enumerate() {
            if p.as_os_str().is_empty() {
                continue;
            }
            let md = match std::fs::symlink_metadata(p) {
                Ok(md) => md,
                Err(e) => return Some((p.to_path_buf(), format!("cannot stat it: {e}"))),
            };
            let mode = md.mode() & 0o7777;
            let ft = md.file_type();
            let bad = if md.uid() != 0 {
                Some(format!("it is owned by uid {}, not root", md.uid()))
            } else if ft.is_symlink() {
                // A symlink's own mode means nothing; its directory is checked next.
                None
            } else if i == 0 && !ft.is_file() {
                Some("it is not a regular file".to_string())
            } else if mode & 0o022 != 0 && !(i > 0 && ft.is_dir() && mode & 0o1000 != 0) {
                Some(format!("it is writable by group or others (mode {mode:o})"))
            } else {
                None
            };
            if let Some(why) = bad {
                let whose = if i == 0 && given {
                    what.to_string()
                } else if i == 0 {
                    format!("the file {what} {} resolves to", path.display())
                } else {
                    format!("a directory above {what} {}", path.display())
                };
                return Some((p.to_path_buf(), format!("{whose}: {why}")));
            }
        }
    }
    None
}

/// Refuses to act on a config the caller could have written, or to run a
/// program (rsync, ssh) someone other than root could have replaced.
pub fn check_trust(cfg: &Config, mirror: &Mirror) -> Result<()> {
    if cfg.privilege != Privilege::Sudo {
        return Ok(());
    }
    let uid = nix::unistd::getuid().as_raw();
    if uid != mirror.owner_uid {
        return Err(Error::Usage(format!(
            "this command runs as the owner of mirror {} ({}, uid {}), not uid {uid}",
            mirror.name, mirror.owner, mirror.owner_uid
        )));
    }
    if let Some((p, why)) = untrusted_path(&cfg.path, "the config file") {
        return Err(Error::Config(format!(
            "{} must be owned by root and not writable by group or others, and so must every directory above it ({why}); refusing to run as {}",
            p.display(),
            mirror.owner
        )));
    }
    for (prog, what) in programs(cfg, mirror) {
        if let Some((p, why)) = untrusted_path(prog, &format!("the {what} program")) {
            return Err(Error::Config(format!(
                "{} must be owned by root and not writable by group or others, and so must every directory above it ({why}): whoever can replace it runs code as {}; refusing to run {what} as {}",
                p.display(),
                mirror.owner,
                mirror.owner
            )));
        }
    }
    Ok(())
}

/// The programs the owner side starts for `mirror`, each with its name.
fn programs<'a>(cfg: &'a Config, mirror: &Mirror) -> Vec<(&'a Path, &'static str)> {
    let mut v = vec![(cfg.rsync.as_path(), "rsync")];
    if matches!(mirror.upstream, Upstream::Ssh(_)) {
        v.push((Path::new(crate::owner::rsync::argv::SSH), "ssh"));
    }
    v
}
