//! Finding the checksum files of a new snapshot, and opening files in it
//! without following a symlink.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::owner::dest::TEMP_DIR;
use crate::owner::fixperms::MAX_DEPTH;
use crate::owner::publish::glob;

/// Every regular file below `root` whose name matches one of `patterns`,
/// relative to `root`, sorted. Symlinks are not followed; a top-level
/// [`TEMP_DIR`] is skipped.
pub fn checksum_files(root: &Path, patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::new(), 0usize)];
    while let Some((rel, depth)) = stack.pop() {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{} is nested deeper than {MAX_DEPTH} directories",
                show(&rel)
            ));
        }
        let dir = root.join(&rel);
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", show(&dir)))?;
        for e in entries {
            let e = e.map_err(|e| format!("cannot read {}: {e}", show(&dir)))?;
            let name = e.file_name();
            if depth == 0 && name == TEMP_DIR {
                continue;
            }
            let ft = e
                .file_type()
                .map_err(|err| format!("cannot stat {}: {err}", show(&e.path())))?;
            if ft.is_dir() {
                stack.push((rel.join(&name), depth + 1));
            } else if ft.is_file() && matches(&name, patterns) {
                found.push(rel.join(&name));
            }
        }
    }
    found.sort();
    Ok(found)
}

fn matches(name: &OsStr, patterns: &[String]) -> bool {
    patterns.iter().any(|p| glob(p.as_bytes(), name.as_bytes()))
}

/// Opens `path` for reading; fails if its last component is a symlink.
pub fn open_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// A path for a message: control characters escaped, the rest as is
/// (lossy for bytes that are not UTF-8).
pub fn show(path: &Path) -> String {
    show_bytes(path.as_os_str().as_bytes())
}

/// [`show`] for raw bytes.
pub fn show_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(bytes).chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
