//! rsync on the owner side: the command lines ([`argv`]), running one
//! ([`run`]) and reading what it reports ([`stats`], and its progress while
//! it transfers: [`progress`]).

pub mod argv;
pub mod progress;
pub mod run;
pub mod stats;

pub use run::{run_rsync, RsyncEnd};
pub use stats::{describe, Kinds, Stats};
