use super::*;
use proptest::prelude::*;

fn parse_str(s: &str) -> Result<Request, Refusal> {
    parse(Some(s.as_bytes()))
}

fn name(s: &str) -> Name {
    Name::new(s).expect("valid test name")
}

pub(crate) fn sync(target: Target, stage: Stage, push: Option<PushWords>) -> Request {
    Request::Sync {
        target,
        stage,
        push,
    }
}

/// Push words with only `archive` set (or none at all).
pub(crate) fn pushed(archive: bool) -> Option<PushWords> {
    Some(PushWords {
        archive,
        ..PushWords::default()
    })
}

fn sync_named(s: &str) -> Request {
    sync(Target::Named(name(s)), Stage::All, None)
}

fn status(mirror: Option<&str>, json: bool) -> Request {
    let mirror = mirror.map(name);
    Request::Status { mirror, json }
}

/// Asserts that `input` is refused with `reason`, and that the message is
/// one printable-ASCII line.
#[track_caller]
fn assert_refused(input: &[u8], reason: &str) {
    match parse(Some(input)) {
        Ok(req) => panic!("{:?} was accepted as {req:?}", escape_for_log(input, 80)),
        Err(r) => {
            assert_eq!(
                r.reason(),
                reason,
                "input {:?}: {r}",
                escape_for_log(input, 80)
            );
            assert_eq!(r.exit_code(), EXIT_USAGE);
            let msg = r.to_string();
            assert!(
                msg.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "message not printable: {msg:?}"
            );
        }
    }
}

// ---- accepted commands ----

#[test]
fn every_line_of_the_verb_table_is_accepted() {
    let debian_cd = || Target::Named(name("debian-cd"));
    let table: &[(&str, Request)] = &[
        ("help", Request::Help),
        ("sync", sync(Target::Default, Stage::All, None)),
        ("sync debian", sync_named("debian")),
        ("status", status(None, false)),
        ("status debian", status(Some("debian"), false)),
        ("status --json", status(None, true)),
        ("status debian --json", status(Some("debian"), true)),
        ("status --json debian", status(Some("debian"), true)),
        ("sync:all", sync(Target::All, Stage::All, pushed(false))),
        (
            "sync:archive:debian-cd",
            sync(debian_cd(), Stage::All, pushed(true)),
        ),
        (
            "sync:archive:",
            sync(Target::Default, Stage::All, pushed(true)),
        ),
        (
            "sync:stage1",
            sync(Target::Default, Stage::Stage1, pushed(false)),
        ),
        (
            "sync:stage2",
            sync(Target::Default, Stage::Stage2, pushed(false)),
        ),
    ];
    for (input, expected) in table {
        assert_eq!(parse_str(input).as_ref(), Ok(expected), "{input}");
        assert_eq!(
            &expected.canonical(),
            input.replace("--json debian", "debian --json").as_str()
        );
    }
}

#[test]
fn spaces_and_quotes_around_words_are_ignored() {
    for input in [
        "  sync   debian  ",
        "'sync' 'debian'",
        "\"sync\" \"debian\"",
        "sync de'bi'an",
        "sync 'debian'",
    ] {
        assert_eq!(parse_str(input), Ok(sync_named("debian")), "{input}");
    }
}

#[test]
fn mirror_names_follow_the_grammar() {
    for ok in [
        "a",
        "0",
        "debian-cd",
        "ubuntu_ports",
        "a.b",
        "9.x-y_z",
        &"a".repeat(64),
    ] {
        assert!(Name::is_valid(ok), "{ok}");
        assert_eq!(parse_str(&format!("sync {ok}")), Ok(sync_named(ok)));
    }
    for bad in [
        "",
        "-a",
        ".a",
        "_a",
        "A",
        "debiaN",
        "a/b",
        "a..b",
        "..",
        ".",
        "a b",
        "a:b",
        "a+b",
        "é",
        &"a".repeat(65),
    ] {
        assert!(!Name::is_valid(bad), "{bad}");
        assert!(Name::new(bad).is_none(), "{bad}");
    }
}

#[test]
fn exactly_max_len_bytes_is_still_examined() {
    let input = format!("status{}--json", " ".repeat(MAX_COMMAND_LEN - 12));
    assert_eq!(input.len(), MAX_COMMAND_LEN);
    assert_eq!(parse_str(&input), Ok(status(None, true)));
}

