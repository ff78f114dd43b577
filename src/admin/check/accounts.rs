//! The accounts: login shell, lock, home and keys, owners and groups.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::admin::check::keys::key_line_problem;
use crate::admin::check::mode_ok;
use crate::admin::check::Report;
use crate::config::Config;
use crate::config::Privilege;

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

/// The password field of `user` in /etc/shadow, if readable.
fn shadow_field(user: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/shadow").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(user)).then(|| f.next().unwrap_or("").to_string())
    })
}

pub(super) fn check_config_file(cfg: &Config, r: &mut Report) {
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

pub(super) fn check_accounts(cfg: &Config, r: &mut Report) {
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
                    "{what} {} (uid {}, mode {:o}) can be changed by {login}, group or others: the account could install a key of its own with no forced command, and sshd's StrictModes refuses a group- or world-writable one (it must be owned by root and not writable by group or others)",
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

pub(super) fn check_dirs(cfg: &Config, r: &mut Report) {
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
        if super::layout::check_snapshot_layout(m, r) {
            continue;
        }
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
