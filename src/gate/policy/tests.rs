use super::*;
use crate::gate::request::{parse, tests::valid_command};
use crate::run::Stage;
use proptest::prelude::*;

fn cidr(s: &str) -> Cidr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn policy(verbs: &[Verb], mirrors: &[&str], from: &[&str]) -> KeyPolicy {
    KeyPolicy {
        key: "jenkins".into(),
        verbs: verbs.to_vec(),
        mirrors: mirrors.iter().map(|m| m.to_string()).collect(),
        from: from.iter().map(|c| cidr(c)).collect(),
    }
}

fn jenkins() -> KeyPolicy {
    policy(&[Verb::Sync, Verb::Status], &["debian-cd"], &[])
}

fn run(cmd: &str, p: &KeyPolicy, client: Option<&str>) -> Result<Action, Refusal> {
    let req = parse(Some(cmd.as_bytes())).expect("test command parses");
    authorize(&req, p, client.map(ip))
}

#[track_caller]
fn refused(cmd: &str, p: &KeyPolicy, client: Option<&str>, reason: &str) -> String {
    let r = run(cmd, p, client).expect_err(cmd);
    assert_eq!(r.reason(), reason, "{cmd}: {r}");
    assert_eq!(r.exit_code(), 77, "{cmd}");
    r.to_string()
}

fn sync(ms: &[&str]) -> Action {
    sync_at(ms, Stage::All)
}

fn sync_at(ms: &[&str], stage: Stage) -> Action {
    Action::Sync {
        mirrors: ms.iter().map(|m| m.to_string()).collect(),
        stage,
    }
}

// ---- authorize ----

#[test]
fn help_is_always_allowed() {
    let nothing = policy(&[], &[], &["10.0.0.0/8"]);
    assert_eq!(run("help", &nothing, None), Ok(Action::Help));
    assert_eq!(run("help", &nothing, Some("192.0.2.1")), Ok(Action::Help));
}

#[test]
fn a_key_with_one_mirror_syncs_it_by_default() {
    let p = jenkins();
    assert_eq!(run("sync", &p, None), Ok(sync(&["debian-cd"])));
    assert_eq!(run("sync debian-cd", &p, None), Ok(sync(&["debian-cd"])));
    assert_eq!(run("sync:all", &p, None), Ok(sync(&["debian-cd"])));
    assert_eq!(
        run("sync:stage1", &p, None),
        Ok(sync_at(&["debian-cd"], Stage::Stage1))
    );
    assert_eq!(
        run("sync:stage2", &p, None),
        Ok(sync_at(&["debian-cd"], Stage::Stage2))
    );
    assert_eq!(run("sync:archive:", &p, None), Ok(sync(&["debian-cd"])));
    assert_eq!(
        run("sync:archive:debian-cd", &p, None),
        Ok(sync(&["debian-cd"]))
    );
}

#[test]
fn sync_without_a_name_is_ambiguous_for_a_key_with_several_mirrors() {
    let p = policy(&[Verb::Sync], &["debian", "ubuntu"], &[]);
    let msg = refused("sync", &p, None, "ambiguous-mirror");
    assert!(msg.contains("debian, ubuntu"), "{msg}");
    refused("sync:stage1", &p, None, "ambiguous-mirror");
    assert_eq!(run("sync ubuntu", &p, None), Ok(sync(&["ubuntu"])));
    assert_eq!(run("sync:all", &p, None), Ok(sync(&["debian", "ubuntu"])));
}

