//! `syncgate check`: a diagnosis for admins. One line per finding, each
//! problem with a fix; exits 1 if anything is wrong.
//!
//! The sudo rules are tested the way the gate will use them: as the login
//! account, with `sudo -n -l -u OWNER <argv>` for the exact argv from
//! [`crate::runner::argv`], and a set of variants that must be refused.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::admin::sudo_grants;
use crate::config::{Config, Privilege};
use crate::error::Exit;
use crate::runner::argv::{self, OwnerVerb};
use crate::sys::child::SAFE_PATH;

pub use crate::admin::keys::{key_line_problem, key_options};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    Warn,
    Fail,
}

#[derive(Default)]
pub struct Report {
    pub lines: Vec<(Severity, String)>,
}

impl Report {
    fn ok(&mut self, msg: impl Into<String>) {
        self.lines.push((Severity::Ok, msg.into()));
    }
    fn warn(&mut self, msg: impl Into<String>, fix: impl AsRef<str>) {
        self.lines.push((
            Severity::Warn,
            format!("{}; fix: {}", msg.into(), fix.as_ref()),
        ));
    }
    fn fail(&mut self, msg: impl Into<String>, fix: impl AsRef<str>) {
        self.lines.push((
            Severity::Fail,
            format!("{}; fix: {}", msg.into(), fix.as_ref()),
        ));
    }
    pub fn failed(&self) -> bool {
        self.lines.iter().any(|(s, _)| *s == Severity::Fail)
    }
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (s, m) in &self.lines {
            let tag = match s {
                Severity::Ok => "ok  ",
                Severity::Warn => "WARN",
                Severity::Fail => "FAIL",
            };
            out.push_str(&format!("{tag} {m}\n"));
        }
        let fails = self
            .lines
            .iter()
            .filter(|(s, _)| *s == Severity::Fail)
            .count();
        let warns = self
            .lines
            .iter()
            .filter(|(s, _)| *s == Severity::Warn)
            .count();
        out.push_str(&format!("{fails} problem(s), {warns} warning(s)\n"));
        out
    }
    /// 1 if anything is wrong, else 0.
    pub fn exit(&self) -> Exit {
        if self.failed() {
            Exit::SyncFailed
        } else {
            Exit::Ok
        }
    }
}

/// Shells that run `-c COMMAND` as sshd needs for a forced command.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox"];

/// Why a login shell cannot run a forced command, if it cannot.
pub fn shell_problem(shell: &Path) -> Option<String> {
    let name = shell.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name == "sync" {
        return Some(format!(
            "shell {} is the `sync` program: sshd runs `{} -c COMMAND` and every request dies with \"sync: invalid option -- 'c'\" (this is Debian's system `sync` account; use a dedicated account)",
            shell.display(),
            shell.display()
        ));
    }
    if matches!(name, "nologin" | "false" | "true") {
        return Some(format!(
            "shell {} refuses to run commands, so sshd cannot run the forced command",
            shell.display()
        ));
    }
    if !SHELLS.contains(&name) {
        return Some(format!(
            "shell {} is not a POSIX shell that runs `-c COMMAND`",
            shell.display()
        ));
    }
    match std::fs::metadata(shell) {
        Ok(md) if md.is_file() && md.mode() & 0o111 != 0 => None,
        _ => Some(format!(
            "shell {} does not exist or is not executable",
            shell.display()
        )),
    }
}

fn mode_ok(md: &std::fs::Metadata) -> bool {
    md.mode() & 0o022 == 0
}

/// The password field of `user` in /etc/shadow, if readable.
fn shadow_field(user: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/shadow").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(user)).then(|| f.next().unwrap_or("").to_string())
    })
}

fn check_config_file(cfg: &Config, r: &mut Report) {
    match crate::owner::untrusted_path(&cfg.path, "the config file") {
        None => r.ok(format!(
            "{} and every directory above it are owned by root and not writable by others",
            cfg.path.display()
        )),
        Some((p, why)) => r.fail(
            format!(
                "{}: {why}: the login or owner account could rewrite what runs as the owner (the owner-side commands refuse such a config)",
                p.display()
            ),
            format!("chown root:root {0} && chmod go-w {0}", p.display()),
        ),
    }
}