// ---- refusals ----

#[test]
fn unset_command_is_no_command_and_never_a_shell() {
    let r = parse(None).unwrap_err();
    assert_eq!(r, Refusal::NoCommand);
    assert_eq!(r.reason(), "no-command");
    assert_eq!(r.exit_code(), 64);
}

#[test]
fn empty_and_blank_commands_are_refused() {
    assert_refused(b"", "empty");
    assert_refused(b" ", "empty");
    assert_refused(b"      ", "empty");
}

#[test]
fn shell_metacharacters_are_never_interpreted() {
    let cases: &[(&str, &str)] = &[
        ("sync; id", "unknown-verb"),
        ("sync;id", "unknown-verb"),
        ("sync && id", "bad-argument"),
        ("sync || id", "bad-argument"),
        ("sync | sh", "bad-argument"),
        ("sync $(id)", "bad-argument"),
        ("$(id)", "unknown-verb"),
        ("sync `id`", "bad-argument"),
        ("`id`", "unknown-verb"),
        ("sync > /tmp/x", "bad-argument"),
        ("sync < /etc/passwd", "bad-argument"),
        ("sync >x", "bad-argument"),
        ("sync *", "bad-argument"),
        ("sync deb*", "bad-argument"),
        ("sync ${HOME}", "bad-argument"),
        ("sync &", "bad-argument"),
        ("FOO=1 sync", "unknown-verb"),
        ("exec sync", "unknown-verb"),
        ("sh -c sync", "unknown-verb"),
        ("/usr/bin/syncgate sync", "unknown-verb"),
        ("sync ~root", "bad-argument"),
        ("sync 'a b'", "bad-argument"),
        ("sync \"$(id)\"", "bad-argument"),
    ];
    for (input, reason) in cases {
        assert_refused(input.as_bytes(), reason);
    }
}

#[test]
fn control_bytes_are_refused_including_tab_and_line_breaks() {
    let cases: &[&[u8]] = &[
        b"sync\0",
        b"sync\0debian",
        b"sync\ndebian",
        b"sync\nid",
        b"sync\r",
        b"sync\tdebian",
        b"\tsync",
        b"sync \x1b[2J",
        b"sync\x7f",
        b"sync\x08\x08\x08\x08help",
    ];
    for input in cases {
        assert_refused(input, "control-byte");
    }
    assert_eq!(
        parse(Some(b"sync\tdebian")),
        Err(Refusal::ControlByte {
            byte: b'\t',
            offset: 4
        })
    );
}

#[test]
fn control_bytes_win_over_comments_and_bad_utf8() {
    assert_refused(b"#\xff\n", "control-byte");
    assert_refused(b"\xff #", "comment");
}

#[test]
fn invalid_utf8_is_refused() {
    let cases: &[&[u8]] = &[
        b"\xff",
        b"sync \xff",
        b"sync \xc0\xaf",         // overlong '/'
        b"sync \xe0\x80\xaf",     // overlong '/', 3 bytes
        b"sync \xf0\x80\x80\xaf", // overlong '/', 4 bytes
        b"sync \xc0\x80",         // overlong NUL
        b"sync \xed\xa0\x80",     // UTF-16 surrogate
        b"sync \xe2\x80",         // truncated sequence
        b"\x80sync",              // lone continuation byte
    ];
    for input in cases {
        assert_refused(input, "not-utf8");
    }
    assert_eq!(
        parse(Some(b"sync \xc0\xaf")),
        Err(Refusal::NotUtf8 { offset: 5 })
    );
}

#[test]
fn hash_is_refused_anywhere() {
    for input in [
        "#",
        "# sync",
        "sync #",
        "sync debian#x",
        "sync '#'",
        "help#",
    ] {
        assert_refused(input.as_bytes(), "comment");
    }
}

#[test]
fn overlong_commands_are_refused_before_anything_else() {
    assert_refused(format!("sync {}", "a".repeat(252)).as_bytes(), "too-long");
    assert_refused(&vec![b'a'; 1 << 20], "too-long");
    // Even bytes that would fail later checks are not examined.
    let mut nasty = vec![0u8; MAX_COMMAND_LEN + 1];
    nasty[0] = 0xff;
    assert_eq!(
        parse(Some(&nasty)),
        Err(Refusal::TooLong {
            len: MAX_COMMAND_LEN + 1
        })
    );
}