#[test]
fn runmirrors_pushes_pass_their_stage_through() {
    let one = jenkins();
    for (cmd, stage) in [
        (" sync:archive:debian-cd sync:all", Stage::All),
        (" sync:archive: sync:all", Stage::All),
        (" sync:archive:debian-cd sync:stage1", Stage::Stage1),
        (" sync:archive: sync:mhop sync:stage2", Stage::Stage2),
        (" sync:archive: sync:stage1 sync:callback", Stage::Stage1),
    ] {
        assert_eq!(
            run(cmd, &one, None),
            Ok(sync_at(&["debian-cd"], stage)),
            "{cmd}"
        );
    }
    let two = policy(&[Verb::Sync], &["debian", "ubuntu"], &[]);
    assert_eq!(
        run(" sync:archive:ubuntu sync:mhop sync:stage2", &two, None),
        Ok(sync_at(&["ubuntu"], Stage::Stage2))
    );
    for cmd in [
        " sync:archive: sync:all",
        " sync:archive: sync:stage1",
        "sync:archive:",
        "sync:mhop",
    ] {
        refused(cmd, &two, None, "ambiguous-mirror");
    }
    refused(
        " sync:archive:fedora sync:stage1",
        &two,
        None,
        "mirror-not-allowed",
    );
    // Push words need the sync verb like any sync.
    let status_only = policy(&[Verb::Status], &["debian"], &[]);
    refused(
        " sync:archive:debian sync:stage1",
        &status_only,
        None,
        "verb-not-allowed",
    );
    refused(
        " sync:archive: sync:all",
        &status_only,
        None,
        "verb-not-allowed",
    );
}

#[test]
fn duplicate_mirrors_in_the_policy_count_once() {
    let p = policy(&[Verb::Sync], &["debian", "debian"], &[]);
    assert_eq!(run("sync", &p, None), Ok(sync(&["debian"])));
    assert_eq!(run("sync:all", &p, None), Ok(sync(&["debian"])));
}

#[test]
fn a_key_without_mirrors_may_only_ask_for_help() {
    let p = policy(&[Verb::Sync, Verb::Status], &[], &[]);
    for cmd in [
        "sync",
        "sync:all",
        "sync:stage1",
        "sync debian",
        "status",
        "status --json",
    ] {
        let msg = refused(cmd, &p, None, "mirror-not-allowed");
        assert!(msg.ends_with("key 'jenkins' may: help"), "{msg}");
    }
}

#[test]
fn forbidden_and_unknown_mirrors_are_indistinguishable() {
    let p = policy(&[Verb::Sync, Verb::Status], &["debian"], &[]);
    let forbidden = refused("sync ubuntu", &p, None, "mirror-not-allowed");
    let unknown = refused("sync no-such-mirror", &p, None, "mirror-not-allowed");
    assert_eq!(
        forbidden.replace("ubuntu", "X"),
        unknown.replace("no-such-mirror", "X")
    );
    refused("sync:archive:ubuntu", &p, None, "mirror-not-allowed");
    refused("status ubuntu", &p, None, "mirror-not-allowed");
}

#[test]
fn status_covers_the_keys_mirrors_or_one_allowed_mirror() {
    let p = policy(&[Verb::Status], &["debian", "ubuntu"], &[]);
    assert_eq!(
        run("status", &p, None),
        Ok(Action::Status {
            mirror: None,
            json: false
        })
    );
    assert_eq!(
        run("status --json ubuntu", &p, None),
        Ok(Action::Status {
            mirror: Some("ubuntu".into()),
            json: true
        })
    );
    refused("status fedora", &p, None, "mirror-not-allowed");
}

#[test]
fn verbs_must_be_granted_and_the_refusal_says_what_the_key_may_do() {
    let status_only = policy(&[Verb::Status], &["debian-cd"], &[]);
    let msg = refused("sync", &status_only, None, "verb-not-allowed");
    assert_eq!(
        msg,
        "'sync' is not permitted; key 'jenkins' may: status debian-cd, help"
    );
    let sync_only = policy(&[Verb::Sync], &["debian-cd"], &[]);
    refused("status", &sync_only, None, "verb-not-allowed");
    let p = policy(&[Verb::Help], &["a", "b"], &[]);
    let msg = refused("sync a", &p, None, "verb-not-allowed");
    assert!(msg.ends_with("key 'jenkins' may: help"), "{msg}");
    // The example from the design: a sync+status key refused a mirror.
    let msg = refused("sync other", &jenkins(), None, "mirror-not-allowed");
    assert!(
        msg.contains("key 'jenkins' may: sync debian-cd, status debian-cd"),
        "{msg}"
    );
    let two = policy(&[Verb::Sync], &["a", "b"], &[]);
    let msg = refused("sync c", &two, None, "mirror-not-allowed");
    assert!(msg.ends_with("may: sync {a,b}, help"), "{msg}");
}

