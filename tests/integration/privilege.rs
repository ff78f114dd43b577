//! The privilege model end to end, with real accounts, sudo and sshd.
//!
//! * the login account `syncgate` triggers syncs but cannot write the images;
//! * the image owner `mirror` owns every published entry;
//! * the web server's group `www-data` can read everything and write nothing;
//! * sudo lets the login account run exactly the two owner-side command
//!   lines of `src/runner/argv.rs` per mirror, and nothing else.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::host::set_mode;
use crate::support::mirror_host::{gid_of, MirrorHost, LOGIN, OWNER, READER, READER_GROUP};
use crate::support::tree::{
    assert_published_tree, listing, stamps as snapshot, walk, write_attempts,
};
use crate::support::{
    self, assert_contains, e2e_test, opts, procs, run_ok, stderr, stdout, wait_until, ChildGuard,
    Key, Mirrors, Test,
};

const SUDO: &str = "/usr/bin/sudo";

/// `sh -c SCRIPT` as `user` (runuser, clean environment).
fn sh_as(mh: &MirrorHost, user: &str, script: &str) -> Output {
    mh.host.run_as(user, &["sh", "-c", script])
}

/// `sudo -n ARGS...` as the login account, with `RSYNC_RSH=/bin/sh` in its
/// environment (what a hostile caller would try to pass on).
fn sudo_as_login<'a>(mh: &MirrorHost, args: &[&str]) -> Test<'a> {
    let mut argv = vec![SUDO, "-n"];
    argv.extend_from_slice(args);
    let mut cmd = mh.host.command_as(LOGIN, &argv);
    cmd.env("RSYNC_RSH", "/bin/sh").stdin(Stdio::null());
    Test::new(cmd)
}

/// The owner-side command line exactly as the sudoers rule grants it.
fn owner_line(mh: &MirrorHost, verb: &str, mirror: &str) -> Vec<String> {
    vec![
        mh.bin.display().to_string(),
        "--config".into(),
        mh.config.display().to_string(),
        verb.into(),
        mirror.into(),
    ]
}

/// An upstream with everything a hostile or careless upstream could hold:
/// a setuid file, a setgid directory, a fifo, a device node, symlinks out of
/// the tree (absolute, relative, and through a chain of links), symlinks
/// inside it, hidden files.
fn hostile_upstream(mh: &MirrorHost) {
    mh.put("iso", "a.iso", b"image a");
    mh.put("iso", "sub/deeper/b.iso", b"image b");
    mh.put("iso", ".hidden", b"dot");
    mh.put("iso", "SHA256SUMS", b"x  a.iso\n");
    let up = mh.upstream.join("iso");
    fs::write(up.join("suid-tool"), b"#!/bin/sh\nid\n").unwrap();
    set_mode(&up.join("suid-tool"), 0o4755);
    fs::write(up.join("sgid-tool"), b"#!/bin/sh\nid\n").unwrap();
    set_mode(&up.join("sgid-tool"), 0o2755);
    fs::write(up.join("world-writable"), b"ww").unwrap();
    set_mode(&up.join("world-writable"), 0o666);
    fs::create_dir_all(up.join("open-dir")).unwrap();
    set_mode(&up.join("open-dir"), 0o3777);
    run_ok(Command::new("mkfifo").arg(up.join("fifo")));
    run_ok(
        Command::new("mknod")
            .arg(up.join("null-dev"))
            .args(["c", "1", "3"]),
    );
    symlink("/etc/passwd", up.join("abs-out")).unwrap();
    symlink("../../x", up.join("rel-out")).unwrap();
    symlink("../../../etc/shadow", up.join("sub/deeper/up-out")).unwrap();
    symlink("a.iso", up.join("current")).unwrap();
    // Lexically inside, really outside: chain-p -> chain-q/.. -> ./.. = dest/..
    symlink(".", up.join("chain-q")).unwrap();
    symlink("chain-q/..", up.join("chain-p")).unwrap();
    symlink("../a.iso", up.join("sub/a-link")).unwrap();
}

