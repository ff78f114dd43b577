//! From a checksum file's entries to files to hash: each name must stay in
//! the checksum file's directory (no absolute name, no `..`, no symlink out
//! of it), must exist as a regular file, and is hashed only when this run
//! brought it (under `verify = "changed"`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use super::hash::{Expect, Job};
use super::sums::Entry;
use super::walk::show;

/// The files to hash, one job per inode.
#[derive(Default)]
pub struct Jobs {
    by_inode: BTreeMap<(u64, u64), Job>,
}

impl Jobs {
    pub fn add(&mut self, t: Target) {
        self.by_inode
            .entry((t.md.dev(), t.md.ino()))
            .or_insert_with(|| Job {
                path: t.path,
                dev: t.md.dev(),
                ino: t.md.ino(),
                size: t.md.len(),
                expects: Vec::new(),
            })
            .expects
            .push(t.expect);
    }

    pub fn into_vec(self) -> Vec<Job> {
        self.by_inode.into_values().collect()
    }
}

/// A listed file that needs hashing.
pub struct Target {
    path: std::path::PathBuf,
    md: Metadata,
    expect: Expect,
}

/// Where a checksum file is and what it is compared with.
pub struct Place<'a> {
    /// The snapshot root, canonical.
    pub root: &'a Path,
    /// The checksum file, relative to `root`.
    pub sums: &'a Path,
    /// The live snapshot to skip files hard-linked from (`None`: hash all).
    pub live: Option<&'a Path>,
}

/// Whether the file at `rel` (relative to the snapshot roots) with
/// metadata `md` is new in this run: not the same inode as the live
/// snapshot's file at the same path.
pub fn changed(live: Option<&Path>, rel: &Path, md: &Metadata) -> bool {
    match live.map(|l| std::fs::symlink_metadata(l.join(rel))) {
        Some(Ok(old)) => old.dev() != md.dev() || old.ino() != md.ino(),
        _ => true,
    }
}

/// Resolves one entry: `Ok(None)` when it is fine and unchanged, the
/// target when it must be hashed, the failure otherwise.
pub fn resolve(at: &Place, e: &Entry) -> Result<Option<Target>, String> {
    let dir_rel = at.sums.parent().unwrap_or(Path::new(""));
    let name = Path::new(OsStr::from_bytes(&e.name));
    let shown = show(&dir_rel.join(name));
    let sums = show(at.sums);
    let leaves = |how: &str| {
        format!(
            "{shown}: {sums} line {} names a file that leaves the directory ({how})",
            e.line
        )
    };
    if name.is_absolute() {
        return Err(leaves("an absolute name"));
    }
    if name.components().any(|c| c == Component::ParentDir) {
        return Err(leaves("a '..' component"));
    }
    let dir = at.root.join(dir_rel);
    let real = match std::fs::canonicalize(dir.join(name)) {
        Ok(p) => p,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{shown}: listed in {sums}, but missing"))
        }
        Err(err) => {
            return Err(format!(
                "{shown} (listed in {sums}): cannot resolve it: {err}"
            ))
        }
    };
    if !real.starts_with(&dir) {
        return Err(leaves("through a symlink"));
    }
    let md = std::fs::symlink_metadata(&real)
        .map_err(|err| format!("{shown} (listed in {sums}): cannot stat it: {err}"))?;
    if !md.is_file() {
        return Err(format!("{shown}: listed in {sums}, but not a regular file"));
    }
    let rel = real.strip_prefix(at.root).unwrap_or(&real);
    if !changed(at.live, rel, &md) {
        return Ok(None);
    }
    let expect = Expect {
        algo: e.algo,
        digest: e.digest.clone(),
        shown,
        sums,
    };
    Ok(Some(Target {
        path: real,
        md,
        expect,
    }))
}
