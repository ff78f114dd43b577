//! A periodic tick that interrupts a blocking call of the calling thread.
//!
//! A queued request blocks in `flock` on its own (main) thread, so that it
//! needs no second thread while it waits (a thread costs a kernel stack, a
//! user stack and a malloc arena per waiting request). [`Tick`] makes that
//! call return `EINTR` every `every`, so the thread can look at the clock,
//! its caller and the signal flags: a POSIX timer sends SIGALRM to this
//! thread only (`SIGEV_THREAD_ID`, whatever other threads exist), handled
//! without `SA_RESTART` by a handler that does nothing.
//!
//! Dropping the tick deletes the timer and puts SIGALRM's previous
//! disposition back.

use std::time::Duration;

use nix::libc;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

extern "C" fn on_tick(_: libc::c_int) {}

pub struct Tick {
    timer: libc::timer_t,
    old: SigAction,
}

impl Tick {
    #[allow(unsafe_code)]
    pub fn start(every: Duration) -> std::io::Result<Tick> {
        let act = SigAction::new(
            SigHandler::Handler(on_tick),
            SaFlags::empty(),
            SigSet::empty(),
        );
        // SAFETY: the handler does nothing, which is async-signal-safe.
        let old = unsafe { sigaction(Signal::SIGALRM, &act) }.map_err(std::io::Error::from)?;
        let restore = |old: &SigAction| {
            // SAFETY: puts back the disposition that was there before.
            let _ = unsafe { sigaction(Signal::SIGALRM, old) };
        };
        // SAFETY: sigevent is a plain C struct for which all-zero is valid;
        // timer_create writes only the timer id.
        let timer = unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGALRM;
            sev.sigev_notify_thread_id = nix::unistd::gettid().as_raw();
            let mut timer: libc::timer_t = std::ptr::null_mut();
            if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
                let e = std::io::Error::last_os_error();
                restore(&old);
                return Err(e);
            }
            timer
        };
        let ts = libc::timespec {
            tv_sec: every.as_secs() as libc::time_t,
            tv_nsec: every.subsec_nanos() as libc::c_long,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: `timer` was created above; `spec` outlives the call.
        if unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: deletes the timer created above, once.
            unsafe { libc::timer_delete(timer) };
            restore(&old);
            return Err(e);
        }
        Ok(Tick { timer, old })
    }
}

impl Drop for Tick {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the timer is ours and deleted once. A tick already sent is
        // delivered (to the do-nothing handler) when this call returns,
        // before the old disposition is back.
        unsafe {
            libc::timer_delete(self.timer);
            let _ = sigaction(Signal::SIGALRM, &self.old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_blocking_flock_is_interrupted_by_every_tick() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let held = std::fs::File::create(&p).unwrap();
        held.lock().unwrap();
        let waiter = std::fs::File::open(&p).unwrap();
        let t0 = Instant::now();
        let tick = Tick::start(Duration::from_millis(50)).unwrap();
        for _ in 0..3 {
            let r = nix::fcntl::Flock::lock(
                waiter.try_clone().unwrap(),
                nix::fcntl::FlockArg::LockExclusive,
            );
            match r {
                Err((_, e)) => assert_eq!(e, nix::errno::Errno::EINTR),
                Ok(_) => panic!("got a lock that is held"),
            }
        }
        drop(tick);
        assert!(t0.elapsed() < Duration::from_secs(2));
        held.unlock().unwrap();
        waiter.lock().unwrap();
    }
}
