//! What the Debian package ships: the systemd units and the tmpfiles entry
//! (checked by systemd's own tools), the unit's hardening (no setting that
//! would stop sudo), the exact timer command line run as the unit's user,
//! and the packaged configuration. The package itself (build, lintian,
//! install into a fresh Debian) is `packaging/test-install`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::mirror_host::{MirrorHost, LOGIN, OWNER};
use crate::support::{e2e_test, fields, require_tool, run_ok, Mirrors, Test};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Values of `key=` in `section` of a unit file (comments skipped).
fn unit_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            current = line.trim_matches(['[', ']']).to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if current == section && k.trim() == key {
                out.push(v.trim().to_string());
            }
        }
    }
    out
}

fn unit_value(text: &str, section: &str, key: &str) -> String {
    let v = unit_values(text, section, key);
    assert_eq!(v.len(), 1, "exactly one {key}= in [{section}]: {v:?}");
    v[0].clone()
}

/// The PATH systemd gives services (it has no Environment= here).
fn systemd_default_path() -> String {
    let out = run_ok(Command::new(require_tool("systemd-path")).arg("search-binaries-default"));
    let path = out.trim().to_string();
    assert!(path.contains("/usr/bin"), "systemd-path: {path:?}");
    path
}

/// Settings that set no_new_privs for a service with User= (systemd.exec(5):
/// "NoNewPrivileges=yes is implied"), or that otherwise keep setuid sudo
/// from switching to the image owner.
const BREAKS_SUDO: &[&str] = &[
    "NoNewPrivileges",
    "LockPersonality",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "RestrictNamespaces",
    "RestrictAddressFamilies",
    "MemoryDenyWriteExecute",
    "SystemCallFilter",
    "SystemCallArchitectures",
    "SystemCallLog",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectClock",
    "ProtectHostname",
    "PrivateDevices",
    "PrivateUsers",
    "CapabilityBoundingSet",
    "DynamicUser",
];

#[test]
fn service_runs_the_timer_sync_as_the_login_account_without_settings_that_break_sudo() {
    let unit = read("systemd/syncgate.service");
    assert_eq!(unit_value(&unit, "Service", "Type"), "oneshot");
    assert_eq!(unit_value(&unit, "Service", "User"), LOGIN);
    assert_eq!(
        unit_value(&unit, "Service", "ExecStart"),
        "/usr/bin/syncgate sync --all --trigger timer"
    );
    let comments: String = unit.lines().filter(|l| l.starts_with('#')).collect();
    for key in BREAKS_SUDO {
        assert!(
            unit_values(&unit, "Service", key).is_empty(),
            "{key}= would keep sudo from running (no_new_privs)"
        );
        assert!(
            comments.contains(&format!("{key}=")),
            "the unit should say why {key}= is left out"
        );
    }
    assert_eq!(unit_value(&unit, "Service", "ProtectSystem"), "full");
    assert!(
        unit_values(&unit, "Install", "WantedBy").is_empty(),
        "the timer starts it"
    );

    let timer = read("systemd/syncgate.timer");
    assert_eq!(unit_value(&timer, "Timer", "OnCalendar"), "hourly");
    assert_eq!(unit_value(&timer, "Timer", "Persistent"), "true");
    assert!(!unit_value(&timer, "Timer", "RandomizedDelaySec").is_empty());
    assert_eq!(unit_value(&timer, "Install", "WantedBy"), "timers.target");
}

/// A root for `systemd-analyze --root`: the host's own units (for
/// sysinit.target and friends), ours, and the binary ExecStart names.
fn unit_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let units = root.join("usr/lib/systemd/system");
    fs::create_dir_all(&units).unwrap();
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").exists())
        .expect("the host's systemd units (apt-get install systemd; scripts/install-test-deps)");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", host_units.display()))
            .arg(&units),
    );
    for u in ["syncgate.service", "syncgate.timer"] {
        fs::copy(repo(&format!("systemd/{u}")), units.join(u)).unwrap();
    }
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::copy(
        env!("CARGO_BIN_EXE_syncgate"),
        root.join("usr/bin/syncgate"),
    )
    .unwrap();
    root
}

#[test]
fn units_pass_systemd_analyze_verify_with_their_binary_and_man_page() {
    let analyze = require_tool("systemd-analyze");
    require_tool("man");
    let dir = tempfile::tempdir().unwrap();
    let root = unit_root(dir.path());
    // Documentation=man:syncgate(1) must resolve: the generated page.
    let man = dir.path().join("man");
    fs::create_dir_all(man.join("man1")).unwrap();
    let page = run_ok(Command::new(env!("CARGO_BIN_EXE_syncgate")).args(["generate", "man"]));
    fs::write(man.join("man1/syncgate.1"), page).unwrap();

    let mut cmd = Command::new(analyze);
    cmd.arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(["syncgate.service", "syncgate.timer"])
        .env("MANPATH", &man);
    // No warnings.
    Test::new(cmd).status(0).stdout_empty().stderr_empty().run();

    // The same check fails when ExecStart's binary is missing, so it is real.
    fs::remove_file(root.join("usr/bin/syncgate")).unwrap();
    let mut cmd = Command::new(require_tool("systemd-analyze"));
    cmd.arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("syncgate.service")
        .env("MANPATH", &man);
    Test::new(cmd)
        .failure()
        .stderr_contains("/usr/bin/syncgate")
        .run();
}

