//! `owner-rollback`: the owner side of `syncgate rollback`. Root runs it
//! as the image owner, through the mirror's queue; it is not in the
//! sudoers rule, so the login account cannot.

use crate::config::{Config, PublishMode};
use crate::error::{Error, Result};
use crate::owner::dest::DestLock;
use crate::owner::report::{Route, SnapshotInfo, TransferReport};
use crate::owner::trust;

use super::layout::{self, Live};

/// Makes snapshot `to` (default: the newest one older than the live one)
/// live, in one step, as a sync would.
pub fn rollback(cfg: &Config, name: &str, to: Option<&str>) -> Result<TransferReport> {
    let m = cfg.mirror(name)?;
    trust::check_trust(cfg, m)?;
    if super::layout::mode(m) != PublishMode::Snapshot {
        return Err(Error::Usage(format!(
            "mirror {name} is published in place (two-stage): it keeps no snapshots to roll back to"
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if cfg.privilege == crate::config::Privilege::Sudo && me != m.owner_uid {
        return Err(Error::Usage(format!(
            "owner-rollback runs as the image owner {} (uid {}), not uid {me}: use `syncgate rollback {name}` as root",
            m.owner, m.owner_uid
        )));
    }
    crate::sys::signals::install();
    let _lock = DestLock::acquire(m)?;
    let root = m.snapshot_root();
    let Live::Snapshot(live) = layout::live(m)? else {
        return Ok(refused(format!(
            "mirror {name} has no live snapshot yet ({} is not syncgate's symlink)",
            m.dest.display()
        )));
    };
    let ids = layout::list(&root)?;
    let target = match to {
        Some(id) if !layout::is_id(id) => {
            return Ok(refused(format!(
                "{id:?} is not a snapshot id (YYYYMMDDTHHMMSSZ)"
            )))
        }
        Some(id) if !ids.iter().any(|i| i == id) => {
            return Ok(refused(format!(
                "no snapshot {id} in {} (kept: {})",
                root.display(),
                ids.join(" ")
            )))
        }
        Some(id) => id.to_string(),
        None => match ids.iter().rev().find(|i| layout::cmp_ids(i, &live).is_lt()) {
            Some(id) => id.clone(),
            None => {
                return Ok(refused(format!(
                    "no snapshot older than the live one ({live}) is kept (keep = {})",
                    m.publish.keep
                )))
            }
        },
    };
    if target == live {
        return Ok(refused(format!("snapshot {live} is already live")));
    }
    layout::switch(m, &target, &Live::Snapshot(live.clone()), None)?;
    crate::sys::progress::say(&format!(
        "rolled back: snapshot {target} is live (was {live})"
    ));
    Ok(TransferReport {
        ok: true,
        route: Route::Snapshot,
        perms_done: true,
        message: format!("rolled back to snapshot {target} (was {live})"),
        snapshot: Some(SnapshotInfo {
            live: target,
            kept: ids,
            switched: true,
        }),
        ..Default::default()
    })
}

fn refused(message: String) -> TransferReport {
    TransferReport {
        route: Route::Snapshot,
        message,
        ..Default::default()
    }
}
