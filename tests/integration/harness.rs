//! The end-to-end harness itself. Each test states one behaviour of the real
//! tools (sshd, sudo, accounts, rsync daemon, syslog socket) that later tests
//! build on, and, by running at all, that the harness leaves the machine as
//! it found it.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    self, e2e_test, fields, ns, procs, stdout, ChildGuard, Host, RsyncDaemon, SyslogReceiver, Test,
    UserOpts,
};

/// `cmd` with stdin from /dev/null, to be given its expectations.
fn test(mut cmd: Command) -> Test<'static> {
    cmd.stdin(Stdio::null());
    Test::new(cmd)
}

e2e_test! {
    /// A forced command runs through the user's shell (so it sees
    /// `$SSH_ORIGINAL_COMMAND`) and its exit status becomes the client's.
    fn smoke() {
        let mut host = Host::new();
        host.add_user("sgtest", &UserOpts::default());
        host.start_sshd();
        let (key, public) = host.client_key("client");

        let echo = r#"restrict,command="/bin/echo forced:$SSH_ORIGINAL_COMMAND""#;
        host.authorize("sgtest", &[(&public, echo)]);
        let out = test(host.ssh("sgtest", &key, Some("hello"))).status(0).run();
        assert_eq!(stdout(&out), "forced:hello\n", "{}", support::show(&out));

        host.authorize("sgtest", &[(&public, r#"restrict,command="/bin/sh -c 'exit 7'""#)]);
        test(host.ssh("sgtest", &key, Some("hello"))).status(7).run();
    }
}

e2e_test! {
    /// An account whose shell is /bin/sync (like Debian's `sync`) cannot run
    /// any forced command: sshd execs `/bin/sync -c CMD`, which rejects `-c`
    /// and exits 1; the client exits 1 with sync's complaint on stderr.
    fn account_with_sync_shell_cannot_run_forced_commands() {
        let mut host = Host::new();
        host.add_user("sgsync", &UserOpts { shell: "/bin/sync".into(), ..UserOpts::default() });
        host.start_sshd();
        let (key, public) = host.client_key("client");
        host.authorize("sgsync", &[(&public, r#"restrict,command="/bin/echo never""#)]);

        test(host.ssh("sgsync", &key, Some("hello")))
            .status(1)
            .stderr_contains("sync: invalid option -- 'c'")
            .stdout_empty()
            .run();
        // sshd itself accepted the key and started the session.
        assert!(host.sshd().log().contains("Accepted publickey for sgsync"));
    }
}

e2e_test! {
    /// An exact-argument sudoers rule allows exactly that command line as
    /// exactly that target user; anything else is refused under `-n`.
    fn sudo_rule_allows_only_the_listed_command_line() {
        let mut host = Host::new();
        host.add_user("sgtest", &UserOpts::default());
        let owner = host.add_user("sgowner", &UserOpts::default());
        host.install_sudoers("sgtest", "sgtest ALL=(sgowner) NOPASSWD: /usr/bin/id -u\n");

        let out = host.run_as("sgtest", &["sudo", "-n", "-u", "sgowner", "/usr/bin/id", "-u"]);
        assert!(out.status.success(), "{}", support::show(&out));
        assert_eq!(stdout(&out).trim(), owner.uid.to_string());

        for refused in [
            ["sudo", "-n", "-u", "sgowner", "/usr/bin/id", "-g"],
            ["sudo", "-n", "-u", "root", "/usr/bin/id", "-u"],
        ] {
            let out = host.run_as("sgtest", &refused);
            assert_eq!(out.status.code(), Some(1), "{refused:?}: {}", support::show(&out));
            assert!(
                support::stderr(&out).contains("a password is required"),
                "{refused:?}: {}",
                support::show(&out)
            );
        }
    }
}

e2e_test! {
    /// `visudo -cf` judges sudoers text before install_sudoers puts it in
    /// /etc/sudoers.d, where a broken file would break sudo for everyone.
    fn invalid_sudoers_content_is_rejected_by_visudo() {
        let host = Host::new();
        let complaint = host.check_sudoers("this is not sudoers syntax\n").expect_err("invalid");
        assert!(complaint.contains("syntax error"), "{complaint}");
        assert_eq!(host.check_sudoers("sgtest ALL=(sgowner) NOPASSWD: /usr/bin/id -u\n"), Ok(()));
    }
}

#[test]
fn syslog_receiver_collects_logger_datagrams() {
    let receiver = SyslogReceiver::new();
    let socket = receiver.path().to_str().expect("utf-8 path");
    let mut logger = Command::new("logger");
    logger.args([
        "--socket-errors=on",
        "-u",
        socket,
        "-i",
        "-t",
        "syncgate",
        r#"a=1 b="x y""#,
    ]);
    test(logger).status(0).run();

    let line = receiver
        .wait_for(|l| l.contains("syncgate["), Duration::from_secs(5))
        .expect("logger's datagram");
    assert!(line.starts_with("<13>"), "user.notice priority: {line}");
    let f = fields(&line);
    assert_eq!(f.get("a").map(String::as_str), Some("1"), "{line}");
    assert_eq!(f.get("b").map(String::as_str), Some("x y"), "{line}");
    assert_eq!(f.len(), 2, "{f:?}");
}

#[test]
fn fields_parses_quoted_values_with_escapes() {
    let line = concat!(
        r#"<30>Nov 21 10:00:53 mirror syncgate[42]: "#,
        r#"event=done dest="/srv/a b" msg="say \"hi\"\\ok\n" bare n=3"#
    );
    let f = fields(line);
    assert_eq!(f["event"], "done");
    assert_eq!(f["dest"], "/srv/a b");
    assert_eq!(f["msg"], "say \"hi\"\\ok\n");
    assert_eq!(f["n"], "3");
    assert!(
        !f.contains_key("bare") && !f.contains_key("mirror"),
        "{f:?}"
    );
    // Without a pid the message starts after the tag's ": ".
    assert_eq!(fields("<13>Nov 21 10:00:53 syncgate: k=v")["k"], "v");
}

e2e_test! {
    /// The workspace syslog socket accepts datagrams from unprivileged test
    /// users (a forced command logs as the ssh user).
    fn test_users_can_log_to_the_workspace_syslog_socket() {
        let mut host = Host::new();
        host.add_user("sgtest", &UserOpts::default());
        let receiver = host.syslog();
        let socket = receiver.path().to_str().expect("utf-8 path");
        let logger = ["logger", "--socket-errors=on", "-u", socket, "-t", "syncgate", "-i"];
        let out = host.run_as("sgtest", &[&logger[..], &["who=sgtest"]].concat());
        assert!(out.status.success(), "{}", support::show(&out));
        let line = receiver
            .wait_for(|l| l.contains("who=sgtest"), Duration::from_secs(5))
            .expect("datagram");
        assert_eq!(fields(&line)["who"], "sgtest");
    }
}

/// Serves a one-file module, copies it with an `rsync://` URL, then kills the
/// daemon and shows that no daemon process is left and the URL stops working.
fn rsync_daemon_round_trip() {
    let src = tempfile::tempdir().expect("src");
    let dest = tempfile::tempdir().expect("dest");
    fs::write(src.path().join("file.txt"), "payload\n").expect("write");
    let mut daemon = RsyncDaemon::start(&[("mod", src.path())]);

    let url = daemon.url("mod");
    let rsync = || {
        let mut cmd = Command::new("rsync");
        cmd.arg("-a").arg(&url).arg(dest.path());
        test(cmd).tree(dest.path())
    };
    rsync().status(0).context(|| daemon.log()).run();
    assert_eq!(
        fs::read_to_string(dest.path().join("file.txt")).expect("copied"),
        "payload\n"
    );

    let dir = daemon.dir().to_str().expect("utf-8").to_string();
    assert!(
        !procs::pids_with_cmdline_containing(&dir).is_empty(),
        "daemon visible in /proc"
    );
    daemon.kill();
    assert!(!daemon.is_running());
    assert!(
        procs::pids_with_cmdline_containing(&dir).is_empty(),
        "no daemon process left"
    );
    rsync().failure().run();
}

#[test]
fn rsync_daemon_serves_a_module_on_the_real_machine() {
    rsync_daemon_round_trip();
}

e2e_test! {
    /// The same daemon works inside the namespace (own loopback).
    fn rsync_daemon_serves_a_module_inside_the_namespace() {
        let _host = Host::new();
        rsync_daemon_round_trip();
    }
}

#[test]
fn child_guard_stops_the_whole_process_tree() {
    let guard = ChildGuard::spawn(
        Command::new("sh").args(["-c", "sleep 300 & sleep 301 & wait"]),
        "sh",
    );
    let root = guard.pid();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while procs::descendants(root).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let children = procs::descendants(root);
    assert_eq!(children.len(), 2, "{}", procs::describe_pids(&children));
    assert!(procs::pids_matching("sleep").contains(&children[0]));

    drop(guard);
    let alive: Vec<i32> = children
        .into_iter()
        .filter(|p| procs::all_pids().contains(p))
        .collect();
    assert!(alive.is_empty(), "{}", procs::describe_pids(&alive));
}

/// Everything the namespace child creates and leaves running on purpose is
/// gone from the real machine once it exits: account, sudoers file, sshd,
/// the rsync daemon, and an ssh session's processes.
#[test]
fn cleanup() {
    const MARKER: &str = "sgclean-session-marker";
    if !ns::in_private_host("harness::cleanup") {
        // Back on the real machine (in_private_host already checked the
        // account databases and killed/reported any survivor).
        let mut getent = Command::new("getent");
        getent.args(["passwd", "sgclean"]);
        test(getent)
            .status(2)
            .context(|| "sgclean unknown on the real host".into())
            .run();
        assert!(!Path::new("/etc/sudoers.d/sgclean").exists());
        let run = ns::last_run().expect("namespace run recorded");
        assert!(
            run.output.contains("cleanup: all running"),
            "{}",
            run.output
        );
        assert!(procs::pids_with_cmdline_containing(&run.tag).is_empty());
        assert!(procs::pids_with_cmdline_containing(MARKER).is_empty());
        assert!(
            run.mount_ns.is_some(),
            "the outer run observed the namespace"
        );
        return;
    }

    let mut host = Host::new();
    host.add_user("sgclean", &UserOpts::default());
    host.install_sudoers("sgclean", "sgclean ALL=(root) NOPASSWD: /usr/bin/true\n");
    host.start_sshd();
    let (key, public) = host.client_key("client");
    let forced = format!(r#"restrict,command="/bin/sh -c 'sleep 300; : {MARKER}'""#);
    host.authorize("sgclean", &[(&public, &forced)]);
    let module = host.path("module");
    fs::create_dir(&module).expect("mkdir module");
    // Declared before the session so it is dropped after it; the host goes last.
    let _daemon = RsyncDaemon::start(&[("mod", &module)]);
    let _session = ChildGuard::spawn(
        host.ssh("sgclean", &key, None)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
        "ssh",
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while procs::pids_with_cmdline_containing(MARKER).is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sgclean = host.user("sgclean").uid;
    assert!(
        !procs::pids_with_cmdline_containing(MARKER).is_empty(),
        "session started:\n{}",
        host.sshd().log()
    );
    assert!(!procs::pids_of_user(sgclean).is_empty());
    assert!(host.user_exists("sgclean") && Path::new("/etc/sudoers.d/sgclean").exists());
    println!("cleanup: all running");
}