#[test]
fn option_injection_is_refused() {
    let cases: &[(&str, &str)] = &[
        ("sync --all", "bad-argument"),
        ("sync -e sh", "bad-argument"),
        ("sync --config=/tmp/x", "bad-argument"),
        ("sync -- x", "bad-argument"),
        ("sync --", "bad-argument"),
        ("sync -", "bad-argument"),
        ("sync --json", "bad-argument"),
        ("status --json=1", "bad-argument"),
        ("status -j", "bad-argument"),
        ("status --JSON", "bad-argument"),
        ("status ---json", "bad-argument"),
        ("help --help", "bad-argument"),
        ("--help", "unknown-verb"),
        ("-e sync", "unknown-verb"),
        (
            "rsync --server --sender -vlogDtpre.iLsfxC . /srv",
            "unknown-verb",
        ),
        ("scp -t /tmp", "unknown-verb"),
        ("git-upload-pack 'x'", "unknown-verb"),
        ("internal-sftp", "unknown-verb"),
    ];
    for (input, reason) in cases {
        assert_refused(input.as_bytes(), reason);
    }
    let msg = parse_str("sync --all").unwrap_err().to_string();
    assert!(msg.contains("unknown option"), "{msg}");
}

#[test]
fn path_traversal_is_refused() {
    for input in [
        "sync ../etc",
        "sync a/b",
        "sync ..",
        "sync .",
        "sync /etc",
        "sync debian/",
        "sync a..b",
        "status ../x",
        "sync:archive:../x",
        "sync:archive:a/b",
    ] {
        assert_refused(input.as_bytes(), "bad-argument");
    }
}

#[test]
fn verbs_and_names_are_case_sensitive() {
    assert_refused(b"SYNC", "unknown-verb");
    assert_refused(b"Sync", "unknown-verb");
    assert_refused(b"HELP", "unknown-verb");
    assert_refused(b"sync:ALL", "unknown-verb");
    assert_refused(b"sync Debian", "bad-argument");
    assert_refused(b"status DEBIAN", "bad-argument");
}

#[test]
fn names_longer_than_64_bytes_are_refused() {
    assert_refused(
        format!("sync {}", "a".repeat(65)).as_bytes(),
        "bad-argument",
    );
    assert_refused(
        format!("sync:archive:{}", "a".repeat(65)).as_bytes(),
        "bad-argument",
    );
}

#[test]
fn unbalanced_quotes_and_backslashes_are_shell_syntax_errors() {
    for input in ["sync 'debian", "sync \"debian", "'", "\"", "sync deb'ian"] {
        assert_refused(input.as_bytes(), "shell-syntax");
    }
    for input in ["sync deb\\ian", "s\\ync", "sync \\", "\\", "sync 'a\\b'"] {
        assert_refused(input.as_bytes(), "shell-syntax");
    }
}

#[test]
fn extra_and_repeated_arguments_are_refused() {
    for input in [
        "sync debian extra",
        "sync a b c",
        "help me",
        "status a b",
        "status --json --json",
        "status x --json --json",
        "status --json x --json",
        "status --json x y",
        "sync:all extra",
        "sync:all debian",
        "sync:stage1 x",
        "sync:stage2 --json",
        "sync:archive:debian extra",
        "sync ''",
        "status ''",
    ] {
        assert_refused(input.as_bytes(), "bad-argument");
    }
}

#[test]
fn push_words_must_be_exact() {
    for input in [
        "sync:stage3",
        "sync:stage",
        "sync:",
        "sync:archive",
        "sync:all:",
        "sync:alls",
        "sync: all",
        "''",
        "\"\"",
    ] {
        assert_refused(input.as_bytes(), "unknown-verb");
    }
    for input in ["sync:archive:-x", "sync:archive:Debian", "sync:archive:a:b"] {
        assert_refused(input.as_bytes(), "bad-argument");
    }
}