fn check_accounts(cfg: &Config, r: &mut Report) {
    let login = &cfg.login_user;
    let Ok(Some(u)) = nix::unistd::User::from_name(login) else {
        r.fail(
            format!("login account {login:?} does not exist"),
            format!(
                "useradd --system --create-home --shell /bin/sh {login} && usermod -p '*' {login}"
            ),
        );
        return;
    };
    match shell_problem(&u.shell) {
        None => r.ok(format!(
            "login account {login} has shell {}, which can run the forced command",
            u.shell.display()
        )),
        Some(why) => r.fail(
            format!("login account {login}: {why}"),
            format!("usermod -s /bin/sh {login}"),
        ),
    }
    match shadow_field(login) {
        Some(p) if p.starts_with('!') => r.fail(
            format!("login account {login} is locked (password field starts with '!'); sshd refuses key logins to locked accounts unless PAM decides"),
            format!("usermod -p '*' {login}   (no usable password, key login allowed)"),
        ),
        Some(_) => r.ok(format!("login account {login} is not locked")),
        None => r.warn(format!("cannot read /etc/shadow to see whether {login} is locked"), "run check as root"),
    }
    let home = u.dir.clone();
    let uid = u.uid.as_raw();
    check_key_files(login, uid, &home, r);
    if let Ok(text) = std::fs::read_to_string(home.join(".ssh/authorized_keys")) {
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if let Some(why) = key_line_problem(l, &cfg.binary) {
                r.fail(
                    format!("authorized_keys line {} {why}: that key gets more than the gate (a shell, forwarding)", i + 1),
                    "replace it with the output of `syncgate authorized-key --key NAME PUBKEY_FILE`",
                );
            }
        }
    }
    check_owners(cfg, r, login, u.gid.as_raw());
}

/// Each mirror's owner against the login account and the reader group.
fn check_owners(cfg: &Config, r: &mut Report, login: &str, login_gid: u32) {
    for m in cfg.mirrors.values() {
        if m.owner == login {
            r.fail(
                format!(
                    "mirror {}: the owner is the login account, so SSH keys could write the images",
                    m.name
                ),
                "use a separate owner account (e.g. mirror)",
            );
        }
        let owner_gids: Vec<u32> = nix::unistd::User::from_name(&m.owner)
            .ok()
            .flatten()
            .map(|o| {
                let mut g = vec![o.gid.as_raw()];
                if let Ok(Some(grp)) =
                    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.reader_gid))
                {
                    if grp.mem.contains(&m.owner) {
                        g.push(m.reader_gid);
                    }
                }
                g
            })
            .unwrap_or_default();
        if owner_gids.contains(&m.reader_gid) {
            r.ok(format!("mirror {}: owner {} and reader group {} exist, and the owner may give files that group", m.name, m.owner, m.reader_group));
        } else {
            r.fail(
                format!(
                    "mirror {}: owner {} is not a member of {}, so it cannot give files that group",
                    m.name, m.owner, m.reader_group
                ),
                format!("usermod -aG {} {}", m.reader_group, m.owner),
            );
        }
        if let Ok(Some(grp)) =
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.reader_gid))
        {
            if grp.mem.iter().any(|n| n == login) || login_gid == m.reader_gid {
                r.warn(format!("login account {login} is in the reader group {}: it can read the images (not write them)", m.reader_group), format!("gpasswd -d {login} {}", m.reader_group));
            }
        }
    }
}

/// The login account's home, `~/.ssh` and `authorized_keys` must pass
/// sshd's StrictModes and be root's: an account that owns (or may write)
/// any of them can swap in a key of its own with no forced command
/// (`mv .ssh x && mkdir .ssh`), and so get a shell past the gate.
fn check_key_files(login: &str, uid: u32, home: &Path, r: &mut Report) {
    for (p, what) in [
        (home.to_path_buf(), "home"),
        (home.join(".ssh"), ".ssh"),
        (home.join(".ssh/authorized_keys"), "authorized_keys"),
    ] {
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.uid() == 0 && mode_ok(&md) && !md.file_type().is_symlink() => r.ok(format!(
                "{what} {} is root's and not writable by {login}, group or others",
                p.display()
            )),
            Ok(md) if md.uid() == uid || !mode_ok(&md) || md.file_type().is_symlink() => r.fail(
                format!(
                    "{what} {} (uid {}, mode {:o}) can be changed by {login} or others: the account could install a key of its own with no forced command (it must be owned by root and not writable by group or others)",
                    p.display(),
                    md.uid(),
                    md.mode() & 0o7777
                ),
                format!(
                    "chown root:root {0} && chmod {1} {0}",
                    p.display(),
                    if md.is_dir() { "0755" } else { "0644" }
                ),
            ),
            Ok(md) => r.fail(
                format!(
                    "{what} {} is owned by uid {}, neither root nor {login}: sshd's StrictModes refuses it, and that account could change the keys",
                    p.display(),
                    md.uid()
                ),
                format!("chown root:root {0} && chmod go-w {0}", p.display()),
            ),
            Err(_) if what == "authorized_keys" => r.warn(
                format!("{} does not exist yet: no key can log in", p.display()),
                "add a line made by `syncgate authorized-key` (as root)",
            ),
            Err(e) => r.fail(
                format!("{what} {}: {e}", p.display()),
                format!("install -d -o root -g root -m 0755 {}", p.display()),
            ),
        }
    }
}

