//! What admins and a mirror's users can watch, written by the runs
//! themselves (no daemon): the status page ([`page`]).

pub mod page;
