//! Integration tests: one binary, one module per area.
//!
//! `support` is the end-to-end harness (private namespace, real sshd, sudo,
//! accounts, rsync daemon, syslog receiver); `harness` proves it works.
//! `support::fixture` is the unprivileged mirror set-up the core tests use,
//! `support::mirror_host` the one with ssh, sudo and real accounts; both
//! run commands through `support::Test`.
//! `faults`, `load` (burst, soak) and `fuzz_parser` (long property run)
//! are the reliability tests; see tests/RELIABILITY.md.

mod support;

mod audit_trail;
mod caps;
mod core;
mod faults;
mod fuzz_parser;
mod gate;
mod harness;
mod hostile;
mod hub;
mod load;
mod marker;
mod observe;
mod page;
mod privilege;
mod progress;
mod push;
mod ship;
mod snapshot;