e2e_test! {
    /// After a sync through ssh every published entry is mirror:www-data,
    /// files 0640 and directories 2750, whatever upstream had: no setuid or
    /// setgid file, no device node or fifo, no symlink that leaves the tree.
    fn published_tree_is_owned_by_the_owner_and_readable_by_the_group_only() {
        let mh = MirrorHost::new();
        hostile_upstream(&mh);
        mh.ssh(Some("sync")).status(0).run();
        let dest = mh.dest("iso");
        let entries = assert_published_tree(&mh, &dest);
        let names: Vec<String> = entries
            .iter()
            .map(|(p, _)| p.strip_prefix(&dest).unwrap().display().to_string())
            .collect();
        for expected in ["a.iso", "sub/deeper/b.iso", ".hidden", "SHA256SUMS", "suid-tool", "sgid-tool", "open-dir", "current", "sub/a-link", "chain-q"] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing:\n{}", listing(&dest, &entries));
        }
        for gone in ["fifo", "null-dev", "abs-out", "rel-out", "sub/deeper/up-out", "chain-p"] {
            assert!(!names.iter().any(|n| n == gone), "{gone} was published:\n{}", listing(&dest, &entries));
        }
        assert_eq!(fs::read(dest.join("current")).unwrap(), b"image a");

        // A second sync (no change) keeps it that way.
        mh.ssh(Some("sync")).status(0).run();
        assert_published_tree(&mh, &dest);
    }
}

e2e_test! {
    /// A member of www-data reads every file and lists every directory, and
    /// can create, modify, rename or delete nothing.
    fn reader_group_reads_everything_and_writes_nothing() {
        let mh = MirrorHost::new();
        hostile_upstream(&mh);
        mh.ssh(Some("sync")).status(0).run();
        let dest = mh.dest("iso");
        let entries = walk(&dest);
        let mut dirs = vec![dest.clone()];
        dirs.extend(entries.iter().filter(|(_, m)| m.is_dir()).map(|(p, _)| p.clone()));
        let files: Vec<&PathBuf> = entries.iter().filter(|(_, m)| m.is_file()).map(|(p, _)| p).collect();
        assert!(files.len() >= 5 && dirs.len() >= 3, "{}", listing(&dest, &entries));

        for f in &files {
            let out = mh.host.run_as(READER, &["cat", f.to_str().unwrap()]);
            assert!(out.status.success(), "{READER} cannot read {}: {}", f.display(), support::show(&out));
            assert_eq!(out.stdout, fs::read(f).unwrap());
        }
        for d in &dirs {
            let out = mh.host.run_as(READER, &["ls", "-a", d.to_str().unwrap()]);
            assert!(out.status.success(), "{READER} cannot list {}: {}", d.display(), support::show(&out));
        }

        let before = snapshot(&dest);
        let a = dest.join("a.iso");
        let (a, d) = (a.to_str().unwrap(), dest.to_str().unwrap());
        let sub = dest.join("sub");
        let sub = sub.to_str().unwrap();
        for (what, script) in write_attempts(a, d, sub) {
            let out = sh_as(&mh, READER, &script);
            assert!(!out.status.success(), "{READER} could {what}: `{script}`: {}", support::show(&out));
        }
        assert_eq!(snapshot(&dest), before, "the tree changed");
    }
}

e2e_test! {
    /// The login account with a real shell cannot create, modify, chmod or
    /// delete anything under dest (it is not even in the reader group).
    fn login_account_cannot_write_the_images() {
        let mh = MirrorHost::new();
        hostile_upstream(&mh);
        mh.ssh(Some("sync")).status(0).run();
        let dest = mh.dest("iso");
        let before = snapshot(&dest);
        let a = dest.join("a.iso");
        let sub = dest.join("sub");
        for (what, script) in write_attempts(a.to_str().unwrap(), dest.to_str().unwrap(), sub.to_str().unwrap()) {
            let out = mh.host.run_as(LOGIN, &["sh", "-c", &script]);
            assert!(!out.status.success(), "{LOGIN} could {what}: `{script}`: {}", support::show(&out));
        }
        // Nor through the tools it may run: the owner-side commands take no
        // path, and no other command runs as the owner.
        sudo_as_login(&mh, &["-u", OWNER, "/bin/sh", "-c", &format!("echo x > {}/new", dest.display())])
            .failure()
            .run();
        assert_eq!(snapshot(&dest), before, "the tree changed");
    }
}

/// Statement 4: sudo itself refuses `args` (run as the login account under
/// `-n`), so nothing ran: non-zero, sudo's own complaint, no output.
fn assert_sudo_refuses(mh: &MirrorHost, what: &str, args: &[&str]) -> Output {
    let why = || format!("sudo did not refuse {what} (sudo -n {})", args.join(" "));
    let out = sudo_as_login(mh, args)
        .failure()
        .stdout_empty()
        .context(why)
        .run();
    assert!(
        stderr(&out).starts_with("sudo: "),
        "{}: {}",
        why(),
        support::show(&out)
    );
    out
}

