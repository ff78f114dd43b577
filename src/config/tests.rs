//! One test per rule the configuration enforces: every error message, every
//! default, and the vocabularies (mirror names, verbs, modes) it defines.
//!
//! Users and groups: `daemon` (a non-root user and group on every Debian
//! system) and `root`.

use super::*;

const PATH: &str = "/etc/syncgate/syncgate.toml";

fn parse(text: &str) -> Result<Config> {
    Config::parse(Path::new(PATH), text)
}

#[track_caller]
fn ok(text: &str) -> Config {
    parse(text).unwrap_or_else(|e| panic!("refused: {e}\nconfig:\n{text}"))
}

/// The message of the config error `text` gives.
#[track_caller]
fn err(text: &str) -> String {
    match parse(text) {
        Err(Error::Config(msg)) => msg,
        Err(e) => panic!("not a config error: {e:?}\nconfig:\n{text}"),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

/// Asserts that `text` is refused at `line` with a message that starts with
/// `start` after `PATH:LINE: `.
#[track_caller]
fn refused(text: &str, line: usize, start: &str) {
    let msg = err(text);
    let want = format!("{PATH}:{line}: {start}");
    assert!(msg.starts_with(&want), "want {want:?}\n got {msg:?}");
}

/// A file with one mirror `m` (lines 1-6), then `extra` from line 7.
fn mirror(extra: &str) -> String {
    format!(
        "state_dir = \"/var/lib/syncgate\"\n\
         [mirror.m]\n\
         upstream = \"rsync://up.example/m/\"\n\
         dest = \"/srv/m\"\n\
         owner = \"daemon\"\n\
         reader_group = \"daemon\"\n\
         {extra}"
    )
}

/// [`mirror`] with `from` replaced by `to` (one occurrence must exist).
#[track_caller]
fn mirror_with(from: &str, to: &str) -> String {
    let text = mirror("");
    assert!(text.contains(from), "{from:?}");
    text.replacen(from, to, 1)
}

/// [`mirror`] followed by a key `ci` (line 7) with these lines.
fn key(lines: &str) -> String {
    mirror(&format!("[key.ci]\n{lines}"))
}

fn the_mirror(cfg: &Config) -> &Mirror {
    cfg.mirror("m").unwrap()
}

// ---- the file ---------------------------------------------------------------

#[test]
fn a_config_error_exits_78() {
    let e = parse("state_dir = \"rel\"\n").unwrap_err();
    assert!(matches!(e, Error::Config(_)), "{e:?}");
    assert_eq!(e.exit().code(), 78);
}

#[test]
fn toml_syntax_errors_name_the_file_and_line() {
    refused("state_dir = \"/s\"\n\nnot toml\n", 3, "");
}

#[test]
fn unknown_top_level_keys_are_refused() {
    refused(
        "state_dir = \"/s\"\nbogus = 1\n",
        2,
        "unknown field `bogus`",
    );
}

#[test]
fn wrong_types_are_refused() {
    refused("state_dir = 5\n", 1, "invalid type");
    refused(
        "state_dir = \"/s\"\nheartbeat = \"30\"\n",
        2,
        "invalid type",
    );
}

#[test]
fn duplicate_keys_and_tables_are_refused() {
    refused(
        "state_dir = \"/s\"\nstate_dir = \"/t\"\n",
        2,
        "duplicate key",
    );
    let twice = format!("{}[mirror.m]\n", mirror(""));
    assert!(
        err(&twice).starts_with(&format!("{PATH}:")),
        "{}",
        err(&twice)
    );
}

#[test]
fn state_dir_is_required() {
    refused("", 1, "missing field `state_dir`");
}

#[test]
fn state_dir_must_be_absolute_without_dotdot() {
    refused(
        "state_dir = \"relative/dir\"\n",
        1,
        "state_dir: must be an absolute path without '..': \"relative/dir\"",
    );
    refused(
        "state_dir = \"/var/../tmp\"\n",
        1,
        "state_dir: must be an absolute path",
    );
}

#[test]
fn load_reads_the_file_and_makes_a_relative_path_absolute() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.toml");
    std::fs::write(&file, "state_dir = \"/s\"\nprivilege = \"direct\"\n").unwrap();
    let cfg = Config::load(&file).unwrap();
    assert_eq!(cfg.path, file);
    assert!(cfg.mirrors.is_empty() && cfg.keys.is_empty());
    let missing = Config::load(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(&missing, Error::Config(m) if m.contains("missing.toml: cannot read")));
    // A relative path is resolved against the working directory.
    let rel = Config::load(Path::new("no-such-syncgate-config.toml")).unwrap_err();
    let cwd = std::env::current_dir().unwrap();
    assert!(
        rel.to_string().contains(
            &cwd.join("no-such-syncgate-config.toml")
                .display()
                .to_string()
        ),
        "{rel}"
    );
}

// ---- top-level keys -----------------------------------------------------------

#[test]
fn top_level_defaults() {
    let cfg = ok("state_dir = \"/var/lib/syncgate\"\n");
    assert_eq!(cfg.path, Path::new(PATH));
    assert_eq!(cfg.state_dir, Path::new("/var/lib/syncgate"));
    assert_eq!(cfg.privilege, Privilege::Sudo);
    assert_eq!(cfg.login_user, "syncgate");
    assert_eq!(cfg.rsync, Path::new("/usr/bin/rsync"));
    assert_eq!(cfg.binary, Path::new("/usr/bin/syncgate"));
    assert_eq!(cfg.heartbeat, 30);
    assert_eq!(cfg.syslog.facility, "authpriv");
    assert_eq!(cfg.syslog.socket, Path::new("/dev/log"));
    assert!(cfg.mirrors.is_empty());
    assert!(cfg.keys.is_empty());
}

#[test]
fn top_level_values_are_kept() {
    let cfg = ok(
        "state_dir = \"/s\"\nprivilege = \"direct\"\nlogin_user = \"gate.user_1\"\n\
         rsync = \"/opt/rsync\"\nbinary = \"/opt/bin/syncgate\"\nheartbeat = 3600\n\
         [syslog]\nfacility = \"local3\"\nsocket = \"/run/log\"\n",
    );
    assert_eq!(cfg.privilege, Privilege::Direct);
    assert_eq!(cfg.login_user, "gate.user_1");
    assert_eq!(cfg.rsync, Path::new("/opt/rsync"));
    assert_eq!(cfg.binary, Path::new("/opt/bin/syncgate"));
    assert_eq!(cfg.heartbeat, 3600);
    assert_eq!(cfg.syslog.facility, "local3");
    assert_eq!(cfg.syslog.socket, Path::new("/run/log"));
}

#[test]
fn audit_required_defaults_to_true_and_the_fallback_file_is_in_state_dir() {
    let cfg = ok("state_dir = \"/s\"\n");
    assert!(cfg.audit_required);
    assert_eq!(cfg.syslog.fallback_dir, Path::new("/s"));
    assert!(!ok("state_dir = \"/s\"\naudit_required = false\n").audit_required);
    assert!(ok("state_dir = \"/s\"\naudit_required = true\n").audit_required);
    refused(
        "state_dir = \"/s\"\naudit_required = \"no\"\n",
        2,
        "invalid type",
    );
}

#[test]
fn privilege_is_sudo_or_direct() {
    refused(
        "state_dir = \"/s\"\nprivilege = \"root\"\n",
        2,
        "unknown variant `root`",
    );
}

#[test]
fn login_user_must_be_a_valid_user_name() {
    for bad in ["", "-x", "a b", "a/b", &"a".repeat(33)] {
        refused(
            &format!("state_dir = \"/s\"\nlogin_user = \"{bad}\"\n"),
            2,
            &format!("login_user: not a valid user name: {bad:?}"),
        );
    }
    ok(&format!(
        "state_dir = \"/s\"\nlogin_user = \"{}\"\n",
        "a".repeat(32)
    ));
}

#[test]
fn rsync_must_be_an_absolute_path() {
    for bad in ["rsync", "/usr/../bin/rsync"] {
        refused(
            &format!("state_dir = \"/s\"\nrsync = \"{bad}\"\n"),
            2,
            "rsync: must be an absolute path",
        );
    }
}

#[test]
fn binary_must_be_an_absolute_sudoers_safe_path() {
    for bad in [
        "syncgate",
        "/usr/bin/sync gate",
        "/usr/bin/sync*",
        "/a/../b",
    ] {
        refused(
            &format!("state_dir = \"/s\"\nbinary = \"{bad}\"\n"),
            2,
            "binary: must be an absolute path of letters, digits, '/', '.', '_' and '-'",
        );
    }
}

#[test]
fn binary_defaults_to_this_executable_with_privilege_direct() {
    let cfg = ok("state_dir = \"/s\"\nprivilege = \"direct\"\n");
    assert_eq!(cfg.binary, std::env::current_exe().unwrap());
}

#[test]
fn with_sudo_the_config_path_must_be_sudoers_safe() {
    let text = "state_dir = \"/s\"\n";
    let e = Config::parse(Path::new("/etc/sync gate.toml"), text).unwrap_err();
    assert_eq!(
        e.to_string(),
        "/etc/sync gate.toml: with privilege = \"sudo\" the config path may only hold letters, digits, '/', '.', '_' and '-' (it appears in the sudoers rule)"
    );
    let direct = "state_dir = \"/s\"\nprivilege = \"direct\"\n";
    Config::parse(Path::new("/etc/sync gate.toml"), direct).unwrap();
}

#[test]
fn heartbeat_is_between_1_and_3600_seconds() {
    for bad in [0, 3601] {
        refused(
            &format!("state_dir = \"/s\"\nheartbeat = {bad}\n"),
            2,
            "heartbeat: must be between 1 and 3600 seconds",
        );
    }
    assert_eq!(ok("state_dir = \"/s\"\nheartbeat = 1\n").heartbeat, 1);
    refused("state_dir = \"/s\"\nheartbeat = -1\n", 2, "invalid value");
}

#[test]
fn syslog_facility_must_be_known() {
    refused(
        "state_dir = \"/s\"\n[syslog]\nfacility = \"nosuch\"\n",
        3,
        "syslog.facility: unknown facility \"nosuch\" (use e.g. auth, authpriv, daemon, user, local0..local7)",
    );
    for good in ["auth", "authpriv", "daemon", "user", "local0", "local7"] {
        let cfg = ok(&format!(
            "state_dir = \"/s\"\n[syslog]\nfacility = \"{good}\"\n"
        ));
        assert_eq!(cfg.syslog.facility, good);
    }
}

#[test]
fn syslog_socket_must_be_an_absolute_path() {
    refused(
        "state_dir = \"/s\"\n[syslog]\nsocket = \"dev/log\"\n",
        3,
        "syslog.socket: must be an absolute path",
    );
}

#[test]
fn syslog_table_has_only_facility_and_socket() {
    refused(
        "state_dir = \"/s\"\n[syslog]\nhost = \"x\"\n",
        3,
        "unknown field `host`",
    );
    let cfg = ok("state_dir = \"/s\"\n[syslog]\n");
    assert_eq!(cfg.syslog.facility, "authpriv");
    assert_eq!(cfg.syslog.socket, Path::new("/dev/log"));
}

#[test]
fn status_page_is_an_absolute_directory_path_and_unset_by_default() {
    assert_eq!(ok("state_dir = \"/s\"\n").status_page, None);
    let cfg = ok("state_dir = \"/s\"\nstatus_page = \"/var/www/html/mirror-status\"\n");
    assert_eq!(
        cfg.status_page.as_deref(),
        Some(Path::new("/var/www/html/mirror-status"))
    );
    for bad in ["www/status", "/var/www/../etc", "/", "", "/var/www/a\\nb"] {
        refused(
            &format!("state_dir = \"/s\"\n\nstatus_page = \"{bad}\"\n"),
            3,
            "status_page: must be the absolute path of a directory",
        );
    }
    refused("state_dir = \"/s\"\nstatus_page = 1\n", 2, "invalid type");
}

// ---- [mirror.NAME] --------------------------------------------------------------

#[test]
fn mirror_defaults() {
    let cfg = ok(&mirror(""));
    assert_eq!(cfg.mirror_names(), ["m"]);
    let m = the_mirror(&cfg);
    assert_eq!(m.name, "m");
    assert_eq!(m.upstream, Upstream::Daemon("rsync://up.example/m/".into()));
    assert_eq!(m.dest, Path::new("/srv/m"));
    assert_eq!(m.owner, "daemon");
    assert_eq!(Some(m.owner_uid), lookup_uid("daemon"));
    assert_eq!(m.reader_group, "daemon");
    assert_eq!(Some(m.reader_gid), lookup_gid("daemon"));
    assert_eq!(m.file_mode, 0o640);
    assert_eq!(m.dir_mode, 0o2750);
    assert!(m.exclude.is_empty());
    assert_eq!(m.last, DEFAULT_LAST);
    assert_eq!(m.bwlimit, 0);
    assert_eq!(m.io_timeout, 600);
    assert_eq!(m.timeout, 6 * 3600);
    assert_eq!(m.max_delete, 1000);
    assert_eq!(m.queue_timeout, 3 * 3600);
}

#[test]
fn mirror_values_are_kept() {
    let cfg = ok(&mirror(
        "file_mode = \"0644\"\ndir_mode = \"755\"\nexclude = [\"*.tmp\", \"-x\"]\n\
         last = [\"SUMS\"]\nbwlimit = 500\nio_timeout = 1\ntimeout = 2\nmax_delete = 0\n\
         queue_timeout = 3\n",
    ));
    let m = the_mirror(&cfg);
    assert_eq!((m.file_mode, m.dir_mode), (0o644, 0o755));
    assert_eq!(m.exclude, ["*.tmp", "-x"]);
    assert_eq!(m.last, ["SUMS"]);
    assert_eq!((m.bwlimit, m.max_delete), (500, 0));
    assert_eq!((m.io_timeout, m.timeout, m.queue_timeout), (1, 2, 3));
    assert!(ok(&mirror("last = []\n")).mirrors["m"].last.is_empty());
}

#[test]
fn mirror_tables_require_upstream_dest_owner_and_reader_group() {
    for line in [
        "upstream = \"rsync://up.example/m/\"\n",
        "dest = \"/srv/m\"\n",
        "owner = \"daemon\"\n",
        "reader_group = \"daemon\"\n",
    ] {
        let field = line.split(' ').next().unwrap();
        let msg = err(&mirror_with(line, ""));
        assert!(
            msg.contains(&format!("missing field `{field}`")),
            "{field}: {msg}"
        );
    }
}

#[test]
fn unknown_mirror_keys_are_refused() {
    refused(&mirror("colour = \"blue\"\n"), 7, "unknown field `colour`");
}

#[test]
fn mirror_fields_have_types() {
    refused(&mirror("bwlimit = \"fast\"\n"), 7, "invalid type");
    refused(&mirror("exclude = \"*.tmp\"\n"), 7, "invalid type");
    refused(&mirror("file_mode = 640\n"), 7, "invalid type");
}

#[test]
fn mirror_names_follow_the_grammar() {
    let long = "a".repeat(65);
    for bad in [
        "Bad",
        "Bad Name",
        "-x",
        ".x",
        "a..b",
        "a/b",
        "ä",
        long.as_str(),
    ] {
        let text = mirror_with("[mirror.m]", &format!("[mirror.\"{bad}\"]"));
        refused(
            &text,
            2,
            &format!("mirror.{bad}: mirror names use lowercase letters, digits, '.', '_' and '-', start with a letter or digit, and have at most 64 characters"),
        );
    }
    for good in ["0", "a.b_c-d", &"a".repeat(64)] {
        let cfg = ok(&mirror_with("[mirror.m]", &format!("[mirror.\"{good}\"]")));
        assert_eq!(cfg.mirror_names(), [good]);
    }
}

#[test]
fn several_mirrors_are_listed_by_name() {
    let text = format!(
        "{}[mirror.a]\nupstream = \"/up/a\"\ndest = \"/srv/a\"\nowner = \"daemon\"\nreader_group = \"daemon\"\n",
        mirror("")
    );
    let cfg = ok(&text);
    assert_eq!(cfg.mirror_names(), ["a", "m"]);
    assert_eq!(cfg.mirror("a").unwrap().name, "a");
}

#[test]
fn an_unknown_mirror_is_a_usage_error_that_lists_the_known_ones() {
    let cfg = ok(&mirror(""));
    let e = cfg.mirror("nope").unwrap_err();
    assert!(matches!(e, Error::Usage(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("no mirror named \"nope\" in {PATH} (known: m)")
    );
}

// ---- upstream

fn upstream(up: &str) -> Result<Config> {
    parse(&mirror_with("rsync://up.example/m/", up))
}

#[track_caller]
fn upstream_refused(up: &str, start: &str) {
    let text = mirror_with("rsync://up.example/m/", up);
    refused(&text, 3, &format!("mirror.m.upstream: {start}"));
}

#[test]
fn upstream_kinds() {
    let kind = |up: &str| upstream(up).unwrap().mirrors["m"].upstream.clone();
    assert_eq!(
        kind("rsync://h:873/mod/path"),
        Upstream::Daemon("rsync://h:873/mod/path".into())
    );
    assert_eq!(kind("/srv/up"), Upstream::Local("/srv/up".into()));
    assert_eq!(
        kind("mirror@host.example:/srv/x"),
        Upstream::Ssh("mirror@host.example:/srv/x".into())
    );
    assert_eq!(kind("host:rel/path"), Upstream::Ssh("host:rel/path".into()));
}

#[test]
fn upstream_source_arg_always_ends_with_a_slash() {
    assert_eq!(
        Upstream::Daemon("rsync://h/m".into()).source_arg(),
        "rsync://h/m/"
    );
    assert_eq!(
        Upstream::Daemon("rsync://h/m/".into()).source_arg(),
        "rsync://h/m/"
    );
    assert_eq!(Upstream::Local("/srv/up".into()).source_arg(), "/srv/up/");
    assert_eq!(Upstream::Ssh("h:/x/".into()).source_arg(), "h:/x/");
}

#[test]
fn upstream_must_not_be_empty_have_spaces_controls_or_a_leading_dash() {
    for bad in ["", "rsync://h/a b", "/srv/a\\tb", "-e sh", "-x"] {
        upstream_refused(
            bad,
            "must be an rsync:// URL, an absolute path or host:path, without spaces",
        );
    }
}

#[test]
fn rsync_urls_need_a_host_and_a_module() {
    for bad in ["rsync://", "rsync:///mod"] {
        upstream_refused(bad, "rsync:// URL needs a host and a module");
    }
}

#[test]
fn local_upstreams_must_be_clean_absolute_paths() {
    for bad in ["/srv/../up", "/../up"] {
        upstream_refused(bad, "local path must be absolute, without '..'");
    }
}

#[test]
fn ssh_upstreams_need_user_host_and_a_path() {
    for bad in [":path", "host:", "host::module", "ho$t:path", "h/x:path"] {
        upstream_refused(bad, "expected [user@]host:path");
    }
}

#[test]
fn relative_upstreams_are_refused() {
    upstream_refused(
        "srv/up",
        "\"srv/up\" is a relative path; use an rsync:// URL, an absolute path or host:path",
    );
}

// ---- dest

#[test]
fn dest_must_be_an_absolute_path_below_the_root() {
    for bad in ["srv/m", "/", "/srv/../m", "/srv/\\u0007"] {
        let text = mirror_with("\"/srv/m\"", &format!("\"{bad}\""));
        refused(
            &text,
            4,
            "mirror.m.dest: must be an absolute path below / without '..': ",
        );
    }
}

#[test]
fn dest_and_a_local_upstream_must_not_contain_each_other() {
    for (up, dest) in [
        ("/srv", "/srv/m"),
        ("/srv/m/up", "/srv/m"),
        ("/srv/m", "/srv/m"),
    ] {
        let text = mirror_with("rsync://up.example/m/", up)
            .replace("dest = \"/srv/m\"", &format!("dest = \"{dest}\""));
        refused(
            &text,
            4,
            "mirror.m.dest: dest and upstream must not contain each other",
        );
    }
    ok(&mirror_with("rsync://up.example/m/", "/srv/mm"));
}

// ---- owner and reader_group

#[test]
fn owner_must_be_an_existing_user() {
    let text = mirror_with("owner = \"daemon\"", "owner = \"no-such-user-x\"");
    refused(&text, 5, "mirror.m.owner: no such user \"no-such-user-x\"");
}

#[test]
fn owner_must_not_be_root_with_sudo() {
    let text = mirror_with("owner = \"daemon\"", "owner = \"root\"");
    refused(
        &text,
        5,
        "mirror.m.owner: the image owner must not be root (with privilege = \"sudo\")",
    );
    let direct = text.replacen("\n", "\nprivilege = \"direct\"\n", 1);
    assert_eq!(ok(&direct).mirrors["m"].owner_uid, 0);
}

#[test]
fn reader_group_must_be_an_existing_group() {
    let text = mirror_with(
        "reader_group = \"daemon\"",
        "reader_group = \"no-such-group-x\"",
    );
    refused(
        &text,
        6,
        "mirror.m.reader_group: no such group \"no-such-group-x\"",
    );
}

// ---- modes

const FILE_MODE_RULE: &str = "want an octal mode like \"0640\"; owner must read, group and other must not write, no setuid/setgid/sticky";
const DIR_MODE_RULE: &str = "want an octal mode like \"0750\" or \"2750\"; owner rwx, group and other must not write, no setuid/sticky";

#[test]
fn file_mode_must_be_octal_owner_readable_and_not_writable_by_others() {
    for bad in [
        "", "0666", "0642", "0660", "0240", "0040", "4640", "2640", "1640", "640x", "0o640", "08",
        "12345", "-640",
    ] {
        refused(
            &mirror(&format!("file_mode = \"{bad}\"\n")),
            7,
            &format!("mirror.m.file_mode: {bad:?}: {FILE_MODE_RULE}"),
        );
    }
    for (good, bits) in [
        ("0400", 0o400),
        ("644", 0o644),
        ("0755", 0o755),
        ("0600", 0o600),
    ] {
        let cfg = ok(&mirror(&format!("file_mode = \"{good}\"\n")));
        assert_eq!(cfg.mirrors["m"].file_mode, bits, "{good}");
    }
}

#[test]
fn dir_mode_must_be_octal_owner_rwx_and_not_writable_by_others() {
    for bad in [
        "", "0770", "0757", "0650", "0550", "4750", "1750", "6750", "750x", "07500",
    ] {
        refused(
            &mirror(&format!("dir_mode = \"{bad}\"\n")),
            7,
            &format!("mirror.m.dir_mode: {bad:?}: {DIR_MODE_RULE}"),
        );
    }
    for (good, bits) in [("0700", 0o700), ("755", 0o755), ("2750", 0o2750)] {
        let cfg = ok(&mirror(&format!("dir_mode = \"{good}\"\n")));
        assert_eq!(cfg.mirrors["m"].dir_mode, bits, "{good}");
    }
}

#[test]
fn every_mirror_has_a_valid_perm_policy() {
    let cfg = ok(&mirror("file_mode = \"0644\"\ndir_mode = \"0755\"\n"));
    let m = the_mirror(&cfg);
    let p = m.perm_policy();
    assert_eq!(
        p,
        PermPolicy {
            uid: m.owner_uid,
            gid: m.reader_gid,
            file_mode: 0o644,
            dir_mode: 0o755,
        }
    );
    p.validate().unwrap();
}

/// The config accepts a mode exactly when the [`PermPolicy`] rules do: one
/// definition of the mode rules.
#[test]
fn config_modes_agree_with_the_perm_policy_rules() {
    for bits in 0..=0o7777u32 {
        let text = format!("{bits:04o}");
        let file = parse(&mirror(&format!("file_mode = \"{text}\"\n"))).is_ok();
        assert_eq!(
            file,
            PermPolicy::check_file_mode(bits).is_ok(),
            "file {text}"
        );
        let dir = parse(&mirror(&format!("dir_mode = \"{text}\"\n"))).is_ok();
        assert_eq!(dir, PermPolicy::check_dir_mode(bits).is_ok(), "dir {text}");
    }
}

#[test]
fn parse_mode_takes_one_to_four_octal_digits() {
    assert_eq!(parse_mode("0"), Some(0));
    assert_eq!(parse_mode("640"), Some(0o640));
    assert_eq!(parse_mode("7777"), Some(0o7777));
    for bad in ["", "8", "07777", "0o640", " 640", "+640", "64 0"] {
        assert_eq!(parse_mode(bad), None, "{bad:?}");
    }
}

// ---- PermPolicy

fn policy() -> PermPolicy {
    PermPolicy {
        uid: 1,
        gid: 1,
        file_mode: 0o640,
        dir_mode: 0o750,
    }
}

#[track_caller]
fn invalid(p: PermPolicy, msg: &str) {
    assert_eq!(p.validate(), Err(InvalidPolicy(msg.into())), "{p:?}");
}

#[test]
fn perm_policy_accepts_the_usual_modes() {
    let ok = policy();
    ok.validate().unwrap();
    for (file_mode, dir_mode) in [
        (0o640, 0o2750),
        (0o755, 0o755),
        (0o400, 0o700),
        (0o444, 0o2755),
    ] {
        PermPolicy {
            file_mode,
            dir_mode,
            ..ok
        }
        .validate()
        .unwrap();
    }
}

#[test]
fn perm_policy_refuses_the_reserved_ids() {
    let msg =
        |u: u32, g: u32| format!("uid/gid {u}:{g} is reserved (-1 means \"unchanged\" to chown)");
    invalid(
        PermPolicy {
            uid: u32::MAX,
            ..policy()
        },
        &msg(u32::MAX, 1),
    );
    invalid(
        PermPolicy {
            gid: u32::MAX,
            ..policy()
        },
        &msg(1, u32::MAX),
    );
}

#[test]
fn perm_policy_file_mode_rules() {
    let file = |file_mode| PermPolicy {
        file_mode,
        ..policy()
    };
    invalid(file(0o10640), "file_mode 10640 has bits outside 7777");
    invalid(file(0o660), "file_mode 0660 grants group/other write");
    invalid(file(0o642), "file_mode 0642 grants group/other write");
    invalid(file(0o4640), "file_mode 4640 sets setuid/setgid/sticky");
    invalid(file(0o2640), "file_mode 2640 sets setuid/setgid/sticky");
    invalid(file(0o1640), "file_mode 1640 sets setuid/setgid/sticky");
    invalid(
        file(0o240),
        "file_mode 0240 does not let the owner read (needed to publish and check the files)",
    );
}

#[test]
fn perm_policy_dir_mode_rules() {
    let dir = |dir_mode| PermPolicy {
        dir_mode,
        ..policy()
    };
    invalid(dir(0o10750), "dir_mode 10750 has bits outside 7777");
    invalid(dir(0o770), "dir_mode 0770 grants group/other write");
    invalid(dir(0o757), "dir_mode 0757 grants group/other write");
    invalid(
        dir(0o4750),
        "dir_mode 4750 sets setuid/sticky (only setgid is allowed)",
    );
    invalid(
        dir(0o1750),
        "dir_mode 1750 sets setuid/sticky (only setgid is allowed)",
    );
    invalid(
        dir(0o550),
        "dir_mode 0550 does not give the owner rwx (needed to walk, repair and sync)",
    );
    invalid(
        dir(0o650),
        "dir_mode 0650 does not give the owner rwx (needed to walk, repair and sync)",
    );
}

#[test]
fn perm_policy_serializes_as_its_four_fields() {
    let json = serde_json::to_string(&policy()).unwrap();
    assert_eq!(json, r#"{"uid":1,"gid":1,"file_mode":416,"dir_mode":488}"#);
    assert_eq!(serde_json::from_str::<PermPolicy>(&json).unwrap(), policy());
}

// ---- exclude and last

#[test]
fn patterns_must_be_plain_rsync_patterns() {
    for k in ["exclude", "last"] {
        for bad in ["", "+ keep", "- drop", "! x", ": merge", "a\\u0001b"] {
            let shown = bad.replace("\\u0001", "\u{1}");
            refused(
                &mirror(&format!("{k} = [\"ok\", \"{bad}\"]\n")),
                7,
                &format!("mirror.m.{k}: {shown:?} is not a plain rsync pattern"),
            );
        }
        let cfg = ok(&mirror(&format!(
            "{k} = [\"+x\", \"-y\", \"!z\", \"a b\", \"*.iso\"]\n"
        )));
        let got = if k == "exclude" {
            &cfg.mirrors["m"].exclude
        } else {
            &cfg.mirrors["m"].last
        };
        assert_eq!(got, &["+x", "-y", "!z", "a b", "*.iso"]);
    }
}

#[test]
fn the_default_last_patterns_put_checksums_and_signatures_last() {
    for p in [
        "SHA256SUMS*",
        "SHA512SUMS*",
        "MD5SUMS*",
        "*.sign",
        "*.sig",
        "*.asc",
        "*.gpg",
        "*.json",
        "current",
    ] {
        assert!(DEFAULT_LAST.contains(&p), "{p}");
    }
    assert_eq!(DEFAULT_LAST.len(), 9);
}

// ---- timeouts and limits

#[test]
fn timeouts_are_at_least_one_second() {
    for k in ["io_timeout", "timeout", "queue_timeout"] {
        refused(
            &mirror(&format!("{k} = 0\n")),
            7,
            &format!("mirror.m.{k}: must be at least 1 second"),
        );
    }
}

#[test]
fn durations_take_seconds_or_a_unit() {
    let cfg = ok(&mirror(
        "timeout = \"2h\"\nio_timeout = \"90s\"\nqueue_timeout = 60\nbusy_wait = \"1d\"\n",
    ));
    let m = the_mirror(&cfg);
    assert_eq!(
        (m.timeout, m.io_timeout, m.queue_timeout, m.busy_wait),
        (7200, 90, 60, 86400)
    );
    refused(
        &mirror("timeout = \"2 weeks\"\n"),
        7,
        "mirror.m.timeout: want seconds (3600) or a number with a unit",
    );
    refused(
        &mirror("timeout = \"0m\"\n"),
        7,
        "mirror.m.timeout: must be at least 1 second",
    );
    refused(&mirror("timeout = -5\n"), 7, "mirror.m.timeout: ");
}

#[test]
fn limits_may_be_zero_but_not_negative() {
    let cfg = ok(&mirror("bwlimit = 0\nmax_delete = 0\n"));
    assert_eq!(
        (cfg.mirrors["m"].bwlimit, cfg.mirrors["m"].max_delete),
        (0, 0)
    );
    refused(&mirror("bwlimit = -1\n"), 7, "invalid value");
    refused(&mirror("max_delete = -1\n"), 7, "invalid value");
}

#[test]
fn max_waiting_defaults_to_64_for_a_mirror_and_to_none_for_a_key() {
    let cfg = ok(&key("verbs = [\"sync\"]\n"));
    assert_eq!(cfg.mirrors["m"].max_waiting, 64);
    assert_eq!(cfg.keys["ci"].max_waiting, None);
    let cfg = ok(&mirror(
        "max_waiting = 5\n[key.ci]\nverbs = []\nmax_waiting = 2\n",
    ));
    assert_eq!(cfg.mirrors["m"].max_waiting, 5);
    assert_eq!(cfg.keys["ci"].max_waiting, Some(2));
}

#[test]
fn max_waiting_is_at_least_one() {
    refused(
        &mirror("max_waiting = 0\n"),
        7,
        "mirror.m.max_waiting: must be at least 1",
    );
    refused(
        &key("verbs = []\nmax_waiting = 0\n"),
        9,
        "key.ci.max_waiting: must be at least 1",
    );
    refused(&mirror("max_waiting = -1\n"), 7, "invalid value");
    refused(&mirror("max_waiting = \"8\"\n"), 7, "invalid type");
}

// ---- [key.NAME] ---------------------------------------------------------------------

#[test]
fn key_defaults_and_values() {
    let cfg = ok(&key("verbs = [\"sync\", \"status\", \"help\"]\n"));
    let k = &cfg.keys["ci"];
    assert_eq!(k.name, "ci");
    assert_eq!(k.verbs, [Verb::Sync, Verb::Status, Verb::Help]);
    assert!(k.mirrors.is_empty());
    assert!(k.from.is_empty());
    let cfg = ok(&key(
        "verbs = [\"status\"]\nmirrors = [\"m\"]\nfrom = [\"10.0.0.0/8\", \"::1\"]\n",
    ));
    let k = &cfg.keys["ci"];
    assert_eq!(k.verbs, [Verb::Status]);
    assert_eq!(k.mirrors, ["m"]);
    assert_eq!(
        k.from,
        [
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            "::1/128".parse().unwrap()
        ]
    );
}

#[test]
fn key_names_follow_the_mirror_name_rules() {
    for bad in ["CI", "-ci", "c..i", "c i"] {
        let text = key("verbs = []\n").replace("[key.ci]", &format!("[key.\"{bad}\"]"));
        refused(
            &text,
            7,
            &format!("key.{bad}: key names follow the mirror name rules"),
        );
    }
}

#[test]
fn keys_require_verbs() {
    let msg = err(&key("mirrors = [\"m\"]\n"));
    assert!(msg.contains("missing field `verbs`"), "{msg}");
    assert!(ok(&key("verbs = []\n")).keys["ci"].verbs.is_empty());
}

#[test]
fn unknown_verbs_are_a_config_error() {
    refused(
        &key("verbs = [\"sync\",\n  \"shell\"]\n"),
        9,
        "key.ci.verbs: unknown verb \"shell\" (known: sync, status, help)",
    );
    refused(
        &key("verbs = [\"Sync\"]\n"),
        8,
        "key.ci.verbs: unknown verb \"Sync\"",
    );
    refused(
        &key("verbs = [\"sync:all\"]\n"),
        8,
        "key.ci.verbs: unknown verb",
    );
}

#[test]
fn key_mirrors_must_be_mirrors_of_the_same_file() {
    refused(
        &key("verbs = [\"sync\"]\nmirrors = [\"nope\"]\n"),
        9,
        "key.ci.mirrors: no mirror named \"nope\" in this file",
    );
}

#[test]
fn duplicate_mirrors_in_a_key_are_kept_as_written() {
    let cfg = ok(&key("verbs = [\"sync\"]\nmirrors = [\"m\", \"m\"]\n"));
    assert_eq!(cfg.keys["ci"].mirrors, ["m", "m"]);
}

#[test]
fn key_from_entries_must_be_networks() {
    refused(
        &key("verbs = [\"sync\"]\nfrom = [\"10.1.2.3/8\"]\n"),
        9,
        "key.ci.from: host bits are set (did you mean 10.0.0.0/8?)",
    );
    refused(
        &key("verbs = [\"sync\"]\nfrom = [\"host.example\"]\n"),
        9,
        "key.ci.from: not an IP address",
    );
    refused(
        &key("verbs = [\"sync\"]\nfrom = [\"10.0.0.0/33\"]\n"),
        9,
        "key.ci.from: prefix length must be a number from 0 to 32",
    );
}

#[test]
fn unknown_key_fields_are_refused() {
    refused(
        &key("verbs = [\"sync\"]\ncommand = \"/bin/sh\"\n"),
        9,
        "unknown field `command`",
    );
}

// ---- vocabularies -----------------------------------------------------------------

#[test]
fn mirror_name_grammar() {
    for good in ["a", "0", "debian-cd", "a.b_c-d", "x.y.z", &"a".repeat(64)] {
        assert!(MirrorName::is_valid(good), "{good}");
        assert_eq!(MirrorName::new(good).unwrap().as_str(), good);
        assert!(valid_name(good));
    }
    for bad in [
        "",
        "A",
        "-a",
        ".a",
        "_a",
        "a..b",
        "..",
        "a/b",
        "a b",
        "a:b",
        "ä",
        &"a".repeat(65),
    ] {
        assert!(!MirrorName::is_valid(bad), "{bad}");
        assert!(MirrorName::new(bad).is_none(), "{bad}");
        assert!(!valid_name(bad), "{bad}");
    }
    assert_eq!(MirrorName::MAX_LEN, 64);
}

#[test]
fn a_mirror_name_reads_as_a_str() {
    let n = MirrorName::new("debian-cd").unwrap();
    assert_eq!(&*n, "debian-cd");
    assert_eq!(n.to_string(), "debian-cd");
    assert!(n.starts_with("debian"));
    let map: BTreeMap<MirrorName, u8> = [(n.clone(), 1)].into();
    assert_eq!(map.get("debian-cd"), Some(&1));
    assert_eq!(n.into_string(), "debian-cd");
}

#[test]
fn user_names() {
    for good in ["a", "syncgate", "gate.user_1", "a-b", &"a".repeat(32)] {
        assert!(names::valid_user_name(good), "{good}");
    }
    for bad in ["", "-a", "a b", "a/b", "a:b", &"a".repeat(33)] {
        assert!(!names::valid_user_name(bad), "{bad}");
    }
}

#[test]
fn user_and_group_lookups() {
    assert_eq!(lookup_uid("root"), Some(0));
    assert_eq!(lookup_gid("root"), Some(0));
    assert!(lookup_uid("daemon").is_some_and(|u| u != 0));
    assert!(lookup_gid("daemon").is_some());
    assert_eq!(lookup_uid("no-such-user-x"), None);
    assert_eq!(lookup_gid("no-such-group-x"), None);
}

#[test]
fn sudoers_safe_paths() {
    assert!(sudoers_safe("/usr/bin/syncgate"));
    assert!(sudoers_safe("/etc/syncgate/a_b-c.toml"));
    for bad in ["", "/a b", "/a*", "/a,b", "/a:b", "/a=b", "/a\\b", "/ä"] {
        assert!(!sudoers_safe(bad), "{bad}");
    }
}

#[test]
fn verbs_are_sync_status_and_help() {
    assert_eq!(Verb::ALL, [Verb::Sync, Verb::Status, Verb::Help]);
    for v in Verb::ALL {
        assert_eq!(v.as_str().parse::<Verb>(), Ok(v));
        assert_eq!(v.to_string(), v.as_str());
    }
    assert_eq!(Verb::known(), "sync, status, help");
    assert_eq!(
        "shell".parse::<Verb>().unwrap_err().to_string(),
        "unknown verb \"shell\" (known: sync, status, help)"
    );
    assert!("".parse::<Verb>().is_err());
    assert!("SYNC".parse::<Verb>().is_err());
}

#[test]
fn verbs_deserialize_from_their_words() {
    let v: Vec<Verb> = serde_json::from_str(r#"["help","sync"]"#).unwrap();
    assert_eq!(v, [Verb::Help, Verb::Sync]);
    let e = serde_json::from_str::<Verb>(r#""shell""#).unwrap_err();
    assert!(e.to_string().contains("unknown verb"), "{e}");
}

#[test]
fn publishing_defaults_to_snapshots_verified_by_checksums_keeping_two() {
    let cfg = ok(&mirror(""));
    let m = the_mirror(&cfg);
    assert_eq!(m.publish.mode, PublishMode::Snapshot);
    assert!(!m.publish.explicit);
    assert_eq!(m.publish.keep, 2);
    assert_eq!(m.publish.verify, VerifyMode::Changed);
    assert_eq!(m.publish.checksum_files, DEFAULT_CHECKSUM_FILES);
    assert_eq!(m.publish.signature, None);
    assert_eq!(m.snapshot_root(), Path::new("/srv/.m.snapshots"));
    assert_eq!(
        m.snapshot_link_target("20261203T021530Z"),
        Path::new(".m.snapshots/20261203T021530Z")
    );
    assert_eq!(m.busy_marker, ["Archive-Update-in-Progress-*"]);
    assert_eq!(m.busy_wait, 3600);

    let cfg = ok(&mirror(
        "publish = \"snapshot\"\nkeep = 5\nverify = \"all\"\nchecksum_files = [\"CHECKSUM\"]\nverify_signature = { keyring = \"/etc/syncgate/k.gpg\", program = \"sqv\" }\nbusy_marker = []\n",
    ));
    let m = the_mirror(&cfg);
    assert!(m.publish.explicit);
    assert_eq!((m.publish.keep, m.publish.verify), (5, VerifyMode::All));
    assert_eq!(m.publish.checksum_files, ["CHECKSUM"]);
    let sig = m.publish.signature.as_ref().unwrap();
    assert_eq!(
        (sig.keyring.as_path(), sig.program),
        (Path::new("/etc/syncgate/k.gpg"), SignatureProgram::Sqv)
    );
    assert!(m.busy_marker.is_empty());
}

#[test]
fn publishing_keys_are_checked() {
    refused(
        &mirror("publish = \"atomic\"\n"),
        7,
        "mirror.m.publish: \"atomic\" is not one of \"snapshot\", \"two-stage\"",
    );
    refused(
        &mirror("keep = 0\n"),
        7,
        "mirror.m.keep: must be between 1 and 100",
    );
    refused(
        &mirror("verify = \"some\"\n"),
        7,
        "mirror.m.verify: \"some\" is not one of",
    );
    refused(
        &mirror("checksum_files = [\"sub/SHA256SUMS\"]\n"),
        7,
        "mirror.m.checksum_files: \"sub/SHA256SUMS\" is not a file name pattern",
    );
    refused(
        &mirror("verify_signature = { keyring = \"k.gpg\" }\n"),
        7,
        "mirror.m.verify_signature.keyring: must be an absolute path",
    );
    refused(
        &mirror("verify_signature = { keyring = \"/k.gpg\", program = \"gpg\" }\n"),
        7,
        "mirror.m.verify_signature.program: \"gpg\" is not one of \"gpgv\", \"sqv\"",
    );
    refused(
        &mirror("publish = \"two-stage\"\nkeep = 3\n"),
        7,
        "mirror.m.keep: applies only to publish = \"snapshot\"",
    );
    refused(
        &mirror("busy_marker = [\"a/b\"]\n"),
        7,
        "mirror.m.busy_marker: \"a/b\": a name at upstream's top",
    );
    refused(
        &mirror("busy_wait = 0\n"),
        7,
        "mirror.m.busy_wait: must be at least 1 second",
    );
    assert!(err(&mirror(
        "verify_signature = { keyring = \"/k\", trust = 1 }\n"
    ))
    .contains("unknown field"));
}

#[test]
fn the_debian_profile_holds_back_the_indices_and_writes_a_trace_file() {
    let cfg = ok(&mirror("profile = \"debian\"\n"));
    let m = the_mirror(&cfg);
    assert_eq!(m.last, DEBIAN_LAST);
    assert!(m.trace);
    assert_eq!(m.trace_host, None);
    let cfg = ok(&mirror("profile = \"debian\"\ntrace = false\nlast = [\"x\"]\ntrace_host = \"mirror.example.org\"\n"));
    let m = the_mirror(&cfg);
    assert_eq!(
        (m.trace, m.last.as_slice()),
        (false, ["x".to_string()].as_slice())
    );
    assert_eq!(m.trace_host.as_deref(), Some("mirror.example.org"));
    assert!(!the_mirror(&ok(&mirror(""))).trace);
    refused(
        &mirror("profile = \"arch\"\n"),
        7,
        "mirror.m.profile: \"arch\" is not a profile",
    );
    refused(
        &mirror("trace_host = \"../x\"\n"),
        7,
        "mirror.m.trace_host: \"../x\" is not a host name",
    );
}

// ---- observability: history_size, metrics_file, max_age

#[test]
fn history_size_is_bytes_at_least_4096_with_a_1_mib_default() {
    assert_eq!(ok("state_dir = \"/s\"\n").history_size, 1 << 20);
    assert_eq!(
        ok("state_dir = \"/s\"\nhistory_size = 4096\n").history_size,
        4096
    );
    for bad in ["4095", "0", "-1"] {
        refused(
            &format!("state_dir = \"/s\"\nhistory_size = {bad}\n"),
            2,
            "history_size: must be a number of bytes, at least 4096",
        );
    }
    assert!(err("state_dir = \"/s\"\nhistory_size = \"1M\"\n").contains("invalid type"));
}

#[test]
fn metrics_file_is_an_absolute_path_and_unset_by_default() {
    assert_eq!(ok("state_dir = \"/s\"\n").metrics_file, None);
    let cfg = ok("state_dir = \"/s\"\nmetrics_file = \"/var/lib/node/syncgate.prom\"\n");
    assert_eq!(
        cfg.metrics_file.as_deref(),
        Some(Path::new("/var/lib/node/syncgate.prom"))
    );
    for bad in ["x.prom", "/a/../b.prom", "/"] {
        refused(
            &format!("state_dir = \"/s\"\nmetrics_file = \"{bad}\"\n"),
            2,
            "metrics_file: must be an absolute file path",
        );
    }
}

#[test]
fn max_age_is_a_duration_of_at_least_a_minute_and_unset_by_default() {
    assert_eq!(the_mirror(&ok(&mirror(""))).max_age, None);
    assert_eq!(
        the_mirror(&ok(&mirror("max_age = \"2h\"\n"))).max_age,
        Some(7200)
    );
    assert_eq!(the_mirror(&ok(&mirror("max_age = 60\n"))).max_age, Some(60));
    refused(
        &mirror("max_age = 59\n"),
        7,
        "mirror.m.max_age: must be at least 60 seconds",
    );
    refused(
        &mirror("max_age = \"2 hours\"\n"),
        7,
        "mirror.m.max_age: want seconds",
    );
}

// ---- a hub's downstreams

/// A push key file with `mode`, owned by whoever runs the tests.
fn push_key(dir: &Path, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("key");
    std::fs::write(&p, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

/// [`mirror`] with a `[hub]` (lines 7-8) and one downstream `d1` (line 9 on).
fn hub(ds_lines: &str) -> String {
    mirror(&format!(
        "[hub]\nknown_hosts = \"/etc/syncgate/known_hosts\"\n[mirror.m.downstream.d1]\n{ds_lines}"
    ))
}

#[test]
fn downstreams_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let key = push_key(dir.path(), 0o600);
    let ok_ds = format!("host = \"cache1.example.org\"\nuser = \"archvsync\"\nkey = \"{key}\"\n");
    let cfg = ok(&hub(&format!(
        "{ok_ds}port = 2201\nmode = \"staged\"\nkind = \"ftpsync\"\ntimeout = \"5m\"\n"
    )));
    let m = the_mirror(&cfg);
    let d = &m.fanout.downstreams[0];
    assert_eq!(
        (d.name.as_str(), d.host.as_str(), d.port),
        ("d1", "cache1.example.org", 2201)
    );
    assert_eq!(
        (d.mode, d.kind, d.timeout),
        (PushMode::Staged, DownstreamKind::Ftpsync, 300)
    );
    assert_eq!(d.archive, "m", "archive defaults to the mirror's name");
    assert_eq!(m.fanout.cascade, Cascade::Detach);
    assert_eq!(cfg.hub.as_ref().unwrap().max_parallel, 8);
    // IPv4 and IPv6 addresses are hosts too.
    ok(&hub(&ok_ds.replace("cache1.example.org", "127.0.0.1")));
    ok(&hub(&ok_ds.replace("cache1.example.org", "::1")));

    refused(
        &hub(&format!("{ok_ds}colour = \"red\"\n")),
        13,
        "unknown field `colour`",
    );
    refused(
        &hub(&ok_ds.replace("cache1.example.org", "-oProxyCommand=x")),
        10,
        "mirror.m.downstream.d1.host: \"-oProxyCommand=x\" is not a host name or an IP address",
    );
    refused(
        &hub(&format!("{ok_ds}mode = \"fast\"\n")),
        13,
        "mirror.m.downstream.d1.mode: \"fast\" is not one of: all, staged, mhop",
    );
    refused(
        &hub(&format!("{ok_ds}archive = \"../x\"\n")),
        13,
        "mirror.m.downstream.d1.archive: ",
    );
    refused(
        &hub(&format!("{ok_ds}port = 0\n")),
        13,
        "mirror.m.downstream.d1.port: must be between 1 and 65535",
    );
}

#[test]
fn a_push_key_must_be_private() {
    let dir = tempfile::tempdir().unwrap();
    let key = push_key(dir.path(), 0o640);
    let text = hub(&format!("host = \"h\"\nuser = \"u\"\nkey = \"{key}\"\n"));
    refused(&text, 12, "mirror.m.downstream.d1.key: ");
    assert!(err(&text).contains("fix: chmod 0600"), "{}", err(&text));
    let missing = hub("host = \"h\"\nuser = \"u\"\nkey = \"/nonexistent/key\"\n");
    refused(
        &missing,
        12,
        "mirror.m.downstream.d1.key: cannot use the push key /nonexistent/key",
    );
}

#[test]
fn downstreams_need_a_hub_and_require_needs_wait() {
    let dir = tempfile::tempdir().unwrap();
    let key = push_key(dir.path(), 0o600);
    let no_hub = mirror(&format!(
        "[mirror.m.downstream.d1]\nhost = \"h\"\nuser = \"u\"\nkey = \"{key}\"\n"
    ));
    refused(
        &no_hub,
        2,
        "mirror.m.downstream: downstreams need a [hub] table",
    );
    let ds = format!("host = \"h\"\nuser = \"u\"\nkey = \"{key}\"\n");
    let with = |top: &str| {
        mirror(&format!(
            "{top}[hub]\nknown_hosts = \"/etc/syncgate/known_hosts\"\n[mirror.m.downstream.d1]\n{ds}"
        ))
    };
    refused(
        &with("require = 1\n"),
        7,
        "mirror.m.require: needs cascade = \"wait\"",
    );
    refused(
        &with("cascade = \"wait\"\nrequire = 2\n"),
        8,
        "mirror.m.require: 2 is more than the 1 downstreams configured",
    );
    let cfg = ok(&with(
        "cascade = \"wait\"\nrequire = 1\npush_delay = \"2m\"\n",
    ));
    let f = &the_mirror(&cfg).fanout;
    assert_eq!(
        (f.cascade, f.require, f.push_delay),
        (Cascade::Wait, 1, 120)
    );
}

#[test]
fn change_marker_is_a_clean_relative_path_and_debian_sets_its_trace_file() {
    let m = the_mirror(&ok(&mirror(""))).clone();
    assert_eq!(m.change_marker, None);
    let cfg = ok(&mirror("change_marker = \"lastupdate\"\n"));
    assert_eq!(
        the_mirror(&cfg).change_marker.as_deref(),
        Some("lastupdate")
    );
    assert_eq!(the_mirror(&cfg).full_every, 86400);
    let cfg = ok(&mirror("change_marker = \"a/b.c\"\nfull_every = \"6h\"\n"));
    assert_eq!(the_mirror(&cfg).full_every, 6 * 3600);
    let cfg = ok(&mirror("profile = \"debian\"\n"));
    assert_eq!(
        the_mirror(&cfg).change_marker.as_deref(),
        Some(DEBIAN_CHANGE_MARKER)
    );
    let cfg = ok(&mirror("profile = \"debian\"\nchange_marker = \"\"\n"));
    assert_eq!(the_mirror(&cfg).change_marker, None);
    let cfg = ok(&mirror("profile = \"debian\"\nchange_marker = \"x/y\"\n"));
    assert_eq!(the_mirror(&cfg).change_marker.as_deref(), Some("x/y"));
    for bad in [
        "/lastupdate",
        "a/../b",
        "../b",
        "./a",
        "a//b",
        "a/",
        "a/*",
        "a?",
        "[a]",
        "a\\\\b",
        "a\\u0007b",
    ] {
        refused(
            &mirror(&format!("change_marker = \"{bad}\"\n")),
            7,
            "mirror.m.change_marker: ",
        );
    }
    refused(
        &mirror("full_every = \"24h\"\n"),
        7,
        "mirror.m.full_every: only means something with a change_marker",
    );
    refused(
        &mirror("change_marker = \"x\"\nfull_every = \"1w\"\n"),
        8,
        "mirror.m.full_every: want seconds",
    );
    refused(&mirror("change_marker = 3\n"), 7, "invalid type");
}
