//! syncgate: a queued, coalescing, privilege-separated mirror sync.

pub mod policy;
pub mod request;