e2e_test! {
    /// sudo lets the login account run exactly the two owner-side lines per
    /// mirror as the owner and refuses every variant itself: an extra
    /// argument, another mirror, another target user, other programs, a
    /// preserved environment variable, another config path, and an argument
    /// with a space that re-splits into the allowed line.
    fn sudo_allows_exactly_the_owner_side_lines() {
        let mh = MirrorHost::with(&[("iso", opts()), ("other", opts())], &[Key::jenkins()]);
        let bin = mh.bin.to_str().unwrap();
        let conf = mh.config.to_str().unwrap();
        let dest = mh.dest("iso");
        let dest_s = format!("{}/", dest.display());

        // The exact allowed lines.
        for verb in ["transfer", "fix-perms"] {
            for mirror in ["iso", "other"] {
                let line = owner_line(&mh, verb, mirror);
                let mut args: Vec<&str> = vec!["-l", "-u", OWNER];
                args.extend(line.iter().map(String::as_str));
                let out = sudo_as_login(&mh, &args).status(0).run();
                assert!(stdout(&out).starts_with(bin), "{}", support::show(&out));
            }
        }

        let pw = "a password is required";
        let config_eq = format!("--config={conf}");
        let cases: Vec<(&str, Vec<&str>, Option<&str>)> = vec![
            ("an extra argument", vec!["-u", OWNER, bin, "--config", conf, "transfer", "iso", "--all"], Some(pw)),
            ("an extra argument before the verb", vec!["-u", OWNER, bin, "--config", conf, "--config", conf, "transfer", "iso"], Some(pw)),
            ("a missing argument", vec!["-u", OWNER, bin, "--config", conf, "transfer"], Some(pw)),
            ("another mirror's name", vec!["-u", OWNER, bin, "--config", conf, "transfer", "iso2"], Some(pw)),
            ("a path instead of a mirror", vec!["-u", OWNER, bin, "--config", conf, "fix-perms", "../../etc"], Some(pw)),
            ("another verb", vec!["-u", OWNER, bin, "--config", conf, "check"], Some(pw)),
            ("the allowed line as root", vec!["-u", "root", bin, "--config", conf, "transfer", "iso"], Some(pw)),
            ("the allowed line as the default target (root)", vec![bin, "--config", conf, "transfer", "iso"], Some(pw)),
            ("the allowed line as the reader", vec!["-u", READER, bin, "--config", conf, "transfer", "iso"], Some(pw)),
            ("the allowed line with another group", vec!["-u", OWNER, "-g", "root", bin, "--config", conf, "transfer", "iso"], None),
            ("rsync -e sh", vec!["-u", OWNER, "/usr/bin/rsync", "-e", "sh", "x:", &dest_s], Some(pw)),
            ("rsync into dest", vec!["-u", OWNER, "/usr/bin/rsync", "-a", "/etc/hostname", &dest_s], Some(pw)),
            ("rsync to another destination", vec!["-u", OWNER, "/usr/bin/rsync", "-a", &dest_s, "/tmp/elsewhere/"], Some(pw)),
            ("a shell", vec!["-u", OWNER, "/bin/sh"], Some(pw)),
            ("a login shell", vec!["-i", "-u", OWNER], None),
            ("--preserve-env=RSYNC_RSH", vec!["--preserve-env=RSYNC_RSH", "-u", OWNER, bin, "--config", conf, "transfer", "iso"], None),
            ("-E", vec!["-E", "-u", OWNER, bin, "--config", conf, "transfer", "iso"], None),
            ("an environment assignment", vec!["-u", OWNER, "RSYNC_RSH=/bin/sh", bin, "--config", conf, "transfer", "iso"], None),
            ("a different --config path", vec!["-u", OWNER, bin, "--config", "/tmp/syncgate.toml", "transfer", "iso"], Some(pw)),
            ("--config=PATH spelling", vec!["-u", OWNER, bin, &config_eq, "transfer", "iso"], Some(pw)),
            ("a different binary", vec!["-u", OWNER, "/usr/bin/env", bin, "--config", conf, "transfer", "iso"], Some(pw)),
            ("sudoedit", vec!["-e", "-u", OWNER, conf], None),
        ];
        for (what, args, expect) in &cases {
            let out = assert_sudo_refuses(&mh, what, args);
            if let Some(e) = expect {
                assert!(stderr(&out).contains(e), "{what}: {}", support::show(&out));
            }
        }

        // The space-joined-string trap: sudo compares the arguments joined
        // by spaces, so `"--config CONF"` as one argument matches the
        // allowed line's string. Whoever refuses it, it must not run: the
        // owner side takes no such argument.
        let state_before = snapshot(&dest);
        let joined = format!("--config {conf}");
        let conf_transfer = format!("{conf} transfer");
        let traps: Vec<Vec<&str>> = vec![
            vec![bin, &joined, "transfer", "iso"],
            vec![bin, "--config", &conf_transfer, "iso"],
            vec![bin, "--config", conf, "transfer iso"],
        ];
        for trap in &traps {
            let mut args = vec!["-u", OWNER];
            args.extend(trap.iter().copied());
            // Refused either way (below): a failure.
            let out = sudo_as_login(&mh, &args).failure().run();
            let err = stderr(&out);
            let by_sudo = err.starts_with("sudo: ") && err.contains(pw);
            // sudo 1.9 cannot tell these from the allowed line; syncgate's
            // parser then refuses them as a usage error before reading any
            // config.
            let by_parser = out.status.code() == Some(64) && err.starts_with("error: ");
            assert!(by_sudo || by_parser, "re-split line {trap:?} was not refused: {}", support::show(&out));
            assert!(out.stdout.is_empty(), "re-split line produced a report: {trap:?}: {}", support::show(&out));
        }
        assert_eq!(snapshot(&dest), state_before, "dest changed");
    }
}