#[test]
fn unicode_look_alikes_and_invisible_characters_are_refused() {
    let cases: &[(&str, &str)] = &[
        ("\u{0455}ync", "unknown-verb"),                      // Cyrillic dze
        ("\u{0455}ync debian", "unknown-verb"),               // Cyrillic dze
        ("sync\u{200b}", "unknown-verb"),                     // zero-width space
        ("\u{feff}sync", "unknown-verb"),                     // BOM
        ("sync\u{00a0}debian", "unknown-verb"),               // no-break space
        ("\u{ff53}\u{ff59}\u{ff4e}\u{ff43}", "unknown-verb"), // fullwidth
        ("sync deb\u{200b}ian", "bad-argument"),
        ("sync d\u{0435}bian", "bad-argument"),  // Cyrillic ie
        ("sync \u{202e}naibed", "bad-argument"), // right-to-left override
        ("status debian \u{2014}json", "bad-argument"), // em dash
        ("sync \u{0085}", "bad-argument"),       // C1 control NEL
    ];
    for (input, reason) in cases {
        assert_refused(input.as_bytes(), reason);
    }
}

#[test]
fn refusals_never_echo_raw_client_bytes() {
    let r = parse(Some("sync\u{200b}".as_bytes())).unwrap_err();
    assert_eq!(
        r.to_string(),
        "unknown command 'sync\\xe2\\x80\\x8b'; run 'help' to list commands"
    );
    let r = parse_str(&format!("x{}", "y".repeat(200))).unwrap_err();
    assert!(r.to_string().len() < 100, "{r}");
    assert!(r.to_string().contains("..."), "{r}");
}

#[test]
fn every_refusal_reason_is_distinct_and_parse_refusals_exit_64() {
    let all = [
        Refusal::NoCommand,
        Refusal::TooLong { len: 0 },
        Refusal::ControlByte { byte: 0, offset: 0 },
        Refusal::Comment { offset: 0 },
        Refusal::NotUtf8 { offset: 0 },
        Refusal::ShellSyntax { problem: "" },
        Refusal::Empty,
        Refusal::UnknownVerb {
            verb: String::new(),
        },
        Refusal::BadArgument {
            verb: "",
            problem: "",
            arg: String::new(),
        },
    ];
    let reasons: std::collections::BTreeSet<_> = all.iter().map(Refusal::reason).collect();
    assert_eq!(reasons.len(), all.len());
    assert!(all.iter().all(|r| r.exit_code() == 64));
}

// ---- escape_for_log ----

#[test]
fn escape_for_log_keeps_printable_ascii_and_escapes_the_rest() {
    assert_eq!(escape_for_log(b"sync debian", 80), "sync debian");
    assert_eq!(
        escape_for_log(b"a\0b\n\x1b\x7f\xff", 80),
        "a\\x00b\\x0a\\x1b\\x7f\\xff"
    );
    assert_eq!(escape_for_log(b"a\\x41", 80), "a\\x5cx41");
    assert_eq!(escape_for_log(b"", 80), "");
}

#[test]
fn escape_for_log_truncates_without_splitting_escapes() {
    assert_eq!(escape_for_log(b"abcdef", 6), "abcdef");
    assert_eq!(escape_for_log(b"abcdefg", 6), "abcdef...");
    assert_eq!(escape_for_log(b"abcd\xff", 6), "abcd...");
    assert_eq!(escape_for_log(b"x", 0), "...");
}

// ---- property tests ----
//
// The case count comes from `ProptestConfig::default()`: 256 unless the
// PROPTEST_CASES environment variable says otherwise.

/// A valid mirror name.
pub(crate) fn name_strategy() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,63}".prop_filter("no '..'", |s| !s.contains(".."))
}

/// The words of a valid command and the request they mean.
pub(crate) fn valid_words() -> impl Strategy<Value = (Vec<String>, Request)> {
    let n = name_strategy;
    let w = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    prop_oneof![
        Just((w(&["help"]), Request::Help)),
        Just((w(&["sync"]), sync(Target::Default, Stage::All, None))),
        n().prop_map(move |s| (w(&["sync", &s]), sync_named(&s))),
        push::tests::push_words(),
        (proptest::option::of(n()), any::<bool>(), any::<bool>()).prop_map(
            move |(mirror, json, json_first)| {
                let mut words = w(&["status"]);
                if let Some(m) = &mirror {
                    words.push(m.clone());
                }
                if json {
                    words.insert(if json_first { 1 } else { words.len() }, "--json".into());
                }
                (words, status(mirror.as_deref(), json))
            }
        ),
    ]
}