#[test]
fn the_from_list_restricts_where_the_key_works() {
    let p = policy(&[Verb::Sync], &["debian"], &["10.0.0.0/8", "2001:db8::/32"]);
    assert!(run("sync", &p, Some("10.1.2.3")).is_ok());
    assert!(run("sync", &p, Some("::ffff:10.1.2.3")).is_ok());
    assert!(run("sync", &p, Some("2001:db8::7")).is_ok());
    let msg = refused("sync", &p, Some("192.0.2.1"), "network-not-allowed");
    assert!(msg.contains("192.0.2.1"), "{msg}");
    refused("sync", &p, Some("2001:db9::1"), "network-not-allowed");
    let msg = refused("sync", &p, None, "network-not-allowed");
    assert!(msg.contains("unknown address"), "{msg}");
    // Checked before verbs: a wrong network learns nothing more.
    refused("status", &p, Some("192.0.2.1"), "network-not-allowed");
}

#[test]
fn an_empty_from_list_allows_any_address_even_an_unknown_one() {
    assert!(run("sync", &jenkins(), None).is_ok());
    assert!(run("sync", &jenkins(), Some("192.0.2.1")).is_ok());
}

#[test]
fn policy_text_in_messages_is_escaped() {
    let mut p = policy(&[Verb::Status], &["a"], &[]);
    p.key = "evil\nkey\x1b".into();
    let msg = refused("sync", &p, None, "verb-not-allowed");
    assert!(msg.contains("evil\\x0akey\\x1b"), "{msg}");
    assert!(!help_text(&p).contains('\x1b'));
}

// ---- SSH_CONNECTION ----

#[test]
fn ssh_connection_gives_the_client_address_and_port() {
    let v4 = client_from_ssh_connection(Some(b"192.0.2.7 51234 198.51.100.1 22"));
    assert_eq!(v4, Some((ip("192.0.2.7"), 51234)));
    let v6 = client_from_ssh_connection(Some(b"2001:db8::7 40000 2001:db8::1 22"));
    assert_eq!(v6, Some((ip("2001:db8::7"), 40000)));
    let mapped = client_from_ssh_connection(Some(b"::ffff:10.1.2.3 1 ::1 22"));
    assert_eq!(mapped, Some((ip("::ffff:10.1.2.3"), 1)));
}

#[test]
fn malformed_ssh_connection_gives_none() {
    let cases: &[&[u8]] = &[
        b"",
        b"192.0.2.7",
        b"192.0.2.7 51234 198.51.100.1",
        b"192.0.2.7 51234 198.51.100.1 22 extra",
        b"192.0.2.7  51234 198.51.100.1 22",
        b" 192.0.2.7 51234 198.51.100.1 22",
        b"192.0.2.7 51234 198.51.100.1 22\n",
        b"192.0.2.7\t51234 198.51.100.1 22",
        b"192.0.2.7 0 198.51.100.1 22",
        b"192.0.2.7 65536 198.51.100.1 22",
        b"192.0.2.7 +22 198.51.100.1 22",
        b"192.0.2.7 22 198.51.100.1 x",
        b"192.0.2.7 22 nowhere 22",
        b"host.example 22 198.51.100.1 22",
        b"fe80::1%eth0 22 fe80::2 22",
        b"\xff 22 198.51.100.1 22",
    ];
    for v in cases {
        assert_eq!(
            client_from_ssh_connection(Some(v)),
            None,
            "{:?}",
            escape_for_log(v, 80)
        );
    }
    assert_eq!(client_from_ssh_connection(None), None);
}

