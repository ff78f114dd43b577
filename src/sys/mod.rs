//! Small system helpers shared by both sides of the sudo boundary: child
//! processes, signals, progress lines, the kernel lock table, time format.

pub mod child;
pub mod proc_locks;
pub mod progress;
pub mod signals;
pub mod tick;
pub mod timefmt;
