//! libFuzzer target for the SSH command parser: arbitrary bytes as
//! `SSH_ORIGINAL_COMMAND`. Run with `fuzz/run` (see tests/RELIABILITY.md).
//!
//! Invariants checked on every input:
//! * `parse` never panics and is deterministic;
//! * an accepted request's `canonical()` parses back to the same request
//!   and is a fixed point; every mirror name in it is valid; the input was
//!   made of grammar bytes only (`a-z 0-9 . _ : - space ' "`) and was at most
//!   `MAX_COMMAND_LEN` bytes;
//! * a refusal exits 64 and its message is printable ASCII (no client byte
//!   reaches a log unescaped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use syncgate::gate::request::{parse, Name, MAX_COMMAND_LEN};

fuzz_target!(|data: &[u8]| {
    let first = parse(Some(data));
    assert_eq!(first, parse(Some(data)), "parse is not deterministic");
    match first {
        Ok(req) => {
            let canon = req.canonical();
            let again = parse(Some(canon.as_bytes())).expect("canonical form refused");
            assert_eq!(again, req, "canonical form parses to another request");
            assert_eq!(
                again.canonical(),
                canon,
                "canonical form is not a fixed point"
            );
            let names = req.names();
            for n in names {
                assert!(Name::is_valid(n.as_str()), "invalid name {n:?} accepted");
            }
            assert!(data.len() <= MAX_COMMAND_LEN, "over-long input accepted");
            assert!(
                data.iter().all(|&b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b"._:- '\"".contains(&b)),
                "non-grammar byte accepted"
            );
        }
        Err(refusal) => {
            assert_eq!(refusal.exit_code(), 64, "parse refusal not exit 64");
            let msg = refusal.to_string();
            assert!(
                msg.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "refusal message is not printable ASCII: {msg:?}"
            );
        }
    }
});
