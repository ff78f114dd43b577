//! `syncgate check`: a diagnosis for admins. One line per finding, each
//! problem with a fix; exits 1 if anything is wrong.
//!
//! The sudo rules are tested the way the gate will use them: as the login
//! account, with `sudo -n -l -u OWNER <argv>` for the exact argv from
//! [`crate::runner::argv`], and a set of variants that must be refused.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::config::{Config, Privilege};
use crate::error::Exit;
use crate::runner::argv::{self, OwnerVerb};
use crate::sys::child::SAFE_PATH;

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
    match crate::owner::untrusted_path(&cfg.path) {
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

/// Splits an authorized_keys line into its options (none when the line
/// starts with the key type) the way sshd reads them: the options field ends
/// at the first blank outside double quotes, options are separated by
/// commas outside double quotes, and `\"` inside quotes is a literal quote.
/// Returns (lowercased name, unquoted value) pairs.
pub fn key_options(line: &str) -> Vec<(String, Option<String>)> {
    const KEY_TYPES: &[&str] = &["ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-"];
    let line = line.trim_start();
    if KEY_TYPES.iter().any(|t| line.starts_with(t)) {
        return Vec::new();
    }
    fn finish(
        name: &mut String,
        value: &mut Option<String>,
        out: &mut Vec<(String, Option<String>)>,
    ) {
        if !name.is_empty() {
            out.push((name.to_ascii_lowercase(), value.take()));
        }
        name.clear();
        *value = None;
    }
    let mut out = Vec::new();
    let mut name = String::new();
    let mut value: Option<String> = None;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let literal = match c {
            '\\' if quoted => match chars.next() {
                Some('"') => '"',
                Some(n) => {
                    value.as_mut().unwrap_or(&mut name).push('\\');
                    n
                }
                None => break,
            },
            '"' => {
                quoted = !quoted;
                continue;
            }
            ',' if !quoted => {
                finish(&mut name, &mut value, &mut out);
                continue;
            }
            '=' if !quoted && value.is_none() => {
                value = Some(String::new());
                continue;
            }
            c if c.is_whitespace() && !quoted => break,
            c => c,
        };
        match &mut value {
            Some(v) => v.push(literal),
            None => name.push(literal),
        }
    }
    finish(&mut name, &mut value, &mut out);
    out
}

/// Why an authorized_keys line of the login account gives its key more than
/// the gate, if it does: it needs `restrict` and a forced command that runs
/// `BINARY ... ssh --key NAME`.
pub fn key_line_problem(line: &str, binary: &Path) -> Option<String> {
    let opts = key_options(line);
    let restricted = opts.iter().any(|(n, _)| n == "restrict");
    let command = opts
        .iter()
        .find(|(n, _)| n == "command")
        .and_then(|(_, v)| v.clone());
    let bin = format!("{} ", binary.display());
    let forced = command
        .as_deref()
        .is_some_and(|c| c.starts_with(&bin) && c.contains(" ssh --key "));
    match (restricted, forced) {
        (true, true) => None,
        (false, true) => Some("has no `restrict` option".into()),
        (_, false) => Some(match command {
            Some(c) => format!("forces {c:?}, which is not `{}... ssh --key NAME`", bin),
            None => "has no forced command".into(),
        }),
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
    for (p, what) in [
        (home.clone(), "home"),
        (home.join(".ssh"), ".ssh"),
        (home.join(".ssh/authorized_keys"), "authorized_keys"),
    ] {
        match std::fs::metadata(&p) {
            Ok(md) if (md.uid() == uid || md.uid() == 0) && mode_ok(&md) => r.ok(format!("{what} {} passes sshd's StrictModes", p.display())),
            Ok(md) => r.fail(
                format!("{what} {} (uid {}, mode {:o}) fails sshd's StrictModes: it must be owned by {login} or root and not writable by group or others", p.display(), md.uid(), md.mode() & 0o7777),
                format!("chown {login} {0} && chmod go-w {0}", p.display()),
            ),
            Err(_) if what == "authorized_keys" => r.warn(format!("{} does not exist yet: no key can log in", p.display()), "add a line made by `syncgate authorized-key`"),
            Err(e) => r.fail(format!("{what} {}: {e}", p.display()), format!("mkdir -p {0} && chown {login} {0} && chmod 0755 {0}", p.display())),
        }
    }
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
    for (p, what) in progs {
        match std::fs::metadata(p) {
            Ok(md) if md.is_file() && md.mode() & 0o111 != 0 => {
                if cfg.privilege == Privilege::Sudo && (md.uid() != 0 || !mode_ok(&md)) {
                    r.fail(
                        format!(
                            "{what} {} is not root-owned or is writable by others",
                            p.display()
                        ),
                        format!("chown root:root {0} && chmod 0755 {0}", p.display()),
                    );
                } else {
                    r.ok(format!("{what} is present at {}", p.display()));
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
}

/// Asks sudo, as the login account, whether it would run `argv` as `owner`.
fn sudo_allows(cfg: &Config, owner: &str, argv: &[String]) -> Result<bool, String> {
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
    cmd.args(["-n", "-l", "-u", owner])
        .args(argv)
        .env_clear()
        .env("PATH", SAFE_PATH);
    let out = cmd.output().map_err(|e| format!("cannot run sudo: {e}"))?;
    Ok(out.status.success())
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
    fn authorized_keys_options_are_read_like_sshd_reads_them() {
        let bin = Path::new("/usr/bin/syncgate");
        let good = r#"restrict,from="10.0.0.0/8",command="/usr/bin/syncgate --config /etc/s.toml ssh --key j" ssh-ed25519 AAAA j"#;
        assert_eq!(key_line_problem(good, bin), None);
        let opts = key_options(good);
        assert_eq!(opts[1], ("from".into(), Some("10.0.0.0/8".into())));
        assert_eq!(
            opts[2].1.as_deref(),
            Some("/usr/bin/syncgate --config /etc/s.toml ssh --key j")
        );
        // No options at all: a shell.
        assert!(key_line_problem("ssh-ed25519 AAAA j", bin)
            .unwrap()
            .contains("no forced command"));
        // The right words in the comment are not options.
        let fake = r#"ssh-ed25519 AAAA restrict,command="/usr/bin/syncgate ssh --key j""#;
        assert!(key_line_problem(fake, bin).is_some());
        let fake = r#"no-pty ssh-ed25519 AAAA restrict,command="/usr/bin/syncgate ssh --key j""#;
        assert!(key_line_problem(fake, bin).is_some());
        // A forced command that is not the gate.
        let other = r#"restrict,command="/bin/sh -c 'x ssh --key j'" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(other, bin).unwrap().contains("forces"));
        // No restrict: forwarding and a pty stay on.
        let open = r#"command="/usr/bin/syncgate ssh --key j" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(open, bin).unwrap().contains("restrict"));
        // "restrict" inside a quoted value is not the option.
        let quoted = r#"command="/usr/bin/syncgate ssh --key j,restrict" ssh-ed25519 AAAA"#;
        assert!(key_line_problem(quoted, bin).unwrap().contains("restrict"));
        // Escaped quotes stay inside the value.
        let esc = r#"restrict,command="/usr/bin/syncgate \"x\" ssh --key j" ssh-ed25519 AAAA"#;
        assert_eq!(
            key_options(esc)[1].1.as_deref(),
            Some(r#"/usr/bin/syncgate "x" ssh --key j"#)
        );
    }
}