/// A valid command spelled with random spacing and quoting, and the
/// request it means.
pub(crate) fn valid_command() -> impl Strategy<Value = (String, Request)> {
    (
        valid_words(),
        proptest::collection::vec((1usize..=3, 0u8..3), 4),
        0usize..=2,
        0usize..=2,
    )
        .prop_map(|((words, req), style, lead, trail)| {
            let mut s = " ".repeat(lead);
            for (i, (word, (spaces, q))) in words.iter().zip(style).enumerate() {
                if i > 0 {
                    s.push_str(&" ".repeat(spaces));
                }
                match q {
                    0 => s.push_str(word),
                    1 => s.push_str(&format!("'{word}'")),
                    _ => s.push_str(&format!("\"{word}\"")),
                }
            }
            s.push_str(&" ".repeat(trail));
            (s, req)
        })
}

/// A valid command with one byte inserted somewhere.
fn mutated_command() -> impl Strategy<Value = Vec<u8>> {
    (valid_command(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|((s, _), at, b)| {
        let mut v = s.into_bytes();
        v.insert(at.index(v.len() + 1), b);
        v
    })
}

/// The properties every accepted input must have: (b) canonical
/// round-trip, (c) only grammar bytes and only valid names.
fn check_accepted(raw: &[u8], req: &Request) -> Result<(), TestCaseError> {
    let canon = req.canonical();
    prop_assert_eq!(parse(Some(canon.as_bytes())), Ok(req.clone()));
    prop_assert!(
        raw.iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:- '\"".contains(&b)),
        "accepted {:?}",
        escape_for_log(raw, 400)
    );
    for n in req.names() {
        prop_assert!(Name::is_valid(n.as_str()));
    }
    Ok(())
}

proptest! {
    /// (a) parse never panics, whatever the bytes.
    #[test]
    fn parse_never_panics(raw in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..400))) {
        let _ = parse(raw.as_deref());
    }

    /// (b), (c) for arbitrary bytes: anything accepted round-trips and is
    /// made only of grammar bytes; (d) non-printable bytes are refused.
    #[test]
    fn arbitrary_bytes_accepted_only_if_well_formed(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
        match parse(Some(&raw)) {
            Ok(req) => check_accepted(&raw, &req)?,
            Err(r) => prop_assert!(r.exit_code() == 64),
        }
    }

    /// (b), (c), (d) on inputs one byte away from a valid command, which
    /// are accepted far more often than random bytes.
    #[test]
    fn near_valid_inputs_accepted_only_if_well_formed(raw in mutated_command()) {
        let printable = raw.iter().all(|&b| (0x20..=0x7e).contains(&b));
        match parse(Some(&raw)) {
            Ok(req) => {
                prop_assert!(printable);
                check_accepted(&raw, &req)?;
            }
            Err(r) => prop_assert!(r.exit_code() == 64),
        }
    }

    /// (d) a single byte outside printable ASCII anywhere is refused.
    #[test]
    fn non_printable_ascii_is_always_refused(
        (cmd, _) in valid_command(),
        at in any::<prop::sample::Index>(),
        bad in prop_oneof![
            (0u8..0x20).prop_map(|b| vec![b]),
            (0x7fu8..=0xff).prop_map(|b| vec![b]),
            any::<char>().prop_filter("non-ASCII", |c| !c.is_ascii())
                .prop_map(|c| c.to_string().into_bytes()),
        ],
    ) {
        let mut raw = cmd.into_bytes();
        let at = at.index(raw.len() + 1);
        raw.splice(at..at, bad);
        prop_assert!(parse(Some(&raw)).is_err(), "accepted {:?}", escape_for_log(&raw, 400));
    }

    /// (e) generated valid commands are accepted as the request they mean,
    /// and (b) their canonical form parses to the same request.
    #[test]
    fn valid_commands_are_accepted((cmd, expected) in valid_command()) {
        prop_assert_eq!(parse(Some(cmd.as_bytes())), Ok(expected.clone()));
        check_accepted(cmd.as_bytes(), &expected)?;
        prop_assert_eq!(parse(Some(expected.canonical().as_bytes())), Ok(expected));
    }

    /// Escaped output is printable ASCII and respects the cap.
    #[test]
    fn escape_for_log_is_printable_and_bounded(raw in proptest::collection::vec(any::<u8>(), 0..100), cap in 0usize..50) {
        let s = escape_for_log(&raw, cap);
        prop_assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        prop_assert!(s.len() <= cap + 3);
    }
}
