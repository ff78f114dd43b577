//! Integration tests: one binary, one module per area.
//!
//! `support` is the end-to-end harness (private namespace, real sshd, sudo,
//! accounts, rsync daemon, syslog receiver); `harness` proves it works.

mod support;

mod harness;