/// `syncgate check` as root: (exit code, report).
fn check(mh: &MirrorHost) -> (Option<i32>, String) {
    // Judged by the caller (the breakage cases collect every problem).
    let out = mh.syncgate().arg("check").run_unchecked();
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn usermod(args: &[&str]) {
    run_ok(Command::new(support::require_tool("usermod")).args(args));
}

/// A second authorized_keys line for the login account.
fn add_key_line(mh: &MirrorHost, line: impl FnOnce(&str) -> String) {
    let (_, public) = mh.host.client_key("intruder");
    let file = mh.login.home.join(".ssh/authorized_keys");
    let mut text = fs::read_to_string(&file).unwrap();
    text.push_str(&line(&public));
    text.push('\n');
    fs::write(&file, text).unwrap();
}

type Breakage = fn(&mut MirrorHost);

e2e_test! {
    /// `syncgate check` passes on a good host (exit 0, no FAIL line), and
    /// each way of breaking the set-up gives a FAIL line naming it (exit 1).
    fn check_passes_on_a_good_host_and_names_each_breakage() {
        let mh = MirrorHost::new();
        let (code, report) = check(&mh);
        assert_eq!(code, Some(0), "{report}");
        assert!(!report.lines().any(|l| l.starts_with("FAIL")), "{report}");
        assert!(report.contains("sudo lets syncgate run"), "{report}");
        assert!(report.contains("sudo refuses"), "{report}");
        drop(mh);

        let cases: Vec<(&str, Breakage, Vec<String>)> = vec![
            ("login shell /bin/sync", |_| usermod(&["-s", "/bin/sync", LOGIN]), vec!["login account syncgate".into(), "`sync` program".into()]),
            ("login shell nologin", |_| usermod(&["-s", "/usr/sbin/nologin", LOGIN]), vec!["nologin".into(), "refuses to run commands".into()]),
            ("locked login account", |_| usermod(&["-L", LOGIN]), vec!["syncgate is locked".into()]),
            ("group-writable ~/.ssh", |mh| set_mode(&mh.login.home.join(".ssh"), 0o770), vec![".ssh".into(), "StrictModes".into()]),
            ("config owned by the login account", |mh| {
                nix::unistd::chown(&mh.config, Some(mh.login.uid.into()), None).unwrap();
            }, vec!["syncgate.toml: the config file: it is owned by uid".into()]),
            ("config directory owned by the login account", |mh| {
                nix::unistd::chown(mh.config.parent().unwrap(), Some(mh.login.uid.into()), None).unwrap();
            }, vec!["etc-syncgate: a directory above the config file".into()]),
            ("a mirror added without re-installing the rule", |mh| mh.add_mirror("other", opts()),
                vec!["sudo does not let syncgate run".into(), "transfer other".into()]),
            ("a sudoers rule that grants too much", |mh| {
                mh.host.install_sudoers("syncgate-extra", "syncgate ALL=(mirror) NOPASSWD: ALL\n");
            }, vec!["sudo ALLOWS".into()]),
            ("an authorized_keys line without a forced command", |mh| add_key_line(mh, |k| k.to_string()),
                vec!["authorized_keys line 2 has no forced command".into()]),
            ("an authorized_keys line with the right words in its comment", |mh| {
                add_key_line(mh, |k| format!("{k} restrict,command=\"/usr/bin/syncgate ssh --key x\""))
            }, vec!["authorized_keys line 2 has no forced command".into()]),
            ("home owned by the login account", |mh| {
                nix::unistd::chown(&mh.login.home, Some(mh.login.uid.into()), None).unwrap();
            }, vec!["home /home/syncgate".into(), "install a key of its own".into()]),
            ("~/.ssh owned by the login account", |mh| {
                nix::unistd::chown(&mh.login.home.join(".ssh"), Some(mh.login.uid.into()), None).unwrap();
            }, vec![".ssh /home/syncgate/.ssh".into(), "install a key of its own".into()]),
            ("authorized_keys owned by the login account", |mh| {
                nix::unistd::chown(&mh.login.home.join(".ssh/authorized_keys"), Some(mh.login.uid.into()), None).unwrap();
            }, vec!["authorized_keys /home/syncgate".into(), "install a key of its own".into()]),
            ("the binary's directory owned by the login account", |mh| {
                nix::unistd::chown(mh.bin.parent().unwrap(), Some(mh.login.uid.into()), None).unwrap();
            }, vec!["syncgate ".into(), "whoever can change it runs code as the mirror owner".into()]),
            ("a sudoers rule for another run-as user", |mh| {
                mh.host.install_sudoers("syncgate-extra", "syncgate ALL=(www-data) NOPASSWD: ALL\n");
            }, vec!["sudo grants syncgate more than syncgate's rule".into(), "run ALL as www-data".into()]),
            ("a SETENV tag on syncgate's own line", |mh| {
                let line = format!("syncgate ALL=(mirror) NOPASSWD:SETENV: {} --config {} transfer iso\n", mh.bin.display(), mh.config.display());
                mh.host.install_sudoers("syncgate-extra", &line);
            }, vec!["SETENV".into()]),
            ("Defaults !env_reset for the login account", |mh| {
                mh.host.install_sudoers("syncgate-extra", "Defaults:syncgate !env_reset\n");
            }, vec!["!env_reset".into()]),
            ("Defaults env_keep for the login account", |mh| {
                mh.host.install_sudoers("syncgate-extra", "Defaults:syncgate env_keep += \"LD_PRELOAD\"\n");
            }, vec!["env_keep".into(), "LD_PRELOAD".into()]),
            ("a shell chained after the forced command, with a pty", |mh| {
                let bin = mh.bin.display().to_string();
                add_key_line(mh, |k| format!("restrict,pty,command=\"{bin} ssh --key jenkins; exec /bin/sh -i\" {k}"))
            }, vec!["authorized_keys line 2".into(), "';'".into()]),
            ("pty given back after restrict", |mh| {
                let bin = mh.bin.display().to_string();
                add_key_line(mh, |k| format!("restrict,pty,command=\"{bin} ssh --key jenkins\" {k}"))
            }, vec!["authorized_keys line 2".into(), "undoes part of `restrict` with pty".into()]),
            ("a mirror named like a subcommand", |mh| {
                mh.add_mirror("status", opts());
            }, vec!["mirror status: the name is also a syncgate subcommand".into()]),
        ];
        let mut problems = Vec::new();
        for (what, breakage, expect) in cases {
            let mut mh = MirrorHost::new();
            breakage(&mut mh);
            let (code, report) = check(&mh);
            let hit = report
                .lines()
                .filter(|l| l.starts_with("FAIL"))
                .any(|l| expect.iter().all(|e| l.contains(e.as_str())));
            if code != Some(1) || !hit {
                problems.push(format!("{what}: exit {code:?}, wanted exit 1 and a FAIL line with {expect:?}:\n{report}"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}

/// Processes in this test's mount namespace (the pid namespace is the
/// machine's: other test runs may have an rsync or a uid 999 of their own).
/// This namespace's processes of `uid` and its rsync processes, after
/// waiting up to `wait` for them to go away.
fn leftovers(uid: u32, wait: Duration) -> Vec<i32> {
    let find = || {
        let mut p = procs::pids_of_user(uid);
        p.extend(procs::pids_matching("rsync"));
        p.sort_unstable();
        p.dedup();
        procs::ours(p)
    };
    let mut p = Vec::new();
    wait_until(wait, || {
        p = find();
        p.is_empty()
    });
    p
}

/// Waits up to `wait` for an rsync of the owner to run.
fn wait_for_owner_rsync(mh: &MirrorHost, wait: Duration) -> bool {
    wait_until(wait, || {
        let owners = procs::ours(procs::pids_of_user(mh.owner.uid));
        procs::pids_matching("rsync")
            .iter()
            .any(|p| owners.contains(p))
    })
    .is_some()
}

e2e_test! {
    /// The wall-clock timeout and a SIGTERM to the gate both reach rsync
    /// through sudo, and nothing of the owner (nor any rsync) is left running.
    fn timeout_and_sigterm_stop_rsync_through_sudo() {
        let mut mh = MirrorHost::new();
        mh.set_opts("iso", opts().timeout(2).bwlimit(200));
        mh.put("iso", "big.iso", &vec![7u8; 8 << 20]);
        let t0 = Instant::now();
        // rsync itself got the TERM (sudo relayed it; the owner side passed
        // it on), well within the gate's 10 s grace before SIGKILL.
        let out = mh
            .ssh(Some("sync"))
            .status(1)
            .stderr_contains("timed out")
            .stderr_contains("received SIGINT, SIGTERM, or SIGHUP")
            .run();
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(9), "took {took:?}: {}", support::show(&out));
        assert_eq!(mh.last_run("iso")["result"], "timeout", "{}", mh.state("iso"));
        let left = leftovers(mh.owner.uid, Duration::from_secs(5));
        assert!(left.is_empty(), "left running after the timeout:\n{}", procs::describe_pids(&left));
        assert!(!mh.dest("iso").join("big.iso").exists(), "a partial file was published");

        // SIGTERM to the gate (the forced command, running as the login
        // account) while rsync runs as the owner.
        mh.set_opts("iso", opts().bwlimit(200));
        let err_path = mh.path("ssh-stderr");
        let mut cmd = mh.ssh_command(Some("sync"));
        cmd.stdout(Stdio::null()).stderr(fs::File::create(&err_path).unwrap());
        let mut client = ChildGuard::spawn(&mut cmd, "ssh sync");
        assert!(wait_for_owner_rsync(&mh, Duration::from_secs(15)), "rsync never ran as {OWNER}");
        let gates = mh.gate_programs();
        assert_eq!(gates.len(), 1, "gate processes: {gates:?}\n{}", procs::describe_pids(&procs::pids_of_user(mh.login.uid)));
        kill(Pid::from_raw(gates[0]), Signal::SIGTERM).unwrap();
        let t0 = Instant::now();
        let status = client.wait_timeout(Duration::from_secs(30)).expect("ssh client still running 30 s after SIGTERM to the gate");
        let stopped_after = t0.elapsed();
        let err = fs::read_to_string(&err_path).unwrap();
        assert_eq!(status.code(), Some(1), "{err}");
        assert_contains(&err, "stopped by a signal");
        assert_contains(&err, "received SIGINT, SIGTERM, or SIGHUP");
        assert!(stopped_after < Duration::from_secs(9), "took {stopped_after:?}: {err}");
        let left = leftovers(mh.owner.uid, Duration::from_secs(15).saturating_sub(t0.elapsed()));
        assert!(left.is_empty(), "left running 15 s after SIGTERM:\n{}", procs::describe_pids(&left));
        assert_eq!(mh.last_run("iso")["result"], "aborted", "{}\n{err}", mh.state("iso"));
        assert!(mh.state("iso")["running"].is_null(), "{}", mh.state("iso"));
    }
}

/// (mode, uid, gid, ctime, ctime_nsec, content or listing) of an outside object.
fn fingerprint(p: &Path) -> (u32, u32, u32, i64, i64, Vec<u8>) {
    let md = fs::symlink_metadata(p).unwrap();
    let body = if md.is_dir() {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_encoded_bytes())
            .collect();
        names.sort();
        names.concat()
    } else {
        fs::read(p).unwrap()
    };
    (
        md.mode(),
        md.uid(),
        md.gid(),
        md.ctime(),
        md.ctime_nsec(),
        body,
    )
}

e2e_test! {
    /// fix-perms never follows a symlink: links in dest (placed by root,
    /// under names rsync neither transfers nor deletes) that point at files
    /// and directories outside the tree owned by the owner with mode 0600 /
    /// 0700 leave those untouched (mode, owner, ctime) and are removed.
    fn fix_perms_never_follows_a_symlink_out_of_the_tree() {
        let mut mh = MirrorHost::new();
        mh.set_opts("iso", opts().exclude("evil*"));
        mh.put("iso", "a.iso", b"a");
        mh.put("iso", "sub/b.iso", b"b");
        mh.ssh(Some("sync")).status(0).run();

        let outside = mh.path("outside");
        fs::create_dir_all(outside.join("dir")).unwrap();
        let secret = outside.join("secret.img");
        fs::write(&secret, b"not for the web").unwrap();
        fs::write(outside.join("dir/inner.img"), b"inner").unwrap();
        for (p, mode) in [(&outside, 0o755), (&outside.join("dir"), 0o700), (&secret, 0o600), (&outside.join("dir/inner.img"), 0o600)] {
            nix::unistd::chown(p.as_path(), Some(mh.owner.uid.into()), Some(mh.owner.gid.into())).unwrap();
            set_mode(p, mode);
        }
        let dest = mh.dest("iso");
        let links = [
            (dest.join("evil-abs"), secret.clone()),
            (dest.join("evil-rel"), PathBuf::from("../../outside/secret.img")),
            (dest.join("evil-dir"), outside.join("dir")),
            (dest.join("sub/evil-abs"), secret.clone()),
            (dest.join("sub/evil-rel"), PathBuf::from("../../../outside/dir/inner.img")),
            (dest.join("sub/evil-up"), PathBuf::from("..")),
        ];
        for (link, target) in &links {
            symlink(target, link).unwrap();
            if link.ends_with("evil-up") {
                // In-tree: kept, so it must be the owner's (its group is
                // fixed with lchown, which must not touch dest).
                std::os::unix::fs::lchown(link, Some(mh.owner.uid), Some(mh.owner.gid)).unwrap();
            }
            assert_eq!(fs::canonicalize(link).unwrap().starts_with(&dest), link.ends_with("evil-up"), "{}", link.display());
        }
        let watched = [outside.clone(), outside.join("dir"), secret.clone(), outside.join("dir/inner.img")];
        let before: Vec<_> = watched.iter().map(|p| fingerprint(p)).collect();
        std::thread::sleep(Duration::from_millis(20));

        mh.ssh(Some("sync")).status(0).run();
        let after: Vec<_> = watched.iter().map(|p| fingerprint(p)).collect();
        for ((p, b), a) in watched.iter().zip(&before).zip(&after) {
            assert_eq!(b, a, "{} changed", p.display());
        }
        for (link, _) in &links[..5] {
            assert!(fs::symlink_metadata(link).is_err(), "{} is still there", link.display());
        }
        // `sub/evil-up -> ..` stays inside the tree: kept (and lchown'ed).
        let up = fs::symlink_metadata(dest.join("sub/evil-up")).unwrap();
        assert!(up.file_type().is_symlink());
        assert_eq!((up.uid(), up.gid()), (mh.owner.uid, gid_of(READER_GROUP)));
        let msg = mh.last_run("iso")["message"].as_str().unwrap().to_string();
        assert!(msg.contains("1 repaired, 5 removed"), "fix-perms did not remove the links itself: {msg}");
        assert_published_tree(&mh, &dest);
    }
}

e2e_test! {
    /// fix-perms takes a mirror name, never a path: sudo refuses a path
    /// from the login account, and even root (whom sudo lets through) gets
    /// exit 64 naming the unknown mirror.
    fn fix_perms_takes_no_path_from_its_caller() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"a");
        mh.ssh(Some("sync")).status(0).run();
        let bin = mh.bin.to_str().unwrap();
        let conf = mh.config.to_str().unwrap();
        let out = assert_sudo_refuses(&mh, "a path", &["-u", OWNER, bin, "--config", conf, "fix-perms", "../../etc"]);
        assert_contains(&out.stderr, "a password is required");

        mh.syncgate()
            .args(["fix-perms", "nope"])
            .status(64)
            .stderr_contains("no mirror named \"nope\"")
            .stdout_empty()
            .run();

        let mut cmd = Command::new(SUDO);
        cmd.args(["-n", "-u", OWNER, bin, "--config", conf, "fix-perms", "../../etc"])
            .stdin(Stdio::null());
        Test::new(cmd)
            .status(64)
            .stderr_contains("no mirror named \"../../etc\"")
            .run();
    }
}

e2e_test! {
    /// The owner-side commands refuse a config that anyone but root could
    /// have written (the file, its directory, or any directory above), even
    /// when root runs them: exit 78, nothing transferred.
    fn owner_side_refuses_an_untrusted_config() {
        let mh = MirrorHost::new();
        let bin = mh.bin.to_str().unwrap().to_string();
        let sudo_owner = |conf: &Path, verb: &str| {
            let mut cmd = Command::new(SUDO);
            cmd.args(["-n", "-u", OWNER, &bin, "--config"])
                .arg(conf)
                .args([verb, "iso"])
                .stdin(Stdio::null());
            Test::new(cmd).tree(mh.dest("iso"))
        };
        let untrusted = mh.path("untrusted");
        fs::create_dir_all(untrusted.join("root-dir")).unwrap();
        nix::unistd::chown(&untrusted, Some(mh.login.uid.into()), Some(mh.login.gid.into())).unwrap();
        set_mode(&untrusted, 0o755);
        set_mode(&untrusted.join("root-dir"), 0o755);
        let text_ = mh.cfg.render();
        let owned = untrusted.join("syncgate.toml");
        fs::write(&owned, &text_).unwrap();
        nix::unistd::chown(&owned, Some(mh.login.uid.into()), Some(mh.login.gid.into())).unwrap();
        set_mode(&owned, 0o644);
        let root_file = untrusted.join("root-file.toml");
        fs::write(&root_file, &text_).unwrap();
        set_mode(&root_file, 0o644);
        let deeper = untrusted.join("root-dir/syncgate.toml");
        fs::write(&deeper, &text_).unwrap();
        set_mode(&deeper, 0o644);
        let group_writable = mh.config.with_file_name("group-writable.toml");
        fs::write(&group_writable, &text_).unwrap();
        set_mode(&group_writable, 0o664);
        let via_link = mh.config.with_file_name("link.toml");
        symlink(&root_file, &via_link).unwrap();

        mh.put("iso", "a.iso", b"a");
        for (what, conf) in [
            ("owned by the login account", &owned),
            ("in a directory of the login account", &root_file),
            ("below a directory of the login account", &deeper),
            ("writable by its group", &group_writable),
            ("a root-owned symlink to a file in a directory of the login account", &via_link),
        ] {
            for verb in ["transfer", "fix-perms"] {
                sudo_owner(conf, verb)
                    .status(78)
                    .stderr_contains("must be owned by root and not writable by group or others")
                    .stdout_empty()
                    .context(|| format!("{verb} with a config {what}"))
                    .run();
            }
        }
        assert!(!mh.dest("iso").join("a.iso").exists(), "something was transferred");

        // The real config works the same way.
        sudo_owner(&mh.config, "transfer").status(0).run();
        assert!(mh.dest("iso").join("a.iso").exists());
    }
}

e2e_test! {
    /// `syncgate sudoers --install` installs /etc/sudoers.d/syncgate as
    /// root:root 0440 that `visudo -c` accepts and that is exactly what
    /// `syncgate sudoers` prints; a config whose path holds a space is
    /// refused (by the config load with privilege = "sudo", by the rule
    /// renderer otherwise) and nothing is installed.
    fn sudoers_install_is_valid_and_refuses_unsafe_paths() {
        let mh = MirrorHost::new();
        let installed = Path::new("/etc/sudoers.d/syncgate");
        let md = fs::metadata(installed).unwrap();
        assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o440, 0, 0));
        run_ok(Command::new(support::require_tool("visudo")).arg("-c"));
        let printed = mh.syncgate().arg("sudoers").status(0).run();
        let rule = fs::read(installed).unwrap();
        assert_eq!(String::from_utf8_lossy(&rule), stdout(&printed));
        let line = owner_line(&mh, "transfer", "iso").join(" ");
        assert_contains(&rule, &format!("syncgate ALL=(mirror) NOPASSWD: {line}, "));
        let leftovers: Vec<_> = fs::read_dir("/etc/sudoers.d").unwrap().map(|e| e.unwrap().file_name()).filter(|n| n.to_string_lossy().starts_with(".syncgate")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let spaced_dir = mh.path("etc syncgate");
        fs::create_dir_all(&spaced_dir).unwrap();
        set_mode(&spaced_dir, 0o755);
        let spaced = spaced_dir.join("syncgate.toml");
        let run = |conf: &Path, args: &[&str]| {
            let mut cmd = Command::new(&mh.bin);
            cmd.arg("--config").arg(conf).args(args).stdin(Stdio::null());
            Test::new(cmd)
        };
        fs::write(&spaced, mh.cfg.render()).unwrap();
        for args in [&["sudoers"][..], &["sudoers", "--install"]] {
            run(&spaced, args)
                .status(78)
                .stderr_contains("with privilege = \"sudo\" the config path may only hold letters, digits, '/', '.', '_' and '-'")
                .stdout_empty()
                .run();
        }
        let mut direct = mh.cfg.clone();
        direct.privilege = "direct";
        fs::write(&spaced, direct.render()).unwrap();
        for args in [&["sudoers"][..], &["sudoers", "--install"]] {
            run(&spaced, args)
                .status(78)
                .stderr_contains("a command line holds characters sudoers would interpret")
                .stdout_empty()
                .run();
        }
        assert_eq!(fs::read(installed).unwrap(), rule, "the installed rule changed");
    }
}
