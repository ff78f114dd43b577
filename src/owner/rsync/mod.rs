//! rsync on the owner side: the command lines ([`argv`]), running one
//! ([`run`]) and reading what it reports ([`stats`]).

pub mod argv;
pub mod run;
pub mod stats;

pub use run::{run_rsync, RsyncEnd};
pub use stats::{describe, Kinds, Stats};
