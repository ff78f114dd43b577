//! Debian's push words: runmirrors' strings, orders, duplicates, refusals.

use super::super::tests::{name_strategy, pushed, sync};
use super::super::*;
use proptest::prelude::*;

fn parse_str(s: &str) -> Result<Request, Refusal> {
    parse(Some(s.as_bytes()))
}

fn named(s: &str) -> Target {
    Target::Named(Name::new(s).expect("valid test name"))
}

fn words(archive: bool, mhop: bool, callback: bool) -> Option<PushWords> {
    Some(PushWords {
        archive,
        mhop,
        callback,
    })
}

/// Asserts a refusal with `reason` (exit 64) whose message contains `says`.
#[track_caller]
fn refused(input: &str, reason: &str, says: &str) {
    match parse_str(input) {
        Ok(r) => panic!("{input:?} was accepted as {r:?}"),
        Err(r) => {
            assert_eq!(r.reason(), reason, "{input:?}: {r}");
            assert_eq!(r.exit_code(), EXIT_USAGE, "{input:?}");
            let msg = r.to_string();
            assert!(msg.contains(says), "{input:?}: {msg}");
            assert!(msg.len() <= 200, "{msg}");
        }
    }
}

/// Every ordering of `items`.
fn permutations(items: &[&str]) -> Vec<Vec<String>> {
    if items.is_empty() {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.to_owned());
            out.push(p);
        }
    }
    out
}

#[test]
fn runmirrors_strings_are_accepted_with_a_named_and_an_empty_archive() {
    for (archive, target) in [("debian", named("debian")), ("", Target::Default)] {
        let a = format!(" sync:archive:{archive}");
        let cases = [
            // runmirrors mode "all"
            (format!("{a} sync:all"), Stage::All, false, false),
            // mode "staged"
            (format!("{a} sync:stage1"), Stage::Stage1, false, false),
            (format!("{a} sync:stage2"), Stage::Stage2, false, false),
            // mode "mhop"
            (
                format!("{a} sync:mhop sync:stage1"),
                Stage::Stage1,
                true,
                false,
            ),
            (
                format!("{a} sync:mhop sync:stage2"),
                Stage::Stage2,
                true,
                false,
            ),
            // with a callback
            (
                format!("{a} sync:callback sync:all"),
                Stage::All,
                false,
                true,
            ),
            (
                format!("{a} sync:stage1 sync:callback"),
                Stage::Stage1,
                false,
                true,
            ),
            (
                format!("{a} sync:callback sync:mhop sync:stage2"),
                Stage::Stage2,
                true,
                true,
            ),
        ];
        for (input, stage, mhop, callback) in cases {
            let want = sync(target.clone(), stage, words(true, mhop, callback));
            assert_eq!(parse_str(&input), Ok(want.clone()), "{input:?}");
            assert_eq!(parse_str(&format!("{input}  ")), Ok(want.clone()));
            let canon = want.canonical();
            assert_eq!(parse_str(&canon), Ok(want), "{canon}");
            assert!(canon.starts_with(&format!("sync:archive:{archive}")));
        }
    }
    assert_eq!(
        parse_str(" sync:archive:debian sync:mhop sync:stage1")
            .unwrap()
            .canonical(),
        "sync:archive:debian sync:mhop sync:stage1"
    );
    assert_eq!(
        parse_str(" sync:archive: sync:all").unwrap().canonical(),
        "sync:archive:"
    );
}

#[test]
fn the_longest_runmirrors_string_fits() {
    let n = "a".repeat(64);
    let input = format!(" sync:archive:{n} sync:callback sync:mhop sync:stage2 ");
    assert!(input.len() <= MAX_COMMAND_LEN);
    let want = sync(named(&n), Stage::Stage2, words(true, true, true));
    assert_eq!(parse_str(&input), Ok(want));
}

