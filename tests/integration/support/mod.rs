//! End-to-end test harness.
//!
//! * [`ns`]: run a test body as root inside a private mount + network
//!   namespace (`e2e_test!`, [`ns::in_private_host`]); the outer test checks
//!   afterwards that the real machine is unchanged.
//! * [`host`]: a throwaway host inside that namespace: copied `/etc`, tmpfs
//!   `/home` and `/run`, real users/groups, sudoers drop-ins, `runuser`.
//! * [`sshd`]: a real OpenSSH server on 127.0.0.1 plus a preconfigured client.
//! * [`rsyncd`]: a real `rsync --daemon` (works with or without namespace).
//! * [`syslog`]: a Unix datagram syslog receiver and a `key=value` parser.
//! * [`procs`]: child-process guards and `/proc` scans for hygiene asserts.
//! * [`config`]: the syncgate config as typed fields, rendered once.
//! * [`cmd`]: [`Test`], one builder to run a command and state its exit,
//!   stdout and stderr; [`check`]: the shared assertions and waits.
//! * [`fixture`] (local, `privilege = "direct"`) and [`mirror_host`] (ssh,
//!   sudo, real accounts): the two fixtures, sharing [`mirrors::Mirrors`].
//!
//! Every helper panics with a descriptive message instead of returning errors:
//! they are test fixtures, and a failed fixture should fail the test loudly.

// Not every test uses every helper.
#![allow(dead_code)]

pub mod check;
pub mod cmd;
pub mod config;
pub mod fixture;
pub mod host;
pub mod hub;
pub mod mirror_host;
pub mod mirrors;
pub mod ns;
pub mod observer;
pub mod procs;
pub mod rsyncd;
pub mod runmirrors;
pub mod snapshots;
pub mod sshd;
pub mod syslog;
pub mod tree;

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

// The common names, so tests can `use crate::support::{...}`.
#[allow(unused_imports)]
pub use check::{assert_contains, assert_eventually, assert_lacks, stderr, stdout, wait_until};
#[allow(unused_imports)]
pub use cmd::Test;
#[allow(unused_imports)]
pub use config::{opts, Key, Opts};
#[allow(unused_imports)]
pub use host::{Host, UserInfo, UserOpts};
#[allow(unused_imports)]
pub use mirrors::Mirrors;
pub(crate) use ns::e2e_test;
#[allow(unused_imports)]
pub use procs::ChildGuard;
#[allow(unused_imports)]
pub use rsyncd::RsyncDaemon;
#[allow(unused_imports)]
pub use sshd::Sshd;
#[allow(unused_imports)]
pub use syslog::{fields, SyslogReceiver};

/// Asks the kernel for a free TCP port on 127.0.0.1 (bind to port 0, read it
/// back, close). Racy by nature: callers that start a server on it retry.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 (is `lo` up?)")
        .port()
}

/// True once something accepts TCP connections on 127.0.0.1:`port`, false
/// if nothing did within `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Finds `name` in `$PATH` or the sbin directories (root tools live there and
/// `cargo test` may run with a user's PATH).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Like [`which`] but panics with a hint to run `scripts/install-test-deps`.
pub fn require_tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!(
            "e2e tests need `{name}`, which is not installed: \
             run scripts/install-test-deps as root"
        )
    })
}

/// Runs `cmd` to completion and panics (showing both output streams) unless
/// it exits 0. Returns stdout as a string.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(cmd)));
    assert!(
        out.status.success(),
        "{} failed: {}",
        describe(cmd),
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Renders an `Output` (status, stdout, stderr) for assertion messages: the
/// one output formatter of the tests.
pub fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Program and arguments of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The syncgate binary cargo built for these tests.
pub fn syncgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_syncgate"))
}

/// Deterministic pseudo-random bytes (xorshift), so large test files do not
/// compress away and need no RNG crate.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}
