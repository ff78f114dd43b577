//! `check` for snapshot publishing: dest's parent must be the owner's (the
//! switch renames a symlink there) and no one else's to write; dest is
//! syncgate's symlink into the snapshot root (or, before the first
//! snapshot, missing or a directory that the next run converts).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::config::{Mirror, PublishMode};
use crate::owner::snapshot::layout;

use super::Report;

/// Checks one mirror's snapshot layout; `false` when the mirror is
/// published in place (the caller then checks dest as a directory).
pub(super) fn check_snapshot_layout(m: &Mirror, r: &mut Report) -> bool {
    if m.publish.mode == PublishMode::TwoStage {
        return false;
    }
    let parent = m.dest.parent().unwrap_or(Path::new("/"));
    let fix = format!(
        "chown {}:{} {2} && chmod 2750 {2}   (or set publish = \"two-stage\" in [mirror.{3}])",
        m.owner,
        m.reader_group,
        parent.display(),
        m.name
    );
    let md = match std::fs::metadata(parent) {
        Ok(md) => md,
        Err(e) => {
            r.fail(
                format!("mirror {}: dest's parent {}: {e}", m.name, parent.display()),
                fix,
            );
            return true;
        }
    };
    let owners = md.uid() == m.owner_uid && md.mode() & 0o300 == 0o300;
    if md.mode() & 0o022 != 0 {
        r.fail(
            format!(
                "mirror {}: dest's parent {} is writable by group or others (mode {:o}): they could replace the dest symlink",
                m.name,
                parent.display(),
                md.mode() & 0o7777
            ),
            fix,
        );
        return true;
    }
    if !owners {
        let msg = format!(
            "mirror {}: publishing snapshots needs dest's parent {} to be the owner {}'s (it is uid {} mode {:o})",
            m.name,
            parent.display(),
            m.owner,
            md.uid(),
            md.mode() & 0o7777
        );
        if m.publish.explicit {
            r.fail(msg, fix);
        } else {
            r.warn(format!("{msg}; until then it is published in place (two-stage), with a warning on every run"), fix);
            return false;
        }
        return true;
    }
    check_dest(m, r);
    true
}

/// dest itself, and the snapshot root, in a parent the owner writes.
fn check_dest(m: &Mirror, r: &mut Report) {
    let root = m.snapshot_root();
    let name = &m.name;
    match std::fs::symlink_metadata(&m.dest) {
        Err(_) => r.ok(format!(
            "mirror {name}: snapshots: dest {} is created by the first sync (a symlink into {})",
            m.dest.display(),
            root.display()
        )),
        Ok(md) if md.is_dir() => r.ok(format!(
            "mirror {name}: snapshots: dest {} is a directory; the next sync that changes anything makes it a snapshot and dest a symlink, in one step",
            m.dest.display()
        )),
        Ok(md) if md.file_type().is_symlink() => match layout::live(m) {
            Ok(layout::Live::Snapshot(id)) if md.uid() == m.owner_uid => r.ok(format!(
                "mirror {name}: snapshots: dest {} -> snapshot {id} in {}",
                m.dest.display(),
                root.display()
            )),
            Ok(_) => r.fail(
                format!("mirror {name}: dest {} is a symlink owned by uid {}, not by {}", m.dest.display(), md.uid(), m.owner),
                format!("rm {}   (the next sync recreates it)", m.dest.display()),
            ),
            Err(e) => r.fail(format!("mirror {name}: {e}"), format!("mv {} {}.old", m.dest.display(), m.dest.display())),
        },
        Ok(_) => r.fail(
            format!("mirror {name}: dest {} is neither a directory nor syncgate's symlink", m.dest.display()),
            format!("mv {} {}.old", m.dest.display(), m.dest.display()),
        ),
    }
    if let Ok(md) = std::fs::symlink_metadata(&root) {
        if !(md.is_dir()
            && md.uid() == m.owner_uid
            && md.gid() == m.reader_gid
            && md.mode() & 0o7777 == m.dir_mode)
        {
            r.fail(
                format!(
                    "mirror {name}: snapshot root {} is uid {} gid {} mode {:o}, expected {}:{} mode {:o}",
                    root.display(),
                    md.uid(),
                    md.gid(),
                    md.mode() & 0o7777,
                    m.owner,
                    m.reader_group,
                    m.dir_mode
                ),
                format!("chown {}:{} {2} && chmod {3:o} {2}", m.owner, m.reader_group, root.display(), m.dir_mode),
            );
        }
    }
}
