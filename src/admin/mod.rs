//! The administrator's commands: `check`, `sudoers` and `status`. They run
//! as root or as the login account, never through the sudo rule.

pub mod check;
pub mod status;
pub mod sudoers;
