//! The files syncgate leaves for the outside world (the metrics file, the
//! status page) are replaced atomically: a new file of a unique name in the
//! same directory (created `O_EXCL | O_NOFOLLOW`: nothing planted there is
//! followed or reused), mode 0644, written, fsynced and renamed over the
//! old one.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::libc;

use crate::error::{Error, IoContext, Result};

/// Replaces `dir/name` with `bytes`: a new file (unique name, `O_EXCL |
/// O_NOFOLLOW`, mode 0644), fsync, rename.
pub fn replace(dir: &Path, name: &str, bytes: &[u8], hint: &str) -> Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{name}.syncgate-{}-{nanos:09}.tmp",
        std::process::id()
    ));
    replace_via(&tmp, &dir.join(name), bytes, hint)
}

fn replace_via(tmp: &Path, target: &Path, bytes: &[u8], hint: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
        .context(|| format!("cannot create {} ({hint})", tmp.display()))?;
    let written = f
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|_| f.write_all(bytes))
        .and_then(|_| f.sync_all())
        .and_then(|_| std::fs::rename(tmp, target));
    if let Err(e) = written {
        let _ = std::fs::remove_file(tmp);
        return Err(Error::io(format!("cannot write {}", target.display()), e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTML: &str = "index.html";
    const HINT: &str = "is status_page writable by this account?";

    #[test]
    fn files_are_replaced_with_mode_0644_and_a_planted_symlink_is_not_followed() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join(HTML)).unwrap();
        replace(d.path(), HTML, b"<p>one</p>", HINT).unwrap();
        replace(d.path(), HTML, b"<p>two</p>", HINT).unwrap();
        let md = std::fs::symlink_metadata(d.path().join(HTML)).unwrap();
        assert!(md.file_type().is_file());
        assert_eq!(md.mode() & 0o7777, 0o644);
        assert_eq!(std::fs::read(d.path().join(HTML)).unwrap(), b"<p>two</p>");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");
        // Something planted at the temporary name is neither followed nor
        // reused.
        let tmp = d.path().join(".planted.tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let e = replace_via(&tmp, &d.path().join(HTML), b"x", HINT).unwrap_err();
        assert!(e.to_string().contains("cannot create"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(d.path().join(HTML)).unwrap(), b"<p>two</p>");
        std::fs::remove_file(&tmp).unwrap();
    }
}
