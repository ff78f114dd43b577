//! Modes and the [`PermPolicy`]: the one definition of what owner, group
//! and modes a published tree may have. The config builds and validates one
//! per mirror ([`crate::config::Mirror::perm_policy`]); fix-perms enforces it.

/// Permission bits plus setuid, setgid and sticky.
const PERM_MASK: u32 = 0o7777;

/// Parses an octal mode as written in the config: 1 to 4 octal digits.
pub fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok()
}

/// Why a [`PermPolicy`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPolicy(pub String);

/// Ownership and modes every entry of the tree must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PermPolicy {
    /// Owner of every entry.
    pub uid: u32,
    /// Group (the readers) of every entry.
    pub gid: u32,
    /// Mode of regular files, e.g. `0o640`. Must let the owner read; no
    /// group/other write, no setuid/setgid/sticky.
    pub file_mode: u32,
    /// Mode of directories, e.g. `0o750` or `0o2750`. Must give the owner
    /// `rwx`; no group/other write; setgid is the only special bit allowed.
    pub dir_mode: u32,
}

impl PermPolicy {
    /// Checks the policy's invariants; fix-perms calls this first and the
    /// config loader refuses a mirror whose policy fails it.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        if self.uid == u32::MAX || self.gid == u32::MAX {
            return Err(InvalidPolicy(format!(
                "uid/gid {}:{} is reserved (-1 means \"unchanged\" to chown)",
                self.uid, self.gid
            )));
        }
        Self::check_file_mode(self.file_mode)?;
        Self::check_dir_mode(self.dir_mode)
    }

    /// The rules for `file_mode`.
    pub fn check_file_mode(mode: u32) -> Result<(), InvalidPolicy> {
        let bad = |why: &str| Err(InvalidPolicy(format!("file_mode {mode:04o} {why}")));
        if mode & !PERM_MASK != 0 {
            return Err(InvalidPolicy(format!(
                "file_mode {mode:o} has bits outside 7777"
            )));
        }
        if mode & 0o022 != 0 {
            return bad("grants group/other write");
        }
        if mode & 0o7000 != 0 {
            return bad("sets setuid/setgid/sticky");
        }
        if mode & 0o400 == 0 {
            return bad("does not let the owner read (needed to publish and check the files)");
        }
        Ok(())
    }

    /// The rules for `dir_mode`.
    pub fn check_dir_mode(mode: u32) -> Result<(), InvalidPolicy> {
        let bad = |why: &str| Err(InvalidPolicy(format!("dir_mode {mode:04o} {why}")));
        if mode & !PERM_MASK != 0 {
            return Err(InvalidPolicy(format!(
                "dir_mode {mode:o} has bits outside 7777"
            )));
        }
        if mode & 0o022 != 0 {
            return bad("grants group/other write");
        }
        if mode & 0o5000 != 0 {
            return bad("sets setuid/sticky (only setgid is allowed)");
        }
        if mode & 0o700 != 0o700 {
            return bad("does not give the owner rwx (needed to walk, repair and sync)");
        }
        Ok(())
    }
}
