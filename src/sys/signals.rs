//! Signal flags. Handlers only store to atomics; the main loops poll them.
//!
//! SIGTERM and SIGINT ask syncgate to stop: a queued request leaves the
//! queue, a running sync terminates its children and records `aborted`.
//! SIGHUP (a terminal or a pty session went away) makes a queued request
//! leave the queue, but never aborts a running sync: other callers may be
//! coalesced on it.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static TERMINATE: AtomicBool = AtomicBool::new(false);
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: nix::libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

extern "C" fn on_hangup(_: nix::libc::c_int) {
    HANGUP.store(true, Ordering::SeqCst);
}

/// Installs the handlers. Children get default dispositions back on exec.
#[allow(unsafe_code)]
pub fn install() {
    let term = SigAction::new(
        SigHandler::Handler(on_terminate),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let hup = SigAction::new(
        SigHandler::Handler(on_hangup),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handlers only store to atomics, which is async-signal-safe.
    unsafe {
        let _ = sigaction(Signal::SIGTERM, &term);
        let _ = sigaction(Signal::SIGINT, &term);
        let _ = sigaction(Signal::SIGHUP, &hup);
    }
}

pub fn terminate_requested() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}

pub fn hangup_received() -> bool {
    HANGUP.load(Ordering::SeqCst)
}