#[test]
fn every_order_of_the_words_is_the_same_request() {
    for archive in ["sync:archive:debian", "sync:archive:"] {
        for stage in ["sync:all", "sync:stage1", "sync:stage2"] {
            let set = [archive, stage, "sync:mhop", "sync:callback"];
            let first = parse_str(&set.join(" ")).unwrap();
            for p in permutations(&set) {
                assert_eq!(parse_str(&p.join(" ")).as_ref(), Ok(&first), "{p:?}");
            }
            for p in permutations(&set[..3]) {
                assert!(parse_str(&p.join(" ")).is_ok(), "{p:?}");
            }
        }
    }
}

#[test]
fn single_words_keep_their_old_meaning() {
    let table = [
        ("sync:all", sync(Target::All, Stage::All, pushed(false))),
        (
            "sync:stage1",
            sync(Target::Default, Stage::Stage1, pushed(false)),
        ),
        (
            "sync:stage2",
            sync(Target::Default, Stage::Stage2, pushed(false)),
        ),
        (
            "sync:archive:debian",
            sync(named("debian"), Stage::All, pushed(true)),
        ),
        (
            "sync:archive:",
            sync(Target::Default, Stage::All, pushed(true)),
        ),
        (
            "sync:mhop",
            sync(Target::Default, Stage::All, words(false, true, false)),
        ),
        (
            "sync:callback",
            sync(Target::Default, Stage::All, words(false, false, true)),
        ),
    ];
    for (input, want) in table {
        assert_eq!(parse_str(input), Ok(want.clone()), "{input}");
        assert_eq!(want.canonical(), input);
    }
}

#[test]
fn sync_all_without_an_archive_still_means_every_mirror() {
    assert_eq!(
        parse_str("sync:mhop sync:all"),
        Ok(sync(Target::All, Stage::All, words(false, true, false)))
    );
    // With an archive word it only says "both stages".
    assert_eq!(
        parse_str("sync:all sync:archive:debian"),
        parse_str("sync:archive:debian")
    );
    assert_eq!(
        parse_str("sync:stage1 sync:mhop"),
        Ok(sync(
            Target::Default,
            Stage::Stage1,
            words(false, true, false)
        ))
    );
}

#[test]
fn a_word_given_twice_is_refused() {
    for input in [
        "sync:all sync:all",
        "sync:stage1 sync:stage1",
        "sync:archive:debian sync:stage2 sync:stage2",
        "sync:archive:debian sync:mhop sync:mhop",
        "sync:callback sync:archive:debian sync:callback",
        "sync:archive:debian sync:archive:debian",
        "sync:archive: sync:archive:",
    ] {
        refused(input, "bad-argument", "twice");
    }
    refused(
        "sync:archive:debian sync:archive:ubuntu",
        "bad-argument",
        "sync:archive: given twice: 'sync:archive:ubuntu'",
    );
}

#[test]
fn two_stage_words_are_refused() {
    for input in [
        "sync:stage1 sync:stage2",
        "sync:stage2 sync:stage1",
        "sync:archive:debian sync:stage1 sync:stage2",
        "sync:all sync:stage1",
        "sync:archive: sync:stage2 sync:all",
        "sync:archive:debian sync:mhop sync:stage1 sync:callback sync:stage2",
    ] {
        refused(input, "bad-argument", "only one of sync:all, sync:stage1");
    }
}

#[test]
fn unknown_words_are_refused_where_ftpsync_only_warns() {
    for input in [
        "sync:archive:debian sync:stage3",
        "sync:archive:debian debian",
        "sync:archive:debian sync",
        "sync:stage1 status",
        "sync:all --json",
        "sync:mhop help",
        "sync:archive:debian sync:ALL",
        "sync:archive:debian sync:",
        "sync:archive:debian sync:archive",
        "sync:stage1 sync:stage",
        "sync:all ''",
        "sync:archive:debian sync:mhop; id",
        "sync:stage1 sync:callback=x",
    ] {
        refused(input, "bad-argument", "not a push word");
    }
    // An unknown first word is an unknown verb, as before.
    for input in [
        "sync:stage3 sync:archive:debian",
        "sync:MHOP",
        "sync:callbacks",
        "sync sync:archive:debian",
    ] {
        let r = parse_str(input).unwrap_err();
        assert!(
            ["unknown-verb", "bad-argument"].contains(&r.reason()),
            "{input}: {r}"
        );
    }
    assert_eq!(
        parse_str("sync:stage3 sync:archive:debian")
            .unwrap_err()
            .reason(),
        "unknown-verb"
    );
}

