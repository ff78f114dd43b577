//! A long property run against the SSH command parser
//! (`syncgate::gate::request::parse`), the one place client bytes enter.
//!
//! `PROPTEST_CASES_LONG` cases per property (default 20,000; the fuzzing
//! campaign in tests/RELIABILITY.md used 100,000 and more) of: arbitrary
//! bytes, valid commands with random spacing and quoting, and valid
//! commands hit by one to four mutations (byte insert/delete/replace, a
//! hostile token, a duplicated or swapped word, a Unicode look-alike).
//!
//! For every input: `parse` does not panic and is deterministic; a refusal
//! exits 64 and its message is short printable ASCII. For an accepted input:
//! `canonical()` parses back to the same request and is a fixed point, every
//! mirror name is valid, and the input was made of grammar bytes only. For
//! inputs without quotes, an independent reference grammar (split on
//! spaces, match the verb table) must agree on accept/refuse and on the
//! request.
//!
//! Inputs found by this run or by the cargo-fuzz target (fuzz/) that broke
//! a property become rows of `REGRESSIONS` in fuzz_parser/fixed.rs; the hostile seeds are
//! shared with the fuzz corpus (fuzz/seeds.txt).

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError};

use syncgate::gate::request::{parse, Name, Refusal, MAX_COMMAND_LEN};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES_LONG")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(20_000)
}

fn config() -> Config {
    Config {
        cases: cases(),
        // Failures become explicit rows of REGRESSIONS, not files.
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

mod fixed;
mod reference;
use reference::reference;

/// Every property, for one input. Returns a description of the first
/// broken one.
fn check(raw: &[u8]) -> Result<(), String> {
    let show = || syncgate::gate::request::escape_for_log(raw, 600);
    let first = parse(Some(raw));
    if first != parse(Some(raw)) {
        return Err(format!("not deterministic: {}", show()));
    }
    match first {
        Ok(req) => {
            let canon = req.canonical();
            match parse(Some(canon.as_bytes())) {
                Ok(again) if again == req => {}
                other => {
                    return Err(format!(
                        "canonical {canon:?} of {} parses to {other:?}, not {req:?}",
                        show()
                    ))
                }
            }
            if parse(Some(canon.as_bytes())).map(|r| r.canonical()) != Ok(canon.clone()) {
                return Err(format!("canonical {canon:?} is not a fixed point"));
            }
            for n in req.names() {
                if !Name::is_valid(n.as_str()) {
                    return Err(format!("invalid name {:?} accepted from {}", n, show()));
                }
            }
            let grammar_bytes = raw
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:- '\"".contains(&b));
            if !grammar_bytes || raw.len() > MAX_COMMAND_LEN {
                return Err(format!("accepted non-grammar input {}", show()));
            }
        }
        Err(refusal) => {
            if refusal.exit_code() != 64 || refusal == Refusal::NoCommand {
                return Err(format!("{} refused as {refusal:?}", show()));
            }
            let msg = refusal.to_string();
            if !msg.bytes().all(|b| (0x20..=0x7e).contains(&b)) || msg.len() > 200 {
                return Err(format!("refusal message {msg:?} for {}", show()));
            }
        }
    }
    // Quote-free printable input: the reference grammar must agree.
    let plain = raw
        .iter()
        .all(|&b| (0x20..=0x7e).contains(&b) && !b"'\"\\#".contains(&b));
    if plain && raw.len() <= MAX_COMMAND_LEN {
        let text = std::str::from_utf8(raw).expect("ASCII");
        let ours = parse(Some(raw)).ok();
        let theirs = reference(text);
        if ours != theirs {
            return Err(format!(
                "{text:?}: parse says {ours:?}, the reference grammar says {theirs:?}"
            ));
        }
    }
    Ok(())
}

fn prop_check(raw: &[u8]) -> Result<(), TestCaseError> {
    check(raw).map_err(TestCaseError::fail)
}

// ---------------------------------------------------------------------------
// Generators

fn name_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,63}".prop_filter("no '..'", |s| !s.contains(".."))
}

/// The words of a valid command.
fn valid_words() -> impl Strategy<Value = Vec<String>> {
    let w = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    prop_oneof![
        Just(w(&["help"])),
        Just(w(&["sync"])),
        name_strategy().prop_map(move |n| w(&["sync", &n])),
        push_words(),
        (
            proptest::option::of(name_strategy()),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(move |(m, json, first)| {
                let mut v = w(&["status"]);
                v.extend(m);
                if json {
                    v.insert(if first { 1 } else { v.len() }, "--json".into());
                }
                v
            }),
    ]
}

/// Debian's push words: an archive word (named, empty or none), at most
/// one stage word, mhop and callback or not, at least one word, any order.
fn push_words() -> impl Strategy<Value = Vec<String>> {
    let stage = prop::sample::select(vec![None, Some("all"), Some("stage1"), Some("stage2")]);
    (
        proptest::option::of(proptest::option::of(name_strategy())),
        stage,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(archive, stage, mhop, callback)| {
            let mut v: Vec<String> = Vec::new();
            v.extend(archive.map(|n| format!("sync:archive:{}", n.unwrap_or_default())));
            v.extend(stage.map(|s| format!("sync:{s}")));
            v.extend(mhop.then(|| "sync:mhop".to_string()));
            v.extend(callback.then(|| "sync:callback".to_string()));
            if v.is_empty() {
                v.push("sync:all".into());
            }
            v
        })
        .prop_shuffle()
}

/// A valid command with random spacing and quoting.
fn valid_command() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_words(),
        proptest::collection::vec((1usize..=3, 0u8..4), 4),
        0usize..=2,
        0usize..=2,
    )
        .prop_map(|(words, style, lead, trail)| {
            let mut s = " ".repeat(lead);
            for (i, (word, (spaces, q))) in words.iter().zip(style).enumerate() {
                if i > 0 {
                    s.push_str(&" ".repeat(spaces));
                }
                match q {
                    0 | 1 => s.push_str(word),
                    2 => s.push_str(&format!("'{word}'")),
                    _ => {
                        // Quote only part of the word: sy"nc"
                        let cut = word.len() / 2;
                        s.push_str(&format!("{}\"{}\"", &word[..cut], &word[cut..]));
                    }
                }
            }
            s.push_str(&" ".repeat(trail));
            s.into_bytes()
        })
}