// ---- help_text ----

#[test]
fn help_text_for_a_single_mirror_key() {
    let text = help_text(&jenkins());
    assert!(
        text.starts_with("syncgate: commands for key 'jenkins':\n"),
        "{text}"
    );
    assert!(
        text.contains("  sync                      sync debian-cd\n"),
        "{text}"
    );
    assert!(text.contains("  status [MIRROR] [--json]"), "{text}");
    assert!(text.contains("MIRROR is one of: debian-cd\n"), "{text}");
}

#[test]
fn help_text_for_a_help_only_key_lists_only_help() {
    let text = help_text(&policy(&[Verb::Help], &["a"], &[]));
    assert_eq!(
        text,
        "syncgate: commands for key 'jenkins':\n  help                      show this text\nMIRROR is one of: a\n"
    );
    assert!(!help_text(&policy(&[Verb::Sync, Verb::Status], &[], &[])).contains("sync "));
}

/// The usage column of each command line in the help text.
fn usages(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("  "))
        .map(|l| l.split("  ").next().unwrap_or(""))
        .collect()
}

fn policy_strategy() -> impl Strategy<Value = KeyPolicy> {
    let verb = proptest::sample::select(Verb::ALL.to_vec());
    let mirror = prop_oneof![Just("a"), Just("b"), Just("c-d")].prop_map(String::from);
    (
        proptest::collection::vec(verb, 0..4),
        proptest::collection::vec(mirror, 0..4),
    )
        .prop_map(|(verbs, mirrors)| KeyPolicy {
            key: "k".into(),
            verbs,
            mirrors,
            from: vec![],
        })
}

proptest! {
    /// help_text lists a command exactly when authorize permits it.
    #[test]
    fn help_text_matches_authorize(p in policy_strategy()) {
        let text = help_text(&p);
        let listed = usages(&text);
        let ok = |cmd: &str| run(cmd, &p, None).is_ok();
        let some = p.mirrors.first().map(String::as_str).unwrap_or("a");
        let checks = [
            ("sync", ok("sync")),
            ("sync MIRROR", ok(&format!("sync {some}"))),
            ("sync:all", ok("sync:all")),
            ("sync:archive:MIRROR", ok(&format!("sync:archive:{some}"))),
            ("sync:archive:", ok("sync:archive:")),
            ("sync:stage1", ok("sync:stage1")),
            ("sync:stage2", ok("sync:stage2")),
            ("status [MIRROR] [--json]", ok("status") && ok(&format!("status {some} --json"))),
            ("help", ok("help")),
        ];
        for (usage, allowed) in checks {
            prop_assert_eq!(listed.contains(&usage), allowed, "{}: {:?}", usage, p);
        }
        prop_assert_eq!(listed.len(), checks.iter().filter(|c| c.1).count());
    }

    /// Whatever is asked, an authorized sync or status never reaches a
    /// mirror outside the key's list, and refusals here exit 77.
    #[test]
    fn authorize_never_exceeds_the_policy(p in policy_strategy(), (cmd, req) in valid_command()) {
        let _ = cmd;
        match authorize(&req, &p, None) {
            Ok(Action::Sync { mirrors, stage }) => {
                let Request::Sync { stage: asked, .. } = req else {
                    return Err(TestCaseError::fail("a sync from a non-sync request"));
                };
                prop_assert_eq!(stage, asked);
                prop_assert!(!mirrors.is_empty());
                prop_assert!(p.verbs.contains(&Verb::Sync));
                prop_assert!(mirrors.iter().all(|m| p.mirrors.contains(m)));
            }
            Ok(Action::Status { mirror, .. }) => {
                prop_assert!(p.verbs.contains(&Verb::Status));
                prop_assert!(mirror.iter().all(|m| p.mirrors.contains(m)));
            }
            Ok(Action::Help) => prop_assert_eq!(req, Request::Help),
            Err(r) => prop_assert_eq!(r.exit_code(), 77),
        }
    }
}