#[test]
fn tmpfiles_entry_creates_the_state_dir_for_the_login_account() {
    let tmpfiles = require_tool("systemd-tmpfiles");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("etc")).unwrap();
    // systemd-tmpfiles --root resolves names in the root's account files.
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nsyncgate:x:987:986::/var/lib/syncgate-home:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nsyncgate:x:986:\n").unwrap();
    let mut cmd = Command::new(tmpfiles);
    cmd.arg("--create")
        .arg(format!("--root={}", root.display()))
        .arg(repo("systemd/syncgate.tmpfiles"));
    Test::new(cmd).status(0).tree(root).run();
    let md = fs::metadata(root.join("var/lib/syncgate")).unwrap();
    assert!(md.is_dir());
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (987, 986, 0o750));
}

#[test]
fn packaged_config_loads_with_no_mirror_and_no_key() {
    let text = read("packaging/syncgate.toml");
    let cfg = syncgate::config::Config::parse(Path::new(syncgate::config::DEFAULT_PATH), &text)
        .expect("packaging/syncgate.toml loads");
    assert!(
        cfg.mirrors.is_empty() && cfg.keys.is_empty(),
        "nothing enabled by default"
    );
    assert_eq!(cfg.state_dir, Path::new("/var/lib/syncgate"));
    assert_eq!(cfg.login_user, LOGIN);
    assert_eq!(cfg.privilege, syncgate::config::Privilege::Sudo);
    // The commented example is the real thing once uncommented (minus the
    // accounts, which this machine may not have).
    let uncommented: String = text
        .lines()
        .map(|l| {
            l.strip_prefix('#')
                .filter(|r| !r.starts_with([' ', '-', '#']))
                .unwrap_or(l)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let err =
        syncgate::config::Config::parse(Path::new("/etc/syncgate/syncgate.toml"), &uncommented)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
    assert!(
        err.is_empty() || err.contains("owner") || err.contains("reader_group"),
        "only the accounts may be missing: {err}"
    );
}

e2e_test! {
    /// The unit's exact ExecStart, run as the unit's User= with systemd's
    /// environment (PATH; runuser adds HOME, SHELL, USER and LOGNAME as
    /// systemd does for User=), syncs every mirror through sudo and records
    /// trigger=timer. The test only points the program at this host's
    /// binary and config: `/usr/bin/syncgate` becomes the test copy, and
    /// `--config CFG` goes right after it.
    fn the_timer_command_line_syncs_as_the_unit_user() {
        let mh = MirrorHost::new();
        mh.put("iso", "a.iso", b"image");
        mh.put("iso", "SHA256SUMS", b"x  a.iso\n");
        let unit = read("systemd/syncgate.service");
        let user = unit_value(&unit, "Service", "User");
        let exec = unit_value(&unit, "Service", "ExecStart");
        assert!(!exec.starts_with(['-', '@', '+', '!', ':']), "no ExecStart= prefixes: {exec}");
        let mut argv = shell_words::split(&exec).unwrap();
        assert_eq!(argv[0], "/usr/bin/syncgate");
        argv[0] = mh.bin.display().to_string();
        argv.splice(1..1, ["--config".to_string(), mh.config.display().to_string()]);
        let path = systemd_default_path();
        let run = |prefix: &[&str]| {
            let mut cmd = Command::new(require_tool("runuser"));
            cmd.args(["-u", &user, "--"])
                .args(prefix)
                .args(&argv)
                .env_clear()
                .env("PATH", &path)
                .stdin(std::process::Stdio::null());
            Test::new(cmd).tree(mh.dest("iso"))
        };

        run(&[]).status(0).run();
        let dest = mh.dest("iso");
        let md = fs::metadata(dest.join("a.iso")).unwrap();
        assert_eq!(md.uid(), mh.owner.uid, "written by {OWNER} through sudo");
        assert_eq!(fs::read(dest.join("a.iso")).unwrap(), b"image");
        let state = mh.state("iso");
        let last = &state["runs"][0];
        assert_eq!(last["trigger"], "timer", "{state}");
        assert_eq!(last["result"], "success", "{state}");
        assert!(last["requester"].as_str().unwrap().contains(&format!("user={user}")), "{state}");
        let request = mh.log.wait_for(|l| l.contains("event=request"), Duration::from_secs(5)).unwrap();
        assert_eq!(fields(&request)["trigger"], "timer", "{request}");
        let outcome = mh.log.wait_for(|l| l.contains("event=outcome"), Duration::from_secs(5)).unwrap();
        let o = fields(&outcome);
        assert_eq!((o["trigger"].as_str(), o["result"].as_str()), ("timer", "success"), "{outcome}");

        // Why the unit has no NoNewPrivileges= (nor anything implying it):
        // with the flag set, sudo refuses and the sync fails, publishing nothing.
        mh.put("iso", "b.iso", b"second");
        run(&[require_tool("setpriv").to_str().unwrap(), "--no-new-privs", "--"])
            .status(1)
            .stderr_contains("no new privileges")
            .run();
        assert!(!dest.join("b.iso").exists());
        assert_eq!(mh.state("iso")["runs"][1]["result"], "failed");
    }
}
