//! Temporary stand-in until the real walker lands.
use std::path::Path;
pub struct PermPolicy {
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u32,
    pub dir_mode: u32,
}
pub struct FixReport {
    pub entries: u64,
    pub changed: u64,
    pub removed: u64,
    pub notes: Vec<String>,
}
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FixError(String);
pub fn fix_tree(_root: &Path, _p: &PermPolicy) -> Result<FixReport, FixError> {
    Ok(FixReport {
        entries: 0,
        changed: 0,
        removed: 0,
        notes: vec![],
    })
}