#[test]
fn a_bad_archive_name_is_refused_wherever_it_stands() {
    for input in [
        "sync:archive:Debian sync:stage1",
        "sync:stage1 sync:archive:../x",
        "sync:archive:-x sync:all",
        "sync:mhop sync:archive:a:b",
        "sync:archive:a/b sync:stage2",
        "sync:archive:.. sync:stage2",
        "sync:stage2 sync:archive:' '",
    ] {
        refused(input, "bad-argument", "sync:archive: ");
    }
    refused(
        &format!("sync:stage1 sync:archive:{}", "a".repeat(65)),
        "bad-argument",
        "invalid mirror name",
    );
}

#[test]
fn hand_built_requests_still_have_a_canonical_form() {
    let odd = [
        sync(Target::All, Stage::Stage1, None),
        sync(Target::Default, Stage::Stage2, None),
        sync(named("a"), Stage::Stage1, None),
        sync(Target::Default, Stage::All, Some(PushWords::default())),
    ];
    for r in odd {
        assert!(parse_str(&r.canonical()).is_ok(), "{r:?}");
    }
}

// ---- property tests ----

/// The words of a valid push (archive named, empty or absent; at most one
/// stage word; mhop and callback or not), in any order, and the request
/// they mean.
pub(crate) fn push_words() -> impl Strategy<Value = (Vec<String>, Request)> {
    let stage = proptest::option::of(proptest::sample::select(Stage::ALL.to_vec()));
    let archive = proptest::option::of(proptest::option::of(name_strategy()));
    (archive, stage, any::<bool>(), any::<bool>())
        .prop_filter("at least one word", |(a, s, m, c)| {
            a.is_some() || s.is_some() || *m || *c
        })
        .prop_flat_map(|(archive, stage, mhop, callback)| {
            let mut ws = Vec::new();
            if let Some(a) = &archive {
                ws.push(format!("sync:archive:{}", a.as_deref().unwrap_or("")));
            }
            if let Some(s) = stage {
                ws.push(format!("sync:{}", s.as_str()));
            }
            if mhop {
                ws.push("sync:mhop".to_owned());
            }
            if callback {
                ws.push("sync:callback".to_owned());
            }
            let target = match &archive {
                Some(Some(n)) => named(n),
                Some(None) => Target::Default,
                None if stage == Some(Stage::All) => Target::All,
                None => Target::Default,
            };
            let push = words(archive.is_some(), mhop, callback);
            let req = sync(target, stage.unwrap_or(Stage::All), push);
            (Just(ws).prop_shuffle(), Just(req))
        })
}

proptest! {
    /// No order changes the request, the canonical form round-trips and
    /// is a fixed point, and repeating any one word is refused.
    #[test]
    fn order_never_matters_and_duplicates_never_pass(
        (ws, req) in push_words(),
        dup in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
    ) {
        prop_assert_eq!(parse_str(&format!(" {}", ws.join(" "))), Ok(req.clone()));
        let canon = req.canonical();
        prop_assert_eq!(parse_str(&canon), Ok(req.clone()));
        prop_assert_eq!(parse_str(&canon).unwrap().canonical(), canon);
        let mut twice = ws.clone();
        let w = ws[dup.index(ws.len())].clone();
        twice.insert(at.index(ws.len() + 1), w);
        let r = parse_str(&twice.join(" ")).unwrap_err();
        prop_assert_eq!(r.reason(), "bad-argument");
    }
}
