//! Symlink containment: which links provably stay inside the tree (see
//! the module docs of fix-perms).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::owner::dest::TEMP_DIR;

/// Why a symlink in the directory `dir` (its names from the root; empty for
/// the root itself) with `target` may leave the tree, or `None` if it
/// provably stays inside. See the module docs.
pub(super) fn link_escape_reason(dir: &[OsString], target: &OsStr) -> Option<&'static str> {
    let bytes = target.as_bytes();
    if bytes.is_empty() {
        return Some("empty target");
    }
    if bytes[0] == b'/' {
        return Some("absolute target");
    }
    let mut depth = dir.len();
    let mut named = false;
    for comp in bytes.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." if named => {
                return Some("'..' after a name (cannot be resolved without following links)")
            }
            b".." if depth == 0 => return Some("'..' climbs above the tree root"),
            b".." => depth -= 1,
            name => {
                if depth == 0 && !named && name == TEMP_DIR.as_bytes() {
                    return Some("points into .syncgate-tmp, which is not part of the tree");
                }
                named = true;
            }
        }
    }
    None
}
