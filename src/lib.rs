//! syncgate: a queued, coalescing, privilege-separated mirror sync.
pub mod fixperms;
