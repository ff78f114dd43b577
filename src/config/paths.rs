//! Path and text rules shared by the config's keys.

use std::path::{Component, Path};

/// Absolute, and only normal components (no `.`, `..`).
pub(super) fn is_clean_absolute(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

pub(super) fn no_control(s: &str) -> bool {
    !s.chars().any(|c| c.is_control())
}

/// Characters that mean nothing special in a sudoers command line.
pub fn sudoers_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
}