fn check_dirs(cfg: &Config, r: &mut Report) {
    let login_uid = crate::config::lookup_uid(&cfg.login_user);
    match std::fs::symlink_metadata(&cfg.state_dir) {
        Ok(md) if md.is_dir() && mode_ok(&md) && (cfg.privilege == Privilege::Direct || Some(md.uid()) == login_uid) => {
            r.ok(format!("state_dir {} is a directory owned by the login account", cfg.state_dir.display()))
        }
        Ok(md) => r.fail(
            format!("state_dir {} (uid {}, mode {:o}) must be a directory owned by {} and not writable by others", cfg.state_dir.display(), md.uid(), md.mode() & 0o7777, cfg.login_user),
            format!("chown {0}: {1} && chmod 0750 {1}", cfg.login_user, cfg.state_dir.display()),
        ),
        Err(e) => r.fail(
            format!("state_dir {}: {e}", cfg.state_dir.display()),
            format!("install -d -o {0} -g {0} -m 0750 {1}   (or systemd-tmpfiles --create)", cfg.login_user, cfg.state_dir.display()),
        ),
    }
    for m in cfg.mirrors.values() {
        match std::fs::symlink_metadata(&m.dest) {
            Ok(md) if md.is_dir() && md.uid() == m.owner_uid && md.gid() == m.reader_gid && md.mode() & 0o7777 == m.dir_mode => {
                r.ok(format!("mirror {}: dest {} is {}:{} mode {:o}", m.name, m.dest.display(), m.owner, m.reader_group, m.dir_mode))
            }
            Ok(md) => r.fail(
                format!("mirror {}: dest {} is uid {} gid {} mode {:o}, expected {}:{} mode {:o} (a directory, not a symlink)", m.name, m.dest.display(), md.uid(), md.gid(), md.mode() & 0o7777, m.owner, m.reader_group, m.dir_mode),
                format!("install -d -o {} -g {} -m {:o} {}", m.owner, m.reader_group, m.dir_mode, m.dest.display()),
            ),
            Err(e) => r.fail(
                format!("mirror {}: dest {}: {e}", m.name, m.dest.display()),
                format!("install -d -o {} -g {} -m {:o} {}", m.owner, m.reader_group, m.dir_mode, m.dest.display()),
            ),
        }
    }
}

fn check_programs(cfg: &Config, r: &mut Report) {
    let mut progs = vec![
        (cfg.rsync.as_path(), "rsync"),
        (cfg.binary.as_path(), "syncgate"),
    ];
    if cfg.privilege == Privilege::Sudo {
        progs.push((Path::new(argv::SUDO), "sudo"));
    }
    if cfg
        .mirrors
        .values()
        .any(|m| matches!(m.upstream, crate::config::Upstream::Ssh(_)))
    {
        progs.push((Path::new(crate::owner::rsync::argv::SSH), "ssh"));
    }
    for (p, what) in progs {
        match std::fs::metadata(p) {
            Ok(md) if md.is_file() && md.mode() & 0o111 != 0 => {
                let untrusted = match cfg.privilege {
                    Privilege::Sudo => {
                        crate::owner::untrusted_path(p, &format!("the {what} program"))
                    }
                    Privilege::Direct => None,
                };
                match untrusted {
                    Some((bad, why)) => r.fail(
                        format!(
                            "{what} {}: {} {why}: whoever can change it runs code as the mirror owner",
                            p.display(),
                            bad.display()
                        ),
                        format!("chown root:root {0} && chmod go-w {0}", bad.display()),
                    ),
                    None => r.ok(format!(
                        "{what} is present at {}, and it and every directory above it are root's",
                        p.display()
                    )),
                }
            }
            _ => r.fail(
                format!("{what} is missing at {}", p.display()),
                if what == "rsync" {
                    "apt-get install rsync".to_string()
                } else {
                    format!("install {what} at {}", p.display())
                },
            ),
        }
    }
    check_rsync_version(cfg, r);
}