/// Tokens an attacker (or a confused script) would try.
const HOSTILE: &[&str] = &[
    ";",
    "&&",
    "||",
    "|",
    "&",
    "$(",
    ")",
    "`",
    "$",
    "${IFS}",
    ">",
    "<",
    ">>",
    "*",
    "?",
    "[",
    "]",
    "{",
    "}",
    "~",
    "!",
    "--",
    "-",
    "--json",
    "--json=1",
    "-e",
    "--rsh=sh",
    "--config",
    "/",
    "..",
    "../",
    "./",
    "/etc/passwd",
    "'",
    "\"",
    "\\",
    "#",
    "\t",
    "\n",
    "\r",
    "\0",
    "\x1b",
    "\x7f",
    "\u{a0}",
    "\u{200b}",
    "\u{feff}",
    "\u{202e}",
    "\u{0455}",
    "\u{ff53}",
    "\u{2014}",
    " ",
    "  ",
    "sync",
    "status",
    "help",
    "sync:",
    "sync:archive:",
    "sync:mhop",
    "sync:callback",
    "sync:stage1",
    ":",
    "all",
    "a",
    "A",
    "0",
    "é",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Replace(prop::sample::Index, u8),
    Token(prop::sample::Index, prop::sample::Index),
    DuplicateWord(prop::sample::Index),
    SwapWords(prop::sample::Index, prop::sample::Index),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let idx = any::<prop::sample::Index>;
    // Bytes near the grammar are the interesting ones; any byte otherwise.
    let byte = prop_oneof![
        3 => prop::sample::select(b"abcdefghijklmnopqrstuvwxyz0123456789._:- '\"-".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (idx(), byte.clone()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        idx().prop_map(Mutation::Delete),
        (idx(), byte).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (idx(), idx()).prop_map(|(i, t)| Mutation::Token(i, t)),
        idx().prop_map(Mutation::DuplicateWord),
        (idx(), idx()).prop_map(|(a, b)| Mutation::SwapWords(a, b)),
        idx().prop_map(Mutation::Truncate),
    ]
}

fn words_of(v: &[u8]) -> Vec<Vec<u8>> {
    v.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn apply(mut v: Vec<u8>, m: &Mutation) -> Vec<u8> {
    match m {
        Mutation::Insert(i, b) => {
            let at = i.index(v.len() + 1);
            v.insert(at, *b);
        }
        Mutation::Delete(i) if !v.is_empty() => {
            v.remove(i.index(v.len()));
        }
        Mutation::Replace(i, b) if !v.is_empty() => {
            let at = i.index(v.len());
            v[at] = *b;
        }
        Mutation::Token(i, t) => {
            let at = i.index(v.len() + 1);
            let tok = HOSTILE[t.index(HOSTILE.len())].as_bytes();
            v.splice(at..at, tok.iter().copied());
        }
        Mutation::DuplicateWord(i) => {
            let words = words_of(&v);
            if !words.is_empty() {
                let w = words[i.index(words.len())].clone();
                v.push(b' ');
                v.extend(w);
            }
        }
        Mutation::SwapWords(a, b) => {
            let mut words = words_of(&v);
            if words.len() > 1 {
                let (x, y) = (a.index(words.len()), b.index(words.len()));
                words.swap(x, y);
                v = words.join(&b' ');
            }
        }
        Mutation::Truncate(i) => {
            let at = i.index(v.len() + 1);
            v.truncate(at);
        }
        _ => {}
    }
    v
}

fn mutated_command() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_command(),
        proptest::collection::vec(mutation(), 1..=4),
    )
        .prop_map(|(cmd, ms)| ms.iter().fold(cmd, apply))
}

/// Words from the grammar and the hostile list, joined by spaces.
fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    let grammar = prop_oneof![
        Just("sync".to_string()),
        Just("status".to_string()),
        Just("help".to_string()),
        Just("--json".to_string()),
        Just("sync:all".to_string()),
        Just("sync:stage1".to_string()),
        Just("sync:stage2".to_string()),
        Just("sync:mhop".to_string()),
        Just("sync:callback".to_string()),
        Just("sync:archive:".to_string()),
        name_strategy().prop_map(|n| format!("sync:archive:{n}")),
        name_strategy(),
        prop::sample::select(HOSTILE).prop_map(str::to_string),
    ];
    proptest::collection::vec(grammar, 0..6).prop_map(|w| w.join(" ").into_bytes())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_check(&raw)?;
    }

    #[test]
    fn printable_ascii(raw in "[ -~]{0,80}") {
        prop_check(raw.as_bytes())?;
    }

    #[test]
    fn valid_commands_are_accepted(raw in valid_command()) {
        prop_assert!(parse(Some(&raw)).is_ok(), "{:?}", String::from_utf8_lossy(&raw));
        prop_check(&raw)?;
    }

    #[test]
    fn mutated_valid_commands(raw in mutated_command()) {
        prop_check(&raw)?;
    }

    #[test]
    fn grammar_and_hostile_token_soup(raw in token_soup()) {
        prop_check(&raw)?;
    }
}
