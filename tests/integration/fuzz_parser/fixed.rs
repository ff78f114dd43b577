//! Fixed inputs for the parser's properties: the hostile seed corpus shared
//! with cargo-fuzz (fuzz/seeds.txt), which seeds are valid, and every input
//! that ever broke a property.

use syncgate::gate::request::{parse, Refusal, MAX_COMMAND_LEN};

use super::check;
use super::reference::reference;

/// Hostile inputs, one per line, as stored for the fuzz corpus
/// (`\xNN` escapes for bytes that cannot be written plainly).
const SEEDS: &str = include_str!("../../../fuzz/seeds.txt");

fn unescape(line: &str) -> Vec<u8> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(&line[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// `(input, Some(reason))`: refused with that reason; `(input, None)`:
/// accepted. Every input that ever broke a property goes here.
const REGRESSIONS: &[(&[u8], Option<&str>)] = &[
    (b"sync", None),
    (b"sync:archive:a", None),
    (b"status --json a", None),
    (b"status a --json", None),
    (b"'sync' \"a\"", None),
    (b"sy'nc' a", None),
    (b"sync ''", Some("bad-argument")),
    // An empty archive name is the key's default mirror (issue 12).
    (b"sync:archive:''", None),
    (b" sync:archive: sync:all", None),
    (b" sync:archive:a sync:mhop sync:stage2", None),
    (b"sync:stage1 sync:stage2", Some("bad-argument")),
    (b"sync:mhop sync:mhop", Some("bad-argument")),
    (b"sync:archive:a sync:archive:", Some("bad-argument")),
    (b"sync:archive:a a", Some("bad-argument")),
    (b"sync:stage9 sync:archive:a", Some("unknown-verb")),
    (b"'' sync", Some("unknown-verb")),
    (b"status -- --json", Some("bad-argument")),
    (b"sync a\xc2\xa0", Some("bad-argument")),
    (b"sync:archive:a..b", Some("bad-argument")),
    (b"sync:archive:a.", None),
];

/// The seeds of fuzz/seeds.txt that are valid commands; every other seed
/// must be refused. `sync:archive:` joined them with issue 12 (an empty
/// archive is the key's default mirror, as runmirrors sends it).
const ACCEPTED_SEEDS: &[&str] = &[
    "help",
    "sync",
    "sync debian-cd",
    "sync iso",
    "sync:all",
    "sync:stage1",
    "sync:stage2",
    "sync:archive:debian-cd",
    "status",
    "status --json",
    "status iso",
    "status iso --json",
    "status --json iso",
    "  sync   iso  ",
    "'sync' \"iso\"",
    "sy\"nc\" i'so'",
    "sync a.b_c-9",
    "sync 0",
    "sync aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "sync:archive:",
    " sync:archive:debian sync:all",
    " sync:archive: sync:all",
    " sync:archive:debian sync:stage1",
    " sync:archive:debian sync:stage2",
    " sync:archive: sync:mhop sync:stage1",
    " sync:archive:debian sync:mhop sync:stage2",
    " sync:archive:debian sync:callback sync:mhop sync:stage1",
];

#[test]
fn regressions_and_seed_corpus() {
    for (raw, want) in REGRESSIONS {
        check(raw).unwrap();
        match (parse(Some(raw)), want) {
            (Ok(_), None) => {}
            (Err(r), Some(reason)) if r.reason() == *reason => {}
            (got, _) => panic!(
                "{:?}: got {got:?}, want {want:?}",
                String::from_utf8_lossy(raw)
            ),
        }
    }
    let mut seeds = 0;
    for line in SEEDS.lines().filter(|l| !l.is_empty()) {
        let raw = unescape(line);
        check(&raw).unwrap();
        seeds += 1;
        // Every hostile seed is refused; only the valid ones pass.
        assert_eq!(
            parse(Some(&raw)).is_ok(),
            ACCEPTED_SEEDS.contains(&line),
            "seed {line:?}"
        );
    }
    assert!(seeds > 50, "only {seeds} seeds");
    check(&vec![b'a'; MAX_COMMAND_LEN + 1]).unwrap();
    assert_eq!(parse(None), Err(Refusal::NoCommand));
}

#[test]
fn the_reference_grammar_agrees_on_the_verb_table() {
    for (text, ok) in [
        ("help", true),
        ("  sync  ", true),
        ("sync a b", false),
        ("status --json --json", false),
        ("status a b", false),
        ("sync:archive:", true),
        (" sync:archive:a sync:mhop sync:stage1", true),
        ("sync:stage1 sync:stage2", false),
        ("sync:all sync:all", false),
        ("sync:archive:a sync:archive:b", false),
        ("sync:archive:a b", false),
        ("sync:archive:-x", false),
        ("status", true),
    ] {
        assert_eq!(reference(text).is_some(), ok, "{text}");
        check(text.as_bytes()).unwrap();
    }
}