/// The oldest rsync whose `--safe-links` also refuses chained symlinks
/// (a link that is safe alone but escapes through another one).
const RSYNC_SAFE_LINKS: (u32, u32) = (3, 4);

/// `(major, minor)` from `rsync --version`'s first line.
pub fn rsync_version(text: &str) -> Option<(u32, u32)> {
    let first = text.lines().next()?;
    let v = first
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let minor = minor.parse().ok()?;
    Some((major, minor))
}

fn check_rsync_version(cfg: &Config, r: &mut Report) {
    let out = Command::new(&cfg.rsync)
        .arg("--version")
        .env_clear()
        .env("PATH", SAFE_PATH)
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    match rsync_version(&text) {
        Some(v) if v >= RSYNC_SAFE_LINKS => r.ok(format!("rsync is version {}.{}", v.0, v.1)),
        Some(v) => r.warn(
            format!(
                "rsync is version {}.{}, older than {}.{}: its --safe-links lets chained symlinks through stage 1 (fix-perms removes them before stage 2, but they are visible until then)",
                v.0, v.1, RSYNC_SAFE_LINKS.0, RSYNC_SAFE_LINKS.1
            ),
            "install rsync 3.4 or newer",
        ),
        None => r.warn(format!("cannot tell the version of {}", cfg.rsync.display()), "check `rsync --version`"),
    }
}

/// Runs sudo with `args` as the login account (from root through runuser,
/// or directly when check runs as that account), in a clean environment
/// and with wide columns so that `sudo -ll` wraps no line.
fn sudo_as_login(cfg: &Config, args: &[&str]) -> Result<std::process::Output, String> {
    let me = nix::unistd::getuid();
    let login_uid = crate::config::lookup_uid(&cfg.login_user);
    let mut cmd = if me.is_root() {
        let mut c = Command::new("/usr/sbin/runuser");
        c.args(["-u", &cfg.login_user, "--", argv::SUDO]);
        c
    } else if Some(me.as_raw()) == login_uid {
        Command::new(argv::SUDO)
    } else {
        return Err(format!(
            "run check as root or as {} to test the sudo rule",
            cfg.login_user
        ));
    };
    cmd.args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("COLUMNS", "100000");
    cmd.output().map_err(|e| format!("cannot run sudo: {e}"))
}

/// Asks sudo, as the login account, whether it would run `argv` as `owner`.
fn sudo_allows(cfg: &Config, owner: &str, argv: &[String]) -> Result<bool, String> {
    let mut args = vec!["-n", "-l", "-u", owner];
    args.extend(argv.iter().map(String::as_str));
    Ok(sudo_as_login(cfg, &args)?.status.success())
}

