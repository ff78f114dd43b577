//! The lifeline: the gate runs the owner side with a pipe on its stdin and
//! never writes to it. EOF on that pipe means the gate is gone (killed, or
//! its client went away): the transfer then stops rsync and ends.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Watches stdin when it is a pipe from the gate: EOF means the gate died.
pub fn watch_lifeline() -> Arc<AtomicBool> {
    let cut = Arc::new(AtomicBool::new(false));
    let is_pipe = nix::sys::stat::fstat(std::io::stdin())
        .map(|st| {
            nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
                == nix::sys::stat::SFlag::S_IFIFO
        })
        .unwrap_or(false);
    if is_pipe {
        let flag = cut.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            flag.store(true, Ordering::SeqCst);
        });
    }
    cut
}
