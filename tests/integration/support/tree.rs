//! The published tree as the privilege tests judge it: every entry's
//! owner, group and mode, and the write attempts a non-owner must fail.
//! Shared by privilege.rs and snapshot.rs.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::mirror_host::{gid_of, MirrorHost, READER_GROUP};

/// Every entry below `root` (not `root` itself), depth first, not following
/// symlinks.
pub fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, md));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Where a symlink at `link` points, resolved lexically ("" components and
/// "." dropped, ".." pops).
pub fn lexical_target(link: &Path) -> PathBuf {
    let target = fs::read_link(link).unwrap();
    let base = if target.is_absolute() {
        PathBuf::from("/")
    } else {
        link.parent().unwrap().to_path_buf()
    };
    let mut out = PathBuf::new();
    for c in base.join(&target).components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The published tree at `dest` (a directory: with snapshots, pass the
/// resolved snapshot): ownership, modes, no special files, no symlink
/// leaving the tree (privilege.rs, statement 1). Returns the entries.
#[track_caller]
pub fn assert_published_tree(mh: &MirrorHost, dest: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let www = gid_of(READER_GROUP);
    let root_md = fs::symlink_metadata(dest).unwrap();
    assert!(root_md.is_dir());
    assert_eq!(
        (root_md.uid(), root_md.gid()),
        (mh.owner.uid, www),
        "dest itself"
    );
    assert_eq!(root_md.mode() & 0o7777, 0o2750, "dest itself");
    let entries = walk(dest);
    let mut problems = Vec::new();
    for (p, md) in &entries {
        let rel = p.strip_prefix(dest).unwrap().display().to_string();
        if md.uid() != mh.owner.uid || md.gid() != www {
            problems.push(format!("{rel}: owned {}:{}", md.uid(), md.gid()));
        }
        let ft = md.file_type();
        let mode = md.mode() & 0o7777;
        if ft.is_file() {
            if mode != 0o640 {
                problems.push(format!("{rel}: file mode {mode:o}"));
            }
        } else if ft.is_dir() {
            if mode != 0o2750 {
                problems.push(format!("{rel}: dir mode {mode:o}"));
            }
        } else if ft.is_symlink() {
            let t = lexical_target(p);
            if !t.starts_with(dest) {
                problems.push(format!("{rel}: symlink leaves the tree: {}", t.display()));
            }
            // And really (through chains of links), where it resolves.
            if let Ok(real) = fs::canonicalize(p) {
                if !real.starts_with(dest) {
                    problems.push(format!(
                        "{rel}: symlink resolves out of the tree: {}",
                        real.display()
                    ));
                }
            }
        } else {
            problems.push(format!("{rel}: special file {ft:?}"));
        }
        if !ft.is_symlink() && mode & 0o6000 != 0 && !ft.is_dir() {
            problems.push(format!("{rel}: setuid/setgid {mode:o}"));
        }
    }
    assert!(
        problems.is_empty(),
        "published tree is wrong:\n  {}\nentries:\n{}",
        problems.join("\n  "),
        listing(dest, &entries)
    );
    entries
}

/// The entries as `mode uid:gid path` lines, for messages.
pub fn listing(dest: &Path, entries: &[(PathBuf, fs::Metadata)]) -> String {
    entries
        .iter()
        .map(|(p, md)| {
            format!(
                "  {:o} {}:{} {}\n",
                md.mode(),
                md.uid(),
                md.gid(),
                p.strip_prefix(dest).unwrap().display()
            )
        })
        .collect()
}

/// (what, shell script) pairs that each try to change the tree.
pub fn write_attempts(file: &str, dest: &str, sub: &str) -> Vec<(&'static str, String)> {
    vec![
        ("create a file", format!("echo x > {dest}/new-file")),
        (
            "create a file in a subdirectory",
            format!("echo x > {sub}/new-file"),
        ),
        ("create a directory", format!("mkdir {dest}/new-dir")),
        ("create a symlink", format!("ln -s a.iso {dest}/new-link")),
        ("append to a file", format!("echo x >> {file}")),
        ("truncate a file", format!(": > {file}")),
        (
            "touch a file's times",
            format!("touch -d 2000-01-01 {file}"),
        ),
        ("chmod a file", format!("chmod 0666 {file}")),
        ("chmod the tree's root", format!("chmod 0777 {dest}")),
        ("rename a file", format!("mv {file} {dest}/renamed.iso")),
        ("rename a directory", format!("mv {sub} {dest}/renamed-dir")),
        ("delete a file", format!("rm -f {file} && test ! -e {file}")),
        (
            "delete a directory",
            format!("rm -rf {sub} && test ! -e {sub}"),
        ),
    ]
}

/// (path, mode, uid, gid, size, mtime, ctime, ctime_nsec) of an entry.
pub type Stamp = (PathBuf, u32, u32, u32, u64, i64, i64, i64);

/// A [`Stamp`] of every entry, root included.
pub fn stamps(dest: &Path) -> Vec<Stamp> {
    let md = fs::symlink_metadata(dest).unwrap();
    let mut v = vec![(
        dest.to_path_buf(),
        md.mode(),
        md.uid(),
        md.gid(),
        md.size(),
        md.mtime(),
        md.ctime(),
        md.ctime_nsec(),
    )];
    v.extend(walk(dest).into_iter().map(|(p, m)| {
        (
            p,
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.ctime(),
            m.ctime_nsec(),
        )
    }));
    v
}
