//! Integration tests: one binary, one module per area.
//!
//! `support` is the end-to-end harness (private namespace, real sshd, sudo,
//! accounts, rsync daemon, syslog receiver); `harness` proves it works.
//! `fixture` is the unprivileged mirror set-up the core tests use.
//! `faults`, `load` (burst, soak) and `fuzz_parser` (long property run)
//! are the reliability tests; see tests/RELIABILITY.md.

mod fixture;
mod support;

mod caps;
mod core;
mod faults;
mod fuzz_parser;
mod gate;
mod harness;
mod load;
mod privilege;
mod ship;