fn check_sudo(cfg: &Config, r: &mut Report) {
    if cfg.privilege != Privilege::Sudo {
        r.ok("privilege = \"direct\": owner-side commands run as the calling user; no sudo rule needed");
        return;
    }
    if let Err(e) = crate::admin::sudoers::render(cfg) {
        r.fail(
            format!("no safe sudoers rule can be made for this config: {e}"),
            "change the config as the message says, then `syncgate sudoers --install`",
        );
    }
    for m in cfg.mirrors.values() {
        for verb in OwnerVerb::ALL {
            let a = argv::owner_command(cfg, m, verb);
            match sudo_allows(cfg, &m.owner, &a) {
                Ok(true) => r.ok(format!("sudo lets {} run `{}` as {}", cfg.login_user, argv::render(&a), m.owner)),
                Ok(false) => r.fail(
                    format!("sudo does not let {} run `{}` as {} (the rule is missing or no longer matches this config)", cfg.login_user, argv::render(&a), m.owner),
                    "syncgate sudoers --install",
                ),
                Err(e) => {
                    r.warn(e, "run check as root");
                    return;
                }
            }
        }
        let base = argv::owner_command(cfg, m, OwnerVerb::Transfer);
        let mut extra = base.clone();
        extra.push("--all".into());
        let mut other = base.clone();
        *other.last_mut().expect("argv") = format!("{}-other", m.name);
        let mut other_config = base.clone();
        other_config[2] = "/tmp/syncgate.toml".into();
        let rsync_sh = vec![
            cfg.rsync.display().to_string(),
            "-e".into(),
            "sh".into(),
            "x:".into(),
            m.dest.display().to_string(),
        ];
        let variants: Vec<(&str, &str, Vec<String>)> = vec![
            ("an extra argument", m.owner.as_str(), extra),
            ("another mirror's name", m.owner.as_str(), other),
            ("another config file", m.owner.as_str(), other_config),
            ("the same command as root", "root", base.clone()),
            ("rsync with -e sh", m.owner.as_str(), rsync_sh),
            ("a shell", m.owner.as_str(), vec!["/bin/sh".into()]),
        ];
        for (what, runas, a) in variants {
            match sudo_allows(cfg, runas, &a) {
                Ok(false) => r.ok(format!("sudo refuses {what} ({} as {runas})", argv::render(&a))),
                Ok(true) => r.fail(
                    format!("sudo ALLOWS {what}: `{}` as {runas}; the sudoers rules are wider than syncgate needs", argv::render(&a)),
                    "remove broader rules for the login account; install only `syncgate sudoers`",
                ),
                Err(e) => r.warn(e, "run check as root"),
            }
        }
    }
}

/// Everything sudo grants the login account, against the generated rule.
fn check_sudo_grants(cfg: &Config, r: &mut Report) {
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in cfg.mirrors.values() {
        for verb in OwnerVerb::ALL {
            wanted
                .entry(m.owner.clone())
                .or_default()
                .push(argv::owner_command(cfg, m, verb).join(" "));
        }
    }
    let text = match sudo_as_login(cfg, &["-n", "-ll"]) {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            r.fail(
                format!(
                    "sudo -n -ll as {} failed: {}",
                    cfg.login_user,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "syncgate sudoers --install",
            );
            return;
        }
        Err(e) => {
            r.warn(e, "run check as root");
            return;
        }
    };
    let problems = sudo_grants::problems(&sudo_grants::parse(&text), &wanted);
    if problems.is_empty() {
        r.ok(format!(
            "sudo grants {} nothing beyond the generated rule (sudo -ll)",
            cfg.login_user
        ));
    }
    for p in problems {
        r.fail(
            format!("sudo grants {} more than syncgate's rule: {p}", cfg.login_user),
            "remove that rule or Defaults entry from /etc/sudoers and /etc/sudoers.d; install only `syncgate sudoers --install`",
        );
    }
}

pub fn check(cfg: &Config) -> Report {
    let mut r = Report::default();
    r.ok(format!("config {} parses", cfg.path.display()));
    if cfg.privilege == Privilege::Sudo {
        check_config_file(cfg, &mut r);
        check_accounts(cfg, &mut r);
    }
    check_dirs(cfg, &mut r);
    check_programs(cfg, &mut r);
    check_sudo(cfg, &mut r);
    if cfg.privilege == Privilege::Sudo {
        check_sudo_grants(cfg, &mut r);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_that_cannot_run_a_forced_command_are_caught() {
        assert!(shell_problem(Path::new("/bin/sync"))
            .unwrap()
            .contains("invalid option"));
        assert!(shell_problem(Path::new("/usr/sbin/nologin")).is_some());
        assert!(shell_problem(Path::new("/bin/false")).is_some());
        assert!(shell_problem(Path::new("/usr/bin/python3")).is_some());
        assert_eq!(shell_problem(Path::new("/bin/sh")), None);
    }

    #[test]
    fn rsync_versions_are_read_from_the_first_line() {
        let v = "rsync  version 3.5.0  protocol version 32\nCopyright";
        assert_eq!(rsync_version(v), Some((3, 5)));
        assert_eq!(
            rsync_version("rsync  version 3.2.7  protocol version 31"),
            Some((3, 2))
        );
        assert_eq!(rsync_version("rsync  version v3.4.1pre1  protocol"), None);
        assert_eq!(
            rsync_version("rsync  version 3.4pre1  protocol"),
            Some((3, 4))
        );
        assert_eq!(rsync_version(""), None);
        assert!(
            (3, 2) < RSYNC_SAFE_LINKS && (3, 4) >= RSYNC_SAFE_LINKS && (4, 0) > RSYNC_SAFE_LINKS
        );
    }
}
