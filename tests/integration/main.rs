//! Integration tests: one binary, one module per area.
//!
//! `support` is the end-to-end harness (private namespace, real sshd, sudo,
//! accounts, rsync daemon, syslog receiver); `harness` proves it works.
//! `fixture` is the unprivileged mirror set-up the core tests use.

mod fixture;
mod support;

mod core;
mod faults;
mod gate;
mod harness;
mod privilege;
mod ship;
